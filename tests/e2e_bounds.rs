//! Bounded approvals (SPEC 8): one requester cannot keep more than
//! `max_pending_per_requester` approvals pending; 429 `too_many_pending` with Retry-After.

mod common;

use common::{EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::json;

const AUD: &str = "https://api.example.test";

const POLICY: &str = r#"[[rule]]
name = "payout"
methods = ["POST"]
path = "/payouts"
action = "approve"

[rule.approval]
approvers = ["alice@example.com"]
"#;

async fn post(proxy: &Proxy, token: &str) -> reqwest::Response {
    common::http_client()
        .post(format!("{}/payouts", proxy.data_url()))
        .bearer_auth(token)
        .header("prefer", "respond-async")
        .body("{}")
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_requester_over_the_pending_limit_gets_429_too_many_pending() {
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    dir.write("policies/p.toml", POLICY);
    let config = format!(
        "{}\n[policy]\nfiles = [\"policies/*.toml\"]\n\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\nmax_pending_per_requester = 2\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD])
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    let carol = issuer.token("carol", AUD, json!({"email": "carol@example.com"}));
    let dave = issuer.token("dave", AUD, json!({"email": "dave@example.com"}));

    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = post(&proxy, &carol).await;
        assert_eq!(resp.status(), 202);
        let body: serde_json::Value = resp.json().await.expect("json");
        ids.push(body["approval_id"].as_str().expect("id").to_owned());
    }
    let resp = post(&proxy, &carol).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "too_many_pending", "{body}");

    // Another requester is not affected.
    assert_eq!(post(&proxy, &dave).await.status(), 202);

    // Withdrawing one frees a place.
    let resp = common::http_client()
        .delete(format!("{}/approvals/{}", proxy.control_url(), ids[0]))
        .bearer_auth(&carol)
        .send()
        .await
        .expect("cancel");
    assert!(resp.status().is_success(), "cancel: {}", resp.status());
    assert_eq!(post(&proxy, &carol).await.status(), 202);
    assert_eq!(echo.count(), 0);
}
