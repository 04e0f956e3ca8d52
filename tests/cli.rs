//! The command line as an operator uses it: `check`, `explain`, `audit verify` (SPEC 2).

mod common;

use std::io::Write;

const VALID: &str = "tests/fixtures/config/valid/countersign.toml";
const INVALID: &str = "tests/fixtures/config/invalid/countersign.toml";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_accepts_a_valid_config_and_exits_0() {
    let out = common::countersign(&["check", "--config", VALID]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains(": ok ("), "{}", stdout(&out));
}

#[test]
fn check_accepts_the_shipped_example_and_policies() {
    let out = common::countersign(&["check", "--config", "examples/countersign.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn check_prints_every_problem_as_file_line_col_and_exits_1() {
    let out = common::countersign(&["check", "--config", INVALID]);
    assert_eq!(out.status.code(), Some(1));
    let expected = std::fs::read_to_string("tests/fixtures/config/invalid/expected.txt")
        .expect("expected output fixture");
    assert_eq!(stdout(&out), expected);
}

#[test]
fn check_names_a_missing_config_file() {
    let out = common::countersign(&["check", "--config", "tests/fixtures/nope.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("tests/fixtures/nope.toml"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn explain_shows_the_matching_rule_and_the_step_up_needed() {
    let out = common::countersign(&[
        "explain",
        "--config",
        VALID,
        "POST",
        "https://deploy.example.com/v1/deployments/production",
        "--claims",
        r#"{"groups":["release-managers"],"scope":"deploy:write"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(
            "rule: prod-deploy (tests/fixtures/config/valid/policies/10-deploy.toml:1) matches"
        ),
        "{text}"
    );
    assert!(text.contains("param: env=production"), "{text}");
    assert!(
        text.contains("outcome: step-up needed: 401 insufficient_user_authentication"),
        "{text}"
    );
    assert!(text.contains("skipped: health"), "{text}");
}

#[test]
fn explain_shows_a_deny_and_no_route() {
    let deny = common::countersign(&[
        "explain",
        "--config",
        VALID,
        "GET",
        "https://deploy.example.com/admin/x",
        "--claims",
        "{}",
    ]);
    // `explain` reports a decision; it does not enforce it: exit 0 for a deny too.
    assert_eq!(deny.status.code(), Some(0), "{}", stdout(&deny));
    assert!(
        stdout(&deny).contains("outcome: deny: 403 access_denied"),
        "{}",
        stdout(&deny)
    );
    let none = common::countersign(&[
        "explain",
        "--config",
        VALID,
        "GET",
        "https://elsewhere.example.org/",
        "--claims",
        "{}",
    ]);
    assert_eq!(none.status.code(), Some(0), "{}", stdout(&none));
    assert!(stdout(&none).contains("no_route"), "{}", stdout(&none));
}

#[test]
fn explain_reads_claims_from_a_token_without_trusting_it() {
    // header {"alg":"RS256"} . payload {"iss":"https://idp.example.com","sub":"bob","exp":4102444800,"scope":"deploy:read"} . junk
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsInN1YiI6ImJvYiIsImV4cCI6NDEwMjQ0NDgwMCwic2NvcGUiOiJkZXBsb3k6cmVhZCJ9.c2ln";
    let out = common::countersign(&[
        "explain",
        "--config",
        VALID,
        "GET",
        "https://deploy.example.com/v1/things",
        "--token",
        token,
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("sub=bob"), "{text}");
    assert!(text.contains("signature"), "{text}");
}

#[test]
fn audit_verify_exits_0_on_a_good_chain_and_1_naming_the_first_bad_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let log = countersign::audit::AuditLog::open(&path, "test").expect("open");
        for i in 0..3u64 {
            log.append(countersign::audit::Event::new("vote.cast").field("n", i))
                .await
                .expect("append");
        }
    });
    let p = path.to_string_lossy().into_owned();
    let ok = common::countersign(&["audit", "verify", &p]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let text = std::fs::read_to_string(&path).expect("read");
    let tampered = text.replacen("\"n\":1", "\"n\":7", 1);
    assert_ne!(text, tampered);
    let mut f = std::fs::File::create(&path).expect("rewrite");
    f.write_all(tampered.as_bytes()).expect("write");
    drop(f);
    let bad = common::countersign(&["audit", "verify", &p]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains(":2:"), "should name line 2: {err}");
}
