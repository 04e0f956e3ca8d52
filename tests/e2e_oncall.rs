//! On-call approvers end to end (SPEC 9, issue 11 item 5), through the real `countersign`
//! binary: `approvers = ["pagerduty:S1"]` is resolved when a request is created through a fake
//! PagerDuty REST API v2 (`tests/common/fake_pagerduty.rs`), cached briefly, and fails closed:
//! an entry PagerDuty cannot answer for counts nobody, is audited, and the API token never
//! shows in the audit log or the logs.

mod common;

use std::time::{Duration, Instant};

use common::fake_pagerduty::{FakePagerDuty, PD_TOKEN};
use common::{http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::{json, Value};

/// Audience of every token.
const AUD: &str = "https://deploy.example.com";

/// `/oncall` needs whoever is on call in S1; `/mixed` them or carol.
const POLICY: &str = r#"
[[rule]]
name = "on-call"
path_prefix = "/oncall"
action = "approve"
[rule.approval]
approvers = ["pagerduty:S1"]
hold = "20s"
expires = "1m"

[[rule]]
name = "on-call-or-carol"
path_prefix = "/mixed"
action = "approve"
[rule.approval]
approvers = ["pagerduty:S1", "carol@example.com"]
hold = "20s"
expires = "1m"
"#;

struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
    requester: String,
}

impl Env {
    /// A proxy whose `[pagerduty]` points at `api_url` with token file contents `token`.
    async fn start(api_url: &str, token: &str, cache: &str) -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        dir.write("policies/oncall.toml", POLICY);
        dir.write("pd-token", format!("{token}\n"));
        let config = format!(
            "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n\
             [pagerduty]\napi_token = \"file:pd-token\"\napi_url = \"{api_url}\"\ncache = \"{cache}\"\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        );
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        let requester = issuer.token(
            "svc-deployer",
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        );
        Env {
            dir,
            issuer,
            echo,
            proxy,
            requester,
        }
    }

