//! Attack tokens: each is rejected with the precise reason, none is ever accepted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::super::{bearer_token, Reason, TokenError};
use super::{invalid, Harness};
use crate::devidp::{DevIdp, KeyKind};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[tokio::test]
async fn alg_none_in_every_casing() {
    let h = Harness::new().await;
    let kid = h.idp.default_kid();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let input = signing_input(&json!({"alg": alg, "kid": kid}), &h.claims(json!({})));
        for token in [format!("{input}."), format!("{input}.{}", b64(b"sig"))] {
            h.refuses(&token, Reason::AlgorithmNotAllowed, &alg).await;
        }
    }
    let no_alg = h
        .idp
        .mint_with(&kid, json!({"kid": kid}), h.claims(json!({})));
    assert_eq!(
        h.refusal(&no_alg).await,
        invalid(Reason::AlgorithmNotAllowed)
    );
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key() {
    let h = Harness::new().await;
    let kid = h.idp.default_kid();
    let pem = h.idp.public_pem(&kid);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    for alg in ["HS256", "HS384", "HS512", "hs256"] {
        let input = signing_input(
            &json!({"alg": alg, "typ": "JWT", "kid": kid}),
            &h.claims(json!({})),
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, pem.as_bytes());
        let tag = ring::hmac::sign(&key, input.as_bytes());
        let token = format!("{input}.{}", b64(tag.as_ref()));
        h.refuses(&token, Reason::AlgorithmNotAllowed, &alg).await;
    }
    assert_eq!(h.verifier.signature_checks(), 0);
}

#[tokio::test]
async fn embedded_jwk_header_is_never_trusted() {
    let h = Harness::new().await;
    let attacker = h.idp.add_key(KeyKind::Rsa2048);
    h.idp.remove_key(&attacker);
    let jwk = h.idp.public_jwk(&attacker);
    let claims = h.claims(json!({}));
    let own_kid = h.idp.mint_with(
        &attacker,
        json!({"alg": "RS256", "kid": attacker, "jwk": jwk}),
        claims.clone(),
    );
    assert_eq!(h.refusal(&own_kid).await, invalid(Reason::UnknownKey));
    let victim = h.idp.default_kid();
    let victim_kid = h.idp.mint_with(
        &attacker,
        json!({"alg": "RS256", "kid": victim, "jwk": jwk}),
        claims.clone(),
    );
    assert_eq!(h.refusal(&victim_kid).await, invalid(Reason::BadSignature));
    let no_kid = h
        .idp
        .mint_with(&attacker, json!({"alg": "RS256", "jwk": jwk}), claims);
    assert_eq!(h.refusal(&no_kid).await, invalid(Reason::BadSignature));
}

#[tokio::test]
async fn jku_pointing_at_an_attacker_jwks_is_never_fetched() {
    let h = Harness::new().await;
    let attacker = DevIdp::start().await.expect("attacker idp");
    let attacker_kid = attacker.add_key(KeyKind::P256);
    for extra in [
        json!({"jku": attacker.jwks_uri()}),
        json!({"x5u": attacker.jwks_uri()}),
    ] {
        let mut header = json!({"alg": "ES256", "kid": attacker_kid});
        if let (Some(h), Value::Object(extra)) = (header.as_object_mut(), extra) {
            h.extend(extra);
        }
        let token = attacker.mint_with(&attacker_kid, header, h.claims(json!({})));
        assert_eq!(h.refusal(&token).await, invalid(Reason::UnknownKey));
    }
    assert_eq!(attacker.jwks_fetches(), 0);
    assert_eq!(attacker.discovery_fetches(), 0);
}

#[tokio::test]
async fn kid_path_traversal_is_just_an_unknown_kid() {
    let h = Harness::new().await;
    let default = h.idp.default_kid();
    let token = h.idp.mint_with(
        &default,
        json!({"alg": "RS256", "kid": "../../etc/passwd"}),
        h.claims(json!({})),
    );
    assert_eq!(h.refusal(&token).await, invalid(Reason::UnknownKey));
    assert_eq!(h.idp.jwks_fetches(), 2, "one refetch for the unknown kid");
}

#[tokio::test]
async fn unknown_crit_is_rejected() {
    let h = Harness::new().await;
    let kid = h.idp.default_kid();
    for crit in [json!(["exp"]), json!(["b64"]), json!([])] {
        let token = h.idp.mint_with(
            &kid,
            json!({"alg": "RS256", "kid": kid, "crit": crit, "exp": 1, "b64": true}),
            h.claims(json!({})),
        );
        h.refuses(&token, Reason::UnsupportedCritical, &crit).await;
    }
}

#[tokio::test]
async fn wrong_and_near_miss_issuers() {
    let h = Harness::new().await;
    let kid = h.idp.default_kid();
    let issuer = h.idp.issuer();
    for iss in [
        json!("https://evil.example"),
        json!(format!("{issuer}/")),
        json!(issuer.to_uppercase()),
        json!(issuer.replace("http://", "https://")),
        json!(format!(" {issuer}")),
        json!([issuer]),
        Value::Null,
    ] {
        let token = h.token(&kid, "RS256", json!({ "iss": iss }));
        h.refuses(&token, Reason::UnknownIssuer, &iss).await;
    }
}

