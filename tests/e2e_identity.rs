//! Who a person is (SPEC 8) through the real binary: a requester whose token names no person
//! cannot create an approval (they could approve it themselves from an identified account),
//! unless the rule says `unidentified_requester = "hold"`.

mod common;

use common::{EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::json;

const API: &str = "https://api.example.test";

const POLICY: &str = r#"[[rule]]
name = "payout"
methods = ["POST"]
path = "/payouts"
action = "approve"

[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]

[[rule]]
name = "payout-lenient"
methods = ["POST"]
path = "/payouts-lenient"
action = "approve"

[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
unidentified_requester = "hold"

[[rule]]
name = "rest"
action = "allow"
"#;

async fn setup(identity_claim: &str) -> (LocalIssuer, EchoUpstream, Proxy, TestDir) {
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    dir.write("policies/p.toml", POLICY);
    let config = format!(
        r#"[server]
listen = "{{{{listen}}}}"
control_listen = "{{{{control_listen}}}}"
public_url = "{{{{public_url}}}}"
threads = 1

[[upstream]]
name = "echo"
url = "{}"

[[route]]
upstream = "echo"

[[issuer]]
issuer = "{}"
audiences = ["{API}"]
identity_claim = "{identity_claim}"

[policy]
files = ["policies/*.toml"]
"#,
        echo.url(),
        issuer.issuer()
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    (issuer, echo, proxy, dir)
}

async fn post(proxy: &Proxy, path: &str, token: &str) -> (u16, serde_json::Value) {
    let resp = common::http_client()
        .post(format!("{}{path}", proxy.data_url()))
        .bearer_auth(token)
        .header("prefer", "respond-async")
        .body("{}")
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_token_that_names_nobody_cannot_create_an_approval() {
    let (issuer, echo, proxy, _dir) = setup("email").await;
    for extra in [
        json!({}),
        json!({"email": "carol@example.com", "email_verified": false}),
    ] {
        let token = issuer.token("svc-no-email", API, extra.clone());
        let (status, body) = post(&proxy, "/payouts", &token).await;
        assert_eq!(status, 403, "{extra}: {body}");
        assert_eq!(body["error"], "identity_required", "{body}");
    }
    // An identified requester is held as before.
    let token = issuer.token("carol", API, json!({"email": "carol@example.com"}));
    let (status, body) = post(&proxy, "/payouts", &token).await;
    assert_eq!(status, 202, "{body}");
    // Unidentified, where the rule allows it: held too.
    let token = issuer.token("svc-no-email", API, json!({}));
    let (status, body) = post(&proxy, "/payouts-lenient", &token).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(echo.count(), 0, "nothing was forwarded without approval");
}

#[tokio::test]
async fn identity_claim_picks_the_claim_that_names_the_person() {
    let (issuer, _echo, proxy, _dir) = setup("upn").await;
    // An Entra-style token: no email, a upn.
    let token = issuer.token("oid-1", API, json!({"upn": "carol@contoso.com"}));
    let (status, body) = post(&proxy, "/payouts", &token).await;
    assert_eq!(status, 202, "{body}");
    // The email claim does not count when identity_claim is upn.
    let token = issuer.token("oid-2", API, json!({"email": "carol@contoso.com"}));
    let (status, body) = post(&proxy, "/payouts", &token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "identity_required");
}

#[tokio::test]
async fn only_issuers_with_approvers_true_cast_api_votes() {
    // identity_claim = email, approvers not set: this issuer's tokens identify requesters but
    // cannot vote.
    let (issuer, echo, proxy, _dir) = setup("email").await;
    let requester = issuer.token("carol", API, json!({"email": "carol@example.com"}));
    let (status, body) = post(&proxy, "/payouts", &requester).await;
    assert_eq!(status, 202, "{body}");
    let id = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    let alice = issuer.token("alice", API, json!({"email": "alice@example.com"}));
    let resp = common::http_client()
        .post(format!("{}/approvals/{id}/decision", proxy.control_url()))
        .bearer_auth(alice)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("vote");
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "not_an_approver", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("approvers = true")),
        "{body}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(echo.count(), 0, "the refused vote released nothing");
}
