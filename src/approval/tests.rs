//! Unit tests of the pure parts: ids, hashing, previews, header filtering, the vote state
//! machine and the signer.

use std::collections::BTreeMap;
use std::time::Duration;

use super::transition::{vote as apply_vote, VoteResultKind};
use super::*;
use crate::policy::{ApproveVia, Approver, NotifyTarget};

/// The rule tests' approval: `sample_approval` with two approvers `a@`/`b@example.com`,
/// `quorum`, login-only, three notify targets, short times.
pub(super) fn approval(quorum: u32) -> Approval {
    Approval {
        requester: Requester {
            iss: "https://idp".into(),
            sub: "u1".into(),
            email: Some("dev@example.com".into()),
        },
        query: Some("dry=0".into()),
        approvers: vec!["a@example.com".into(), "b@example.com".into()],
        quorum,
        approve_via: ApproveVia::Login,
        notify: vec![
            NotifyTarget::SlackChannel("#prod".into()),
            NotifyTarget::SlackUser("a@example.com".into()),
            NotifyTarget::Teams,
        ],
        created_at: 1_000,
        expires_at: 10_000,
        ..sample_approval()
    }
}

/// A pending, held approval of `POST deploy.example.com/v1/deployments/production` by
/// dev@example.com for alice and bob (quorum 2), for the rendering tests of both chats.
pub(crate) fn sample_approval() -> Approval {
    Approval {
        id: ApprovalId::generate(),
        rule: "prod-deploy".into(),
        requester: Requester {
            iss: "https://idp.example.com".into(),
            sub: "user-dev".into(),
            email: Some("dev@example.com".into()),
        },
        method: "POST".into(),
        host: "deploy.example.com".into(),
        path: "/v1/deployments/production".into(),
        query: None,
        request_hash: "00".into(),
        reason: None,
        body_preview: String::new(),
        body_len: 0,
        body_preview_cut: false,
        body_sha256: String::new(),
        headers: Vec::new(),
        approvers: vec!["alice@example.com".into(), "bob@example.com".into()],
        quorum: 2,
        quorum_entries: Vec::new(),
        self_approval: false,
        approve_via: ApproveVia::Button,
        notify: vec![],
        created_at: 1_700_000_000_000,
        expires_at: 1_700_003_600_000,
        votes: vec![],
        status: Status::Pending,
        decided_by: None,
        decision_reason: None,
        decided_at: None,
        held: true,
        held_until: None,
        holder: None,
        execution: Execution::NotStarted,
        audit_pending: false,
        nudges: Default::default(),
        break_glass: None,
        grant_offer: None,
        granted: None,
    }
}

/// `POST deploy.example.com/x` with `headers` and `body`, for upstream `echo`.
pub(super) fn stored(headers: &http::HeaderMap, body: Vec<u8>) -> StoredRequest {
    StoredRequest::new(
        &http::Method::POST,
        "deploy.example.com",
        "/x",
        None,
        headers,
        body,
        "echo",
        "u1",
    )
}

pub(super) fn vote(who: &str, decision: Decision) -> Vote {
    Vote {
        approver: who.into(),
        decision,
        reason: Some("because".into()),
        at: 2_000,
        via: Channel::Api,
        self_approval: false,
        grant: false,
    }
}

#[test]
fn ids_are_prefixed_base32_and_unique() {
    let a = ApprovalId::generate();
    let b = ApprovalId::generate();
    assert_ne!(a, b);
    assert!(a.as_str().starts_with("apr_"));
    assert_eq!(a.as_str().len(), 30);
    assert_eq!(ApprovalId::parse(a.as_str()), Some(a.clone()));
    assert_eq!(ApprovalId::parse("apr_../../etc/passwd"), None);
    assert_eq!(ApprovalId::parse(&a.as_str().to_uppercase()), None);
    assert_eq!(ApprovalId::parse(&a.as_str()[..29]), None);
}