    fn person(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    /// Sends a data-plane request (held unless `prefer` says otherwise) in the background.
    fn send(&self, path: &str, prefer: Option<&str>) -> tokio::task::JoinHandle<(u16, Value)> {
        let mut req = http_client()
            .post(format!("{}{path}", self.proxy.data_url()))
            .bearer_auth(&self.requester)
            .body("{}");
        if let Some(p) = prefer {
            req = req.header("prefer", p);
        }
        tokio::spawn(async move {
            let resp = req.send().await.expect("data-plane request");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    /// The one pending approval `approver` sees.
    async fn pending_id(&self, approver: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list: Value = http_client()
                .get(format!("{}/approvals", self.proxy.control_url()))
                .bearer_auth(self.person(approver))
                .header("accept", "application/json")
                .send()
                .await
                .expect("GET /approvals")
                .json()
                .await
                .expect("JSON list");
            let pending: Vec<&Value> = list["approvals"]
                .as_array()
                .expect("approvals array")
                .iter()
                .filter(|a| a["status"] == "pending")
                .collect();
            if let [one] = pending.as_slice() {
                return one["approval_id"].as_str().expect("id").to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no pending approval for {approver}: {list}\n{}",
                self.proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The JSON view of approval `id` as `viewer`.
    async fn view(&self, id: &str, viewer: &str) -> Value {
        http_client()
            .get(format!("{}/approvals/{id}", self.proxy.control_url()))
            .bearer_auth(self.person(viewer))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET approval")
            .json()
            .await
            .expect("JSON view")
    }

    /// `POST /approvals/{id}/decision` as `who`: (status, body).
    async fn decide(&self, id: &str, who: &str, decision: &str) -> (u16, Value) {
        let resp = http_client()
            .post(format!(
                "{}/approvals/{id}/decision",
                self.proxy.control_url()
            ))
            .bearer_auth(self.person(who))
            .json(&json!({ "decision": decision, "reason": "on call" }))
            .send()
            .await
            .expect("POST decision");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Audit events of kind `kind`.
    fn audited(&self, kind: &str) -> Vec<Value> {
        self.dir
            .read("audit.jsonl")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// Neither the audit log nor the proxy's stderr holds the PagerDuty token.
    fn assert_token_kept_secret(&self) {
        assert!(
            !self.dir.read("audit.jsonl").contains(PD_TOKEN),
            "the PagerDuty token leaked into the audit log"
        );
        assert!(
            !self.proxy.stderr().contains(PD_TOKEN),
            "the PagerDuty token leaked into stderr"
        );
    }
}

async fn joined(task: tokio::task::JoinHandle<(u16, Value)>) -> (u16, Value) {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("request finished within 30 s")
        .expect("request task")
}

/// The one `approvers.unresolved` event's `error`, after checking rule and entry.
fn unresolved_error(env: &Env, rule: &str) -> String {
    let events = env.audited("approvers.unresolved");
    assert_eq!(events.len(), 1, "one approvers.unresolved: {events:?}");
    let e = &events[0];
    assert_eq!(e["rule"], rule, "{e}");
    assert!(
        e["request_id"].is_string(),
        "the data-plane request id: {e}"
    );
    assert_eq!(e["details"]["entry"], "pagerduty:S1", "{e}");
    e["details"]["error"].as_str().expect("error").to_owned()
}

#[tokio::test]
async fn the_person_on_call_approves_and_nobody_else_may() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P123", "Alice", "Alice@Example.com")]);
    let env = Env::start(&pd.url(), PD_TOKEN, "1m").await;

    let held = env.send("/oncall/deploy", None);
    let id = env.pending_id("alice").await;
    let view = env.view(&id, "alice").await;
    assert_eq!(view["approvers"], json!(["alice@example.com"]), "{view}");

    let (status, body) = env.decide(&id, "bob", "approve").await;
    assert_eq!(status, 403, "bob is not on call: {body}");
    assert_eq!(body["error"], "not_an_approver", "{body}");

    let (status, body) = env.decide(&id, "alice", "approve").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = joined(held).await;
    assert_eq!(status, 200, "the held caller gets the upstream's answer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.echo.count(), 1, "forwarded exactly once");

    // PagerDuty was asked as its REST API v2 expects: one schedule, the token, the v2 type.
    assert_eq!(pd.asked(), vec![vec!["S1".to_owned()]]);
    assert_eq!(pd.unauthorized(), 0);
    assert_eq!(
        pd.last_accept().as_deref(),
        Some("application/vnd.pagerduty+json;version=2")
    );
    // Alice is on call at two escalation levels: her email is looked up once.
    assert_eq!(pd.users_calls(), 1);
    assert!(env.audited("approvers.unresolved").is_empty());
    // The audit log fixes who could approve, as resolved at creation.
    let requested = env.audited("approval.requested");
    assert_eq!(
        requested[0]["details"]["approvers"], "alice@example.com",
        "{requested:?}"
    );
    env.assert_token_kept_secret();
}

#[tokio::test]
async fn pagerduty_answering_500_means_nobody_and_the_request_is_refused() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P123", "Alice", "alice@example.com")]);
    pd.set_fault(Some(500));
    let env = Env::start(&pd.url(), PD_TOKEN, "1m").await;

    let (status, body) = joined(env.send("/oncall/deploy", None)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "approval_unsatisfiable", "{body}");
    let error = unresolved_error(&env, "on-call");
    assert!(error.contains("500"), "{error}");
    assert!(env.audited("approval.requested").is_empty());

    // A failure is not cached: once PagerDuty recovers, the next request resolves.
    pd.set_fault(None);
    let held = env.send("/oncall/deploy", None);
    let id = env.pending_id("alice").await;
    let (status, _) = env.decide(&id, "alice", "approve").await;
    assert_eq!(status, 200);
    assert_eq!(joined(held).await.0, 200);
    assert_eq!(
        env.echo.count(),
        1,
        "only the resolved request reached upstream"
    );
    env.assert_token_kept_secret();
}

#[tokio::test]
async fn unreachable_pagerduty_leaves_the_other_approvers_to_decide() {
    // Port 1 refuses connections (a port free a moment ago could be taken by another test).
    let down = "http://127.0.0.1:1".to_owned();
    let env = Env::start(&down, PD_TOKEN, "1m").await;

    let held = env.send("/mixed/deploy", None);
    let id = env.pending_id("carol").await;
    let view = env.view(&id, "carol").await;
    assert_eq!(view["approvers"], json!(["carol@example.com"]), "{view}");
    let error = unresolved_error(&env, "on-call-or-carol");
    assert!(error.contains("GET /oncalls"), "{error}");

    let (status, body) = env.decide(&id, "alice", "approve").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "not_an_approver", "{body}");
    let (status, _) = env.decide(&id, "carol", "approve").await;
    assert_eq!(status, 200);
    assert_eq!(joined(held).await.0, 200);
    assert_eq!(env.echo.count(), 1);
    env.assert_token_kept_secret();
}

#[tokio::test]
async fn a_wrong_token_is_refused_by_pagerduty_and_counts_nobody() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P123", "Alice", "alice@example.com")]);
    let env = Env::start(&pd.url(), "u+SomeOtherToken", "1m").await;

    let (status, body) = joined(env.send("/oncall/deploy", None)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "approval_unsatisfiable", "{body}");
    assert_eq!(pd.unauthorized(), 1);
    let error = unresolved_error(&env, "on-call");
    assert!(error.contains("401"), "{error}");
    assert!(!env.dir.read("audit.jsonl").contains("SomeOtherToken"));
    assert!(!env.proxy.stderr().contains("SomeOtherToken"));
}

#[tokio::test]
async fn slow_pagerduty_is_given_up_on_after_three_seconds() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P123", "Alice", "alice@example.com")]);
    pd.set_latency(Duration::from_secs(8));
    let env = Env::start(&pd.url(), PD_TOKEN, "1m").await;

    let started = Instant::now();
    let (status, body) = joined(env.send("/oncall/deploy", None)).await;
    let took = started.elapsed();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "approval_unsatisfiable", "{body}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "refused after {took:?}"
    );
    let error = unresolved_error(&env, "on-call");
    assert!(error.contains("within 3000 ms"), "{error}");
}

#[tokio::test]
async fn two_requests_within_the_cache_window_ask_pagerduty_once() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P123", "Alice", "alice@example.com")]);
    let env = Env::start(&pd.url(), PD_TOKEN, "1m").await;

    for _ in 0..2 {
        let (status, body) = joined(env.send("/oncall/deploy", Some("respond-async"))).await;
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(
        pd.oncalls_calls(),
        1,
        "the second request used the cached answer"
    );
    assert_eq!(pd.users_calls(), 1);
}

#[tokio::test]
async fn without_a_cache_every_request_asks_and_sees_a_handover() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P123", "Alice", "alice@example.com")]);
    let env = Env::start(&pd.url(), PD_TOKEN, "0s").await;

    let (status, first) = joined(env.send("/oncall/a", Some("respond-async"))).await;
    assert_eq!(status, 202, "{first}");
    pd.set_on_call("S1", &[("P456", "Dan", "dan@example.com")]);
    let (status, second) = joined(env.send("/oncall/b", Some("respond-async"))).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(pd.oncalls_calls(), 2);

    // Each approval keeps who was on call when it was created.
    let first = first["approval_id"].as_str().expect("id");
    let second = second["approval_id"].as_str().expect("id");
    assert_eq!(
        env.view(first, "alice").await["approvers"],
        json!(["alice@example.com"])
    );
    assert_eq!(
        env.view(second, "dan").await["approvers"],
        json!(["dan@example.com"])
    );
    let (status, body) = env.decide(first, "dan", "approve").await;
    assert_eq!(status, 403, "dan was not on call for the first: {body}");
}
