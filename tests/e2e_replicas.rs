//! Two replicas of the real binary sharing one real `redis-server` (SPEC 7, issue 5): a request
//! held on replica A is released by a decision on replica B; an async request runs exactly once
//! with both replicas' background sweeps racing; a replica dying while it holds a caller gets
//! that request cancelled (`holder_lost`, issue 13) and never run, while one that answered 202
//! before dying leaves it to run once on another; Redis paused fails approval routes closed
//! while allow routes keep working.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_client, json_body, EchoUpstream, LocalIssuer, Proxy, RedisServer, TestDir};
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";
const REQUESTER: &str = "svc-deployer";
/// Longer than the sweep interval (1 s) plus a background execution: a second execution by any
/// replica would land inside it.
const QUIET: Duration = Duration::from_millis(2500);

const POLICY: &str = r#"
[[rule]]
name = "deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
hold = "30s"
expires = "1m"

[[rule]]
name = "short"
path_prefix = "/short"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "3s"
expires = "3s"

[[rule]]
name = "three-keys"
path_prefix = "/quorum"
action = "approve"
[rule.approval]
approvers = [
  "a0@example.com", "a1@example.com", "a2@example.com", "a3@example.com", "a4@example.com",
  "a5@example.com", "a6@example.com", "a7@example.com", "a8@example.com",
]
quorum = 3
hold = "30s"
expires = "1m"

[[rule]]
name = "open"
path_prefix = "/open"
action = "allow"
"#;

/// Holders re-read on their own only every hour (issue 9): a held caller on one replica is
/// released by a decision on another only through Redis pub/sub, never by polling.
const RECHECK: &str = "recheck = \"1h\"\n";

/// Replicas A and B: same config (store, issuer, signing key) except ports and audit log.
struct Cluster {
    redis: RedisServer,
    dir: TestDir,
    /// Config text with `@NAME@` for the replica's name.
    config: String,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    a: Proxy,
    b: Proxy,
    requester: String,
}

/// Starts replica `name` from the shared config and waits until it is ready.
async fn replica(dir: &TestDir, config: &str, name: &str) -> Proxy {
    let text = config.replace("@NAME@", name);
    let mut p = Proxy::start_named(dir, &format!("{name}.toml"), &text).await;
    p.wait_ready().await;
    p
}

impl Cluster {
    /// One more replica with the same config.
    async fn extra_replica(&self, name: &str) -> Proxy {
        replica(&self.dir, &self.config, name).await
    }

    async fn start() -> Cluster {
        let redis = RedisServer::start();
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        dir.write("policies/approvals.toml", POLICY);
        dir.write("signing.pem", common::signing_key_pem());
        let config = format!(
            "{}\n[approvals]\nstore = \"{}\"\naudit_log = \"{{{{dir}}}}/audit-@NAME@.jsonl\"\n\
             signing_key = \"file:signing.pem\"\n{RECHECK}",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            redis.url(),
        );
        let a = replica(&dir, &config, "a").await;
        let b = replica(&dir, &config, "b").await;
        let requester = issuer.token(
            REQUESTER,
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        );
        Cluster {
            redis,
            dir,
            config,
            issuer,
            echo,
            a,
            b,
            requester,
        }
    }

