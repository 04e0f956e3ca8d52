//! Someone who can write Redis cannot make Countersign send anything (SPEC 8, issue 10 finding
//! 4): the real binary on a real `redis-server`, with records edited by `redis-cli` between the
//! hold and the decision. Every case asserts the upstream receives nothing, and what the
//! operator and the caller see.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_client, json_body, EchoUpstream, LocalIssuer, Proxy, RedisServer, TestDir};
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";
/// Longer than the sweep interval (1 s) plus an execution: a late execution would land inside.
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
"#;

struct Env {
    redis: RedisServer,
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
}

impl Env {
    async fn start() -> Env {
        let redis = RedisServer::start();
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        dir.write("policies/approvals.toml", POLICY);
        dir.write("signing.pem", common::signing_key_pem());
        let config = format!(
            "{}\n[approvals]\nstore = \"{}\"\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\
             signing_key = \"file:signing.pem\"\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            redis.url(),
        );
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        Env {
            redis,
            dir,
            issuer,
            echo,
            proxy,
        }
    }

    fn token(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    /// A POST on the approve rule with `Prefer: respond-async`: the approval id from the 202.
    async fn submit_async(&self, path: &str) -> String {
        self.submit_async_as(path, &self.token("svc-deployer"))
            .await
    }

    /// Like [`Env::submit_async`] with the requester's bearer `token`.
    async fn submit_async_as(&self, path: &str, token: &str) -> String {
        let resp = http_client()
            .post(format!("{}{path}", self.proxy.data_url()))
            .bearer_auth(token)
            .header("prefer", "respond-async")
            .body(r#"{"image":"api:42"}"#)
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 202);
        json_body(resp).await["approval_id"]
            .as_str()
            .expect("approval_id")
            .to_owned()
    }

    async fn approve(&self, id: &str, who: &str) -> (u16, Value) {
        let resp = http_client()
            .post(format!(
                "{}/approvals/{id}/decision",
                self.proxy.control_url()
            ))
            .bearer_auth(self.token(who))
            .json(&json!({ "decision": "approve" }))
            .send()
            .await
            .expect("POST decision");
        (resp.status().as_u16(), json_body(resp).await)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.redis.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// Audit events of `kind` for approval `id`.
    fn audited(&self, id: &str, kind: &str) -> Vec<Value> {
        self.dir
            .read("audit.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == kind && e["approval_id"] == id)
            .collect()
    }

    /// Waits until the audit log has an event of `kind` for `id`.
    async fn wait_audited(&self, id: &str, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.audited(id, kind).pop() {
                return e;
            }
            assert!(Instant::now() < deadline, "no {kind} for {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Upstream calls after a quiet window in which a late execution would land.
    async fn settled_upstream_calls(&self) -> usize {
        tokio::time::sleep(QUIET).await;
        self.echo.count()
    }
}

#[tokio::test]
async fn an_edited_stored_request_is_refused_audited_and_never_sent() {
    let env = Env::start().await;
    let id = env.submit_async("/deploy/prod").await;
    // Point the approved request somewhere else, keeping the record's MAC.
    let key = format!("cs:req:{id}");
    let raw = env.cli(&["GET", &key]);
    assert!(raw.starts_with("m1."), "the record is sealed: {raw}");
    let edited = raw.replace("/deploy/prod", "/deploy/everything");
    assert_ne!(raw, edited);
    env.cli(&["SET", &key, &edited]);

    let (status, vote) = env.approve(&id, "alice").await;
    assert_eq!(status, 200, "{vote}");
    let failed = env.wait_audited(&id, "request.failed").await;
    let error = failed["details"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("integrity check"), "{failed}");
    assert_eq!(env.settled_upstream_calls().await, 0, "nothing was sent");
    assert!(env.audited(&id, "request.forwarded").is_empty());

    // The approval shows the execution as failed to approvers and the requester.
    let detail = json_body(
        http_client()
            .get(format!("{}/approvals/{id}", env.proxy.control_url()))
            .bearer_auth(env.token("alice"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(detail["execution"]["state"], "failed", "{detail}");
}

#[tokio::test]
async fn a_request_moved_from_another_approval_is_refused() {
    let env = Env::start().await;
    let first = env.submit_async("/deploy/staging").await;
    let second = env.submit_async("/deploy/prod").await;
    // Swap in the first approval's (validly sealed) request under the second id.
    let other = env.cli(&["GET", &format!("cs:req:{first}")]);
    env.cli(&["SET", &format!("cs:req:{second}"), &other]);
    let (status, vote) = env.approve(&second, "alice").await;
    assert_eq!(status, 200, "{vote}");
    let failed = env.wait_audited(&second, "request.failed").await;
    assert!(
        failed["details"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("integrity check"),
        "{failed}"
    );
    assert_eq!(env.settled_upstream_calls().await, 0);
}

#[tokio::test]
async fn an_approval_marked_approved_by_hand_never_runs() {
    let env = Env::start().await;
    let id = env.submit_async("/deploy/prod").await;
    let key = format!("cs:apr:{id}");
    let raw = env.cli(&["HGET", &key, "json"]);
    let forged = raw
        .replace(r#""status":"pending""#, r#""status":"approved""#)
        .replace(r#""held":true"#, r#""held":false"#);
    assert_ne!(raw, forged);
    env.cli(&["HSET", &key, "json", &forged]);
    assert_eq!(
        env.settled_upstream_calls().await,
        0,
        "the sweep skipped it"
    );

    // Whoever reads it by id is refused, and the operator hears of it.
    let resp = http_client()
        .get(format!("{}/approvals/{id}/result", env.proxy.control_url()))
        .bearer_auth(env.token("svc-deployer"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "{}", resp.text().await.unwrap());
    let (status, _) = env.approve(&id, "alice").await;
    assert_eq!(status, 503, "a vote on a tampered record is refused");
    assert_eq!(env.settled_upstream_calls().await, 0);
}

#[tokio::test]
async fn a_held_caller_whose_record_is_tampered_gets_503_and_it_is_audited() {
    let env = Env::start().await;
    let token = env.token("svc-deployer");
    let url = format!("{}/deploy/prod", env.proxy.data_url());
    let held = tokio::spawn(async move {
        let resp = http_client()
            .post(url)
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .expect("held POST");
        resp.status().as_u16()
    });
    // Wait for the hold, then forge a quorum in the record.
    let id = loop {
        let keys = env.cli(&["KEYS", "cs:apr:*"]);
        if let Some(k) = keys.lines().next().filter(|k| !k.is_empty()) {
            break k.trim_start_matches("cs:apr:").to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let key = format!("cs:apr:{id}");
    let raw = env.cli(&["HGET", &key, "json"]);
    let forged = raw.replace(r#""status":"pending""#, r#""status":"approved""#);
    env.cli(&["HSET", &key, "json", &forged]);
    // Wake the holder as a replica's write would.
    env.cli(&["PUBLISH", "cs:changes", &id]);
    let status = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("held caller answered")
        .unwrap();
    assert_eq!(status, 503);
    let tampered = env.wait_audited(&id, "record.tampered").await;
    assert!(
        tampered["details"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("MAC"),
        "{tampered}"
    );
    assert_eq!(env.settled_upstream_calls().await, 0);
}

#[tokio::test]
async fn credentials_are_encrypted_in_redis_and_replayed_intact() {
    let env = Env::start().await;
    let token = env.token("svc-deployer");
    let id = env.submit_async_as("/deploy/prod", &token).await;
    let raw = env.cli(&["GET", &format!("cs:req:{id}")]);
    let payload = token.split('.').nth(1).expect("JWT payload");
    assert!(!raw.contains(payload), "bearer token in clear text");
    let (status, vote) = env.approve(&id, "alice").await;
    assert_eq!(status, 200, "{vote}");
    env.wait_audited(&id, "request.forwarded").await;
    let sent = env.echo.last().expect("the approved request was sent");
    assert_eq!(
        sent.header("authorization").map(str::to_owned),
        Some(format!("Bearer {token}")),
        "the replayed credential is the caller's, decrypted"
    );
}