#[tokio::test]
async fn same_kid_signed_by_another_key() {
    let h = Harness::new().await;
    let other = h.idp.add_key(KeyKind::Rsa2048);
    let victim = h.idp.default_kid();
    let token = h.idp.mint_with(
        &other,
        json!({"alg": "RS256", "kid": victim}),
        h.claims(json!({})),
    );
    assert_eq!(h.refusal(&token).await, invalid(Reason::BadSignature));
}

#[tokio::test]
async fn es256_accepts_only_64_byte_p1363_signatures() {
    let mut kid = String::new();
    let h = Harness::ready(|idp| kid = idp.add_key(KeyKind::P256), |_| {}).await;
    let input = signing_input(&json!({"alg": "ES256", "kid": kid}), &h.claims(json!({})));
    let sig = h.idp.sign(&kid, input.as_bytes());
    assert_eq!(sig.len(), 64);
    let good = format!("{input}.{}", b64(&sig));
    assert!(h.verify(&good).await.is_ok());

    let der = format!("{input}.{}", b64(&p1363_to_der(&sig)));
    assert_eq!(h.refusal(&der).await, invalid(Reason::BadSignature));
    let zero = format!("{input}.{}", b64(&[0u8; 64]));
    h.refuses(&zero, Reason::BadSignature, "r = s = 0").await;
    let der_zero = format!(
        "{input}.{}",
        b64(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00])
    );
    assert_eq!(h.refusal(&der_zero).await, invalid(Reason::BadSignature));
}

/// ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }` from r||s.
fn p1363_to_der(sig: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
        let mut value = trimmed;
        if value.first().is_none_or(|&b| b & 0x80 != 0) {
            value.insert(0, 0);
        }
        let mut out = vec![0x02, value.len() as u8];
        out.extend(value);
        out
    }
    let (r, s) = sig.split_at(sig.len() / 2);
    let mut body = integer(r);
    body.extend(integer(s));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test]
async fn token_sent_twice_is_a_duplicate() {
    let h = Harness::new().await;
    let header = format!("Bearer {}", h.default_token());
    let values = [header.as_bytes(), header.as_bytes()];
    assert_eq!(
        bearer_token(values.into_iter()),
        Err(TokenError::InvalidRequest(Reason::Duplicate))
    );
}

#[tokio::test]
async fn trailing_garbage_and_odd_shapes_are_malformed() {
    let h = Harness::new().await;
    let token = h.default_token();
    assert!(h.verify(&token).await.is_ok());
    let five_parts = format!(
        "{0}.{0}.{0}.{0}.{0}",
        b64(b"{\"alg\":\"RSA-OAEP\",\"enc\":\"A256GCM\"}")
    );
    for bad in [
        format!("{token}.x"),
        format!("{token}."),
        format!("{token} x"),
        format!("{token}="),
        format!("{token}=="),
        format!("{token}\n"),
        format!("{token}!"),
        token.replacen('.', "..", 1),
        five_parts,
        String::new(),
        "a.b".to_owned(),
    ] {
        h.refuses(&bad, Reason::Malformed, format!("{bad:?}")).await;
    }
    // One more base64 character: either not canonical base64 or a wrong signature, never valid.
    assert!(h.verify(&format!("{token}A")).await.is_err());
}

#[tokio::test]
async fn oversized_tokens_are_malformed_before_any_work() {
    let h = Harness::new().await;
    let huge = "a".repeat(64 * 1024);
    assert_eq!(h.refusal(&huge).await, invalid(Reason::Malformed));
    let padded = h.token(
        &h.idp.default_kid(),
        "RS256",
        json!({"pad": "x".repeat(64 * 1024)}),
    );
    assert_eq!(h.refusal(&padded).await, invalid(Reason::Malformed));
    assert_eq!(h.verifier.signature_checks(), 0);
}

#[tokio::test]
async fn header_and_payload_must_be_json_objects() {
    let h = Harness::new().await;
    let kid = h.idp.default_kid();
    let claims = h.claims(json!({}));
    let sig = b64(b"x");
    for (header, payload) in [
        (b64(b"[]"), b64(claims.to_string().as_bytes())),
        (b64(b"not json"), b64(claims.to_string().as_bytes())),
        (
            b64(format!(r#"{{"alg":"RS256","kid":"{kid}","alg":"none"}}"#).as_bytes()),
            b64(claims.to_string().as_bytes()),
        ),
        (
            b64(json!({"alg": "RS256", "kid": kid}).to_string().as_bytes()),
            b64(b"\"a string\""),
        ),
        (
            b64(json!({"alg": "RS256", "kid": 7}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes()),
        ),
    ] {
        let token = format!("{header}.{payload}.{sig}");
        h.refuses(&token, Reason::Malformed, &token).await;
    }
}