    fn person(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    /// Starts a data-plane request on `proxy` as the requester (it may be held).
    fn send(
        &self,
        proxy: &Proxy,
        path: &str,
        prefer_async: bool,
    ) -> tokio::task::JoinHandle<Result<(u16, String), reqwest::Error>> {
        let mut req = http_client()
            .post(format!("{}{path}", proxy.data_url()))
            .timeout(Duration::from_secs(45))
            .bearer_auth(&self.requester)
            .body("{\"image\":\"api:42\"}");
        if prefer_async {
            req = req.header("prefer", "respond-async");
        }
        tokio::spawn(async move {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().await?))
        })
    }

    /// Waits until `proxy`'s control plane lists exactly one pending approval; returns its id.
    async fn pending_id(&self, proxy: &Proxy) -> String {
        self.pending_id_as(proxy, "alice").await
    }

    /// Like [`Cluster::pending_id`], listing as approver `name`.
    async fn pending_id_as(&self, proxy: &Proxy, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = json_body(
                http_client()
                    .get(format!("{}/approvals", proxy.control_url()))
                    .bearer_auth(self.person(name))
                    .header("accept", "application/json")
                    .send()
                    .await
                    .expect("GET /approvals"),
            )
            .await;
            let pending: Vec<&Value> = list["approvals"]
                .as_array()
                .expect("approvals array")
                .iter()
                .filter(|a| a["status"] == "pending")
                .collect();
            if let [one] = pending.as_slice() {
                return one["approval_id"].as_str().expect("approval_id").to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no single pending approval: {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /approvals/{id}/decision` on `proxy` as alice; returns status and body.
    async fn approve_on(&self, proxy: &Proxy, id: &str) -> (u16, Value) {
        let resp = http_client()
            .post(format!("{}/approvals/{id}/decision", proxy.control_url()))
            .bearer_auth(self.person("alice"))
            .json(&json!({ "decision": "approve", "reason": "ship it" }))
            .send()
            .await
            .expect("POST decision");
        let status = resp.status().as_u16();
        (status, json_body(resp).await)
    }

    /// Polls `/approvals/{id}/result` on `proxy` as the requester until it is not 202.
    async fn wait_result(&self, proxy: &Proxy, id: &str, within: Duration) -> (u16, String) {
        let deadline = Instant::now() + within;
        loop {
            let resp = http_client()
                .get(format!("{}/approvals/{id}/result", proxy.control_url()))
                .bearer_auth(&self.requester)
                .send()
                .await
                .expect("GET result");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("result body");
            // The broker parks a background result before it marks the execution done, so a
            // poller sees 202 (pending or executing) and then the result: never a 404 between.
            if status != 202 {
                return (status, text);
            }
            assert!(
                Instant::now() < deadline,
                "result still 202 after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Upstream calls, counted now (callers ask once the execution has finished: the held
    /// answer or the parked result arrived) and again after a quiet window in which a stray
    /// second execution would land. The two counts must agree.
    async fn settled_upstream_count(&self) -> usize {
        let now = self.echo.count();
        tokio::time::sleep(QUIET).await;
        let later = self.echo.count();
        assert_eq!(now, later, "upstream called again during the quiet window");
        later
    }

    /// Like [`Self::settled_upstream_count`], for the calls that carry approval `id`
    /// (`Countersign-Approval-Id`): how often that one approval was executed.
    async fn executions_of(&self, id: &str) -> usize {
        self.echo.executions_of(id, QUIET).await
    }

    /// The audit events replica `name` recorded for approval `id`, in order.
    fn audit_of(&self, name: &str, id: &str) -> Vec<Value> {
        self.dir
            .read(format!("audit-{name}.jsonl"))
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|e| e["approval_id"] == id)
            .collect()
    }

    /// Polls replica `name`'s audit log until it holds an `event` for `id` (at most `within`);
    /// returns that event and when it was first seen.
    async fn audited(
        &self,
        name: &str,
        id: &str,
        event: &str,
        within: Duration,
    ) -> (Value, Instant) {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .audit_of(name, id)
                .into_iter()
                .find(|e| e["event"] == event);
            if let Some(e) = found {
                return (e, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "no {event} for {id} in audit-{name} within {within:?}: {:?}",
                self.audit_of(name, id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /approvals/{id}` on `proxy` as alice (JSON).
    async fn view(&self, proxy: &Proxy, id: &str) -> Value {
        json_body(
            http_client()
                .get(format!("{}/approvals/{id}", proxy.control_url()))
                .bearer_auth(self.person("alice"))
                .header("accept", "application/json")
                .send()
                .await
                .expect("GET approval"),
        )
        .await
    }

    fn redis_signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.redis.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} redis");
    }
}

async fn joined(
    task: tokio::task::JoinHandle<Result<(u16, String), reqwest::Error>>,
) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("request finished")
        .expect("request task")
        .expect("request answered")
}

#[tokio::test]
async fn held_on_a_approved_on_b_forwards_once() {
    let c = Cluster::start().await;
    let held = c.send(&c.a, "/deploy/prod", false);
    let id = c.pending_id(&c.b).await;
    assert_eq!(c.echo.count(), 0);
    let started = Instant::now();
    let (status, vote) = c.approve_on(&c.b, &id).await;
    assert_eq!(status, 200, "{vote}");
    let (status, body) = joined(held).await;
    assert_eq!(status, 200, "A's held caller: {body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "released by B's decision quickly, took {:?}",
        started.elapsed()
    );
    assert_eq!(c.executions_of(&id).await, 1, "upstream called once");
}

