//! Key loading: discovery, rotation, removal, outage, Cache-Control, key filtering.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::super::jwks::KeySet;
use super::super::{Reason, TokenError};
use super::{eventually, http, invalid, issuer_for, Harness};
use crate::clock::ManualClock;
use crate::config::Algorithm;
use crate::devidp::{DevIdp, KeyKind};
use crate::metrics::Metrics;

use super::super::Verifier;

#[tokio::test]
async fn new_kid_triggers_one_refetch_then_is_accepted() {
    let h = Harness::new().await;
    assert_eq!((h.idp.discovery_fetches(), h.idp.jwks_fetches()), (1, 1));
    let kid = h.idp.add_key(KeyKind::Ed25519);
    let token = h.token(&kid, "EdDSA", json!({}));
    assert!(h.verify(&token).await.is_ok());
    assert_eq!(h.idp.jwks_fetches(), 2);
    assert_eq!(h.idp.discovery_fetches(), 1, "discovery is not repeated");
    assert!(h.verify(&token).await.is_ok());
    assert_eq!(h.idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn concurrent_unknown_kid_requests_share_one_fetch() {
    let h = Harness::new().await;
    let kid = h.idp.add_key(KeyKind::P256);
    let tokens: Vec<String> = (0..32)
        .map(|i| h.token(&kid, "ES256", json!({ "sub": format!("user-{i}") })))
        .collect();
    let results = futures::future::join_all(tokens.iter().map(|t| h.verify(t))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(h.idp.jwks_fetches(), 2, "exactly one refetch");
}

#[tokio::test]
async fn a_second_unknown_kid_within_five_seconds_does_not_refetch() {
    let h = Harness::new().await;
    let first = h.idp.add_key(KeyKind::P256);
    assert!(h.verify(&h.token(&first, "ES256", json!({}))).await.is_ok());
    assert_eq!(h.idp.jwks_fetches(), 2);

    let second = h.idp.add_key(KeyKind::Ed25519);
    let token = h.token(&second, "EdDSA", json!({}));
    h.clock.advance(Duration::from_secs(4));
    assert_eq!(h.refusal(&token).await, invalid(Reason::UnknownKey));
    assert_eq!(h.idp.jwks_fetches(), 2);

    h.clock.advance(Duration::from_secs(1));
    assert!(h.verify(&token).await.is_ok());
    assert_eq!(h.idp.jwks_fetches(), 3);
}

#[tokio::test]
async fn removed_key_stops_validating_cached_tokens_after_the_refetch() {
    let mut extra = String::new();
    let h = Harness::ready(|idp| extra = idp.add_key(KeyKind::P256), |_| {}).await;
    let doomed = h.default_token();
    let kept = h.token(&extra, "ES256", json!({}));
    assert!(h.verify(&doomed).await.is_ok());
    assert!(h.verify(&kept).await.is_ok());
    let checks = h.verifier.signature_checks();

    // A refresh that changes nothing keeps cached tokens cached.
    h.advance(Duration::from_secs(301));
    assert!(eventually(|| async { h.idp.jwks_fetches() == 2 }).await);
    assert!(h.verify(&doomed).await.is_ok());
    assert_eq!(
        h.verifier.signature_checks(),
        checks,
        "still served from cache"
    );

    h.idp.remove_key(&h.idp.default_kid());
    assert!(h.verify(&doomed).await.is_ok(), "not refetched yet");
    h.advance(Duration::from_secs(301));
    assert!(eventually(|| async { h.idp.jwks_fetches() == 3 }).await);
    // The fetch is counted before its keys are installed: wait for the swap.
    assert!(
        eventually(|| async { h.verify(&doomed).await.is_err() }).await,
        "removed key must stop validating"
    );
    assert_eq!(h.refusal(&doomed).await, invalid(Reason::UnknownKey));
    assert!(h.verify(&kept).await.is_ok(), "other keys keep working");
}

#[tokio::test]
async fn outage_keeps_the_last_good_keys() {
    let h = Harness::new().await;
    h.idp.set_outage(true);
    h.advance(Duration::from_secs(301));
    assert!(eventually(|| async { h.idp.jwks_fetches() >= 2 }).await);
    assert!(eventually(|| async { h.metrics.render().contains(r#"result="error"} 1"#) }).await);
    assert!(h.verifier.ready());
    let token = h.idp.mint(json!({"sub": "alice", "aud": super::AUD}));
    assert!(
        h.verify(&token).await.is_ok(),
        "last good keys still verify"
    );

    // Retries back off: 1 s after the failure, then 2 s after the next one.
    h.advance(Duration::from_secs(1));
    assert!(eventually(|| async { h.idp.jwks_fetches() >= 3 }).await);
    h.idp.set_outage(false);
    h.advance(Duration::from_secs(2));
    assert!(eventually(|| async { h.idp.jwks_fetches() >= 4 }).await);
    assert!(
        eventually(|| async { h.metrics.render().contains(r#"result="ok"} 2"#) }).await,
        "{}",
        h.metrics.render()
    );
}

#[tokio::test]
async fn never_loaded_keys_are_unavailable_not_invalid() {
    let h = Harness::build(|idp| idp.set_outage(true), |_| {}).await;
    assert!(eventually(|| async { h.idp.discovery_fetches() >= 1 }).await);
    assert!(!h.verifier.wait_ready(Duration::from_millis(100)).await);
    let token = h.default_token();
    match h.verify(&token).await {
        Err(TokenError::KeysUnavailable { retry_after }) => {
            assert!((1..=30).contains(&retry_after), "{retry_after}")
        }
        other => panic!("expected KeysUnavailable, got {other:?}"),
    }
    assert!(h
        .metrics
        .render()
        .contains(r#"countersign_token_rejections_total{reason="keys_unavailable"} 1"#));

    // The IdP recovers; a request kicks a fetch once five seconds have passed.
    h.idp.set_outage(false);
    h.clock.advance(Duration::from_secs(5));
    let _ = h.verify(&token).await;
    assert!(h.verifier.wait_ready(Duration::from_secs(5)).await);
    assert!(h.verify(&token).await.is_ok());
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer_exactly() {
    let h = Harness::build(|_| {}, |i| i.issuer.push('/')).await;
    assert!(eventually(|| async { h.idp.discovery_fetches() >= 1 }).await);
    assert!(!h.verifier.wait_ready(Duration::from_millis(200)).await);
    assert_eq!(
        h.idp.jwks_fetches(),
        0,
        "jwks_uri of a mismatching document is not used"
    );
    let token = h.token(
        &h.idp.default_kid(),
        "RS256",
        json!({"iss": format!("{}/", h.idp.issuer())}),
    );
    assert!(matches!(
        h.verify(&token).await,
        Err(TokenError::KeysUnavailable { .. })
    ));
}

#[tokio::test]
async fn configured_jwks_uri_skips_discovery() {
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let idp = DevIdp::start_with_clock(clock.clone()).await.expect("idp");
    let mut issuer = issuer_for(&idp);
    issuer.jwks_uri = Some(idp.jwks_uri().parse().expect("url"));
    let verifier = Verifier::new(vec![issuer], http(), clock, Metrics::new());
    verifier.start();
    assert!(verifier.wait_ready(Duration::from_secs(5)).await);
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (0, 1));
}

#[tokio::test]
async fn shorter_cache_control_max_age_is_honoured() {
    let h = Harness::ready(
        |idp| idp.set_cache_control(Some("public, max-age=10".to_owned())),
        |_| {},
    )
    .await;
    h.advance(Duration::from_secs(9));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.idp.jwks_fetches(), 1, "not due yet");
    h.advance(Duration::from_secs(1));
    assert!(eventually(|| async { h.idp.jwks_fetches() == 2 }).await);

    // max-age=0 still means at most once a second.
    h.idp.set_cache_control(Some("max-age=0".to_owned()));
    h.advance(Duration::from_secs(10));
    assert!(eventually(|| async { h.idp.jwks_fetches() == 3 }).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.idp.jwks_fetches(), 3, "never more than once a second");
    h.advance(Duration::from_secs(1));
    assert!(eventually(|| async { h.idp.jwks_fetches() == 4 }).await);
}

#[tokio::test]
async fn refresh_interval_applies_without_cache_control() {
    let h = Harness::ready(|_| {}, |i| i.refresh = Duration::from_secs(30)).await;
    h.advance(Duration::from_secs(29));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.idp.jwks_fetches(), 1);
    h.advance(Duration::from_secs(1));
    assert!(eventually(|| async { h.idp.jwks_fetches() == 2 }).await);
}

#[tokio::test]
async fn small_rsa_keys_are_ignored() {
    let mut small = String::new();
    let h = Harness::ready(|idp| small = idp.add_key(KeyKind::Rsa1024), |_| {}).await;
    let token = h.token(&small, "RS256", json!({}));
    // Unknown key (the key was skipped), not a bad signature (it was never considered).
    assert_eq!(h.refusal(&token).await, invalid(Reason::UnknownKey));
}

#[test]
fn jwks_parsing_skips_unusable_keys() {
    let rsa_n = "xjlCRBqkQRr0Hz1eWcG0Lz6lm2N1bTFVRzoa8ntkLCJ0lqU3IYXoCuY8E0KxBaaL5vKg9x4ZeJ7lHnpw0Yq7d4iWLbjDLk8HNiGsb3hn0Wl28w-bzmr3U-TzyjOafMrq0ed0x0Ojg8VhhaBvPrd-FzbuFKGwS_DhDMpV-DVxKwfqOL8O93yQ2hmH8klxVVSEBSakwbXyuCJgRu2cENLMwnqzF0qaI4azAU0y8hhWS_4ZgaQS4WLFkgsFjXRBA84RMZ6P4qbdT4Xph4U4aEnz0ECR3nJbGmHCZsyZ2N4vdlADC5gx-QLU-UWPUMqSQOGrAPGYhkXnGqXDePcXo6kyqyoGPjg8H1E0sCKTbb7KgjpB4uMezXVyxyZVLPh_MQ";
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": rsa_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "EC", "kid": "badlen", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"kty": "RSA", "kid": "weird-alg", "alg": "RSA-OAEP", "n": rsa_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "mismatched-alg", "alg": "ES256", "n": rsa_n, "e": "AQAB"},
        "not an object",
        {"kty": "RSA", "kid": "good", "use": "sig", "alg": "RS256", "n": rsa_n, "e": "AQAB"},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    ]});
    let (set, skipped) = KeySet::parse(doc.to_string().as_bytes(), None).expect("parses");
    assert_eq!((set.len(), skipped), (2, 10));
    let good = set
        .candidates(Some("good"), Algorithm::RS256)
        .expect("kid known");
    assert_eq!(good.len(), 1);
    let wrong_alg = set
        .candidates(Some("good"), Algorithm::PS256)
        .expect("kid known");
    assert!(wrong_alg.is_empty(), "the JWK's alg restricts it to RS256");
    assert!(set.candidates(Some("enc"), Algorithm::RS256).is_none());
    assert!(KeySet::parse(b"{}", None).is_err());
    assert!(KeySet::parse(b"not json", None).is_err());
}

#[test]
fn unchanged_keys_keep_their_identity_across_refetches() {
    let doc = json!({"keys": [
        {"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    ]});
    let (first, _) = KeySet::parse(doc.to_string().as_bytes(), None).expect("parses");
    let (second, _) = KeySet::parse(doc.to_string().as_bytes(), Some(&first)).expect("parses");
    let key = first.candidates(Some("a"), Algorithm::EdDSA).expect("a")[0].clone();
    assert!(second.contains(&key));
    let (fresh, _) = KeySet::parse(doc.to_string().as_bytes(), None).expect("parses");
    assert!(!fresh.contains(&key), "identity, not equality");
}

#[test]
fn cache_control_max_age_parsing() {
    use super::super::discovery::parse_max_age;
    let secs = |s: u64| Some(Duration::from_secs(s));
    assert_eq!(parse_max_age("max-age=60"), secs(60));
    assert_eq!(
        parse_max_age("public, MAX-AGE=\"30\", must-revalidate"),
        secs(30)
    );
    assert_eq!(parse_max_age("s-maxage=5, max-age=7"), secs(7));
    assert_eq!(parse_max_age("no-store"), None);
    assert_eq!(parse_max_age("max-age=-1"), None);
}

/// Serves one canned HTTP response per connection on loopback; returns its URL.
async fn canned_server(response: Vec<u8>) -> url::Url {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/jwks.json").parse().expect("url")
}

#[tokio::test]
async fn documents_over_one_mebibyte_are_refused() {
    use super::super::discovery::get;
    let body = vec![b' '; 1024 * 1024 + 1];
    let mut declared = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    declared.extend_from_slice(&body);
    let url = canned_server(declared).await;
    assert!(get(&http(), url).await.is_err(), "declared length too big");

    let mut chunked =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".to_vec();
    chunked.extend_from_slice(&body);
    let url = canned_server(chunked).await;
    assert!(get(&http(), url).await.is_err(), "streamed body too big");

    let mut small = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncache-control: max-age=42\r\nconnection: close\r\n\r\n".to_vec();
    small.extend_from_slice(b"{\"keys\":[]}");
    let url = canned_server(small).await;
    let fetched = get(&http(), url).await.expect("small document");
    assert_eq!(fetched.body, b"{\"keys\":[]}");
    assert_eq!(fetched.max_age, Some(Duration::from_secs(42)));
}

#[tokio::test]
async fn refused_connections_leave_keys_unavailable() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let idp = DevIdp::start_with_clock(clock.clone()).await.expect("idp");
    let mut issuer = issuer_for(&idp);
    issuer.jwks_uri = Some(format!("http://{closed}/jwks.json").parse().expect("url"));
    let metrics = Metrics::new();
    let verifier = Verifier::new(vec![issuer], http(), clock, metrics.clone());
    verifier.start();
    assert!(eventually(|| async { metrics.render().contains(r#"result="error"} 1"#) }).await);
    assert!(!verifier.ready());
    let token = idp.mint(json!({"sub": "alice", "aud": super::AUD}));
    assert!(matches!(
        verifier.verify(&token).await,
        Err(TokenError::KeysUnavailable { .. })
    ));
}

/// A token whose signature failed is refused again without a second signature check while the
/// issuer's key set is the same, and checked afresh once it changed: here a token without a
/// kid, signed by a key the issuer publishes only later, passes after that rotation.
#[tokio::test]
async fn a_bad_signature_is_remembered_only_until_the_key_set_changes() {
    let h = Harness::new().await;
    let old = h.idp.default_kid();
    let new = h.idp.add_key(KeyKind::Rsa2048);
    let token = h
        .idp
        .mint_with(&new, json!({"alg": "RS256"}), h.claims(json!({})));
    // The verifier knows only `old`: the one RS256 key for a token without a kid.
    assert_eq!(h.refusal(&token).await, invalid(Reason::BadSignature));
    let checks = h.verifier.signature_checks();
    for _ in 0..3 {
        assert_eq!(h.refusal(&token).await, invalid(Reason::BadSignature));
    }
    assert_eq!(
        h.verifier.signature_checks(),
        checks,
        "a repeated bad token costs no signature check"
    );
    // The same token with the first signature character changed.
    let dot = token.rfind('.').expect("compact JWS") + 1;
    let first = if token.as_bytes()[dot] == b'A' {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{first}{}", &token[..dot], &token[dot + 1..]);
    assert_eq!(h.refusal(&tampered).await, invalid(Reason::BadSignature));
    assert!(
        h.verifier.signature_checks() > checks,
        "another token is checked"
    );

    // Rotation: `old` leaves the JWKS; after the refresh `new` is the one RS256 key.
    h.idp.remove_key(&old);
    let fetches = h.idp.jwks_fetches();
    h.advance(Duration::from_secs(301));
    assert!(eventually(|| async { h.idp.jwks_fetches() > fetches }).await);
    assert!(
        eventually(|| async { h.verify(&token).await.is_ok() }).await,
        "checked afresh against the new key set"
    );
}
