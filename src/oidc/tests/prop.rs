//! Property tests (issue 10): the `Authorization` parser, the compact-JWS splitter, the claim
//! checks and the whole verifier against random input and random mutations of valid tokens.
//! `PROPTEST_CASES` raises the case count for long runs.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

use super::super::token::{check_claims, split, MAX_TOKEN_LEN};
use super::super::{bearer_token, Reason, TokenError};
use super::{Harness, AUD};

/// RFC 6750 2.1, written independently: `Bearer` (any case), one or more spaces, a b64token
/// (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`), then optional trailing
/// spaces or tabs (tolerated).
fn reference_bearer(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let text = text.trim_end_matches([' ', '\t']);
    let (scheme, rest) = text.split_at(text.find(' ')?);
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c));
    ok.then(|| token.to_owned())
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let token = "[A-Za-z0-9._~+/-]{1,30}=*";
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..60),
        (
            prop_oneof![
                Just("Bearer"),
                Just("bearer"),
                Just("BEARER"),
                Just("Basic"),
                Just("Bearerx"),
                Just("")
            ],
            "[ \t]{0,3}",
            token,
            "[ \t]{0,2}",
        )
            .prop_map(|(s, sp, t, tail)| format!("{s}{sp}{t}{tail}").into_bytes()),
        ("Bearer +", "[ -~]{0,30}").prop_map(|(a, b)| format!("{a}{b}").into_bytes()),
    ]
}

/// Canonical base64url without padding, checked by round trip (another route than the
/// splitter's alphabet-and-decode check).
fn canonical_b64(part: &str) -> Option<Vec<u8>> {
    let decoded = URL_SAFE_NO_PAD.decode(part).ok()?;
    (URL_SAFE_NO_PAD.encode(&decoded) == part).then_some(decoded)
}

fn jwsish() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[A-Za-z0-9_-]{0,12}",
        "[A-Za-z0-9_=+/-]{0,12}",
        Just("eyJhbGciOiJSUzI1NiJ9".to_owned()),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
    ];
    prop_oneof![
        proptest::collection::vec(part, 0..6).prop_map(|p| p.join(".")),
        "[ -~]{0,40}",
        "\\PC{0,20}",
    ]
}

/// A claim value: mostly numbers around `NOW`, sometimes another type.
fn date_value() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(prop_oneof![
        (NOW - 4000..NOW + 4000).prop_map(|n| json!(n)),
        (-1e10f64..1e10).prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!("1700000000")),
        Just(json!(null)),
        Just(json!(true)),
    ])
}

const NOW: u64 = 1_700_000_000;

