//! The public OIDC API as the proxy uses it: a development issuer, a verifier on the system
//! clock, a bearer header, a verified principal. Attack and key-lifecycle tests live in
//! `src/oidc/tests/` (they need the crate-internal manual-clock and counter seams).

use std::sync::Arc;
use std::time::Duration;

use countersign::clock::SystemClock;
use countersign::config::{Algorithm, Issuer};
use countersign::devidp::{DevIdp, KeyKind};
use countersign::metrics::Metrics;
use countersign::oidc::{bearer_token, Reason, TokenError, Verifier};
use serde_json::json;

const AUD: &str = "https://api.example.test";

#[tokio::test]
async fn dev_idp_tokens_verify_through_the_public_api() {
    let idp = DevIdp::start().await.expect("dev idp starts");
    let ed = idp.add_key(KeyKind::Ed25519);
    let issuer = Issuer {
        issuer: idp.issuer(),
        audiences: vec![AUD.to_owned()],
        jwks_uri: None,
        algorithms: Algorithm::defaults(),
        leeway: Duration::from_secs(60),
        require_typ: None,
        refresh: Duration::from_secs(300),
        identity_claim: "email".into(),
        approvers: false,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let verifier = Verifier::new(vec![issuer], http, Arc::new(SystemClock), Metrics::new());
    verifier.start();
    assert!(verifier.wait_ready(Duration::from_secs(5)).await);

    let token = idp.mint(json!({"sub": "alice", "aud": AUD, "groups": ["sre"]}));
    let header = format!("Bearer {token}");
    let extracted = bearer_token(std::iter::once(header.as_bytes()))
        .expect("well-formed")
        .expect("present");
    let principal = verifier.verify(extracted).await.expect("valid token");
    assert_eq!(principal.subject, "alice");
    assert_eq!(principal.claim("groups"), Some(&json!(["sre"])));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let ed_token = idp.mint_with(
        &ed,
        json!({"alg": "EdDSA", "kid": ed}),
        json!({"iss": idp.issuer(), "sub": "bob", "aud": AUD, "exp": now + 60}),
    );
    assert_eq!(
        verifier.verify(&ed_token).await.expect("valid").subject,
        "bob"
    );

    let wrong_aud = idp.mint(json!({"sub": "alice", "aud": "https://elsewhere"}));
    assert_eq!(
        verifier.verify(&wrong_aud).await.unwrap_err(),
        TokenError::InvalidToken(Reason::WrongAudience)
    );
}
