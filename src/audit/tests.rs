use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::chain::{check_line, seal, Position};
use super::*;
use crate::clock::ManualClock;

fn position(seq: u64, prev: &str) -> Position<'_> {
    Position {
        ts: "2026-11-28T15:55:32.123Z",
        seq,
        replica: "r1",
        prev,
    }
}

fn sample_event() -> Event {
    Event::new("vote.cast")
        .approval_id("ap-1")
        .request_id("req-1")
        .actor("alice@example.com")
        .rule("prod-deploy")
        .field("decision", "approve")
        .field("votes", 2u32)
        .field("self_approval", false)
}

#[test]
fn line_members_are_in_the_documented_order() {
    let sealed = seal(&sample_event(), position(1, GENESIS_HASH)).unwrap();
    let expected = format!(
        concat!(
            r#"{{"ts":"2026-11-28T15:55:32.123Z","seq":1,"event":"vote.cast","replica":"r1","#,
            r#""approval_id":"ap-1","request_id":"req-1","actor":"alice@example.com","#,
            r#""rule":"prod-deploy","details":{{"decision":"approve","votes":2,"self_approval":false}},"#,
            r#""prev":"{}","hash":"{}"}}"#,
            "\n"
        ),
        GENESIS_HASH, sealed.hash
    );
    assert_eq!(sealed.line, expected);
}

#[test]
fn optional_members_are_left_out() {
    let sealed = seal(&Event::new("policy.reloaded"), position(3, GENESIS_HASH)).unwrap();
    let v: Value = serde_json::from_str(&sealed.line).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    // serde_json sorts keys; the point is which members exist.
    assert_eq!(keys, ["event", "hash", "prev", "replica", "seq", "ts"]);
}

#[test]
fn hash_is_sha256_of_prev_and_the_line_without_its_hash_member() {
    let prev = "ab".repeat(32);
    let sealed = seal(&sample_event(), position(7, &prev)).unwrap();
    let line = sealed.line.trim_end_matches('\n');
    // Recompute independently of chain.rs: cut the hash member textually.
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let body = format!("{}}}", &line[..cut]);
    assert!(body.ends_with(&format!("\"prev\":\"{prev}\"}}")));
    let digest = hex::encode(Sha256::digest(format!("{prev}{body}").as_bytes()));
    assert_eq!(digest, sealed.hash);
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["hash"], digest.as_str());
}

#[test]
fn a_sealed_line_checks_and_an_altered_one_does_not() {
    let sealed = seal(&sample_event(), position(1, GENESIS_HASH)).unwrap();
    let line = sealed.line.trim_end_matches('\n');
    let link = check_line(line.as_bytes()).unwrap();
    assert_eq!(link.seq, 1);
    assert_eq!(link.prev, GENESIS_HASH);
    assert_eq!(link.hash, sealed.hash);

    let altered = line.replace("approve", "deny");
    let err = check_line(altered.as_bytes()).unwrap_err();
    assert!(err.contains("hash does not match"), "{err}");
}

#[test]
fn check_line_rejects_malformed_lines() {
    let sealed = seal(&sample_event(), position(1, GENESIS_HASH)).unwrap();
    let line = sealed.line.trim_end_matches('\n').to_owned();
    let cases = [
        (String::new(), "empty line"),
        ("not json".to_owned(), "no `hash` member"),
        (line.replace(&sealed.hash, "XYZ"), "64 lowercase hex"),
        (line[..line.len() / 2].to_owned(), "no `hash` member"),
        // A member the writer never produces, even with a consistent hash, is refused.
        (
            reseal(&line, |body| body.replacen("{", "{\"extra\":1,", 1)),
            "unknown field",
        ),
        (
            reseal(&line, |body| {
                body.replace("2026-11-28T15:55:32.123Z", "yesterday")
            }),
            "`ts`",
        ),
        (
            reseal(&line, |body| body.replace("\"votes\":2", "\"votes\":[2]")),
            "details.votes",
        ),
    ];
    for (bad, expected) in cases {
        let err = check_line(bad.as_bytes()).unwrap_err();
        assert!(err.contains(expected), "{bad:?}: {err}");
    }
    assert!(check_line(b"\xff\xfe").unwrap_err().contains("UTF-8"));
}

/// Rewrites a line's body and gives it a hash that matches the new body.
fn reseal(line: &str, edit: impl Fn(&str) -> String) -> String {
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let body = edit(&format!("{}}}", &line[..cut]));
    let v: Value = serde_json::from_str(&body).unwrap_or(json!({"prev": GENESIS_HASH}));
    let prev = v["prev"].as_str().unwrap_or(GENESIS_HASH);
    let hash = hex::encode(Sha256::digest(format!("{prev}{body}").as_bytes()));
    format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1])
}