#[tokio::test]
async fn async_on_a_approved_on_b_runs_once_and_result_is_readable_from_b() {
    let c = Cluster::start().await;
    let (status, body) = joined(c.send(&c.a, "/deploy/async", true)).await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("202 JSON")["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    let (status, vote) = c.approve_on(&c.b, &id).await;
    assert_eq!(status, 200, "{vote}");
    let (status, result) = c.wait_result(&c.b, &id, Duration::from_secs(10)).await;
    assert_eq!(status, 200, "parked result read on B: {result}");
    assert!(result.contains("api:42"), "echoed body in {result}");
    let (status, _) = c.wait_result(&c.a, &id, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "and on A");
    assert_eq!(c.executions_of(&id).await, 1, "executed exactly once");
}

#[tokio::test]
async fn concurrent_votes_on_three_replicas_reach_quorum_exactly_once() {
    let c = Cluster::start().await;
    let third = c.extra_replica("c").await;
    let replicas = [&c.a, &c.b, &third];
    let held = c.send(&c.a, "/quorum/prod", false);
    let id = c.pending_id_as(&third, "a0").await;

    let votes = (0..9).map(|i| {
        let url = format!("{}/approvals/{id}/decision", replicas[i % 3].control_url());
        let token = c.person(&format!("a{i}"));
        tokio::spawn(async move {
            let resp = http_client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "decision": "approve" }))
                .send()
                .await
                .expect("POST decision");
            let status = resp.status().as_u16();
            (status, json_body(resp).await)
        })
    });
    let votes: Vec<(u16, Value)> = futures::future::join_all(votes)
        .await
        .into_iter()
        .map(|r| r.expect("vote task"))
        .collect();
    let counted = votes.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        counted, 3,
        "quorum 3: three votes count, the rest are late: {votes:?}"
    );
    for (status, body) in votes.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["error"], "already_decided", "{body}");
    }
    let (status, body) = joined(held).await;
    assert_eq!(status, 200, "{body}");

    let view = json_body(
        http_client()
            .get(format!("{}/approvals/{id}", c.b.control_url()))
            .bearer_auth(c.person("a0"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET approval"),
    )
    .await;
    assert_eq!(view["status"], "approved", "{view}");
    assert_eq!(view["votes"].as_array().map(Vec::len), Some(3), "{view}");
    assert_eq!(c.executions_of(&id).await, 1, "upstream called once");
}

/// Issue 13: a request answered 202 (hold released) runs exactly once, on a surviving replica,
/// within 5 s of its approval, though the replica that took it and answered 202 was killed.
#[tokio::test]
async fn async_request_survives_the_replica_that_took_it() {
    let mut c = Cluster::start().await;
    let (status, body) = joined(c.send(&c.a, "/deploy/async", true)).await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("202 JSON")["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    c.a.send_signal("KILL");
    c.a.wait_exit(Duration::from_secs(5));
    let approved = Instant::now();
    let (status, vote) = c.approve_on(&c.b, &id).await;
    assert_eq!(status, 200, "{vote}");
    let (status, result) = c.wait_result(&c.b, &id, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "executed by B: {result}");
    assert!(
        approved.elapsed() <= Duration::from_secs(5),
        "executed {:?} after the approval",
        approved.elapsed()
    );
    let (forwarded, _) = c
        .audited("b", &id, "request.forwarded", Duration::from_secs(1))
        .await;
    assert_eq!(forwarded["details"]["mode"], "background", "{forwarded}");
    assert_eq!(c.executions_of(&id).await, 1);
    assert!(
        c.audit_of("b", &id)
            .iter()
            .all(|e| e["event"] != "approval.cancelled"),
        "a released hold is never lost"
    );
}

/// Issue 13, the attack: a replica killed while it holds a caller. The caller saw a connection
/// error (and may retry), so the request must never run: a surviving replica's sweep cancels
/// it with reason `holder_lost` within 5 s, approvers are told, and a later approval is
/// refused. Before hold leases were renewed, B executed it after `expires` + 10 s.
#[tokio::test]
async fn replica_killed_while_holding_gets_the_request_cancelled_never_run() {
    let mut c = Cluster::start().await;
    let held = c.send(&c.a, "/deploy/prod", false);
    let id = c.pending_id(&c.b).await;
    // Past one renewal period, so the lease the kill stops is a renewed one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!held.is_finished(), "still held by A");
    let killed = Instant::now();
    c.a.send_signal("KILL");
    c.a.wait_exit(Duration::from_secs(5));
    assert!(joined_err(held).await, "A's caller lost its connection");

    let (cancelled, seen) = c
        .audited("b", &id, "approval.cancelled", Duration::from_secs(10))
        .await;
    eprintln!(
        "holder_lost audited by B {:?} after A was killed",
        seen - killed
    );
    assert!(
        seen - killed <= Duration::from_secs(5),
        "cancelled {:?} after the kill",
        seen - killed
    );
    assert_eq!(cancelled["details"]["reason"], "holder_lost", "{cancelled}");
    assert_eq!(cancelled["actor"], "countersign", "{cancelled}");
    let (notified, _) = c
        .audited("b", &id, "notify.sent", Duration::from_secs(2))
        .await;
    let told: Vec<Value> = c
        .audit_of("b", &id)
        .into_iter()
        .filter(|e| e["event"] == "notify.sent" && e["details"]["notify_event"] == "cancelled")
        .collect();
    assert_eq!(told.len(), 1, "approvers told once: {notified} {told:?}");

    let (status, vote) = c.approve_on(&c.b, &id).await;
    assert_eq!(status, 409, "not pending any more: {vote}");
    assert_eq!(vote["error"], "already_decided", "{vote}");
    let view = c.view(&c.b, &id).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    assert_eq!(c.executions_of(&id).await, 0, "never executed");
    assert_eq!(c.echo.count(), 0, "the upstream received nothing");
}

/// Issue 13, SPEC-silent case: approved while its holder was alive (but stalled), and the
/// holder died before it claimed the execution. The caller never got an answer, so this fails
/// closed like a pending one: cancelled `holder_lost`, never executed by another replica.
#[tokio::test]
async fn approved_request_whose_holder_dies_before_claiming_is_cancelled_not_run() {
    let mut c = Cluster::start().await;
    let held = c.send(&c.a, "/deploy/prod", false);
    let id = c.pending_id(&c.b).await;
    // Past A's first renewal (the lease before it also covers telling approvers).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A stalls (no renewals, no claim), the approval lands while its lease still runs, and
    // then A dies.
    c.a.send_signal("STOP");
    let (status, vote) = c.approve_on(&c.b, &id).await;
    assert_eq!(status, 200, "approved while A's lease ran: {vote}");
    assert_eq!(vote["status"], "approved", "{vote}");
    c.a.send_signal("KILL");
    c.a.wait_exit(Duration::from_secs(5));
    assert!(joined_err(held).await, "A's caller lost its connection");

    let (cancelled, _) = c
        .audited("b", &id, "approval.cancelled", Duration::from_secs(8))
        .await;
    assert_eq!(cancelled["details"]["reason"], "holder_lost", "{cancelled}");
    let events: Vec<Value> = c.audit_of("b", &id);
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let approved_at = names.iter().position(|n| *n == "approval.approved");
    let cancelled_at = names.iter().position(|n| *n == "approval.cancelled");
    assert!(
        approved_at < cancelled_at,
        "approved, then cancelled: {names:?}"
    );
    assert!(!names.contains(&"request.forwarded"), "{names:?}");
    assert_eq!(c.view(&c.b, &id).await["status"], "cancelled");
    assert_eq!(c.executions_of(&id).await, 0, "never executed");
}

/// A holder that stalls past its lease and comes back (SIGSTOP, SIGCONT) finds the request
/// cancelled and tells its caller so (403 `approval_cancelled`): a definite answer, nothing run.
#[tokio::test]
async fn holder_that_stalls_past_its_lease_answers_cancelled() {
    let c = Cluster::start().await;
    let held = c.send(&c.a, "/deploy/prod", false);
    let id = c.pending_id(&c.b).await;
    // Past A's first renewal (the lease before it also covers telling approvers).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.a.send_signal("STOP");
    let stalled = c
        .audited("b", &id, "approval.cancelled", Duration::from_secs(8))
        .await;
    c.a.send_signal("CONT");
    assert_eq!(
        stalled.0["details"]["reason"], "holder_lost",
        "{}",
        stalled.0
    );
    let (status, body) = joined(held).await;
    assert_eq!(status, 403, "{body}");
    let body: Value = serde_json::from_str(&body).expect("error JSON");
    assert_eq!(body["error"], "approval_cancelled", "{body}");
    assert_eq!(c.executions_of(&id).await, 0);
}

/// The lease outlasts a store blip: Redis paused for 1.5 s (A's renewals in that time fail or
/// wait) does not cost A its live caller, who is then approved on B and answered by A.
#[tokio::test]
async fn a_short_redis_pause_does_not_lose_a_live_hold() {
    let c = Cluster::start().await;
    let held = c.send(&c.a, "/deploy/prod", false);
    let id = c.pending_id(&c.b).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.redis_signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.redis_signal("-CONT");
    // Longer than a lease after the pause: a lost hold would be cancelled by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(c.view(&c.b, &id).await["status"], "pending");
    assert!(!held.is_finished(), "still held by A");
    let (status, vote) = c.approve_on(&c.b, &id).await;
    assert_eq!(status, 200, "{vote}");
    let (status, body) = joined(held).await;
    assert_eq!(status, 200, "A answered its caller: {body}");
    assert_eq!(c.executions_of(&id).await, 1);
    assert!(c
        .audit_of("b", &id)
        .iter()
        .all(|e| e["event"] != "approval.cancelled"));
}

async fn joined_err(task: tokio::task::JoinHandle<Result<(u16, String), reqwest::Error>>) -> bool {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("request finished")
        .expect("request task")
        .is_err()
}

#[tokio::test]
async fn redis_paused_fails_approval_routes_closed_and_recovers() {
    let c = Cluster::start().await;
    c.redis_signal("-STOP");
    let (status, body) = joined(c.send(&c.a, "/deploy/prod", false)).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).expect("error JSON");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    let open = http_client()
        .get(format!("{}/open/health", c.b.data_url()))
        .bearer_auth(&c.requester)
        .send()
        .await
        .expect("allow route");
    assert_eq!(open.status(), 200, "allow routes keep working");
    let ready = http_client()
        .get(format!("{}/readyz", c.b.control_url()))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "/readyz reports the unreachable store");
    c.redis_signal("-CONT");

    // Recovered: the approval flow works again across replicas.
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let held = c.send(&c.a, "/deploy/again", false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if held.is_finished() {
            let (status, body) = joined(held).await;
            assert_eq!(status, 503, "only store errors while recovering: {body}");
            assert!(Instant::now() < deadline, "no recovery after 10 s");
            continue;
        }
        break (c.pending_id(&c.b).await, held);
    };
    let (id, held) = id;
    let (status, vote) = c.approve_on(&c.b, &id).await;
    assert_eq!(status, 200, "{vote}");
    assert_eq!(joined(held).await.0, 200);
    assert_eq!(
        c.settled_upstream_count().await,
        2,
        "the open call and the approved one"
    );
}