#[test]
fn request_hash_changes_with_every_field() {
    let base = ("POST", "h", "/p", Some("q=1"), &b"body"[..], "iss", "sub");
    let h = |f: (&str, &str, &str, Option<&str>, &[u8], &str, &str)| {
        request_hash(f.0, f.1, f.2, f.3, f.4, f.5, f.6)
    };
    let reference = h(base);
    assert_eq!(reference, h(base), "deterministic");
    let variants = [
        ("PUT", "h", "/p", Some("q=1"), &b"body"[..], "iss", "sub"),
        ("POST", "h2", "/p", Some("q=1"), &b"body"[..], "iss", "sub"),
        ("POST", "h", "/p2", Some("q=1"), &b"body"[..], "iss", "sub"),
        ("POST", "h", "/p", Some("q=2"), &b"body"[..], "iss", "sub"),
        ("POST", "h", "/p", None, &b"body"[..], "iss", "sub"),
        ("POST", "h", "/p", Some(""), &b"body"[..], "iss", "sub"),
        ("POST", "h", "/p", Some("q=1"), &b"bodx"[..], "iss", "sub"),
        ("POST", "h", "/p", Some("q=1"), &b"body"[..], "iss2", "sub"),
        ("POST", "h", "/p", Some("q=1"), &b"body"[..], "iss", "sub2"),
        // Moving bytes between adjacent fields must not collide (length prefixes).
        ("POST", "h", "/p", Some("q=1"), &b"body"[..], "is", "ssub"),
        ("POST", "h", "/p", Some("q=1"), &b"bodyiss"[..], "", "sub"),
    ];
    for v in variants {
        assert_ne!(h(v), reference, "{v:?}");
    }
    assert_ne!(
        h(("POST", "h", "/p", None, b"", "i", "s")),
        h(("POST", "h", "/p", Some(""), b"", "i", "s"))
    );
}

#[test]
fn preview_redacts_json_pointers_before_cutting() {
    let body =
        br#"{"user":"x","password":"hunter2","card":{"number":"4111111111111111","exp":"12/30"}}"#;
    let redact = vec![
        "/password".to_owned(),
        "/card/number".to_owned(),
        "/absent".to_owned(),
    ];
    let p = body_preview(body, Some("application/json"), &redact);
    assert!(!p.contains("hunter2"), "{p}");
    assert!(!p.contains("4111"), "{p}");
    assert!(p.contains("[redacted]"));
    assert!(p.contains("12/30"));
}

#[test]
fn preview_hides_unparseable_bodies_when_rule_redacts() {
    let body = br#"{"password":"hunter2""#; // truncated JSON
    let p = body_preview(body, Some("application/json"), &["/password".to_owned()]);
    assert!(!p.contains("hunter2"), "{p}");
    let form = b"password=hunter2";
    let p = body_preview(
        form,
        Some("application/x-www-form-urlencoded"),
        &["/password".to_owned()],
    );
    assert!(!p.contains("hunter2"), "{p}");
}