#[test]
fn credential_like_names_are_dropped_and_refused() {
    for name in [
        "authorization",
        "Authorization",
        "token",
        "id_token",
        "X-Auth-Token",
        "cookie",
        "set-cookie",
        "password",
        "secret",
        "client_secret",
        "api_key",
    ] {
        let event = Event::new("notify.sent").field(name, "hunter2");
        assert_eq!(event.refused().len(), 1, "{name}");
        assert_eq!(event.refused()[0].reason, RefusalReason::CredentialName);
        assert!(!format!("{event:?}").contains("hunter2"), "{name}");
    }
    let fine = Event::new("notify.sent")
        .field("channel", "#prod")
        .field("status", 200u16);
    assert!(fine.refused().is_empty());
}

#[test]
fn token_like_values_are_refused_anywhere() {
    let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    assert!(looks_like_token(jwt));
    assert!(looks_like_token("Bearer abc"));
    assert!(looks_like_token(&format!("upstream said: {jwt} was bad")));
    assert!(!looks_like_token("missing bearer token"));
    assert!(looks_like_token("basic YWxpY2U6aHVudGVyMg=="));
    assert!(!looks_like_token("alice@example.com"));
    assert!(!looks_like_token("deploy.example.com"));
    assert!(!looks_like_token("v1.2.3"));

    let event = Event::new("vote.cast").actor(jwt).field("note", jwt);
    let reasons: Vec<_> = event
        .refused()
        .iter()
        .map(|r| (r.field.as_str(), r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("actor", RefusalReason::TokenLikeValue),
            ("note", RefusalReason::TokenLikeValue)
        ]
    );
    assert!(!format!("{event:?}").contains("eyJ"));
}

#[test]
fn odd_names_are_refused() {
    assert_eq!(Event::new("").refused()[0].reason, RefusalReason::BadName);
    assert_eq!(Event::new("vote cast").refused()[0].field, "event");
    let e = Event::new("x").field("a b", "v").field("", 1u8);
    assert!(e
        .refused()
        .iter()
        .all(|r| r.reason == RefusalReason::BadName));
    assert_eq!(e.refused().len(), 2);
}

#[test]
fn a_repeated_field_replaces_the_earlier_value_in_place() {
    let e = Event::new("x")
        .field("a", 1u8)
        .field("b", 2u8)
        .field("a", "three");
    assert_eq!(
        e.details,
        [
            ("a".to_owned(), FieldValue::Str("three".to_owned())),
            ("b".to_owned(), FieldValue::UInt(2))
        ]
    );
}

#[test]
fn redact_json_replaces_pointed_values() {
    let body = json!({
        "password": "hunter2",
        "card": {"number": "4111111111111111", "exp": "12/30"},
        "items": [{"sku": "a"}, {"sku": "b"}],
        "a/b": "slash",
        "keep": "visible"
    });
    let pointers = [
        "/password".to_owned(),
        "/card/number".to_owned(),
        "/items/1/sku".to_owned(),
        "/a~1b".to_owned(),
        "/not/there".to_owned(),
    ];
    let out = redact_json(body, &pointers);
    let text = out.to_string();
    for secret in ["hunter2", "4111111111111111", "\"b\"", "slash"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(out["password"], REDACTED);
    assert_eq!(out["card"]["exp"], "12/30");
    assert_eq!(out["items"][0]["sku"], "a");
    assert_eq!(out["keep"], "visible");
    assert!(out.get("not").is_none());
}

#[test]
fn redact_json_fails_closed_on_a_malformed_pointer() {
    let out = redact_json(json!({"password": "hunter2"}), &["password".to_owned()]);
    assert_eq!(out, json!(REDACTED));
    let out = redact_json(json!({"password": "hunter2"}), &[String::new()]);
    assert_eq!(out, json!(REDACTED));
}

#[test]
fn body_preview_redacts_truncates_and_hides_unparseable_bodies() {
    let pointers = ["/password".to_owned()];
    let preview = body_preview(br#"{"user":"alice","password":"hunter2"}"#, &pointers, 200);
    // Keys come out sorted (serde_json's map); values are what matters.
    assert_eq!(preview, r#"{"password":"[redacted]","user":"alice"}"#);

    let preview = body_preview(b"password=hunter2", &pointers, 200);
    assert_eq!(preview, UNREDACTABLE_BODY);

    assert_eq!(body_preview("héllo wörld".as_bytes(), &[], 5), "héllo…");
    assert_eq!(body_preview(b"short", &[], 5), "short");
}

fn clock_at(secs: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + 7),
    ))
}

