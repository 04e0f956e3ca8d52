//! Chat delivery through the real binary: a held request posts to the configured channels and
//! every decision is reported there (issue 4). Chat services are faithful local fakes.

mod common;

use std::time::{Duration, Instant};

use common::fake_slack::{FakeSlack, BOT_TOKEN};
use common::fake_teams::FakeTeams;
use common::{http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::json;

const AUD: &str = "https://deploy.example.com";

const POLICY: &str = r#"
[[rule]]
name = "teams-deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
notify = ["teams"]
hold = "30s"
expires = "5m"
"#;

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_held_request_posts_an_adaptive_card_and_the_outcome_to_teams() {
    let dir = TestDir::new();
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let teams = FakeTeams::start().await;
    dir.write("policies/teams.toml", POLICY);
    dir.write("teams-webhook", teams.webhook_url("s3cr3t-sig"));
    let config = format!(
        "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n[teams]\nwebhook_url = \"file:teams-webhook\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;

    let caller = issuer.token(
        "svc-deployer",
        AUD,
        json!({ "email": "svc-deployer@example.com" }),
    );
    let url = format!("{}/deploy/prod", proxy.data_url());
    let held = tokio::spawn(async move {
        http_client()
            .post(url)
            .bearer_auth(caller)
            .body("{\"version\":\"2\"}")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("held request")
    });

    wait_for("the approval card", || !teams.delivered().is_empty()).await;
    let card = teams.delivered()[0].clone();
    let text = card.to_string();
    assert_eq!(card["attachments"][0]["content"]["type"], "AdaptiveCard");
    assert!(text.contains("teams-deploy"), "{text}");
    let open = card["attachments"][0]["content"]["actions"][0]["url"]
        .as_str()
        .expect("first action opens the approval page")
        .to_owned();
    let prefix = format!("{}/approvals/", proxy.control_url());
    assert!(
        open.starts_with(&prefix),
        "{open} should start with {prefix}"
    );
    let id = open.trim_start_matches(&prefix).to_owned();

    let approver = issuer.token("alice", AUD, json!({"email": "alice@example.com"}));
    let resp = http_client()
        .post(format!("{}/approvals/{id}/decision", proxy.control_url()))
        .bearer_auth(approver)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("decision");
    assert_eq!(resp.status(), 200);

    let resp = held.await.expect("held task");
    assert_eq!(resp.status(), 200);
    assert_eq!(echo.count(), 1);
    wait_for("the outcome card", || {
        teams
            .delivered()
            .iter()
            .any(|c| c.to_string().contains("alice@example.com"))
    })
    .await;
    assert!(
        !proxy.stderr().contains("s3cr3t-sig"),
        "the webhook URL is a secret and must not be logged"
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
"#;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

#[tokio::test]
async fn a_signed_slack_click_on_the_control_plane_releases_the_held_request() {
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
        "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n[slack]\nbot_token = \"file:slack-bot-token\"\nsigning_secret = \"file:slack-signing-secret\"\napi_url = \"{}\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        slack.api_url(),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;

    let caller = issuer.token(
        "svc-deployer",
        AUD,
        json!({ "email": "svc-deployer@example.com" }),
    );
    let url = format!("{}/deploy/prod", proxy.data_url());
    let held = tokio::spawn(async move {
        http_client()
            .post(url)
            .bearer_auth(caller)
            .body("{}")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("held request")
    });

    wait_for("the Slack message", || {
        !slack.messages_in("C0PROD").is_empty()
    })
    .await;
    let message = slack.messages_in("C0PROD")[0].clone();
    let approve = message
        .buttons()
        .into_iter()
        .find(|b| b["action_id"] == "approve")
        .expect("an Approve button");
    let id = approve["value"].as_str().expect("approval id").to_owned();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let payload = json!({
        "type": "block_actions",
        "user": {"id": "UALICE", "username": "alice", "team_id": "T0TEST"},
        "team": {"id": "T0TEST", "domain": "test"},
        "trigger_id": "1.2.3",
        "response_url": slack.response_url("1.2.3"),
        "container": {"type": "message", "channel_id": "C0PROD", "message_ts": message.ts},
        "actions": [{"type": "button", "action_id": "approve", "block_id": "decision",
                     "value": id, "action_ts": format!("{now}.000100")}],
        "state": {"values": {}},
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form");
    let send = |sig: String| {
        http_client()
            .post(format!("{}/slack/interactions", proxy.control_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", now.clone())
            .header("x-slack-signature", sig)
            .body(body.clone())
            .send()
    };
    // A forged signature is refused before anything is parsed.
    let forged = send("v0=".to_owned() + &"0".repeat(64))
        .await
        .expect("forged click");
    assert_eq!(forged.status(), 401);
    let sig =
        countersign::chat::slack::signature::sign(SIGNING_SECRET.as_bytes(), &now, body.as_bytes());
    let ok = send(sig).await.expect("signed click");
    assert_eq!(ok.status(), 200);
    // Acknowledged only once the vote is durable (SPEC 8).
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit log");
    assert!(
        audit.contains("\"vote.cast\""),
        "click acked before vote.cast was written: {audit}"
    );

    let resp = held.await.expect("held task");
    assert_eq!(resp.status(), 200);
    assert_eq!(echo.count(), 1);
    wait_for("the message to say who approved", || {
        slack
            .message("C0PROD", &message.ts)
            .is_some_and(|m| m.rendered().contains("alice@example.com"))
    })
    .await;
}
