//! Governed break-glass end to end (SPEC 9), through the real `countersign` binary and HTTP
//! only: `Countersign-Break-Glass: <reason>` on a `break_glass = true` rule is forwarded at
//! once with `"break_glass": true` in `Countersign-Approval`, audited before it is forwarded,
//! announced to approvers, listed as `review` until an approver acknowledges it, limited by
//! `break_glass_cooldown`, and an ordinary stripped header everywhere else.

mod common;

use std::time::{Duration, Instant};

use common::{
    countersign, http_client, verified_claims, EchoUpstream, LocalIssuer, Proxy, Reply, TestDir,
};
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";

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
name = "emergency"
path_prefix = "/emergency"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
hold = "30s"
expires = "1m"
break_glass = true

[[rule]]
name = "cooled"
path_prefix = "/cooled"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "30s"
expires = "1m"
break_glass = true
break_glass_cooldown = "1h"

[[rule]]
name = "cooled-too"
path_prefix = "/also-cooled"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "30s"
expires = "1m"
break_glass = true
break_glass_cooldown = "1h"
"#;

struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
}

impl Env {
    async fn start() -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        dir.write("policies/approvals.toml", POLICY);
        let config = format!(
            "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        );
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        Env {
            dir,
            issuer,
            echo,
            proxy,
        }
    }

    /// A token for a person `name` with email `name@example.com`.
    fn person(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    fn control(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.control_url())
    }

    /// A data-plane POST as `who` with `headers`, read whole.
    async fn post(&self, who: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        post_to(&self.proxy.data_url(), &self.person(who), path, headers).await
    }

    async fn view(&self, id: &str, viewer: &str) -> Value {
        let resp = http_client()
            .get(self.control(&format!("/approvals/{id}")))
            .bearer_auth(self.person(viewer))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET approval");
        let r = Reply::read(resp).await;
        assert_eq!(r.status, 200, "view of {id}: {}", r.text);
        r.json()
    }

    async fn decide(&self, id: &str, who: &str, decision: &str) -> Reply {
        let resp = http_client()
            .post(self.control(&format!("/approvals/{id}/decision")))
            .bearer_auth(self.person(who))
            .json(&json!({ "decision": decision, "reason": "seen" }))
            .send()
            .await
            .expect("POST decision");
        Reply::read(resp).await
    }

