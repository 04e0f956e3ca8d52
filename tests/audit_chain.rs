//! The audit log through its public surface: concurrent appends, reopening, every kind of
//! tampering caught at the right line, redaction, and refusal of credentials.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use countersign::audit::{
    redact_json, verify, verify_cli, AuditError, AuditLog, Event, RefusalReason, VerifyError,
    GENESIS_HASH, REDACTED,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn temp_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    (dir, path)
}

/// A log of `n` events written through the real writer.
async fn written_log(n: usize) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = temp_log();
    let log = AuditLog::open(&path, "replica-a").unwrap();
    for i in 0..n {
        log.append(
            Event::new("vote.cast")
                .approval_id(format!("ap-{i}"))
                .actor("alice@example.com")
                .field("decision", "approve"),
        )
        .await
        .unwrap();
    }
    (dir, path)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn failing_line(path: &Path) -> VerifyError {
    verify(path).expect_err("tampering must be detected")
}

/// Computes a valid `hash` for `body` (a line without its hash member) after `prev`: what a
/// forger who knows the scheme would do.
fn forge(body: &str, prev: &str) -> String {
    let hash = hex::encode(Sha256::digest(format!("{prev}{body}").as_bytes()));
    format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1])
}

fn field(line: &str, name: &str) -> Value {
    serde_json::from_str::<Value>(line).unwrap()[name].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_appends_get_unique_seqs_and_verify() {
    let (_dir, path) = temp_log();
    let log = AuditLog::open(&path, "replica-a").unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(
                    Event::new("approval.requested")
                        .approval_id(format!("ap-{i}"))
                        .field("task", i as u32),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for task in tasks {
        assert!(seqs.insert(task.await.unwrap()), "duplicate seq");
    }
    assert_eq!(seqs, (1..=50).collect::<BTreeSet<u64>>());

    let summary = verify(&path).unwrap();
    assert_eq!(summary.lines, 50);
    assert_eq!(summary.last_seq, 50);
    let written = lines(&path);
    assert_eq!(summary.last_hash, field(&written[49], "hash"));
    // Each task's event is there exactly once, with the seq its append returned.
    let tasks_seen: BTreeSet<u64> = written
        .iter()
        .map(|l| field(l, "details")["task"].as_u64().unwrap())
        .collect();
    assert_eq!(tasks_seen.len(), 50);
    for (i, line) in written.iter().enumerate() {
        assert_eq!(field(line, "seq"), json!(i + 1));
    }
}

#[tokio::test]
async fn an_append_is_on_disk_when_it_returns() {
    let (_dir, path) = temp_log();
    let log = AuditLog::open(&path, "replica-a").unwrap();
    let seq = log
        .append(Event::new("approval.approved").approval_id("ap-9"))
        .await
        .unwrap();
    // Read through a separate handle, as another process would.
    let written = lines(&path);
    assert_eq!(written.len(), 1);
    assert_eq!(field(&written[0], "seq"), json!(seq));
    assert_eq!(field(&written[0], "approval_id"), "ap-9");
    assert_eq!(field(&written[0], "prev"), GENESIS_HASH);
}

#[tokio::test]
async fn reopening_continues_the_chain() {
    let (_dir, path) = written_log(3).await;
    let before = verify(&path).unwrap();
    let log = AuditLog::open(&path, "replica-a").unwrap();
    assert_eq!(log.append(Event::new("approval.expired")).await.unwrap(), 4);
    drop(log);
    let after = verify(&path).unwrap();
    assert_eq!(after.lines, 4);
    assert_eq!(after.last_seq, 4);
    assert_eq!(field(&lines(&path)[3], "prev"), json!(before.last_hash));
}

#[tokio::test]
async fn editing_a_field_fails_at_that_line() {
    let (_dir, path) = written_log(5).await;
    let mut l = lines(&path);
    l[2] = l[2].replace("alice@example.com", "mallory@example.com");
    write_lines(&path, &l);
    let err = failing_line(&path);
    assert_eq!(err.line, 3, "{err}");
    assert!(err.reason.contains("hash does not match"), "{err}");
}

#[tokio::test]
async fn editing_a_field_and_rehashing_that_line_fails_at_the_next() {
    let (_dir, path) = written_log(5).await;
    let mut l = lines(&path);
    let cut = l[2].rfind(",\"hash\":\"").unwrap();
    let body = format!("{}}}", &l[2][..cut]).replace("approve", "deny");
    l[2] = forge(&body, field(&l[1], "hash").as_str().unwrap());
    write_lines(&path, &l);
    let err = failing_line(&path);
    assert_eq!(err.line, 4, "{err}");
    assert!(err.reason.contains("prev"), "{err}");
}

#[tokio::test]
async fn deleting_a_line_fails_where_it_was() {
    let (_dir, path) = written_log(5).await;
    let mut l = lines(&path);
    l.remove(1);
    write_lines(&path, &l);
    let err = failing_line(&path);
    assert_eq!(err.line, 2, "{err}");
    assert!(err.reason.contains("seq is 3, expected 2"), "{err}");
}

#[tokio::test]
async fn deleting_the_first_line_fails_at_line_1() {
    let (_dir, path) = written_log(3).await;
    let mut l = lines(&path);
    l.remove(0);
    write_lines(&path, &l);
    assert_eq!(failing_line(&path).line, 1);
}

#[tokio::test]
async fn reordering_two_lines_fails_at_the_first_of_them() {
    let (_dir, path) = written_log(5).await;
    let mut l = lines(&path);
    l.swap(2, 3);
    write_lines(&path, &l);
    let err = failing_line(&path);
    assert_eq!(err.line, 3, "{err}");
    assert!(err.reason.contains("seq is 4, expected 3"), "{err}");
}

#[tokio::test]
async fn truncating_the_last_line_fails_at_it() {
    let (_dir, path) = written_log(4).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let last_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let middle = last_start + (text.len() - last_start) / 2;
    std::fs::write(&path, &text[..middle]).unwrap();
    let err = failing_line(&path);
    assert_eq!(err.line, 4, "{err}");
    assert!(err.reason.contains("ends in the middle"), "{err}");
}

#[tokio::test]
async fn a_missing_final_newline_fails_at_the_last_line() {
    let (_dir, path) = written_log(2).await;
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.trim_end()).unwrap();
    assert_eq!(failing_line(&path).line, 2);
}

#[tokio::test]
async fn an_inserted_line_with_a_made_up_hash_fails_at_it() {
    let (_dir, path) = written_log(4).await;
    let mut l = lines(&path);
    let mut fake = l[1].replace("ap-1", "ap-x");
    let cut = fake.rfind(",\"hash\":\"").unwrap();
    fake = format!("{},\"hash\":\"{}\"}}", &fake[..cut], "f".repeat(64));
    l.insert(2, fake);
    write_lines(&path, &l);
    assert_eq!(failing_line(&path).line, 3);
}

#[tokio::test]
async fn an_inserted_line_with_a_correct_hash_fails_at_it_or_the_next() {
    let (_dir, path) = written_log(4).await;
    let mut l = lines(&path);
    // Forged after line 2 with the right prev and the next seq: sound on its own, so the
    // chain breaks at the original line 3, now line 4, whose seq repeats.
    let prev = field(&l[1], "hash");
    let body = format!(
        r#"{{"ts":"2026-11-28T16:00:00.000Z","seq":3,"event":"approval.approved","replica":"replica-a","approval_id":"ap-x","prev":{prev}}}"#
    );
    l.insert(2, forge(&body, prev.as_str().unwrap()));
    write_lines(&path, &l);
    let err = failing_line(&path);
    assert_eq!(err.line, 4, "{err}");
    assert!(err.reason.contains("seq is 3, expected 4"), "{err}");

    // The same forgery with a seq that does not follow fails at the forged line itself.
    let mut l = lines(&path);
    let body = body_of(&l[2]).replace("\"seq\":3", "\"seq\":7");
    l[2] = forge(&body, prev.as_str().unwrap());
    write_lines(&path, &l);
    assert_eq!(failing_line(&path).line, 3);
}

fn body_of(line: &str) -> String {
    let cut = line.rfind(",\"hash\":\"").unwrap();
    format!("{}}}", &line[..cut])
}

#[tokio::test]
async fn verify_cli_exit_codes() {
    let (_dir, path) = written_log(3).await;
    assert_eq!(verify_cli(&path), ExitCode::SUCCESS);
    let mut l = lines(&path);
    l[1] = l[1].replace("ap-1", "ap-2");
    write_lines(&path, &l);
    assert_eq!(verify_cli(&path), ExitCode::FAILURE);
    assert_eq!(
        verify_cli(path.with_extension("missing")),
        ExitCode::FAILURE
    );
}

#[tokio::test]
async fn credential_named_fields_are_refused_and_never_written() {
    let (_dir, path) = temp_log();
    let log = AuditLog::open(&path, "replica-a").unwrap();
    for (name, value) in [
        ("authorization", "Basic YWxpY2U6aHVudGVyMg"),
        ("token", "opaque-token-value-1"),
        ("cookie", "session=opaque-cookie-value-2"),
        ("password", "opaque-password-3"),
        ("secret", "opaque-secret-4"),
        ("client_secret", "opaque-client-secret-5"),
    ] {
        let err = log
            .append(
                Event::new("notify.sent")
                    .approval_id("ap-1")
                    .field(name, value),
            )
            .await
            .unwrap_err();
        match err {
            AuditError::Refused { field, reason } => {
                assert_eq!(field, name);
                assert_eq!(reason, RefusalReason::CredentialName);
            }
            other => panic!("{name}: {other}"),
        }
    }
    log.append(Event::new("notify.sent").field("channel", "#prod"))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("opaque"), "{text}");
    assert_eq!(verify(&path).unwrap().lines, 1);
}

