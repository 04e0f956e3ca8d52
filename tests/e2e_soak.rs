//! The fault soak (issue 13 item 5): three replicas of the real binary on a Redis that a master,
//! a replica and three Sentinels run, clients that pick replicas at random, random approve /
//! deny / expire, random hang-ups, `SIGKILL` and restart of random replicas, one Redis
//! failover, and a Slack that answers 429 or 500 to a fifth of its calls. At the end:
//! - nothing ran twice (the upstream counts executions per approval id);
//! - nothing denied, expired or cancelled ran; every approved request whose execution finished
//!   ran exactly once; one claimed by a replica that then died ran at most once;
//! - nothing is left pending;
//! - every replica's audit log (killed ones too) verifies, and the merged logs account for
//!   every approval (requested, and how it ended).
//!
//! Bounded and short in CI (`cargo test --test e2e_soak`: 60 approvals, about a minute). By
//! hand, longer: `bench/soak.sh` (1,000 approvals, up to 10 minutes), or set
//! `COUNTERSIGN_SOAK_APPROVALS` and `COUNTERSIGN_SOAK_SECS`. The figures are printed at the end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_slack::{FakeSlack, BOT_TOKEN};
use common::redis_ha::RedisHa;
use common::{http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

const AUD: &str = "https://deploy.example.com";
const REPLICAS: usize = 3;
/// `expires` of the rule: whatever nobody decides expires this long after it was requested.
const EXPIRES: Duration = Duration::from_secs(15);

const POLICY: &str = r#"
[[rule]]
name = "soak"
path_prefix = "/soak"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
notify = ["slack:#soak"]
hold = "2s"
expires = "15s"
"#;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the soak did, printed at the end.
#[derive(Debug, Default)]
struct Figures {
    submitted: AtomicUsize,
    accepted_202: AtomicUsize,
    answered_held: AtomicUsize,
    hung_up: AtomicUsize,
    refused_503: AtomicUsize,
    other_status: AtomicUsize,
    /// The statuses counted in `other_status`.
    others: std::sync::Mutex<BTreeMap<u16, usize>>,
    votes_approve: AtomicUsize,
    votes_deny: AtomicUsize,
    kills: AtomicUsize,
}

struct Soak {
    dir: TestDir,
    config: String,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    /// Live replicas by slot; `None` while one is being restarted.
    replicas: Mutex<Vec<Option<Proxy>>>,
    /// Every process name ever started (each has its own audit log).
    names: Mutex<Vec<String>>,
    requester: String,
    figures: Figures,
}

impl Soak {
    async fn start_replica(&self, name: &str) -> Proxy {
        let text = self.config.replace("@NAME@", name);
        let mut p = Proxy::start_named(&self.dir, &format!("{name}.toml"), &text).await;
        p.wait_ready_within(Duration::from_secs(30)).await;
        self.names.lock().await.push(name.to_owned());
        p
    }

    /// (data URL, control URL) of a live replica chosen at random.
    async fn any(&self) -> Option<(String, String)> {
        let live: Vec<(String, String)> = self
            .replicas
            .lock()
            .await
            .iter()
            .flatten()
            .map(|p| (p.data_url(), p.control_url()))
            .collect();
        if live.is_empty() {
            return None;
        }
        let i = rand::thread_rng().gen_range(0..live.len());
        Some(live[i].clone())
    }

    fn person(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    /// One caller: 50% `Prefer: respond-async`, 35% held until answered, 15% hanging up
    /// after 300 ms.
    async fn one_request(&self, n: usize) {
        let Some((data, _)) = self.any().await else {
            return;
        };
        let mode = rand::thread_rng().gen_range(0..100);
        let mut req = http_client()
            .post(format!("{data}/soak/{n}"))
            .bearer_auth(&self.requester)
            .body(format!("{{\"n\":{n}}}"));
        req = match mode {
            0..50 => req
                .header("prefer", "respond-async")
                .timeout(Duration::from_secs(20)),
            50..85 => req.timeout(Duration::from_secs(20)),
            _ => req.timeout(Duration::from_millis(300)),
        };
        self.figures.submitted.fetch_add(1, Ordering::SeqCst);
        let f = &self.figures;
        match req.send().await {
            Ok(r) => match r.status().as_u16() {
                202 => f.accepted_202.fetch_add(1, Ordering::SeqCst),
                503 => f.refused_503.fetch_add(1, Ordering::SeqCst),
                200 | 403 | 502 => f.answered_held.fetch_add(1, Ordering::SeqCst),
                other => {
                    *f.others.lock().unwrap().entry(other).or_default() += 1;
                    f.other_status.fetch_add(1, Ordering::SeqCst)
                }
            },
            // A hang-up, or the replica was killed under the caller.
            Err(_) => f.hung_up.fetch_add(1, Ordering::SeqCst),
        };
    }

    /// Decides some of what is pending, on a random replica: 45% approve, 30% deny, the rest
    /// is left to expire. Each id is considered once.
    async fn decide_some(&self, seen: &mut BTreeSet<String>) {
        let Some((_, control)) = self.any().await else {
            return;
        };
        let Ok(resp) = http_client()
            .get(format!("{control}/approvals?status=pending&limit=500"))
            .bearer_auth(self.person("alice"))
            .header("accept", "application/json")
            .timeout(Duration::from_secs(5))
            .send()
            .await
        else {
            return;
        };
        let Ok(list) = resp.json::<Value>().await else {
            return;
        };
        let ids: Vec<String> = list["approvals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v["approval_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            let roll = rand::thread_rng().gen_range(0..100);
            let decision = match roll {
                0..45 => "approve",
                45..75 => "deny",
                _ => continue,
            };
            let who = if rand::random::<bool>() {
                "alice"
            } else {
                "bob"
            };
            let Some((_, control)) = self.any().await else {
                return;
            };
            let sent = http_client()
                .post(format!("{control}/approvals/{id}/decision"))
                .bearer_auth(self.person(who))
                .json(&json!({ "decision": decision }))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if matches!(&sent, Ok(r) if r.status().as_u16() == 200) {
                let counter = if decision == "approve" {
                    &self.figures.votes_approve
                } else {
                    &self.figures.votes_deny
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// `SIGKILL`s the replica in a random slot and starts a new process in its place.
    async fn kill_and_restart(&self, generation: usize) {
        let slot = rand::thread_rng().gen_range(0..REPLICAS);
        let victim = self.replicas.lock().await[slot].take();
        // Dropping a `Proxy` SIGKILLs it.
        drop(victim);
        self.figures.kills.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let name = format!("r{slot}g{generation}");
        let fresh = self.start_replica(&name).await;
        self.replicas.lock().await[slot] = Some(fresh);
    }

    async fn audit_logs(&self) -> BTreeMap<String, String> {
        let mut logs = BTreeMap::new();
        for name in self.names.lock().await.iter() {
            logs.insert(name.clone(), self.dir.read(format!("audit-{name}.jsonl")));
        }
        logs
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_soak_nothing_runs_twice_nothing_refused_runs_and_every_approval_is_accounted_for() {
    let approvals = env_or("COUNTERSIGN_SOAK_APPROVALS", 60);
    let secs = env_or("COUNTERSIGN_SOAK_SECS", 60) as u64;
    let started = Instant::now();
    let budget = Duration::from_secs(secs);
    // Submissions are spread over the first 60% of the budget; chaos runs meanwhile.
    let gap = budget.mul_f64(0.6) / u32::try_from(approvals.max(1)).unwrap_or(u32::MAX);

    let mut ha = RedisHa::start();
    let slack = FakeSlack::start().await;
    slack.add_channel("soak", "C0SOAK");
    slack.add_user("UALICE", "alice@example.com");
    slack.add_user("UBOB", "bob@example.com");
    slack.flaky(20);
    let dir = TestDir::new();
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    dir.write("policies/approvals.toml", POLICY);
    dir.write("signing.pem", common::signing_key_pem());
    dir.write("slack-bot-token", BOT_TOKEN);
    dir.write("slack-signing-secret", "soak-signing-secret");
    let config = format!(
        "{}\n[approvals]\nstore = \"{}\"\naudit_log = \"{{{{dir}}}}/audit-@NAME@.jsonl\"\n\
         signing_key = \"file:signing.pem\"\nmax_pending_per_requester = 100000\nrecheck = \"1s\"\n\
         [slack]\nbot_token = \"file:slack-bot-token\"\nsigning_secret = \"file:slack-signing-secret\"\napi_url = \"{}\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        ha.url(),
        slack.api_url(),
    );
    let requester = issuer.token(
        "svc-deployer",
        AUD,
        json!({ "email": "svc-deployer@example.com" }),
    );
    let soak = Arc::new(Soak {
        dir,
        config,
        issuer,
        echo,
        replicas: Mutex::new(Vec::new()),
        names: Mutex::new(Vec::new()),
        requester,
        figures: Figures::default(),
    });
    for slot in 0..REPLICAS {
        let p = soak.start_replica(&format!("r{slot}g0")).await;
        soak.replicas.lock().await.push(Some(p));
    }

    let done = Arc::new(AtomicBool::new(false));
    // Clients: `approvals` requests, a few at a time.
    let clients = {
        let soak = soak.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for n in 0..approvals {
                let soak = soak.clone();
                tasks.push(tokio::spawn(async move { soak.one_request(n).await }));
                tokio::time::sleep(gap).await;
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    // Approvers.
    let deciders = {
        let (soak, done) = (soak.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                soak.decide_some(&mut seen).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    // Chaos: a replica killed and restarted every sixth of the submission window.
    let chaos = {
        let (soak, done) = (soak.clone(), done.clone());
        let every = budget.mul_f64(0.6) / 6;
        tokio::spawn(async move {
            let mut generation = 1;
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(every).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                soak.kill_and_restart(generation).await;
                generation += 1;
            }
        })
    };
    // One Redis failover, a third of the way in.
    tokio::time::sleep(budget.mul_f64(0.3)).await;
    let old_master = ha.master.port();
    ha.master.kill();
    ha.wait_master(ha.replica.port(), Duration::from_secs(30));
    ha.master.start_replica_of(ha.replica.port());
    eprintln!(
        "soak: Redis failed over from port {old_master} to {:?} at {:?}",
        ha.current_master_port(),
        started.elapsed()
    );

    clients.await.expect("clients");
    done.store(true, Ordering::SeqCst);
    chaos.await.expect("chaos");
    // Everything not decided expires; give the sweeps time to expire and execute it all.
    tokio::time::sleep(EXPIRES + Duration::from_secs(5)).await;
    deciders.await.expect("deciders");

    // ----- the checks ----------------------------------------------------------------------
    let logs = soak.audit_logs().await;
    let mut requested = BTreeSet::new();
    let mut ended: BTreeMap<String, String> = BTreeMap::new();
    for (name, log) in &logs {
        let path = soak.dir.join(format!("audit-{name}.jsonl"));
        let out = common::countersign(&["audit", "verify", &path.display().to_string()]);
        assert!(
            out.status.success(),
            "audit log of {name} does not verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in log.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let id = e["approval_id"].as_str().unwrap_or_default().to_owned();
            match e["event"].as_str().unwrap_or_default() {
                "approval.requested" => {
                    requested.insert(id);
                }
                ev @ ("approval.approved" | "approval.denied" | "approval.expired"
                | "approval.cancelled") => {
                    // A cancel after an approval (holder lost) is the final word.
                    let slot = ended.entry(id).or_default();
                    if slot.is_empty() || ev == "approval.cancelled" {
                        *slot = ev.to_owned();
                    }
                }
                _ => {}
            }
        }
    }
    let executions: BTreeMap<String, usize> =
        soak.echo
            .requests()
            .iter()
            .fold(BTreeMap::new(), |mut m, r| {
                if let Some(id) = r.header("countersign-approval-id") {
                    *m.entry(id.to_owned()).or_default() += 1;
                }
                m
            });

    let (_, control) = soak.any().await.expect("a live replica");
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut at_most_once = 0;
    for id in &requested {
        let view: Value = http_client()
            .get(format!("{control}/approvals/{id}"))
            .bearer_auth(soak.person("alice"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET approval")
            .json()
            .await
            .expect("approval JSON");
        let status = view["status"].as_str().unwrap_or("missing").to_owned();
        let execution = view["execution"]["state"].as_str().unwrap_or("").to_owned();
        let ran = executions.get(id).copied().unwrap_or(0);
        assert!(ran <= 1, "approval {id} ran {ran} times ({status})");
        match status.as_str() {
            "approved" if execution == "done" => {
                assert_eq!(
                    ran, 1,
                    "approval {id} approved and done but ran {ran} times"
                )
            }
            // Claimed by a replica that died mid-send: at most once, never retried.
            "approved" => at_most_once += 1,
            "denied" | "expired" | "cancelled" => {
                assert_eq!(ran, 0, "approval {id} is {status} but ran")
            }
            other => panic!("approval {id} is {other} at the end: {view}"),
        }
        assert!(
            ended.contains_key(id),
            "no replica's audit log says how approval {id} ended ({status}): {view}\nits lines:\n{}",
            logs.values()
                .flat_map(|l| l.lines())
                .filter(|l| l.contains(id.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        *by_status.entry(status).or_default() += 1;
    }
    for id in executions.keys() {
        assert!(
            requested.contains(id),
            "the upstream ran {id}, which no audit log requested"
        );
    }

    let f = &soak.figures;
    eprintln!(
        "soak figures: {} s, {} requests submitted ({} answered 202, {} answered while held, {} \
         hung up or cut by a kill, {} refused 503, {} other {:?}); {} approvals requested, by final \
         status {:?}; {} executed, {} approved but claimed by a replica that died (at most once); \
         {} approve and {} deny votes counted; {} replicas killed and restarted; 1 Redis failover; \
         {} audit logs verified; Slack calls {} ({}% faults injected)",
        started.elapsed().as_secs(),
        f.submitted.load(Ordering::SeqCst),
        f.accepted_202.load(Ordering::SeqCst),
        f.answered_held.load(Ordering::SeqCst),
        f.hung_up.load(Ordering::SeqCst),
        f.refused_503.load(Ordering::SeqCst),
        f.other_status.load(Ordering::SeqCst),
        f.others.lock().unwrap(),
        requested.len(),
        by_status,
        executions.len(),
        at_most_once,
        f.votes_approve.load(Ordering::SeqCst),
        f.votes_deny.load(Ordering::SeqCst),
        f.kills.load(Ordering::SeqCst),
        logs.len(),
        slack.calls().len(),
        20,
    );
    assert!(
        requested.len() * 2 >= approvals,
        "fewer than half the requests became approvals: {}",
        requested.len()
    );
}
