//! Well-formed tokens are accepted, cached, and stop being accepted when they should.

use std::time::Duration;

use serde_json::json;

use super::super::Reason;
use super::{eventually, invalid, Harness};
use crate::devidp::KeyKind;

#[tokio::test]
async fn rs256_ps256_es256_eddsa_tokens_are_accepted_then_served_from_cache() {
    let (h, kids) = Harness::every_algorithm().await;
    for (kid, alg) in kids {
        let token = h.token(
            &kid,
            alg,
            json!({"email": "alice@example.com", "scope": "a b"}),
        );
        let before = h.verifier.signature_checks();
        let principal = h.verify(&token).await.expect(alg);
        assert_eq!(principal.subject, "alice", "{alg}");
        assert_eq!(principal.issuer, h.idp.issuer());
        assert_eq!(principal.email.as_deref(), Some("alice@example.com"));
        assert_eq!(principal.scopes, ["a", "b"]);
        assert_eq!(h.verifier.signature_checks(), before + 1, "{alg}");
        let again = h.verify(&token).await.expect(alg);
        assert_eq!(again.subject, "alice");
        assert_eq!(
            h.verifier.signature_checks(),
            before + 1,
            "{alg}: a cached token needs no signature check"
        );
    }
    assert_eq!(h.idp.jwks_fetches(), 1, "no refetch for known kids");
}

#[tokio::test]
async fn mint_fills_iss_iat_exp() {
    let h = Harness::new().await;
    let token = h
        .idp
        .mint(json!({"sub": "bob", "aud": [super::AUD, "other"]}));
    let principal = h.verify(&token).await.expect("valid");
    assert_eq!(principal.subject, "bob");
    assert_eq!(principal.expires_at, h.now() + 3600);
}

#[tokio::test]
async fn a_token_without_kid_needs_exactly_one_fitting_key() {
    let h = Harness::ready(
        |idp| {
            idp.add_key(KeyKind::P256);
        },
        |_| {},
    )
    .await;
    let kid = h.idp.default_kid();
    let claims = h.claims(json!({}));
    let token = h
        .idp
        .mint_with(&kid, json!({"alg": "RS256"}), claims.clone());
    assert!(h.verify(&token).await.is_ok(), "one RSA key, one P-256 key");

    h.clock.advance(Duration::from_secs(5));
    let second = h.idp.add_key(KeyKind::Rsa2048);
    // Load the second RSA key through an unknown-kid refetch.
    assert!(h
        .verify(&h.token(&second, "RS256", json!({})))
        .await
        .is_ok());
    let token = h.idp.mint_with(
        &kid,
        json!({"alg": "RS256"}),
        json!({"iss": h.idp.issuer(), "sub": "x", "aud": super::AUD, "exp": h.now() + 10}),
    );
    assert_eq!(h.refusal(&token).await, invalid(Reason::UnknownKey));
}

#[tokio::test]
async fn expiry_honours_leeway_also_for_cached_tokens() {
    let h = Harness::new().await;
    let now = h.now();
    let kid = h.idp.default_kid();
    let within = h.token(&kid, "RS256", json!({"exp": now - 30}));
    assert!(
        h.verify(&within).await.is_ok(),
        "30 s late is within 60 s leeway"
    );
    let beyond = h.token(&kid, "RS256", json!({"exp": now - 61}));
    assert_eq!(h.refusal(&beyond).await, invalid(Reason::Expired));

    let fresh = h.token(&kid, "RS256", json!({"exp": now + 100}));
    assert!(h.verify(&fresh).await.is_ok());
    h.clock.advance(Duration::from_secs(161));
    h.refuses(
        &fresh,
        Reason::Expired,
        "the cache never outlives exp + leeway",
    )
    .await;
}

