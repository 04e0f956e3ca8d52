//! `countersign test` as an operator uses it (SPEC 9): policy test files with `[[case]]`
//! tables, one line per case, `N passed, M failed` last, exit 1 on a failure; broken test files
//! are `file:line:col` errors; the shipped policies' own test file passes.

mod common;

use common::TestDir;

/// A config for `deploy.example.com` with `policy` as its only policy file.
fn setup(policy: &str) -> TestDir {
    let dir = TestDir::new();
    dir.write(
        "countersign.toml",
        r#"[server]
listen = "127.0.0.1:8080"

[[upstream]]
name = "api"
url = "http://127.0.0.1:7000"

[[route]]
host = "deploy.example.com"
upstream = "api"

[[issuer]]
issuer = "https://idp.example.com"
audiences = ["https://deploy.example.com"]

[policy]
files = ["policies/*.toml"]
default = "deny"

[approvers.groups]
sre = ["alice@example.com"]
"#,
    );
    dir.write("policies/p.toml", policy);
    dir
}

const POLICY: &str = r#"[[rule]]
name = "health"
path = "/healthz"
action = "public"

[[rule]]
name = "watch-deletes"
methods = ["DELETE"]
path_prefix = "/v1/"
action = "deny"
mode = "shadow"

[[rule]]
name = "prod"
methods = ["POST"]
path = "/v1/deployments/production"
action = "approve"
require = { scopes = ["deploy:write"] }

[rule.approval]
approvers = ["group:sre"]

[[rule]]
name = "v1"
path_prefix = "/v1/"
action = "allow"
require = { scopes = ["deploy:read"] }
"#;

/// Runs `countersign test --config DIR/countersign.toml DIR/FILE...`: (exit code, stdout,
/// stderr), with the folder prefix removed from both.
fn run(dir: &TestDir, files: &[&str]) -> (Option<i32>, String, String) {
    let config = dir.join("countersign.toml");
    let paths: Vec<String> = files
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let mut args = vec!["test", "--config", config.to_str().unwrap()];
    args.extend(paths.iter().map(String::as_str));
    let out = common::countersign(&args);
    let strip =
        |b: &[u8]| String::from_utf8_lossy(b).replace(&format!("{}/", dir.path().display()), "");
    (out.status.code(), strip(&out.stdout), strip(&out.stderr))
}

const PASSING: &str = r#"
[[case]]
name = "health is public"
method = "GET"
url = "https://deploy.example.com/healthz"
expect = "public"
rule = "health"

[[case]]
method = "post"
url = "https://deploy.example.com/v1/deployments/production"
claims = { email = "dev@example.com", scope = "deploy:write" }
expect = "approve"
rule = "prod"

[[case]]
name = "reads need deploy:read"
method = "GET"
url = "https://deploy.example.com/v1/things"
claims = { scope = "other" }
expect = "insufficient_scope"

[[case]]
name = "no route"
method = "GET"
url = "https://elsewhere.example.com/"
expect = "no_route"
"#;

