//! Redis itself highly available (issue 13): two replicas of the real binary on a store that a
//! master, a replica and three Sentinels run (`store = "redis+sentinel://..."`), through a
//! `SIGKILL` of the master while approvals are being created; and one Redis with AOF that is
//! killed and started again. Nothing acknowledged is lost and nothing runs twice: the upstream
//! counts executions per approval id.

mod common;

use std::time::{Duration, Instant};

use common::redis_ha::{RedisHa, RestartableRedis};
use common::{http_client, json_body, EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";
/// Longer than a sweep (1 s) plus an execution: a second execution would land inside it.
const QUIET: Duration = Duration::from_millis(2500);

const POLICY: &str = r#"
[[rule]]
name = "deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "1s"
expires = "5m"

[[rule]]
name = "held"
path_prefix = "/held"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "60s"
expires = "5m"
"#;

struct Cluster {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    replicas: Vec<Proxy>,
    requester: String,
}

impl Cluster {
    async fn start(store: &str, names: &[&str]) -> Cluster {
        Self::start_with(store, names, "1s").await
    }

    /// Like [`Cluster::start`], with holders' safety re-read every `recheck`.
    async fn start_with(store: &str, names: &[&str], recheck: &str) -> Cluster {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        dir.write("policies/approvals.toml", POLICY);
        dir.write("signing.pem", common::signing_key_pem());
        let config = format!(
            "{}\n[approvals]\nstore = \"{store}\"\naudit_log = \"{{{{dir}}}}/audit-@NAME@.jsonl\"\n\
             signing_key = \"file:signing.pem\"\nmax_pending_per_requester = 1000\nrecheck = \"{recheck}\"\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        );
        let mut replicas = Vec::new();
        for name in names {
            let text = config.replace("@NAME@", name);
            let mut p = Proxy::start_named(&dir, &format!("{name}.toml"), &text).await;
            p.wait_ready().await;
            replicas.push(p);
        }
        let requester = issuer.token(
            "svc-deployer",
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        );
        Cluster {
            dir,
            issuer,
            echo,
            replicas,
            requester,
        }
    }

    fn alice(&self) -> String {
        self.issuer
            .token("alice", AUD, json!({ "email": "alice@example.com" }))
    }

    /// A request answered 202 (`Prefer: respond-async`): its approval id, or the status when
    /// it was not accepted (503 while the store fails over is allowed: then nothing is owed).
    async fn submit(&self, replica: usize, n: usize) -> Result<String, u16> {
        let resp = http_client()
            .post(format!("{}/deploy/{n}", self.replicas[replica].data_url()))
            .timeout(Duration::from_secs(20))
            .bearer_auth(&self.requester)
            .header("prefer", "respond-async")
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await
            .expect("data-plane request");
        let status = resp.status().as_u16();
        if status != 202 {
            return Err(status);
        }
        Ok(resp
            .headers()
            .get("countersign-approval-id")
            .and_then(|v| v.to_str().ok())
            .expect("202 names the approval")
            .to_owned())
    }

    /// Approves `id` on `replica`, retrying while the store answers 503 (a failover in
    /// progress), for up to `within`. Panics on any other refusal.
    async fn approve(&self, replica: usize, id: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let resp = http_client()
                .post(format!(
                    "{}/approvals/{id}/decision",
                    self.replicas[replica].control_url()
                ))
                .bearer_auth(self.alice())
                .json(&json!({ "decision": "approve" }))
                .send()
                .await
                .expect("POST decision");
            let status = resp.status().as_u16();
            let body: Value = json_body(resp).await;
            if status == 200 {
                return;
            }
            assert!(
                status == 503 && Instant::now() < deadline,
                "approve {id}: {status} {body}\nreplica stderr:\n{}",
                self.replicas[replica].stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls `/approvals/{id}/result` until the parked answer is there.
    async fn result(&self, replica: usize, id: &str, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            let resp = http_client()
                .get(format!(
                    "{}/approvals/{id}/result",
                    self.replicas[replica].control_url()
                ))
                .bearer_auth(&self.requester)
                .send()
                .await
                .expect("GET result");
            let status = resp.status().as_u16();
            if status != 202 && status != 503 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "result of {id} still {status} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every replica's audit log verifies with `countersign audit verify`.
    fn audit_logs_verify(&self, names: &[&str]) {
        for name in names {
            let path = self.dir.join(format!("audit-{name}.jsonl"));
            let out = common::countersign(&["audit", "verify", &path.display().to_string()]);
            assert!(
                out.status.success(),
                "audit log of {name} does not verify: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_no_approval_and_runs_none_twice() {
    let mut ha = RedisHa::start();
    let first_master = ha.master.port();
    let c = Cluster::start(&ha.url(), &["a", "b"]).await;

    // Before the failover: six pending approvals; three of them approved and executed.
    let mut accepted = Vec::new();
    for n in 0..6 {
        accepted.push(c.submit(n % 2, n).await.expect("202 before the failover"));
    }
    for id in &accepted[..3] {
        c.approve(0, id, Duration::from_secs(5)).await;
        assert_eq!(c.result(1, id, Duration::from_secs(15)).await, 200);
    }

    // Load on the store while the master dies: new approvals keep coming on both replicas.
    let load = {
        let ids = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        (ids, refused, stop)
    };
    let (ids, refused, stop) = (load.0.clone(), load.1.clone(), load.2.clone());
    let urls: Vec<String> = c.replicas.iter().map(Proxy::data_url).collect();
    let token = c.requester.clone();
    let driver = tokio::spawn(async move {
        let mut n = 100;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let resp = http_client()
                .post(format!("{}/deploy/{n}", urls[n % 2]))
                .timeout(Duration::from_secs(20))
                .bearer_auth(&token)
                .header("prefer", "respond-async")
                .body(format!("{{\"n\":{n}}}"))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().as_u16() == 202 => {
                    let id = r
                        .headers()
                        .get("countersign-approval-id")
                        .and_then(|v| v.to_str().ok())
                        .expect("202 names the approval")
                        .to_owned();
                    ids.lock().await.push(id);
                }
                Ok(r) => {
                    // Fail closed during the failover: 503, never a silent 200.
                    assert_eq!(r.status().as_u16(), 503, "during the failover");
                    refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) => panic!("request failed: {e}"),
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    ha.master.kill();
    ha.wait_master(ha.replica.port(), Duration::from_secs(30));
    // The old master comes back empty, as a replica of the new master (a node without
    // persistence must not restart as a master), and writes (which wait for a replica) go
    // through again.
    ha.master.start_replica_of(ha.replica.port());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ha
        .master
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(
            Instant::now() < deadline,
            "the old master never rejoined as a replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(ha.current_master_port(), Some(first_master));
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.2.store(true, std::sync::atomic::Ordering::SeqCst);
    driver.await.expect("load driver");
    let during: Vec<String> = load.0.lock().await.clone();
    assert!(
        !during.is_empty(),
        "no approval was accepted around the failover"
    );

    // Every approval ever answered 202 is still there: approve each on the other replica and
    // see it executed exactly once; the three executed before are not executed again.
    let pending: Vec<String> = accepted[3..].iter().chain(&during).cloned().collect();
    for id in &pending {
        c.approve(1, id, Duration::from_secs(30)).await;
    }
    for id in &pending {
        assert_eq!(c.result(0, id, Duration::from_secs(30)).await, 200, "{id}");
    }
    for id in accepted.iter().chain(&during) {
        assert_eq!(
            c.echo.executions_of(id, Duration::ZERO).await,
            1,
            "approval {id} executed once"
        );
    }
    tokio::time::sleep(QUIET).await;
    for id in accepted.iter().chain(&during) {
        assert_eq!(
            c.echo.executions_of(id, Duration::ZERO).await,
            1,
            "approval {id} executed again after the failover"
        );
    }
    assert_eq!(
        c.echo.count(),
        accepted.len() + during.len(),
        "nothing else reached the upstream"
    );
    c.audit_logs_verify(&["a", "b"]);
    eprintln!(
        "failover: {} accepted before, {} accepted around the kill, {} refused with 503",
        accepted.len(),
        during.len(),
        load.1.load(std::sync::atomic::Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_redis_restarted_with_its_append_only_file_keeps_pending_approvals() {
    let mut redis = RestartableRedis::start(true);
    let c = Cluster::start(&redis.url(), &["a"]).await;
    let id = c.submit(0, 1).await.expect("202");

    redis.node.kill();
    redis.node.start();

    c.approve(0, &id, Duration::from_secs(15)).await;
    assert_eq!(c.result(0, &id, Duration::from_secs(15)).await, 200);
    assert_eq!(c.echo.executions_of(&id, QUIET).await, 1);
}

/// A caller held on replica 0 (`/held`, hold 60 s); returns once it is pending.
async fn hold(c: &Cluster) -> tokio::task::JoinHandle<(u16, String)> {
    let url = format!("{}/held/1", c.replicas[0].data_url());
    let token = c.requester.clone();
    let held = tokio::spawn(async move {
        let resp = http_client()
            .post(url)
            .timeout(Duration::from_secs(60))
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .expect("held request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.dir.read("audit-a.jsonl").contains("approval.requested") {
        assert!(Instant::now() < deadline, "never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held
}

#[tokio::test]
async fn a_redis_restarted_without_its_data_fails_held_callers_closed_and_says_so() {
    let mut redis = RestartableRedis::start(false);
    // No safety re-read during the test: the held caller learns only because the replica,
    // back on Redis, wakes every waiter once.
    let c = Cluster::start_with(&redis.url(), &["a"], "1h").await;
    let held = hold(&c).await;
    let audit = || c.dir.read("audit-a.jsonl");

    // Redis dies and comes back empty: the held approval is gone.
    redis.node.kill();
    redis.node.start();

    let (status, body) = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the held caller is answered")
        .expect("held task");
    assert_eq!(status, 503, "a lost approval fails closed: {body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !audit().contains("\"store.reset\"") {
        assert!(
            Instant::now() < deadline,
            "store.reset never audited:\n{}\nstderr:\n{}",
            audit(),
            c.replicas[0].stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(c.echo.count(), 0, "nothing reached the upstream");
    c.audit_logs_verify(&["a"]);
}

#[tokio::test]
async fn a_held_approval_that_vanished_from_redis_is_answered_503_and_audited_as_lost() {
    let redis = RestartableRedis::start(false);
    let c = Cluster::start(&redis.url(), &["a"]).await;
    let held = hold(&c).await;
    // Someone (or an eviction policy) deletes everything while the caller is held.
    assert_eq!(redis.node.cli(&["FLUSHALL"]).trim(), "OK");

    let (status, body) = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the held caller is answered at its next re-read")
        .expect("held task");
    assert_eq!(status, 503, "a lost approval fails closed: {body}");
    let log = c.dir.read("audit-a.jsonl");
    assert!(log.contains("\"record.lost\""), "{log}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(c.echo.count(), 0, "nothing reached the upstream");
    c.audit_logs_verify(&["a"]);
}