#[test]
fn preview_is_bounded_utf8() {
    let long = "é".repeat(5000);
    let p = body_preview(long.as_bytes(), Some("text/plain"), &[]);
    assert!(p.len() <= 2048, "{}", p.len());
    assert!(p.ends_with('…'));
    let json = format!(r#"{{"k":"{}"}}"#, "x".repeat(5000));
    assert!(body_preview(json.as_bytes(), None, &[]).len() <= 2048);
    assert_eq!(
        body_preview(&[0xff, 0xfe, 0x00], None, &[]),
        "[binary body, 3 bytes]"
    );
    assert_eq!(body_preview(b"", None, &[]), "");
}

#[test]
fn stored_request_drops_hop_by_hop_and_countersign_headers() {
    let mut h = http::HeaderMap::new();
    h.insert("connection", "keep-alive, x-private".parse().unwrap());
    h.insert("x-private", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("transfer-encoding", "chunked".parse().unwrap());
    h.insert("host", "deploy.example.com".parse().unwrap());
    h.insert("content-length", "2".parse().unwrap());
    h.insert("countersign-reason", "hi".parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("authorization", "Bearer secret-token".parse().unwrap());
    h.append("x-multi", "a".parse().unwrap());
    h.append("x-multi", "b".parse().unwrap());
    let s = stored(&h, b"{}".to_vec());
    let names: Vec<&str> = s.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["content-type", "authorization", "x-multi", "x-multi"]
    );
    assert_eq!(s.content_type(), Some("application/json"));
    assert!(
        !format!("{s:?}").contains("secret-token"),
        "Debug must redact credentials"
    );
    let back: StoredRequest = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn approvers_expand_groups_lowercase_and_dedupe() {
    let mut groups = BTreeMap::new();
    groups.insert(
        "leads".to_owned(),
        vec!["Alice@Example.com".to_owned(), "bob@example.com".to_owned()],
    );
    let list = vec![
        Approver::Group("leads".into()),
        Approver::Email("alice@example.com".into()),
        Approver::Email("carol@example.com".into()),
        Approver::Group("missing".into()),
    ];
    assert_eq!(
        expand_approvers(&list, &groups),
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
}

#[test]
fn approval_round_trips_through_json() {
    let a = approval(1);
    let json = serde_json::to_string(&a).unwrap();
    let back: Approval = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
}

#[test]
fn votes_follow_quorum_duplicate_deny_and_expiry_rules() {
    let mut a = approval(2);
    assert_eq!(
        apply_vote(&mut a, vote("a@example.com", Decision::Approve), 2_000),
        VoteResultKind::Recorded
    );
    assert_eq!(
        apply_vote(&mut a, vote("a@example.com", Decision::Approve), 2_000),
        VoteResultKind::Duplicate
    );
    assert_eq!(
        apply_vote(&mut a, vote("a@example.com", Decision::Deny), 2_000),
        VoteResultKind::Duplicate
    );
    assert_eq!(a.votes.len(), 1);
    assert_eq!(
        apply_vote(&mut a, vote("b@example.com", Decision::Approve), 2_000),
        VoteResultKind::Approved
    );
    assert_eq!(a.status, Status::Approved);
    assert_eq!(a.decided_by.as_deref(), Some("b@example.com"));
    assert_eq!(
        apply_vote(&mut a, vote("c@example.com", Decision::Deny), 2_000),
        VoteResultKind::NotPending
    );

    let mut d = approval(2);
    apply_vote(&mut d, vote("a@example.com", Decision::Approve), 2_000);
    assert_eq!(
        apply_vote(&mut d, vote("b@example.com", Decision::Deny), 2_000),
        VoteResultKind::Denied
    );
    assert_eq!(d.status, Status::Denied);
    assert_eq!(d.decision_reason.as_deref(), Some("because"));

    let mut e = approval(1);
    assert_eq!(
        apply_vote(&mut e, vote("a@example.com", Decision::Approve), 10_000),
        VoteResultKind::Expired
    );
    assert_eq!(e.status, Status::Expired);
    assert!(e.votes.is_empty());
}

#[tokio::test]
async fn memory_store_claims_once_and_respects_hold() {
    let store = MemoryStore::new();
    let mut a = approval(1);
    a.status = Status::Approved;
    let req = stored(&http::HeaderMap::new(), vec![]);
    store
        .create(&a, &req, Duration::from_secs(60))
        .await
        .unwrap();
    let claim = |who, name| store.claim_execution(&a.id, who, name, 1);
    let awaiting = || store.list(ListFilter::AwaitingExecution, 10);
    // Held: the background may not claim, the holder may.
    assert!(matches!(
        claim(Claimant::Background, "bg").await.unwrap(),
        Cas::Conflict(_)
    ));
    assert!(awaiting().await.unwrap().is_empty());
    store.set_held(&a.id, false).await.unwrap();
    assert_eq!(awaiting().await.unwrap().len(), 1);
    assert!(matches!(
        claim(Claimant::Background, "bg").await.unwrap(),
        Cas::Applied(_)
    ));
    assert!(matches!(
        claim(Claimant::Holder, "h").await.unwrap(),
        Cas::Conflict(_)
    ));
    // Claimed: no longer cancellable.
    assert!(matches!(
        store.cancel(&a.id, "x", "y", 2).await.unwrap(),
        Cas::Conflict(_)
    ));
    // TTL: gone after created_at + ttl.
    assert_eq!(store.cleanup(a.created_at + 59_999).await.unwrap(), 0);
    assert_eq!(store.cleanup(a.created_at + 60_000).await.unwrap(), 1);
    assert!(store.get(&a.id).await.unwrap().is_none());
}

#[test]
fn signer_tokens_verify_with_the_published_jwks() {
    let signer = ApprovalSigner::generate()
        .unwrap()
        .with_issuer("https://cs.example.com/");
    let mut a = approval(1);
    a.votes.push(vote("a@example.com", Decision::Approve));
    let now = 1_700_000_000u64;
    let token = signer.sign(&a, now).unwrap();

    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(signer.jwks()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("countersign-approval+jwt"));
    let kid = header.kid.unwrap();
    assert_eq!(kid, signer.kid());
    let jwk = jwks.find(&kid).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&["https://cs.example.com"]);
    v.validate_exp = false; // `now` is fixed in the past
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap();
    let c = data.claims;
    assert_eq!(c["jti"], a.id.as_str());
    assert_eq!(c["sub"], "u1");
    assert_eq!(c["requester"]["email"], "dev@example.com");
    assert_eq!(c["approvers"], serde_json::json!(["a@example.com"]));
    assert_eq!(c["rule"], "prod-deploy");
    assert_eq!(c["request_hash"], "00");
    assert_eq!(c["iat"], now);
    assert_eq!(c["exp"], now + 300);

    // A different key does not verify it.
    let other = ApprovalSigner::generate().unwrap();
    let other_jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(other.jwks()).unwrap();
    let other_key = jsonwebtoken::DecodingKey::from_jwk(&other_jwks.keys[0]).unwrap();
    assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &other_key, &v).is_err());
}

#[test]
fn signer_kid_is_the_rfc7638_thumbprint_and_debug_hides_the_key() {
    let signer = ApprovalSigner::generate().unwrap();
    let jwk = signer.jwk();
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    use base64::Engine;
    use sha2::Digest;
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(canonical.as_bytes()));
    assert_eq!(signer.kid(), expected);
    assert!(!format!("{signer:?}").contains(jwk["x"].as_str().unwrap()));
}