#[tokio::test]
async fn appended_lines_carry_clock_time_and_replica() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let clock = clock_at(1_700_000_000);
    let log = AuditLog::open_with_clock(&path, "replica-a", clock.clone()).unwrap();
    assert_eq!(log.append(sample_event()).await.unwrap(), 1);
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        log.append(Event::new("approval.approved")).await.unwrap(),
        2
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["ts"], "2023-11-14T22:13:20.007Z");
    assert_eq!(lines[1]["ts"], "2023-11-14T22:14:20.007Z");
    assert_eq!(lines[1]["replica"], "replica-a");
    assert_eq!(lines[1]["prev"], lines[0]["hash"]);
    assert_eq!(log.replica(), "replica-a");
    assert_eq!(log.path(), path);
}

#[tokio::test]
async fn a_refused_event_writes_nothing_and_uses_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, "r1").unwrap();
    let err = log
        .append(Event::new("notify.sent").field("bot_token", "xoxb-123"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        AuditError::Refused { ref field, reason: RefusalReason::CredentialName } if field == "bot_token"
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    assert_eq!(log.append(Event::new("notify.sent")).await.unwrap(), 1);
}

#[test]
fn append_blocking_works_outside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, "r1").unwrap();
    assert_eq!(
        log.append_blocking(Event::new("policy.reloaded")).unwrap(),
        1
    );
    assert_eq!(
        log.append_blocking(Event::new("policy.reloaded")).unwrap(),
        2
    );
    assert_eq!(verify(&path).unwrap().last_seq, 2);
}

#[test]
fn open_refuses_a_damaged_tail_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let log = AuditLog::open(&path, "r1").unwrap();
        for _ in 0..3 {
            log.append_blocking(Event::new("vote.cast")).unwrap();
        }
    }
    let good = std::fs::read_to_string(&path).unwrap();

    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    let err = AuditLog::open(&path, "r1").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains("audit.jsonl:3: the file ends in the middle"),
        "{err}"
    );

    std::fs::write(&path, good.replace("\"seq\":3", "\"seq\":9")).unwrap();
    let err = AuditLog::open(&path, "r1").unwrap_err();
    assert!(
        err.to_string()
            .contains("audit.jsonl:3: hash does not match"),
        "{err}"
    );

    std::fs::write(&path, format!("{good}\n")).unwrap();
    let err = AuditLog::open(&path, "r1").unwrap_err();
    assert!(
        err.to_string().contains("audit.jsonl:4: empty line"),
        "{err}"
    );
}

#[test]
fn open_finds_the_last_line_across_read_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let big = "x".repeat(20_000);
    {
        let log = AuditLog::open(&path, "r1").unwrap();
        log.append_blocking(Event::new("a").field("pad", big.as_str()))
            .unwrap();
        log.append_blocking(Event::new("b").field("pad", big.as_str()))
            .unwrap();
    }
    let log = AuditLog::open(&path, "r1").unwrap();
    assert_eq!(log.append_blocking(Event::new("c")).unwrap(), 3);
    assert_eq!(verify(&path).unwrap().lines, 3);
}

#[test]
fn open_rejects_an_empty_replica_id() {
    let dir = tempfile::tempdir().unwrap();
    let err = AuditLog::open(dir.path().join("a.jsonl"), "").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn verify_error_display_names_the_line() {
    let e = VerifyError {
        line: 4,
        reason: "empty line".to_owned(),
    };
    assert_eq!(e.to_string(), "line 4: empty line");
    let e = VerifyError {
        line: 0,
        reason: "cannot read x".to_owned(),
    };
    assert_eq!(e.to_string(), "cannot read x");
}

#[test]
fn an_empty_or_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    assert_eq!(verify(&path).unwrap_err().line, 0);
    std::fs::write(&path, "").unwrap();
    assert_eq!(
        verify(&path).unwrap(),
        VerifySummary {
            lines: 0,
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned()
        }
    );
}

/// `/dev/full` fails every write with ENOSPC: the failing append reports it, and the log then
/// refuses everything, so no later step is acknowledged without its record.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failed_write_is_reported_and_poisons_the_log() {
    let log = AuditLog::open("/dev/full", "r1").unwrap();
    let err = log.append(Event::new("vote.cast")).await.unwrap_err();
    assert!(matches!(err, AuditError::Write(_)), "{err}");
    let err = log.append(Event::new("vote.cast")).await.unwrap_err();
    assert!(matches!(err, AuditError::Poisoned), "{err}");
}

// ----- property tests (issue 10; PROPTEST_CASES raises the case count) -----

mod prop {
    use proptest::prelude::*;

    use super::super::{verify, AuditLog, Event};