#[tokio::test]
async fn store_password_from_a_file_reaches_a_password_protected_redis() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cr3t-pw"]);
    let dir = TestDir::new();
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    dir.write("policies/approvals.toml", POLICY);
    dir.write("redis-password", "s3cr3t-pw\n");
    dir.write("signing.pem", common::signing_key_pem());
    let config = format!(
        "{}\n[approvals]\nstore = \"{}\"\nstore_password = \"file:redis-password\"\n\
         signing_key = \"file:signing.pem\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        redis.url(),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    let resp = http_client()
        .post(format!("{}/deploy/x", proxy.data_url()))
        .bearer_auth(issuer.token(
            REQUESTER,
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        ))
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("async request");
    assert_eq!(
        resp.status(),
        202,
        "stored in the protected Redis: {}",
        proxy.stderr()
    );
    let stderr = proxy.stderr();
    assert!(!stderr.contains("s3cr3t-pw"), "password never logged");
}

#[tokio::test]
async fn rediss_store_with_a_private_ca_from_config() {
    let dir = TestDir::new();
    let tls = common::TlsFixture::generate(dir.path(), "redis");
    let tls_port = common::free_port().to_string();
    let path = |p: &std::path::Path| p.display().to_string();
    let (cert, key, ca) = (path(&tls.cert_pem), path(&tls.key_pem), path(&tls.ca_pem));
    let _redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    dir.write("policies/approvals.toml", POLICY);
    dir.write("signing.pem", common::signing_key_pem());
    let config = format!(
        "{}\n[approvals]\nstore = \"rediss://127.0.0.1:{tls_port}/0\"\nstore_ca = \"redis-ca.pem\"\n\
         signing_key = \"file:signing.pem\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    let resp = http_client()
        .post(format!("{}/deploy/x", proxy.data_url()))
        .bearer_auth(issuer.token(
            REQUESTER,
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        ))
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("async request");
    assert_eq!(resp.status(), 202, "stored over TLS: {}", proxy.stderr());
}

#[test]
fn check_rejects_store_password_and_store_ca_without_a_matching_store() {
    let dir = TestDir::new();
    dir.write("policies/approvals.toml", POLICY);
    dir.write("pw", "x\n");
    dir.write("signing.pem", common::signing_key_pem());
    let base = common::basic_config("http://127.0.0.1:9", "https://idp.example", &[AUD])
        .replace("{{listen}}", "127.0.0.1:18080")
        .replace("{{control_listen}}", "127.0.0.1:18081")
        .replace("{{public_url}}", "http://127.0.0.1:18081");
    let cases = [
        (
            "store = \"memory\"\nstore_password = \"file:pw\"",
            "\"store_password\" needs a redis://, rediss:// or redis+sentinel:// \"store\"",
        ),
        (
            "store = \"redis://127.0.0.1:6379/0\"\nstore_ca = \"ca.pem\"",
            "\"store_ca\" needs a rediss:// \"store\"",
        ),
        (
            "store = \"redis://127.0.0.1:6379/0\"",
            "a redis \"store\" needs \"signing_key\"",
        ),
    ];
    for (i, (approvals, want)) in cases.iter().enumerate() {
        let path = dir.write(
            format!("c{i}.toml"),
            format!("{base}\n[approvals]\n{approvals}\n"),
        );
        let out = common::countersign(&["check", "--config", &path.display().to_string()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(want), "{want} in {text}");
    }
    let ok = dir.write(
        "ok.toml",
        format!("{base}\n[approvals]\nstore = \"redis://127.0.0.1:6379/0\"\nstore_password = \"file:pw\"\nsigning_key = \"file:signing.pem\"\n"),
    );
    let out = common::countersign(&["check", "--config", &ok.display().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Click-to-forward latency (approve call sent -> held caller's response received), 50
/// approvals each: memory store (one proxy), Redis on the holding replica, Redis across
/// replicas. Numbers go to `bench/README.md`. Run by hand:
/// `cargo test --test e2e_replicas bench_click_to_forward -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark, run by hand"]
async fn bench_click_to_forward() {
    const N: usize = 50;
    let c = Cluster::start().await;
    let dir = TestDir::new();
    dir.write("policies/approvals.toml", POLICY);
    let config = format!(
        "{}\n[approvals]\nstore = \"memory\"\n",
        common::basic_config(&c.echo.url(), &c.issuer.issuer(), &[AUD]),
    );
    let mut memory = Proxy::start(&dir, &config).await;
    memory.wait_ready().await;

    for (name, holder, approver) in [
        ("memory, one proxy", &memory, &memory),
        ("redis, same replica", &c.a, &c.a),
        ("redis, held on A, approved on B", &c.a, &c.b),
    ] {
        let mut samples = Vec::with_capacity(N);
        for _ in 0..N {
            let held = c.send(holder, "/deploy/bench", false);
            let id = c.pending_id(approver).await;
            let started = Instant::now();
            let (status, vote) = c.approve_on(approver, &id).await;
            assert_eq!(status, 200, "{vote}");
            assert_eq!(joined(held).await.0, 200);
            samples.push(started.elapsed());
        }
        samples.sort();
        let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
        println!(
            "{name}: n={N} p50={:.1} ms p99={:.1} ms max={:.1} ms",
            pct(50).as_secs_f64() * 1e3,
            pct(99).as_secs_f64() * 1e3,
            samples[N - 1].as_secs_f64() * 1e3,
        );
    }
}
