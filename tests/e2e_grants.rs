//! Grants end to end (SPEC 9), through the real `countersign` binary and HTTP only: an
//! approver approves with `"grant": true` on a rule with `grant` / `grant_uses`; the same
//! requester's requests for the same rule, method, host and path then pass at once, for that
//! many uses, with `grant_id` in `Countersign-Approval`, each use audited `grant.used`;
//! anything else is held as usual; `GET /grants` lists and `DELETE /grants/{id}` revokes,
//! also across replicas sharing Redis, where uses are counted cluster-wide.

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
expires = "5m"
grant = "15m"
grant_uses = 2

[[rule]]
name = "payout"
path_prefix = "/payout"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
hold = "30s"
expires = "5m"

[[rule]]
name = "brief"
path_prefix = "/brief"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
hold = "30s"
expires = "5m"
grant = "2s"
grant_uses = 10

[[rule]]
name = "two-keys"
path_prefix = "/two-keys"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com", "dan@example.com"]
quorum = 2
hold = "30s"
expires = "5m"
grant = "1h"
grant_uses = 5
"#;

/// One running proxy (or replica) with the shared issuer.
struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxies: Vec<Proxy>,
}

impl Env {
    /// One proxy with the memory store.
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
            proxies: vec![proxy],
        }
    }

    /// Two replicas sharing `redis`.
    async fn replicas(redis: &common::RedisServer) -> Env {
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
        let mut proxies = Vec::new();
        for name in ["a", "b"] {
            let text = config.replace("@NAME@", name);
            let mut p = Proxy::start_named(&dir, &format!("{name}.toml"), &text).await;
            p.wait_ready().await;
            proxies.push(p);
        }
        Env {
            dir,
            issuer,
            echo,
            proxies,
        }
    }

    /// A token for a person `name` with email `name@example.com`.
    fn person(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    fn control(&self, replica: usize, path: &str) -> String {
        format!("{}{path}", self.proxies[replica].control_url())
    }

    /// `method path` on replica `replica`'s data plane as `who`, with `Prefer: respond-async`
    /// so a request that is held answers 202 at once.
    async fn send(&self, replica: usize, who: &str, method: &str, path: &str) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = http_client()
            .request(
                method,
                format!("{}{path}", self.proxies[replica].data_url()),
            )
            .timeout(Duration::from_secs(45))
            .bearer_auth(self.person(who))
            .header("prefer", "respond-async")
            .body(r#"{"version":"1.4.2"}"#)
            .send()
            .await
            .expect("data-plane request");
        Reply::read(resp).await
    }

    async fn decide(&self, replica: usize, id: &str, who: &str, body: Value) -> Reply {
        let resp = http_client()
            .post(self.control(replica, &format!("/approvals/{id}/decision")))
            .bearer_auth(self.person(who))
            .json(&body)
            .send()
            .await
            .expect("POST decision");
        Reply::read(resp).await
    }

    async fn view(&self, id: &str, viewer: &str) -> Value {
        let resp = http_client()
            .get(self.control(0, &format!("/approvals/{id}")))
            .bearer_auth(self.person(viewer))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET approval");
        let r = Reply::read(resp).await;
        assert_eq!(r.status, 200, "view of {id}: {}", r.text);
        r.json()
    }

    async fn grants(&self, replica: usize, who: &str) -> Vec<Value> {
        let resp = http_client()
            .get(self.control(replica, "/grants"))
            .bearer_auth(self.person(who))
            .send()
            .await
            .expect("GET /grants");
        let r = Reply::read(resp).await;
        assert_eq!(r.status, 200, "GET /grants as {who}: {}", r.text);
        r.json()["grants"].as_array().expect("grants").clone()
    }

    async fn revoke(&self, replica: usize, id: &str, who: &str) -> Reply {
        let resp = http_client()
            .delete(self.control(replica, &format!("/grants/{id}")))
            .bearer_auth(self.person(who))
            .send()
            .await
            .expect("DELETE /grants/{id}");
        Reply::read(resp).await
    }

    /// Audit events (JSON lines of every replica's log), in order per file.
    fn audit(&self) -> Vec<Value> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join(""))
            .expect("test dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("audit") && n.ends_with(".jsonl"))
            .collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| {
                self.dir
                    .read(n)
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn audited(&self, kind: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    async fn metrics(&self) -> String {
        http_client()
            .get(self.control(0, "/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits until upstream has seen `n` requests.
    async fn upstream_saw(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.echo.count() < n {
            assert!(
                Instant::now() < deadline,
                "upstream saw {} requests, expected {n}",
                self.echo.count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The approval id of a 202.
fn held(r: &Reply) -> String {
    assert_eq!(r.status, 202, "expected the request to be held: {}", r.text);
    r.json()["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned()
}

/// Holds `carol`'s `POST /deploy/prod` and has alice approve it with a grant; returns the
/// grant id once the approved request went upstream.
async fn granted(env: &Env, replica: usize) -> String {
    let id = held(&env.send(replica, "carol", "POST", "/deploy/prod").await);
    let before = env.echo.count();
    let vote = env
        .decide(
            replica,
            &id,
            "alice",
            json!({"decision": "approve", "grant": true}),
        )
        .await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    let grant_id = vote.json()["grant_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the approval names its grant: {}", vote.text))
        .to_owned();
    assert!(grant_id.starts_with("gr_"), "{grant_id}");
    env.upstream_saw(before + 1).await;
    grant_id
}

#[tokio::test]
async fn a_grant_lets_the_same_request_pass_for_its_uses_and_nothing_else() {
    let env = Env::start().await;
    let grant_id = granted(&env, 0).await;

    // While the grant is live and unused: never for another path, method, requester or rule.
    held(&env.send(0, "carol", "POST", "/deploy/staging").await);
    held(&env.send(0, "carol", "PUT", "/deploy/prod").await);
    held(&env.send(0, "erin", "POST", "/deploy/prod").await);
    held(&env.send(0, "carol", "POST", "/payout/prod").await);
    assert_eq!(
        env.echo.count(),
        1,
        "only the approved request went upstream"
    );

    // Two uses: each passes at once, names the grant, and upstream can verify it.
    for n in 1..=2 {
        let started = Instant::now();
        let r = env.send(0, "carol", "POST", "/deploy/prod").await;
        assert_eq!(r.status, 200, "use {n}: {}", r.text);
        assert!(started.elapsed() < Duration::from_secs(10), "not held");
        assert_eq!(r.header("countersign-grant-id"), Some(grant_id.as_str()));
        let sent = env.echo.last().expect("forwarded");
        let claims = verified_claims(
            &env.proxies[0].control_url(),
            sent.header("countersign-approval").expect("evidence"),
        )
        .await;
        assert_eq!(claims["grant_id"], grant_id.as_str(), "{claims}");
        assert_eq!(claims["approvers"], json!(["alice@example.com"]));
        assert_eq!(claims["requester"]["email"], "carol@example.com");
        assert_eq!(claims["rule"], "deploy");
        assert!(claims.get("break_glass").is_none());
    }
    assert_eq!(env.echo.count(), 3);

    // Used up: the third is held again.
    held(&env.send(0, "carol", "POST", "/deploy/prod").await);
    assert_eq!(env.echo.count(), 3, "nothing else passed");

    // Audited: one grant.created, one grant.used per use, before each forward.
    let created = env.audited("grant.created");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["details"]["grant_id"], grant_id.as_str());
    assert_eq!(created[0]["details"]["uses_max"], 2);
    let used = env.audited("grant.used");
    assert_eq!(used.len(), 2, "{used:?}");
    assert_eq!(used[1]["details"]["uses"], 2);
    assert_eq!(used[0]["actor"], "carol@example.com");
    for u in &used {
        let id = &u["approval_id"];
        let events: Vec<String> = env
            .audit()
            .iter()
            .filter(|e| &e["approval_id"] == id)
            .filter_map(|e| e["event"].as_str().map(str::to_owned))
            .collect();
        let at = |k: &str| events.iter().position(|e| e == k);
        assert!(
            matches!((at("grant.used"), at("request.forwarded")), (Some(u), Some(f)) if u < f),
            "grant.used before request.forwarded: {events:?}"
        );
    }
    assert!(env
        .metrics()
        .await
        .contains("countersign_grant_uses_total{rule=\"deploy\"} 2"));

    // Listed for approvers of the rule and the requester, not for others.
    let mine = env.grants(0, "bob").await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["grant_id"], grant_id.as_str());
    assert_eq!(mine[0]["state"], "used_up");
    assert_eq!(mine[0]["uses"], 2);
    assert_eq!(mine[0]["path"], "/deploy/prod");
    assert_eq!(env.grants(0, "carol").await.len(), 1);
    assert!(env.grants(0, "erin").await.is_empty());

    let path = env.dir.join("audit.jsonl");
    let out = countersign(&["audit", "verify", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_grant_stops_when_its_time_is_up_however_many_uses_are_left() {
    let env = Env::start().await;
    let id = held(&env.send(0, "carol", "POST", "/brief/x").await);
    let grant = json!({"decision": "approve", "grant": true});
    let vote = env.decide(0, &id, "alice", grant).await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    env.upstream_saw(1).await;
    let approved_at = Instant::now();
    assert_eq!(env.send(0, "carol", "POST", "/brief/x").await.status, 200);
    // `grant = "2s"`: past it the grant lets nothing through, with 9 uses left.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(approved_at.elapsed())).await;
    held(&env.send(0, "carol", "POST", "/brief/x").await);
    assert_eq!(env.echo.count(), 2);
    // Expired grants are no longer listed.
    assert!(env.grants(0, "alice").await.is_empty());
}

#[tokio::test]
async fn a_revoked_grant_stops_the_next_request_and_only_its_approvers_or_requester_may_revoke() {
    let env = Env::start().await;
    let grant_id = granted(&env, 0).await;
    assert_eq!(
        env.send(0, "carol", "POST", "/deploy/prod").await.status,
        200
    );

    env.revoke(0, &grant_id, "erin")
        .await
        .assert_error(404, "not_found");
    env.revoke(0, "gr_00000000000000000000000000000000", "bob")
        .await
        .assert_error(404, "not_found");
    let r = env.revoke(0, &grant_id, "bob").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "revoked");
    assert_eq!(r.json()["revoked_by"], "bob@example.com");

    held(&env.send(0, "carol", "POST", "/deploy/prod").await);
    assert_eq!(env.echo.count(), 2, "nothing passed after the revocation");
    let revoked = env.audited("grant.revoked");
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["actor"], "bob@example.com");
    assert_eq!(revoked[0]["details"]["grant_id"], grant_id.as_str());
    // Revoking again changes nothing.
    let again = env.revoke(0, &grant_id, "alice").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["revoked_by"], "bob@example.com");
    assert_eq!(env.audited("grant.revoked").len(), 1);
}

#[tokio::test]
async fn a_grant_is_refused_where_the_rule_makes_none_or_on_a_deny_and_a_plain_approve_makes_none()
{
    let env = Env::start().await;
    let payout = held(&env.send(0, "carol", "POST", "/payout/1").await);
    env.decide(
        0,
        &payout,
        "alice",
        json!({"decision": "approve", "grant": true}),
    )
    .await
    .assert_error(400, "grant_not_allowed");
    // Someone who may not vote learns nothing about the rule's grants.
    env.decide(
        0,
        &payout,
        "erin",
        json!({"decision": "approve", "grant": true}),
    )
    .await
    .assert_error(403, "not_an_approver");
    let deploy = held(&env.send(0, "carol", "POST", "/deploy/prod").await);
    env.decide(
        0,
        &deploy,
        "alice",
        json!({"decision": "deny", "grant": true}),
    )
    .await
    .assert_error(400, "grant_not_allowed");
    // Nothing was counted: both are still pending.
    assert_eq!(env.view(&payout, "bob").await["status"], "pending");
    assert_eq!(env.view(&deploy, "bob").await["status"], "pending");

    // A plain approve lets this one request pass and makes no grant.
    let vote = env
        .decide(0, &deploy, "alice", json!({"decision": "approve"}))
        .await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    assert_eq!(vote.json()["grant_id"], Value::Null);
    assert_eq!(vote.json()["grant_offer"]["seconds"], 900);
    env.upstream_saw(1).await;
    held(&env.send(0, "carol", "POST", "/deploy/prod").await);
    assert!(env.grants(0, "alice").await.is_empty());
    assert!(env.audited("grant.created").is_empty());
}

#[tokio::test]
async fn with_a_quorum_of_two_a_grant_is_made_only_when_both_approvers_ask_for_it() {
    let env = Env::start().await;
    let one = held(&env.send(0, "carol", "POST", "/two-keys/a").await);
    let grant = json!({"decision": "approve", "grant": true});
    assert_eq!(
        env.decide(0, &one, "alice", grant.clone()).await.status,
        200
    );
    let last = env
        .decide(0, &one, "bob", json!({"decision": "approve"}))
        .await;
    assert_eq!(last.status, 200, "{}", last.text);
    assert_eq!(last.json()["status"], "approved");
    assert_eq!(last.json()["grant_id"], Value::Null, "bob did not ask");
    env.upstream_saw(1).await;
    held(&env.send(0, "carol", "POST", "/two-keys/a").await);

    let two = held(&env.send(0, "carol", "POST", "/two-keys/b").await);
    assert_eq!(
        env.decide(0, &two, "alice", grant.clone()).await.status,
        200
    );
    let last = env.decide(0, &two, "dan", grant).await;
    assert_eq!(last.status, 200, "{}", last.text);
    assert!(last.json()["grant_id"].is_string(), "{}", last.text);
    env.upstream_saw(2).await;
    let r = env.send(0, "carol", "POST", "/two-keys/b").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let claims = verified_claims(
        &env.proxies[0].control_url(),
        env.echo
            .last()
            .expect("forwarded")
            .header("countersign-approval")
            .expect("evidence"),
    )
    .await;
    assert_eq!(
        claims["approvers"],
        json!(["alice@example.com", "dan@example.com"])
    );
}

#[tokio::test]
async fn on_redis_uses_are_counted_across_replicas_and_a_revocation_on_one_stops_the_other() {
    let redis = common::RedisServer::start();
    let env = Env::replicas(&redis).await;
    let grant_id = granted(&env, 0).await;

    // Six concurrent tries, three on each replica: exactly the two uses pass.
    let tries = (0..6).map(|i| env.send(i % 2, "carol", "POST", "/deploy/prod"));
    let replies = futures::future::join_all(tries).await;
    let passed = replies.iter().filter(|r| r.status == 200).count();
    let held_n = replies.iter().filter(|r| r.status == 202).count();
    assert_eq!((passed, held_n), (2, 4), "uses are cluster-wide");
    for r in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(r.header("countersign-grant-id"), Some(grant_id.as_str()));
    }
    let listed = env.grants(1, "alice").await;
    assert_eq!(listed[0]["uses"], 2, "{listed:?}");

    // A second grant, revoked through B, stops the next request on A.
    let second = {
        let id = held(&env.send(0, "carol", "POST", "/deploy/canary").await);
        let before = env.echo.count();
        let vote = env
            .decide(1, &id, "bob", json!({"decision": "approve", "grant": true}))
            .await;
        assert_eq!(vote.status, 200, "{}", vote.text);
        env.upstream_saw(before + 1).await;
        vote.json()["grant_id"].as_str().expect("grant").to_owned()
    };
    let r = env.revoke(1, &second, "alice").await;
    assert_eq!(r.status, 200, "{}", r.text);
    held(&env.send(0, "carol", "POST", "/deploy/canary").await);
}

#[test]
fn config_errors_for_the_grant_keys_point_at_file_line_col() {
    let dir = TestDir::new();
    dir.write(
        "policies/bad.toml",
        r#"[[rule]]
name = "x"
path_prefix = "/x"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
grant = "25h"

[[rule]]
name = "y"
path_prefix = "/y"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
grant_uses = 0

[[rule]]
name = "z"
path_prefix = "/z"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
grant_uses = 3
"#,
    );
    let config = common::basic_config("http://127.0.0.1:9", "https://idp.example.com", &[AUD]);
    let config = config
        .replace("{{listen}}", "127.0.0.1:18080")
        .replace("{{control_listen}}", "127.0.0.1:18081")
        .replace("{{public_url}}", "http://127.0.0.1:18081");
    let path = dir.write("countersign.toml", config);
    let out = countersign(&["check", "--config", path.to_str().expect("utf-8 path")]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("bad.toml:7:") && text.contains("at most 24h"),
        "grant too long, line 7: {text}"
    );
    assert!(
        text.contains("bad.toml:15:") && text.contains("\"grant_uses\" must be at least 1"),
        "grant_uses = 0, line 15: {text}"
    );
    assert!(
        text.contains("bad.toml:23:") && text.contains("\"grant_uses\" needs \"grant\""),
        "grant_uses alone, line 23: {text}"
    );
}

const SLACK_POLICY: &str = r#"
[[rule]]
name = "slack-deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
notify = ["slack:#prod-approvals"]
hold = "30s"
expires = "5m"
grant = "15m"
grant_uses = 3
"#;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

#[tokio::test]
async fn slack_offers_approve_once_and_approve_for_15_min_and_the_second_makes_a_grant() {
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
    let env = Env {
        dir,
        issuer,
        echo,
        proxies: vec![proxy],
    };
    let id = held(&env.send(0, "carol", "POST", "/deploy/prod").await);

    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        if let Some(m) = slack.messages_in("C0PROD").into_iter().next() {
            break m;
        }
        assert!(Instant::now() < deadline, "no message in #prod-approvals");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let buttons = message.buttons();
    let label = |action: &str| {
        buttons
            .iter()
            .find(|b| b["action_id"] == action)
            .map(|b| b["text"]["text"].clone())
    };
    assert_eq!(label("approve"), Some(json!("Approve once")), "{buttons:?}");
    assert_eq!(
        label("approve_grant"),
        Some(json!("Approve for 15 min")),
        "{buttons:?}"
    );

    let click = Click {
        user: "UALICE",
        action: "approve_grant",
        approval: &id,
        channel: "C0PROD",
        ts: &message.ts,
        trigger: "7.7.7",
        response_url: &slack.response_url("7.7.7"),
    };
    let delivered = click
        .signed(SIGNING_SECRET)
        .deliver(&env.proxies[0].control_url())
        .await;
    assert_eq!(delivered, 200);
    env.upstream_saw(1).await;
    let r = env.send(0, "carol", "POST", "/deploy/prod").await;
    assert_eq!(r.status, 200, "passes under the grant: {}", r.text);
    let grants = env.grants(0, "alice").await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["uses_max"], 3);
    assert_eq!(grants[0]["uses"], 1);
    let vote = env.audited("vote.cast");
    assert_eq!(vote[0]["details"]["via"], "slack");
}