#[tokio::test]
async fn not_before_and_issued_at_in_the_future() {
    let h = Harness::new().await;
    let now = h.now();
    let kid = h.idp.default_kid();
    for claim in ["nbf", "iat"] {
        let future = h.token(&kid, "RS256", json!({ claim: now + 120 }));
        h.refuses(&future, Reason::NotYetValid, &claim).await;
        let skewed = h.token(&kid, "RS256", json!({ claim: now + 30 }));
        assert!(h.verify(&skewed).await.is_ok(), "{claim} within leeway");
    }
}

#[tokio::test]
async fn audience_and_subject_are_required() {
    let h = Harness::new().await;
    let kid = h.idp.default_kid();
    let cases = [
        (
            json!({"aud": "https://other.example"}),
            Reason::WrongAudience,
        ),
        (json!({"aud": ["a", "b"]}), Reason::WrongAudience),
        (json!({"aud": null}), Reason::WrongAudience),
        (json!({"sub": null}), Reason::MissingSubject),
        (json!({"sub": 42}), Reason::MissingSubject),
        (json!({"exp": null}), Reason::MissingExpiry),
        (json!({"exp": "tomorrow"}), Reason::Malformed),
    ];
    for (extra, reason) in cases {
        let token = h.token(&kid, "RS256", extra.clone());
        assert_eq!(h.refusal(&token).await, invalid(reason), "{extra}");
    }
    let listed = h.token(&kid, "RS256", json!({"aud": ["other", super::AUD]}));
    assert!(h.verify(&listed).await.is_ok());
}

#[tokio::test]
async fn required_typ_is_checked_case_insensitively_with_optional_prefix() {
    let h = Harness::ready(|_| {}, |i| i.require_typ = Some("at+jwt".to_owned())).await;
    let kid = h.idp.default_kid();
    let claims = h.claims(json!({}));
    for (typ, ok) in [
        (Some("at+jwt"), true),
        (Some("AT+JWT"), true),
        (Some("application/at+jwt"), true),
        (Some("JWT"), false),
        (None, false),
    ] {
        let header = match typ {
            Some(t) => json!({"alg": "RS256", "kid": kid, "typ": t}),
            None => json!({"alg": "RS256", "kid": kid}),
        };
        let token = h.idp.mint_with(&kid, header, claims.clone());
        let result = h.verify(&token).await;
        if ok {
            assert!(result.is_ok(), "{typ:?}");
        } else {
            assert_eq!(result.unwrap_err(), invalid(Reason::WrongType), "{typ:?}");
        }
    }
}

#[tokio::test]
async fn issuer_allow_list_is_enforced() {
    let mut p256 = String::new();
    let h = Harness::ready(
        |idp| p256 = idp.add_key(KeyKind::P256),
        |i| i.algorithms = vec![crate::config::Algorithm::RS256],
    )
    .await;
    let es = h.token(&p256, "ES256", json!({}));
    assert_eq!(h.refusal(&es).await, invalid(Reason::AlgorithmNotAllowed));
    let ps = h.token(&h.idp.default_kid(), "PS256", json!({}));
    assert_eq!(h.refusal(&ps).await, invalid(Reason::AlgorithmNotAllowed));
    assert!(h.verify(&h.default_token()).await.is_ok());
}

#[tokio::test]
async fn rejections_and_fetches_are_counted() {
    let h = Harness::new().await;
    let expired = h.token(
        &h.idp.default_kid(),
        "RS256",
        json!({"exp": h.now() - 3600}),
    );
    let _ = h.verify(&expired).await;
    let _ = h.verify("not-a-token").await;
    let text = h.metrics.render();
    assert!(
        text.contains(r#"countersign_token_rejections_total{reason="expired"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"countersign_token_rejections_total{reason="malformed"} 1"#));
    let issuer = h.idp.issuer();
    assert!(text.contains(&format!(
        r#"countersign_jwks_fetches_total{{issuer="{issuer}",result="ok"}} 1"#
    )));
    assert!(text.contains(&format!(
        r#"countersign_jwks_fetches_total{{issuer="{issuer}",result="discovery_ok"}} 1"#
    )));
    assert!(eventually(|| async { h.verifier.ready() }).await);
}