#[test]
fn a_passing_file_prints_a_line_per_case_and_exits_0() {
    let dir = setup(POLICY);
    dir.write("tests/ok.toml", PASSING);
    let (code, out, err) = run(&dir, &["tests/ok.toml"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        "ok   health is public: public (rule health)
ok   POST https://deploy.example.com/v1/deployments/production: approve (rule prod)
ok   reads need deploy:read: insufficient_scope (rule v1)
ok   no route: no_route
4 passed, 0 failed
"
    );
}

#[test]
fn a_failing_case_names_expected_and_got_and_exits_1() {
    let dir = setup(POLICY);
    dir.write("tests/ok.toml", PASSING);
    dir.write(
        "tests/bad.toml",
        r#"# one wrong expectation
[[case]]
name = "deletes are denied"
method = "DELETE"
url = "https://deploy.example.com/v1/things/1"
claims = { scope = "deploy:read" }
expect = "deny"
"#,
    );
    let (code, out, err) = run(&dir, &["tests/ok.toml", "tests/bad.toml"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    // The shadow rule matched, but the case judges the enforcing outcome.
    assert_eq!(
        lines[4],
        "FAIL deletes are denied (tests/bad.toml:2): expected deny, got allow (rule v1; shadow: watch-deletes)",
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"4 passed, 1 failed"), "{out}");
}

#[test]
fn a_rule_mismatch_fails_even_when_the_outcome_matches() {
    let dir = setup(POLICY);
    dir.write(
        "tests/rule.toml",
        r#"[[case]]
method = "GET"
url = "https://deploy.example.com/v2/x"
claims = {}
expect = "deny"
rule = "default"

[[case]]
method = "GET"
url = "https://deploy.example.com/v2/x"
claims = {}
expect = "deny"
rule = "v1"
"#,
    );
    let (code, out, err) = run(&dir, &["tests/rule.toml"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        out,
        "ok   GET https://deploy.example.com/v2/x: deny (rule default)
FAIL GET https://deploy.example.com/v2/x (tests/rule.toml:8): expected deny (rule v1), got deny (rule default)
1 passed, 1 failed
"
    );
}

#[test]
fn a_malformed_test_file_is_a_file_line_col_error() {
    let dir = setup(POLICY);
    dir.write(
        "tests/syntax.toml",
        "[[case]]\nmethod = \"GET\"\nurl = \"https://deploy.example.com/\n",
    );
    let (code, out, err) = run(&dir, &["tests/syntax.toml"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "", "no case is run");
    assert!(err.starts_with("tests/syntax.toml:3:"), "{err}");
    assert!(err.contains("TOML syntax error"), "{err}");
    assert!(err.ends_with("no case was run\n"), "{err}");
}

#[test]
fn unknown_keys_bad_values_and_unknown_rules_are_all_reported() {
    let dir = setup(POLICY);
    dir.write(
        "tests/wrong.toml",
        r#"[[case]]
method = "GET"
url = "https://deploy.example.com/healthz"
expect = "pubic"

[[case]]
method = "GET"
ulr = "https://deploy.example.com/healthz"
expect = "public"

[[case]]
method = "GET"
url = "https://deploy.example.com/healthz"
expect = "public"
rule = "helth"

[[case]]
method = "DELETE"
url = "https://deploy.example.com/v1/x"
claims = { scope = "deploy:read" }
expect = "deny"
rule = "watch-deletes"

[[case]]
method = "GET"
url = "deploy.example.com/healthz"
expect = "public"
auth_age = "5m"
"#,
    );
    let (code, out, err) = run(&dir, &["tests/wrong.toml"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out, "");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "tests/wrong.toml:4:10: \"expect\" must be one of public, allow, deny, approve, identity_required, insufficient_scope, step_up, no_route, token_required, invalid_token, invalid_request, not \"pubic\"; did you mean \"public\"?",
            "tests/wrong.toml:6:1: missing required key \"url\" in [[case]]",
            "tests/wrong.toml:8:1: unknown key \"ulr\" in [[case]]; did you mean \"url\"?",
            "tests/wrong.toml:26:7: \"url\" \"deploy.example.com/healthz\" is not an absolute URL (e.g. \"https://deploy.example.com/v1/x\")",
            "tests/wrong.toml:28:1: \"auth_age\" needs \"claims\": a case without claims has no token",
            "countersign: 5 problem(s) in the test files; no case was run",
        ],
        "{err}"
    );

    // Once the file itself is right, rules are checked against the policy.
    let fixed = std::fs::read_to_string(dir.join("tests/wrong.toml"))
        .unwrap()
        .replace("\"pubic\"", "\"public\"")
        .replace("ulr", "url")
        .replace(
            "url = \"deploy.example.com/healthz\"",
            "url = \"https://deploy.example.com/healthz\"",
        )
        .replace("auth_age = \"5m\"\n", "");
    dir.write("tests/wrong.toml", fixed);
    let (code, out, err) = run(&dir, &["tests/wrong.toml"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out, "");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "tests/wrong.toml:15:8: no rule is named \"helth\" (\"default\" means [policy] default); did you mean \"health\"?",
            "tests/wrong.toml:22:8: rule \"watch-deletes\" is a shadow rule: it never decides, and cases judge only the enforcing outcome",
            "countersign: 2 problem(s) in the test files; no case was run",
        ],
        "{err}"
    );
}

#[test]
fn a_file_without_cases_and_a_missing_file_are_errors() {
    let dir = setup(POLICY);
    dir.write("tests/empty.toml", "# nothing yet\n");
    let (code, _, err) = run(&dir, &["tests/empty.toml", "tests/missing.toml"]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("tests/empty.toml:1:1: a test file needs at least one [[case]] table"),
        "{err}"
    );
    assert!(
        err.contains("tests/missing.toml:1:1: cannot read test file:"),
        "{err}"
    );
}

#[test]
fn a_broken_config_is_reported_like_check_does() {
    let dir = setup(POLICY);
    dir.write(
        "policies/p.toml",
        POLICY.replace("mode = \"shadow\"", "mode = \"dry-run\""),
    );
    dir.write("tests/ok.toml", PASSING);
    let (code, out, err) = run(&dir, &["tests/ok.toml"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    assert!(
        err.starts_with(
            "policies/p.toml:11:8: \"mode\" must be \"enforce\" or \"shadow\", not \"dry-run\"\n"
        ),
        "{err}"
    );
}

#[test]
fn auth_age_sets_a_fresh_login_for_max_age() {
    let dir = setup(
        r#"[[rule]]
name = "fresh-login"
path_prefix = "/"
action = "allow"
require = { max_age = "10m" }
"#,
    );
    dir.write(
        "tests/age.toml",
        r#"[[case]]
name = "fresh"
method = "GET"
url = "https://deploy.example.com/"
claims = {}
auth_age = "2m"
expect = "allow"

[[case]]
name = "stale"
method = "GET"
url = "https://deploy.example.com/"
claims = {}
auth_age = "1h"
expect = "step_up"

[[case]]
name = "never said"
method = "GET"
url = "https://deploy.example.com/"
claims = {}
expect = "step_up"
"#,
    );
    let (code, out, err) = run(&dir, &["tests/age.toml"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("3 passed, 0 failed\n"), "{out}");
}

#[test]
fn the_shipped_policies_pass_their_tests() {
    let out = common::countersign(&[
        "test",
        "--config",
        "examples/countersign.toml",
        "policies/tests/shipped.toml",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{text}");
    // Every shipped rule decides at least one case.
    let (_, policy) =
        countersign::config::load(std::path::Path::new("examples/countersign.toml")).unwrap();
    for rule in &policy.rules {
        assert!(
            text.contains(&format!("(rule {})", rule.name)),
            "no case of policies/tests/shipped.toml is decided by rule {:?}:\n{text}",
            rule.name
        );
    }
}

#[test]
fn test_files_under_the_policy_folder_are_not_loaded_as_policies() {
    let dir = setup(POLICY);
    dir.write("policies/tests/p.toml", PASSING);
    let out = common::countersign(&[
        "check",
        "--config",
        dir.join("countersign.toml").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(" 4 rule(s)"), "{text}");
}

#[test]
fn explain_shows_a_shadow_match_and_the_enforcing_decision() {
    let dir = setup(POLICY);
    let out = common::countersign(&[
        "explain",
        "--config",
        dir.join("countersign.toml").to_str().unwrap(),
        "DELETE",
        "https://deploy.example.com/v1/things/1",
        "--claims",
        r#"{"scope":"deploy:read"}"#,
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).replace(&format!("{}/", dir.path().display()), "");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("shadow: watch-deletes (policies/p.toml:6) matches and would have denied it; recorded only, not enforced\n"),
        "{text}"
    );
    assert!(text.contains("rule: v1 (policies/p.toml:"), "{text}");
    assert!(
        text.ends_with("outcome: allow: forwarded upstream\n"),
        "{text}"
    );
}