    /// Audit events (JSON lines) that mention `id`, in order.
    fn audit_for(&self, id: &str) -> Vec<Value> {
        self.dir
            .read("audit.jsonl")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|e| e["approval_id"] == id)
            .collect()
    }

    async fn metrics(&self) -> String {
        http_client()
            .get(self.control("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn break_glass_is_forwarded_at_once_audited_first_and_stays_in_review_until_acknowledged() {
    let env = Env::start().await;
    let started = Instant::now();
    let r = env
        .post(
            "carol",
            "/emergency/restart",
            &[("countersign-break-glass", "  prod is down, INC-4242  ")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "break-glass is not held (rule hold is 30 s): took {:?}",
        started.elapsed()
    );
    let id = r
        .header("countersign-approval-id")
        .expect("Countersign-Approval-Id on the answer")
        .to_owned();

    // Upstream got it exactly once, with evidence that says break-glass, and not the header.
    assert_eq!(env.echo.count(), 1);
    let sent = env.echo.last().expect("forwarded");
    assert_eq!(sent.header("countersign-break-glass"), None);
    let jws = sent.header("countersign-approval").expect("evidence");
    let claims = verified_claims(&env.proxy.control_url(), jws).await;
    assert_eq!(claims["break_glass"], true, "{claims}");
    assert_eq!(claims["approval_id"], id.as_str());
    assert_eq!(claims["rule"], "emergency");
    assert_eq!(claims["requester"]["email"], "carol@example.com");

    // Audited before it was forwarded; approvers were told.
    let events = env.audit_for(&id);
    let names = kinds(&events);
    let bg = names.iter().position(|n| n == "approval.break_glass");
    let fwd = names.iter().position(|n| n == "request.forwarded");
    assert!(
        matches!((bg, fwd), (Some(b), Some(f)) if b < f),
        "approval.break_glass must precede request.forwarded: {names:?}"
    );
    let audited = &events[bg.unwrap_or_default()];
    assert_eq!(
        audited["details"]["reason"], "prod is down, INC-4242",
        "{audited}"
    );
    assert_eq!(audited["actor"], "carol@example.com");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "notify.sent" && e["details"]["notify_event"] == "requested"),
        "approvers notified: {names:?}"
    );

    // Listed as review for every approver.
    let v = env.view(&id, "alice").await;
    assert_eq!(v["status"], "review", "{v}");
    assert_eq!(v["break_glass"]["reason"], "prod is down, INC-4242");
    let list = http_client()
        .get(env.control("/approvals"))
        .bearer_auth(env.person("bob"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /approvals");
    let list: Value = list.json().await.expect("list JSON");
    assert!(
        list["approvals"]
            .as_array()
            .expect("approvals")
            .iter()
            .any(|a| a["approval_id"] == id.as_str() && a["status"] == "review"),
        "{list}"
    );

    // Approve and deny do not apply; the requester cannot acknowledge their own.
    env.decide(&id, "alice", "approve")
        .await
        .assert_error(409, "in_review");
    env.decide(&id, "bob", "deny")
        .await
        .assert_error(409, "in_review");
    env.decide(&id, "carol", "acknowledge")
        .await
        .assert_error(403, "not_an_approver");

    // An approver acknowledges it: out of review, audited, once.
    let ack = env.decide(&id, "alice", "acknowledge").await;
    assert_eq!(ack.status, 200, "{}", ack.text);
    assert_eq!(ack.json()["status"], "acknowledged");
    assert_eq!(
        ack.json()["break_glass"]["acknowledged_by"],
        "alice@example.com"
    );
    assert_eq!(env.view(&id, "bob").await["status"], "acknowledged");
    env.decide(&id, "bob", "acknowledge")
        .await
        .assert_error(409, "not_in_review");
    env.decide(&id, "bob", "approve")
        .await
        .assert_error(409, "already_decided");
    let names = kinds(&env.audit_for(&id));
    assert_eq!(
        names
            .iter()
            .filter(|n| *n == "approval.acknowledged")
            .count(),
        1,
        "{names:?}"
    );
    assert_eq!(env.echo.count(), 1, "still forwarded exactly once");

    // Counted per rule; the audit chain verifies.
    let metrics = env.metrics().await;
    assert!(
        metrics.contains("countersign_break_glass_total{rule=\"emergency\"} 1"),
        "{metrics}"
    );
    let path = env.dir.join("audit.jsonl");
    let out = countersign(&["audit", "verify", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_second_break_glass_inside_the_cooldown_is_429_and_others_are_not_affected() {
    let env = Env::start().await;
    let bg = [("countersign-break-glass", "database on fire")];
    assert_eq!(env.post("carol", "/cooled/a", &bg).await.status, 200);
    let again = env.post("carol", "/cooled/b", &bg).await;
    again.assert_error(429, "break_glass_cooldown");
    let retry: u64 = again
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((3500..=3600).contains(&retry), "Retry-After {retry}");
    assert_eq!(env.echo.count(), 1, "nothing forwarded inside the cooldown");

    // Another requester on the same rule, and the same requester on another rule, are fine.
    assert_eq!(env.post("dave", "/cooled/a", &bg).await.status, 200);
    assert_eq!(env.post("carol", "/also-cooled/a", &bg).await.status, 200);
    assert_eq!(env.echo.count(), 3);
    let metrics = env.metrics().await;
    assert!(
        metrics.contains("countersign_break_glass_total{rule=\"cooled\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_empty_reason_is_400_and_nothing_is_forwarded() {
    let env = Env::start().await;
    for empty in ["", "   "] {
        env.post(
            "carol",
            "/emergency/x",
            &[("countersign-break-glass", empty)],
        )
        .await
        .assert_error(400, "break_glass_reason_required");
    }
    assert_eq!(env.echo.count(), 0);
    let metrics = env.metrics().await;
    assert!(
        !metrics.contains("countersign_break_glass_total{rule=\"emergency\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_break_glass_the_header_is_stripped_and_the_request_is_held_as_usual() {
    let env = Env::start().await;
    let token = env.person("carol");
    let url = format!("{}/deploy/prod", env.proxy.data_url());
    let held = tokio::spawn(async move {
        let resp = http_client()
            .post(url)
            .bearer_auth(token)
            .header("countersign-break-glass", "let me through")
            .body("{}")
            .timeout(Duration::from_secs(45))
            .send()
            .await
            .expect("held request");
        Reply::read(resp).await
    });
    // It is held: pending for the approvers, nothing upstream.
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let list: Value = http_client()
            .get(env.control("/approvals"))
            .bearer_auth(env.person("alice"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET /approvals")
            .json()
            .await
            .expect("list JSON");
        let pending = list["approvals"].as_array().and_then(|a| {
            a.iter()
                .find(|a| a["status"] == "pending")
                .and_then(|a| a["approval_id"].as_str().map(str::to_owned))
        });
        if let Some(id) = pending {
            break id;
        }
        assert!(Instant::now() < deadline, "never pending: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(env.echo.count(), 0, "held, not forwarded");
    env.decide(&id, "alice", "acknowledge")
        .await
        .assert_error(409, "not_in_review");
    let vote = env.decide(&id, "alice", "approve").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    let r = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("held request answered")
        .expect("task");
    assert_eq!(r.status, 200, "{}", r.text);
    let sent = env.echo.last().expect("forwarded after approval");
    assert_eq!(sent.header("countersign-break-glass"), None, "stripped");
    let claims = verified_claims(
        &env.proxy.control_url(),
        sent.header("countersign-approval").expect("evidence"),
    )
    .await;
    assert!(claims.get("break_glass").is_none(), "{claims}");
    let names = kinds(&env.audit_for(&id));
    assert!(
        !names.iter().any(|n| n == "approval.break_glass"),
        "{names:?}"
    );
}

#[test]
fn config_errors_for_the_break_glass_keys_point_at_file_line_col() {
    let dir = TestDir::new();
    dir.write(
        "policies/bad.toml",
        r#"[[rule]]
name = "x"
path_prefix = "/x"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
break_glass = "yes"
break_glass_cooldown = "soonish"
"#,
    );
    let config = common::basic_config("http://127.0.0.1:9", "https://idp.example.com", &[AUD]);
    let config = config
        .replace("{{listen}}", "127.0.0.1:18080")
        .replace("{{control_listen}}", "127.0.0.1:18081")
        .replace("{{public_url}}", "http://127.0.0.1:18081");
    let path = dir.write("countersign.toml", config);
    let out = countersign(&["check", "--config", path.to_str().expect("utf-8 path")]);
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad.toml:7:"),
        "break_glass at line 7: {stderr}"
    );
    assert!(
        stderr.contains("bad.toml:8:"),
        "break_glass_cooldown at line 8: {stderr}"
    );
    assert!(stderr.contains("break_glass_cooldown"), "{stderr}");
}

/// A data-plane POST to `data_url` with `token` and `headers`, read whole.
async fn post_to(data_url: &str, token: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http_client()
        .post(format!("{data_url}{path}"))
        .timeout(Duration::from_secs(45))
        .bearer_auth(token)
        .body("{}");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    Reply::read(req.send().await.expect("data-plane request")).await
}

#[tokio::test]
async fn the_cooldown_holds_across_replicas_sharing_redis_and_either_replica_acknowledges() {
    let redis = common::RedisServer::start();
    let dir = TestDir::new();
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    dir.write("policies/approvals.toml", POLICY);
    dir.write("signing.pem", common::signing_key_pem());
    let config = format!(
        "{}\n[approvals]\nstore = \"{}\"\naudit_log = \"{{{{dir}}}}/audit-@NAME@.jsonl\"\n\
         signing_key = \"file:signing.pem\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        redis.url(),
    );
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let text = config.replace("@NAME@", name);
        let mut p = Proxy::start_named(&dir, &format!("{name}.toml"), &text).await;
        p.wait_ready().await;
        replicas.push(p);
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    let person =
        |name: &str| issuer.token(name, AUD, json!({ "email": format!("{name}@example.com") }));
    let bg = [("countersign-break-glass", "pager says so")];

    let first = post_to(&a.data_url(), &person("carol"), "/cooled/x", &bg).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let id = first
        .header("countersign-approval-id")
        .expect("approval id")
        .to_owned();
    post_to(&b.data_url(), &person("carol"), "/cooled/y", &bg)
        .await
        .assert_error(429, "break_glass_cooldown");
    post_to(&a.data_url(), &person("carol"), "/cooled/z", &bg)
        .await
        .assert_error(429, "break_glass_cooldown");
    assert_eq!(
        echo.count(),
        1,
        "one forward cluster-wide inside the cooldown"
    );
    let other = post_to(&b.data_url(), &person("dave"), "/cooled/x", &bg).await;
    assert_eq!(other.status, 200, "another requester: {}", other.text);

    // The review created on A is acknowledged through B.
    let resp = http_client()
        .post(format!("{}/approvals/{id}/decision", b.control_url()))
        .bearer_auth(person("alice"))
        .json(&json!({ "decision": "acknowledge" }))
        .send()
        .await
        .expect("POST decision");
    let ack = Reply::read(resp).await;
    assert_eq!(ack.status, 200, "{}", ack.text);
    assert_eq!(ack.json()["status"], "acknowledged");
    assert_eq!(echo.count(), 2);
}

const SLACK_POLICY: &str = r#"
[[rule]]
name = "slack-emergency"
path_prefix = "/emergency"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
notify = ["slack:#prod-approvals"]
hold = "30s"
expires = "5m"
break_glass = true
"#;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

#[tokio::test]
async fn slack_is_told_who_broke_the_glass_and_why_and_its_button_acknowledges() {
    use common::fake_slack::{Click, FakeSlack, BOT_TOKEN};
    let dir = TestDir::new();
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let slack = FakeSlack::start().await;
    slack.add_channel("prod-approvals", "C0PROD");
    slack.add_user("UALICE", "alice@example.com");
    dir.write("policies/slack.toml", SLACK_POLICY);
    dir.write("slack-bot-token", BOT_TOKEN);
    dir.write("slack-signing-secret", SIGNING_SECRET);
    let config = format!(
        "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n[slack]\n\
         bot_token = \"file:slack-bot-token\"\nsigning_secret = \"file:slack-signing-secret\"\n\
         api_url = \"{}\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        slack.api_url(),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    let carol = issuer.token("carol", AUD, json!({ "email": "carol@example.com" }));
    let bg = [("countersign-break-glass", "checkout is down INC-7")];
    let r = post_to(&proxy.data_url(), &carol, "/emergency/restart", &bg).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r
        .header("countersign-approval-id")
        .expect("approval id")
        .to_owned();

    // Told before it was forwarded: the message is there once the caller has the answer.
    let messages = slack.messages_in("C0PROD");
    let [message] = messages.as_slice() else {
        panic!("one message in #prod-approvals: {messages:?}");
    };
    let shown = message.rendered();
    assert!(
        shown.contains("Break-glass by carol@example.com"),
        "{shown}"
    );
    assert!(shown.contains("checkout is down INC-7"), "{shown}");
    let buttons = message.buttons();
    let ack = buttons
        .iter()
        .find(|b| b["action_id"] == "acknowledge")
        .unwrap_or_else(|| panic!("an Acknowledge button: {buttons:?}"));
    assert_eq!(ack["value"], id.as_str());
    assert!(
        !buttons.iter().any(|b| b["action_id"] == "approve"),
        "no Approve on a break-glass: {buttons:?}"
    );

    let click = Click {
        user: "UALICE",
        action: "acknowledge",
        approval: &id,
        channel: "C0PROD",
        ts: &message.ts,
        trigger: "9.9.9",
        response_url: &slack.response_url("9.9.9"),
    };
    assert_eq!(
        click
            .signed(SIGNING_SECRET)
            .deliver(&proxy.control_url())
            .await,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let updated = slack
            .message("C0PROD", &message.ts)
            .map(|m| m.rendered())
            .unwrap_or_default();
        if updated.contains("Acknowledged by alice@example.com") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "message never acknowledged: {updated}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let audit = dir.read("audit.jsonl");
    assert!(audit.contains("\"approval.acknowledged\""), "{audit}");
    assert_eq!(echo.count(), 1);
}
