//! Chat delivery through the real binary: a held request posts to the configured channels and
//! every decision is reported there (issue 4). Chat services are faithful local fakes.

mod common;

use std::time::{Duration, Instant};

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
    dir.write("teams-webhook", &teams.webhook_url("s3cr3t-sig"));
    let config = format!(
        "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n[teams]\nwebhook_url = \"file:teams-webhook\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;

    let caller = issuer.token("svc-deployer", AUD, json!({}));
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