#[test]
fn signer_loads_pkcs8_pem_and_rejects_other_keys() {
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let a = ApprovalSigner::from_pem(&pem).unwrap();
    let b = ApprovalSigner::from_pem(&pem).unwrap();
    assert_eq!(a.kid(), b.kid());

    let ed = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(ed.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    assert_eq!(
        ApprovalSigner::from_pem(&pem).unwrap_err(),
        SignerError::NotP256
    );
    assert!(matches!(
        ApprovalSigner::from_pem("nope"),
        Err(SignerError::Pem(_))
    ));
}

#[test]
fn previews_show_the_body_as_sent_and_say_when_they_are_cut() {
    use crate::approval::preview::{body_preview_of, body_sha256, shown_headers};
    // Not redacted: byte for byte, key order and spacing kept.
    let body = br#"{"z": 1, "a": 2}"#;
    assert_eq!(
        body_preview_of(body, Some("application/json"), &[]),
        (r#"{"z": 1, "a": 2}"#.to_owned(), false)
    );
    let long = format!(r#"{{"x":"{}"}}"#, "y".repeat(5000));
    let (text, cut) = body_preview_of(long.as_bytes(), Some("application/json"), &[]);
    assert!(cut && text.len() <= 2048, "{}", text.len());
    let (_, cut) = body_preview_of(&[0xff, 0x00], None, &[]);
    assert!(
        cut,
        "a binary body is not shown, so the preview counts as cut"
    );
    assert_eq!(
        body_sha256(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    let mut h = http::HeaderMap::new();
    h.insert("authorization", "Bearer secret-token".parse().unwrap());
    h.insert("cookie", "sid=abc123; theme=dark".parse().unwrap());
    h.insert("x-http-method-override", "DELETE".parse().unwrap());
    let shown = shown_headers(&crate::approval::record::replayable_headers(&h));
    let pairs: Vec<(&str, &str)> = shown
        .iter()
        .map(|s| (s.name.as_str(), s.value.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("authorization", "Bearer [masked, 12 bytes]"),
            ("cookie", "sid=[masked, 6 bytes]; theme=[masked, 4 bytes]"),
            ("x-http-method-override", "DELETE"),
        ]
    );
}

#[test]
fn execution_refuses_a_stored_request_that_is_not_the_approved_one() {
    use crate::approval::execute::verify_as_approved;
    use crate::approval::preview::{body_sha256, shown_headers};
    use crate::approval::record::request_hash;
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    let stored = stored(&h, b"{}".to_vec()).with_issuer("https://idp");
    let mut a = approval(1);
    a.method = "POST".into();
    a.host = "deploy.example.com".into();
    a.path = "/x".into();
    a.query = None;
    a.requester.iss = "https://idp".into();
    a.requester.sub = "u1".into();
    a.headers = shown_headers(&stored.headers);
    a.body_sha256 = body_sha256(&stored.body);
    a.request_hash = hex::encode(request_hash(
        "POST",
        "deploy.example.com",
        "/x",
        None,
        b"{}",
        "https://idp",
        "u1",
    ));
    assert_eq!(verify_as_approved(&a, &stored), Ok(()));
    let mut body = stored.clone();
    body.body = b"{\"all\":true}".to_vec();
    assert!(verify_as_approved(&a, &body).unwrap_err().contains("hash"));
    let mut header = stored.clone();
    header.headers.push(crate::approval::StoredHeader {
        name: "x-http-method-override".into(),
        value: b"DELETE".to_vec(),
    });
    assert!(verify_as_approved(&a, &header)
        .unwrap_err()
        .contains("headers"));
    let mut path = stored.clone();
    path.path = "/y".into();
    assert!(verify_as_approved(&a, &path).is_err());
    let mut who = stored;
    who.subject = "someone-else".into();
    assert!(verify_as_approved(&a, &who)
        .unwrap_err()
        .contains("requester"));
}

mod break_glass;
mod grants;
mod lease;