#[tokio::test]
async fn a_bearer_token_value_is_refused_and_never_written() {
    let (_dir, path) = temp_log();
    let log = AuditLog::open(&path, "replica-a").unwrap();
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2ln";
    let err = log
        .append(Event::new("request.forwarded").field("upstream_header", format!("Bearer {jwt}")))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        AuditError::Refused {
            reason: RefusalReason::TokenLikeValue,
            ..
        }
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
}

#[test]
fn redacted_values_do_not_appear_in_what_is_logged() {
    let (_dir, path) = temp_log();
    let body =
        json!({"user": "alice", "password": "pa55-original", "card": {"number": "4111-original"}});
    let pointers = ["/password".to_owned(), "/card/number".to_owned()];
    let preview = redact_json(body, &pointers).to_string();
    assert!(!preview.contains("original"), "{preview}");
    assert!(preview.contains(REDACTED));

    let log = AuditLog::open(&path, "replica-a").unwrap();
    log.append_blocking(Event::new("approval.requested").field("body_preview", preview))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("original"));
    assert!(text.contains("alice"));
}

/// The module header promises that bash, jq and sha256sum can verify a log. Run that recipe.
#[tokio::test]
async fn the_documented_shell_recipe_verifies_a_real_log() {
    let tools = ["bash", "jq", "sha256sum"];
    // scripts/test-setup.sh installs them: a missing tool is a broken test machine, and
    // skipping would let a broken recipe pass.
    if let Some(missing) = tools
        .iter()
        .find(|t| Command::new(t).arg("--version").output().is_err())
    {
        panic!("{missing} is not installed (scripts/test-setup.sh installs it)");
    }
    let (_dir, path) = written_log(3).await;
    let log = AuditLog::open(&path, "replica-a").unwrap();
    log.append(
        Event::new("policy.reloaded").field("note", "quotes \" and \\ and ,\"hash\":\" inside"),
    )
    .await
    .unwrap();
    drop(log);
    let run = |path: &Path| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{}\necho done $n", recipe()))
            .env("LOG", path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&path).trim(), "done 4");

    let mut l = lines(&path);
    l[1] = l[1].replace("ap-1", "ap-7");
    write_lines(&path, &l);
    assert!(run(&path).starts_with("line 2: bad"));
}

/// The recipe from `src/audit/mod.rs`, with the file name taken from `$LOG`.
fn recipe() -> String {
    let source = include_str!("../src/audit/mod.rs");
    let start = source.find("//! ```sh\n").unwrap() + "//! ```sh\n".len();
    let end = start + source[start..].find("//! ```\n").unwrap();
    source[start..end]
        .lines()
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("< audit.jsonl", "< \"$LOG\"")
}