    /// A sound chain of `events` written by the real writer; returns its lines (with `\n`).
    fn chain(events: &[(String, String, u32)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "r1").unwrap();
        for (kind, actor, n) in events {
            log.append_blocking(
                Event::new(kind.as_str())
                    .actor(actor.as_str())
                    .approval_id("ap-1")
                    .field("votes", *n)
                    .field("note", format!("{actor} {n}")),
            )
            .unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        text.split_inclusive('\n').map(str::to_owned).collect()
    }

    /// `audit verify` over `bytes` written to a file.
    fn verify_bytes(
        bytes: &[u8],
    ) -> Result<super::super::VerifySummary, super::super::VerifyError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edited.jsonl");
        std::fs::write(&path, bytes).unwrap();
        verify(&path)
    }

    fn events() -> impl Strategy<Value = Vec<(String, String, u32)>> {
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("approval.requested".to_owned()),
                    Just("vote.cast".to_owned()),
                    Just("approval.approved".to_owned()),
                    Just("request.forwarded".to_owned()),
                ],
                "[a-z]{1,8}@example\\.com",
                0u32..5,
            ),
            2..8,
        )
    }

    proptest! {
        /// Any single-byte change anywhere (content, `prev`, `hash`, a newline) is found, and
        /// at the line that holds the byte.
        #[test]
        fn any_edited_byte_is_found_at_its_line(
            evs in events(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let lines = chain(&evs);
            let original = lines.concat().into_bytes();
            prop_assert!(verify_bytes(&original).is_ok());
            let i = at.index(original.len());
            prop_assume!(original[i] != byte);
            let mut edited = original.clone();
            edited[i] = byte;
            let line = 1 + original[..i].iter().filter(|&&b| b == b'\n').count();
            let err = verify_bytes(&edited).unwrap_err();
            prop_assert_eq!(err.line, line, "{}", err);
        }

        /// Deleting a line is found at its place; deleting the last one leaves a shorter sound
        /// chain whose `last_hash` no longer matches a copy kept elsewhere.
        #[test]
        fn a_deleted_line_is_found(evs in events(), at in any::<prop::sample::Index>()) {
            let lines = chain(&evs);
            let full = verify_bytes(lines.concat().as_bytes()).unwrap();
            let k = at.index(lines.len());
            let mut kept = lines.clone();
            kept.remove(k);
            let result = verify_bytes(kept.concat().as_bytes());
            if k + 1 == lines.len() {
                let summary = result.unwrap();
                prop_assert_eq!(summary.lines, lines.len() - 1);
                prop_assert_ne!(summary.last_hash, full.last_hash);
            } else {
                prop_assert_eq!(result.unwrap_err().line, k + 1);
            }
        }

        /// Swapping two lines is found at the first of them; a repeated line right after
        /// itself is found at the copy.
        #[test]
        fn reordered_or_repeated_lines_are_found(
            evs in events(),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let lines = chain(&evs);
            let (i, j) = (a.index(lines.len()), b.index(lines.len()));
            if i != j {
                let mut swapped = lines.clone();
                swapped.swap(i, j);
                let err = verify_bytes(swapped.concat().as_bytes()).unwrap_err();
                prop_assert_eq!(err.line, i.min(j) + 1, "{}", err);
            }
            let mut repeated = lines.clone();
            repeated.insert(i + 1, lines[i].clone());
            let err = verify_bytes(repeated.concat().as_bytes()).unwrap_err();
            prop_assert_eq!(err.line, i + 2, "{}", err);
        }

        /// A sound line from another chain spliced in is found where it lands, or, when it
        /// happens to link to the line before (same `seq`, right `prev`), at the next line; a
        /// linking last line changes `last_hash` (a tail rewrite only an outside copy shows).
        #[test]
        fn a_line_from_another_chain_is_found(
            evs in events(),
            other in events(),
            at in any::<prop::sample::Index>(),
            from in any::<prop::sample::Index>(),
        ) {
            let lines = chain(&evs);
            let foreign = chain(&other);
            let full = verify_bytes(lines.concat().as_bytes()).unwrap();
            let k = at.index(lines.len());
            let f = from.index(foreign.len());
            prop_assume!(foreign[f] != lines[k]);
            let member = |line: &str, name: &str| -> serde_json::Value {
                serde_json::from_str::<serde_json::Value>(line).unwrap()[name].clone()
            };
            let expected_prev = if k == 0 {
                serde_json::Value::from(super::super::GENESIS_HASH)
            } else {
                member(&lines[k - 1], "hash")
            };
            let links = member(&foreign[f], "seq") == serde_json::json!(k + 1)
                && member(&foreign[f], "prev") == expected_prev;
            let mut replaced = lines.clone();
            replaced[k] = foreign[f].clone();
            let result = verify_bytes(replaced.concat().as_bytes());
            match (links, k + 1 == lines.len()) {
                (true, true) => prop_assert_ne!(result.unwrap().last_hash, full.last_hash),
                (true, false) => prop_assert_eq!(result.unwrap_err().line, k + 2),
                (false, _) => prop_assert_eq!(result.unwrap_err().line, k + 1),
            }
        }
    }
}