fn claims() -> impl Strategy<Value = Map<String, Value>> {
    (
        date_value(),
        date_value(),
        date_value(),
        proptest::option::of(prop_oneof![
            Just(json!(AUD)),
            Just(json!([AUD])),
            Just(json!(["other", AUD])),
            Just(json!("other")),
            Just(json!([])),
            Just(json!([1, 2])),
            Just(json!({"aud": AUD})),
            "[ -~]{0,10}".prop_map(|s| json!(s)),
        ]),
        proptest::option::of(prop_oneof![
            Just(json!("alice")),
            Just(json!(7)),
            Just(json!(null)),
            Just(json!(["alice"]))
        ]),
    )
        .prop_map(|(exp, nbf, iat, aud, sub)| {
            let mut m = Map::new();
            for (k, v) in [
                ("exp", exp),
                ("nbf", nbf),
                ("iat", iat),
                ("aud", aud),
                ("sub", sub),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            m
        })
}

/// RFC 7519 with the issuer's leeway, written independently of `check_claims`.
fn reference_claims_ok(c: &Map<String, Value>, leeway: u64) -> bool {
    let date = |v: &Value| -> Option<f64> {
        let f = v.as_f64()?;
        (f >= 0.0 && f.is_finite()).then_some(f.floor())
    };
    let now = NOW as f64;
    let leeway = leeway as f64;
    let exp_ok = c
        .get("exp")
        .and_then(date)
        .is_some_and(|e| now < e + leeway);
    let not_before_ok = ["nbf", "iat"].iter().all(|k| match c.get(*k) {
        None => true,
        Some(v) => date(v).is_some_and(|t| t <= now + leeway),
    });
    let aud_ok = match c.get("aud") {
        Some(Value::String(s)) => s == AUD,
        Some(Value::Array(a)) => a.iter().any(|v| v == AUD),
        _ => false,
    };
    let sub_ok = c.get("sub").is_some_and(Value::is_string);
    exp_ok && not_before_ok && aud_ok && sub_ok
}

proptest! {
    /// Arbitrary header bytes never panic, and a token comes out only when the reference
    /// grammar accepts the value (and it is that token).
    #[test]
    fn bearer_parser_agrees_with_rfc_6750(values in proptest::collection::vec(header_value(), 0..3)) {
        let got = bearer_token(values.iter().map(Vec::as_slice));
        match values.len() {
            0 => prop_assert_eq!(got, Ok(None)),
            1 => {
                if let Ok(Some(token)) = &got {
                    let want = reference_bearer(&values[0]);
                    prop_assert_eq!(want.as_deref(), Some(*token));
                } else if let Some(t) = reference_bearer(&values[0]) {
                    prop_assert!(false, "reference accepts {:?} but got {:?}", t, got);
                }
            }
            _ => prop_assert_eq!(got, Err(TokenError::InvalidRequest(Reason::Duplicate))),
        }
    }

    /// The compact-JWS splitter never panics and accepts exactly three canonical base64url
    /// parts, decoding header and payload to what they encode.
    #[test]
    fn jws_splitter_accepts_only_three_canonical_parts(token in jwsish()) {
        let pieces: Vec<&str> = token.split('.').collect();
        let reference = token.len() <= MAX_TOKEN_LEN
            && pieces.len() == 3
            && pieces.iter().all(|p| canonical_b64(p).is_some());
        match split(&token) {
            Ok(parts) => {
                prop_assert!(reference, "accepted {:?}", token);
                prop_assert_eq!(Some(parts.header), canonical_b64(pieces[0]));
                prop_assert_eq!(Some(parts.payload), canonical_b64(pieces[1]));
                prop_assert_eq!(parts.signature, pieces[2]);
                prop_assert_eq!(parts.signing_input, format!("{}.{}", pieces[0], pieces[1]));
            }
            Err(reason) => {
                prop_assert!(!reference, "rejected {:?}", token);
                prop_assert_eq!(reason, Reason::Malformed);
            }
        }
    }

    /// Claim checks never panic and accept only what RFC 7519 (with leeway) accepts.
    #[test]
    fn claim_checks_agree_with_the_reference(c in claims(), leeway in 0u64..120) {
        let mut issuer = issuer_for_tests();
        issuer.leeway = Duration::from_secs(leeway);
        let got = check_claims(&c, &issuer, NOW);
        prop_assert_eq!(got.is_ok(), reference_claims_ok(&c, leeway), "{:?} {:?}", c, got);
    }
}

fn issuer_for_tests() -> crate::config::Issuer {
    crate::config::Issuer {
        issuer: "https://idp.example.test".into(),
        audiences: vec![AUD.to_owned()],
        jwks_uri: None,
        algorithms: crate::config::Algorithm::defaults(),
        leeway: Duration::from_secs(60),
        require_typ: None,
        refresh: Duration::from_secs(300),
        identity_claim: "email".into(),
        approvers: false,
    }
}

/// One random edit of a token: a byte changed, inserted, removed, a cut, a part swapped, a
/// part dropped or duplicated.
fn mutation() -> impl Strategy<Value = (u8, prop::sample::Index, u8)> {
    (0u8..8, any::<prop::sample::Index>(), any::<u8>())
}

fn mutate(token: &str, (how, at, byte): (u8, prop::sample::Index, u8)) -> Vec<u8> {
    let mut b = token.as_bytes().to_vec();
    let i = at.index(b.len());
    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let parts: Vec<&str> = token.split('.').collect();
    match how {
        // Another base64url character (or a dot) in place: looks as valid as the original.
        0 => b[i] = b64[usize::from(byte) % b64.len()],
        1 => b[i] = byte,
        2 => b.insert(i, b64[usize::from(byte) % b64.len()]),
        3 => {
            b.remove(i);
        }
        4 => b.truncate(i),
        5 => {
            let k = usize::from(byte) % 3;
            let mut p = parts.clone();
            p.swap(k, (k + 1) % 3);
            b = p.join(".").into_bytes();
        }
        6 => {
            let mut p = parts.clone();
            p.remove(usize::from(byte) % 3);
            b = p.join(".").into_bytes();
        }
        _ => b[i] ^= 1 << (byte % 8),
    }
    b
}

/// Random mutations of valid tokens (RS256, PS256, ES256, EdDSA) are never accepted unless
/// byte-identical to the original; the verifier never panics on them.
#[test]
fn mutated_tokens_are_never_accepted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (h, tokens) = rt.block_on(async {
        let (h, kids) = Harness::every_algorithm().await;
        let tokens: Vec<String> = kids
            .iter()
            .map(|(kid, alg)| h.token(kid, alg, json!({"email": "alice@example.com"})))
            .collect();
        for t in &tokens {
            h.verify(t).await.expect("the original verifies");
        }
        (h, tokens)
    });
    let mut runner = TestRunner::new(Config::default());
    let result = runner.run(&(0..tokens.len(), mutation()), |(which, m)| {
        let original = &tokens[which];
        let changed = mutate(original, m);
        if changed == original.as_bytes() {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&changed) else {
            // Header values that are not UTF-8 never reach the verifier.
            return Ok(());
        };
        let got = rt.block_on(h.verify(text));
        if let Ok(p) = got {
            return Err(TestCaseError::fail(format!(
                "mutated token accepted as {}: {text}",
                p.subject
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
