use std::fs;

use super::fixture::{folder, load_folder, minimal_with, MINIMAL_REST, SERVER};
use super::*;
use crate::policy::{Action, ApproveVia, Approver, NotifyTarget, PathMatch};

/// Loads `countersign.toml` from `dir` and returns the problems as lines with the folder
/// prefix removed.
fn problems(dir: &tempfile::TempDir) -> Vec<String> {
    load_folder(dir).unwrap_err()
}

/// The problems of `config` as `countersign.toml` with `policy` as `policies/p.toml`.
fn problems_of(config: &str, policy: &str) -> Vec<String> {
    problems(&folder(&[
        ("countersign.toml", config),
        ("policies/p.toml", policy),
    ]))
}

const RULE: &str = "[[rule]]\nname = \"r\"\naction = \"allow\"\n";

#[test]
fn invalid_fixture_reports_every_problem_in_order() {
    let err = load(Path::new("tests/fixtures/config/invalid/countersign.toml")).unwrap_err();
    let expected = fs::read_to_string("tests/fixtures/config/invalid/expected.txt").unwrap();
    assert_eq!(err.to_string(), expected);
}

#[test]
fn valid_fixture_loads_every_section() {
    let (config, policy) = load(Path::new("tests/fixtures/config/valid/countersign.toml")).unwrap();
    let dir = Path::new("tests/fixtures/config/valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8443");
    let tls = config.server.tls.as_ref().unwrap();
    assert_eq!(tls.cert, dir.join("certs/server.pem"));
    assert_eq!(config.server.control_listen.to_string(), "127.0.0.1:9191");
    assert_eq!(
        config.server.public_url.as_str(),
        "https://countersign.example.com/"
    );
    assert_eq!(config.server.threads, 4);
    assert_eq!(config.upstreams[1].ca, Some(dir.join("certs/ca.pem")));
    assert_eq!(config.routes[1].upstream, 1);
    assert_eq!(
        config.routes[1].host.as_ref().unwrap().to_string(),
        "*.billing.example.com"
    );
    let idp = &config.issuers[0];
    assert_eq!(idp.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
    assert_eq!(idp.leeway, Duration::from_secs(30));
    assert_eq!(idp.refresh, Duration::from_secs(600));
    assert_eq!(idp.require_typ.as_deref(), Some("at+jwt"));
    assert_eq!(config.issuers[1].issuer, "http://127.0.0.1:5556/dex");
    assert_eq!(config.policy.default, DefaultAction::Deny);
    assert!(matches!(config.approvals.store, StoreUrl::Redis(_)));
    assert_eq!(config.approvals.audit_log, dir.join("logs/audit.jsonl"));
    assert_eq!(
        config.approver_groups["sre-leads"],
        vec!["alice@example.com", "bob@example.com"]
    );
    let slack = config.slack.as_ref().unwrap();
    assert_eq!(slack.bot_token.expose(), "xoxb-not-a-real-token");
    assert_eq!(slack.api_url.as_str(), "http://127.0.0.1:9999/api");
    assert_eq!(
        config.teams.as_ref().unwrap().webhook_url.expose(),
        "https://example.invalid/webhook"
    );

    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["health", "prod-deploy", "deploy-read", "no-admin"]);
    assert_eq!(policy.default, DefaultAction::Deny);
    let prod = &policy.rules[1];
    assert_eq!(prod.origin.file, dir.join("policies/10-deploy.toml"));
    assert_eq!(prod.origin.line, 1);
    assert_eq!(policy.rules[2].origin.line, 22);
    assert_eq!(
        prod.methods,
        Some(vec![http::Method::POST, http::Method::PUT])
    );
    assert_eq!(
        prod.params,
        vec![("env".to_owned(), "production".to_owned())]
    );
    assert_eq!(
        prod.claims,
        vec![("groups".to_owned(), "release-managers".to_owned())]
    );
    assert_eq!(prod.require.max_age, Some(Duration::from_secs(900)));
    let approval = prod.approval.as_ref().unwrap();
    assert_eq!(
        approval.approvers,
        vec![
            Approver::Group("sre-leads".into()),
            Approver::Email("carol@example.com".into())
        ]
    );
    assert_eq!(approval.quorum, crate::policy::Quorum::Count(2));
    assert_eq!(
        approval.notify,
        vec![
            NotifyTarget::SlackChannel("prod-approvals".into()),
            NotifyTarget::SlackUser("dave@example.com".into()),
            NotifyTarget::Teams
        ]
    );
    assert_eq!(approval.hold, Duration::from_secs(30));
    assert_eq!(approval.expires, Duration::from_secs(7200));
    assert!(approval.self_approval && approval.reason_required);
    assert_eq!(approval.approve_via, ApproveVia::Login);
    assert_eq!(approval.redact, vec!["/password", "/card/number"]);
    assert_eq!(
        policy.rules[0].methods,
        Some(vec![http::Method::GET, http::Method::HEAD])
    );
    assert_eq!(policy.rules[2].path, PathMatch::Prefix("/v1/".into()));
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let (config, policy) =
        load(Path::new("tests/fixtures/config/minimal/countersign.toml")).unwrap();
    let dir = Path::new("tests/fixtures/config/minimal");
    assert_eq!(config.server.control_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.server.public_url.as_str(), "http://127.0.0.1:9090/");
    assert_eq!(config.server.threads, 2);
    assert!(config.server.tls.is_none());
    assert_eq!(config.routes[0].path_prefix, "/");
    assert!(config.routes[0].host.is_none());
    let idp = &config.issuers[0];
    assert_eq!(idp.algorithms, Algorithm::defaults());
    assert_eq!(idp.leeway, Duration::from_secs(60));
    assert_eq!(idp.refresh, Duration::from_secs(300));
    assert!(idp.jwks_uri.is_none() && idp.require_typ.is_none());
    assert_eq!(
        config.policy.files,
        vec!["tests/fixtures/config/minimal/policies/*.toml"]
    );
    assert_eq!(config.policy.default, DefaultAction::Allow);
    assert_eq!(config.approvals.store, StoreUrl::Memory);
    assert_eq!(config.approvals.audit_log, dir.join("audit.jsonl"));
    assert!(config.approvals.signing_key.is_none());
    assert!(config.slack.is_none() && config.teams.is_none() && config.approver_login.is_none());
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(policy.rules[0].action, Action::Public);
}

#[test]
fn approval_defaults() {
    let dir = folder(&[
        ("countersign.toml", &minimal_with("[approvers.groups]\nops = [\"a@example.com\"]\n")),
        (
            "policies/p.toml",
            "[[rule]]\nname = \"x\"\naction = \"approve\"\n[rule.approval]\napprovers = [\"group:ops\"]\n",
        ),
    ]);
    let (_, policy) = load(&dir.path().join("countersign.toml")).unwrap();
    let a = policy.rules[0].approval.clone().unwrap();
    assert_eq!(a.quorum, crate::policy::Quorum::Count(1));
    assert_eq!(a.hold, Duration::from_secs(55));
    assert_eq!(a.expires, Duration::from_secs(3600));
    assert!(!a.self_approval && !a.reason_required);
    assert_eq!(a.approve_via, ApproveVia::Button);
    assert!(a.notify.is_empty() && a.redact.is_empty());
}

#[test]
fn a_typo_in_every_section_is_reported_with_a_suggestion() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "[server]\nlisten = \"127.0.0.1:1\"\nthreds = 2\n", "countersign.toml:3:1: unknown key \"threds\" in [server]; did you mean \"threads\"?"),
        ("", "[server]\nlisten = \"127.0.0.1:1\"\ntls = { cert = \"c\", kye = \"k\" }\n", "countersign.toml:3:21: unknown key \"kye\" in [server.tls]; did you mean \"key\"?"),
        ("", "[[upstream]]\nname = \"a\"\nurl = \"http://x\"\nca_file = \"x\"\n", "countersign.toml:4:1: unknown key \"ca_file\" in [[upstream]]"),
        ("", "[[route]]\nupstream = \"api\"\nprefix = \"/\"\n", "countersign.toml:3:1: unknown key \"prefix\" in [[route]]"),
        ("", "[[issuer]]\nissuer = \"https://i\"\naudiences = [\"a\"]\naudience = \"a\"\n", "countersign.toml:4:1: unknown key \"audience\" in [[issuer]]; did you mean \"audiences\"?"),
        ("", "[policy]\nfile = [\"policies/*.toml\"]\n", "countersign.toml:2:1: unknown key \"file\" in [policy]; did you mean \"files\"?"),
        ("", "[approvals]\nstroe = \"memory\"\n", "countersign.toml:2:1: unknown key \"stroe\" in [approvals]; did you mean \"store\"?"),
        ("", "[approvers.group]\nx = []\n", "countersign.toml:1:12: unknown key \"group\" in [approvers]; did you mean \"groups\"?"),
        ("", "[slack]\nbot_token = \"env:PATH\"\nsigning_secret = \"env:PATH\"\napi_ur = \"https://x\"\n", "countersign.toml:4:1: unknown key \"api_ur\" in [slack]; did you mean \"api_url\"?"),
        ("", "[teams]\nwebhook_url = \"env:PATH\"\nwebhook = \"x\"\n", "countersign.toml:3:1: unknown key \"webhook\" in [teams]"),
        ("", "[approver_login]\nissuer = \"https://i\"\nclient_id = \"c\"\nclientsecret = \"env:PATH\"\n", "countersign.toml:4:1: unknown key \"clientsecret\" in [approver_login]; did you mean \"client_secret\"?"),
        ("", "[sever]\n", "countersign.toml:1:2: unknown key \"sever\" at the top level; did you mean \"server\"?"),
        ("", "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservce_name = \"x\"\n", "countersign.toml:3:1: unknown key \"servce_name\" in [telemetry]; did you mean \"service_name\"?"),
        ("", "[audit]\nwebhook = \"https://siem.example.com/in\"\nwebhook_secret = \"env:PATH\"\nwebhok_secret = \"x\"\n", "countersign.toml:4:1: unknown key \"webhok_secret\" in [audit]; did you mean \"webhook_secret\"?"),
        ("[[rule]]\nname = \"r\"\naction = \"allow\"\nmethod = [\"GET\"]\n", "", "policies/p.toml:4:1: unknown key \"method\" in [[rule]]; did you mean \"methods\"?"),
        ("[[rule]]\nname = \"r\"\naction = \"allow\"\nrequire = { scope = [\"a\"] }\n", "", "policies/p.toml:4:13: unknown key \"scope\" in [rule.require]; did you mean \"scopes\"?"),
        ("[[rule]]\nname = \"r\"\naction = \"approve\"\n[rule.approval]\napprovers = [\"a@example.com\"]\nquorom = 1\n", "", "policies/p.toml:6:1: unknown key \"quorom\" in [rule.approval]; did you mean \"quorum\"?"),
        ("[[rul]]\nname = \"r\"\n", "", "policies/p.toml:1:3: unknown key \"rul\" at the top level of a policy file; did you mean \"rule\"?"),
    ];
    for (policy, extra, expected) in cases {
        // The section under test comes first so the expected lines count from 1.
        let config = if extra.starts_with("[server]") {
            format!("{extra}{MINIMAL_REST}")
        } else {
            format!("{extra}{SERVER}{MINIMAL_REST}")
        };
        let policy = if policy.is_empty() { RULE } else { policy };
        let got = problems_of(&config, policy);
        assert!(
            got.iter().any(|p| p == expected),
            "expected {expected:?} in {got:#?}"
        );
    }
}

#[test]
fn syntax_errors_are_positioned_and_other_files_still_checked() {
    let dir = folder(&[
        ("countersign.toml", &minimal_with("")),
        (
            "policies/a.toml",
            "[[rule]]\nname = \"a\"\naction = = \"allow\"\n",
        ),
        (
            "policies/b.toml",
            "[[rule]]\nname = \"b\"\naction = \"alow\"\n",
        ),
    ]);
    assert_eq!(
        problems(&dir),
        [
            "policies/a.toml:3:10: TOML syntax error: extra `=`, expected nothing",
            "policies/a.toml:3:12: TOML syntax error: unexpected key or value, expected newline, `#`",
            "policies/b.toml:3:10: \"action\" must be public, allow, deny or approve, not \"alow\"; did you mean \"allow\"?",
        ]
    );
}

#[test]
fn missing_required_keys_point_at_the_table_header() {
    let config = "[server]\nthreads = 2\n\n[[upstream]]\nurl = \"http://127.0.0.1:1\"\n\n[[route]]\nhost = \"a.example.com\"\n\n[[issuer]]\nleeway = \"1s\"\n\n[slack]\n";
    assert_eq!(
        problems_of(config, "[[rule]]\n"),
        [
            "countersign.toml:1:1: missing required key \"listen\" in [server]",
            "countersign.toml:4:1: missing required key \"name\" in [[upstream]]",
            "countersign.toml:7:1: missing required key \"upstream\" in [[route]]",
            "countersign.toml:10:1: missing required key \"issuer\" in [[issuer]]",
            "countersign.toml:10:1: missing required key \"audiences\" in [[issuer]]",
            "countersign.toml:13:1: missing required key \"bot_token\" in [slack]",
            "countersign.toml:13:1: missing required key \"signing_secret\" in [slack]",
            "policies/p.toml:1:1: missing required key \"name\" in [[rule]]",
            "policies/p.toml:1:1: missing required key \"action\" in [[rule]]",
        ]
    );
}

#[test]
fn wrong_types_are_errors() {
    let config = "[server]\nlisten = 8080\nthreads = 0\n[policy]\nfiles = \"policies/*.toml\"\n";
    let dir = folder(&[("countersign.toml", config)]);
    assert_eq!(
        problems(&dir),
        [
            "countersign.toml:2:10: \"listen\" must be a string, found integer",
            "countersign.toml:3:11: \"threads\" must be at least 1",
            "countersign.toml:5:9: \"files\" must be an array, found string",
        ]
    );
}

#[test]
fn integers_with_underscores_and_signs() {
    let config = "[server]\nlisten = \"127.0.0.1:8080\"\nthreads = 1_6\n";
    let dir = folder(&[("countersign.toml", config), ("policies/p.toml", RULE)]);
    let (c, _) = load(&dir.path().join("countersign.toml")).unwrap();
    assert_eq!(c.server.threads, 16);
    let config = "[server]\nlisten = \"127.0.0.1:8080\"\nthreads = -3\n";
    fs::write(dir.path().join("countersign.toml"), config).unwrap();
    assert_eq!(
        problems(&dir),
        ["countersign.toml:3:11: \"threads\" must be at least 1"]
    );
}

#[test]
fn control_listen_must_differ_from_listen() {
    let config = "[server]\nlisten = \"127.0.0.1:8080\"\ncontrol_listen = \"127.0.0.1:8080\"\n";
    assert_eq!(
        problems_of(config, RULE),
        ["countersign.toml:3:18: \"control_listen\" must differ from \"listen\" (the control plane never shares the data port)"]
    );
}

#[test]
fn upstream_urls_are_origins_only() {
    let extra = "[[upstream]]\nname = \"b\"\nurl = \"http://127.0.0.1:7000/api\"\n[[upstream]]\nname = \"c\"\nurl = \"https://x.example.com/?a=1\"\n[[upstream]]\nname = \"d\"\nurl = \"https://x.example.com\"\n";
    assert_eq!(
        problems_of(&minimal_with(extra), RULE),
        [
            "countersign.toml:16:7: upstream \"url\" \"http://127.0.0.1:7000/api\" must not have a path (routes keep the request path as sent)",
            "countersign.toml:19:7: upstream \"url\" \"https://x.example.com/?a=1\" must not have a query or fragment",
        ]
    );
}

#[test]
fn duplicates_are_reported_where_the_second_one_is() {
    let extra = "[[upstream]]\nname = \"api\"\nurl = \"http://127.0.0.1:7001\"\n[[issuer]]\nissuer = \"https://idp.example.com\"\naudiences = [\"x\"]\n";
    let dir = folder(&[
        ("countersign.toml", &minimal_with(extra)),
        ("policies/a.toml", RULE),
        ("policies/b.toml", &format!("\n\n{RULE}")),
    ]);
    assert_eq!(
        problems(&dir),
        [
            "countersign.toml:14:1: duplicate upstream \"api\" (first defined on line 4)",
            "countersign.toml:17:1: duplicate issuer \"https://idp.example.com\" (first defined on line 11)",
            "policies/b.toml:4:8: duplicate rule name \"r\" (first defined at policies/a.toml:1)",
        ]
    );
}

#[test]
fn secrets_come_from_env_or_file_never_inline() {
    // A name no other test uses, so setting it cannot race.
    std::env::set_var(
        "COUNTERSIGN_CONFIG_TEST_TEAMS",
        "https://teams.example/hook",
    );
    let extra = "[teams]\nwebhook_url = \"env:COUNTERSIGN_CONFIG_TEST_TEAMS\"\n[slack]\nbot_token = \"file:secrets/bot\"\nsigning_secret = \"file:secrets/signing\"\n[approver_login]\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\nclient_secret = \"file:/definitely/not/here\"\n[approvals]\nsigning_key = \"-----BEGIN PRIVATE KEY-----\"\n";
    let dir = folder(&[
        ("countersign.toml", &minimal_with(extra)),
        ("policies/p.toml", RULE),
        ("secrets/bot", "xoxb-1\n"),
        ("secrets/signing", "s3cret\r\n"),
    ]);
    assert_eq!(
        problems(&dir),
        [
            "countersign.toml:22:17: \"client_secret\": cannot read secret file /definitely/not/here: No such file or directory (os error 2)",
            "countersign.toml:24:15: \"signing_key\": secrets must be given as env:NAME or file:PATH, never inline",
        ]
    );
    let fixed = minimal_with(
        &extra
            .replace("client_secret = \"file:/definitely/not/here\"\n", "")
            .replace(
                "[approvals]\nsigning_key = \"-----BEGIN PRIVATE KEY-----\"\n",
                "",
            ),
    );
    fs::write(dir.path().join("countersign.toml"), fixed).unwrap();
    let (config, _) = load(&dir.path().join("countersign.toml")).unwrap();
    let slack = config.slack.unwrap();
    assert_eq!(slack.bot_token.expose(), "xoxb-1");
    assert_eq!(slack.signing_secret.expose(), "s3cret");
    assert_eq!(
        config.teams.unwrap().webhook_url.expose(),
        "https://teams.example/hook"
    );
    assert!(!format!("{:?}", slack.bot_token).contains("xoxb"));
}

#[test]
fn unset_env_secret_is_an_error_at_the_value() {
    let extra = "[teams]\nwebhook_url = \"env:COUNTERSIGN_CONFIG_TEST_NEVER_SET\"\n";
    assert_eq!(
        problems_of(&minimal_with(extra), RULE),
        ["countersign.toml:15:15: \"webhook_url\": environment variable COUNTERSIGN_CONFIG_TEST_NEVER_SET is not set"]
    );
}

#[test]
fn policy_rule_checks() {
    let policy = r#"[[rule]]
name = "a"
path = "/v1/{id}"
params = { env = "x" }
action = "allow"

[[rule]]
name = "b"
action = "approve"

[[rule]]
name = "c"
action = "public"
require = { scopes = ["x"] }

[[rule]]
name = "d"
action = "approve"
[rule.approval]
approvers = ["a@example.com", "group:ops", "A@example.com"]
quorum = 3
self_approval = "no"

[[rule]]
name = "e"
path = "/files/{*rest}/more"
action = "deny"
"#;
    let extra = "[approvers.groups]\nops = [\"a@example.com\"]\n";
    assert_eq!(
        problems_of(&minimal_with(extra), policy),
        [
            "policies/p.toml:4:12: \"env\" is not a parameter of the path template",
            "policies/p.toml:7:1: action \"approve\" needs a [rule.approval] table",
            "policies/p.toml:14:1: a public rule cannot have \"require\": public requests carry no token",
            "policies/p.toml:22:17: \"self_approval\" must be a boolean, found string",
            "policies/p.toml:26:8: path \"/files/{*rest}/more\": {*rest} must be the last segment",
        ]
    );
}

#[test]
fn explicit_glob_must_match_but_the_default_may_not() {
    let dir = folder(&[("countersign.toml", &minimal_with(""))]);
    let (_, policy) = load(&dir.path().join("countersign.toml")).unwrap();
    assert!(policy.rules.is_empty());

    let dir = folder(&[(
        "countersign.toml",
        &minimal_with("[policy]\nfiles = [\"rules/*.toml\"]\n"),
    )]);
    assert_eq!(
        problems(&dir),
        ["countersign.toml:15:10: policy glob \"rules/*.toml\" matches no file"]
    );
}

#[test]
fn rules_from_all_files_in_sorted_order_and_reload() {
    let dir = folder(&[
        ("countersign.toml", &minimal_with("[policy]\nfiles = [\"z/*.toml\", \"a/*.toml\"]\n")),
        ("z/1.toml", "[[rule]]\nname = \"z1\"\naction = \"deny\"\n"),
        ("a/2.toml", "[[rule]]\nname = \"a2\"\naction = \"allow\"\n[[rule]]\nname = \"a2b\"\naction = \"allow\"\n"),
    ]);
    let (config, policy) = load(&dir.path().join("countersign.toml")).unwrap();
    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a2", "a2b", "z1"]);

    fs::write(
        dir.path().join("z/1.toml"),
        "[[rule]]\nname = \"a2\"\naction = \"deny\"\n",
    )
    .unwrap();
    let err = load_policies(&config).unwrap_err();
    let prefix = format!("{}/", dir.path().display());
    assert_eq!(
        err.to_string().replace(&prefix, ""),
        "z/1.toml:2:8: duplicate rule name \"a2\" (first defined at a/2.toml:1)\n"
    );
    fs::write(
        dir.path().join("z/1.toml"),
        "[[rule]]\nname = \"z9\"\naction = \"deny\"\n",
    )
    .unwrap();
    let reloaded = load_policies(&config).unwrap();
    assert_eq!(reloaded.rules[2].name, "z9");
}

#[test]
fn durations() {
    let ok = [
        ("500ms", Duration::from_millis(500)),
        ("55s", Duration::from_secs(55)),
        ("15m", Duration::from_secs(900)),
        ("1h", Duration::from_secs(3600)),
        ("1h30m", Duration::from_secs(5400)),
        ("0s", Duration::ZERO),
        ("1m500ms", Duration::from_millis(60_500)),
    ];
    for (s, d) in ok {
        assert_eq!(parse_duration(s), Ok(d), "{s}");
    }
    let bad = [
        (
            "",
            "empty duration; write e.g. \"55s\", \"15m\" or \"1h30m\"",
        ),
        ("-5s", "duration \"-5s\" must not be negative"),
        ("55", "duration \"55\" needs a unit; write e.g. \"55s\""),
        (
            "5d",
            "unknown unit \"d\" in duration \"5d\"; use ms, s, m or h",
        ),
        (
            "1.5s",
            "invalid duration \"1.5s\"; write e.g. \"55s\", \"15m\" or \"1h30m\"",
        ),
        (
            "1h 30m",
            "invalid duration \"1h 30m\"; write e.g. \"55s\", \"15m\" or \"1h30m\"",
        ),
        (
            "1h30",
            "invalid duration \"1h30\"; write e.g. \"55s\", \"15m\" or \"1h30m\"",
        ),
        (
            "s",
            "invalid duration \"s\"; write e.g. \"55s\", \"15m\" or \"1h30m\"",
        ),
        (
            "99999999999999999999s",
            "duration \"99999999999999999999s\" is too large",
        ),
    ];
    for (s, msg) in bad {
        assert_eq!(parse_duration(s), Err(msg.to_owned()), "{s}");
    }
}

#[test]
fn shipped_example_config_is_valid() {
    let (config, policy) = load(Path::new("examples/countersign.toml")).unwrap();
    assert!(!config.routes.is_empty());
    assert!(!policy.rules.is_empty());
}

// ----- property tests (issue 10; PROPTEST_CASES raises the case count) -----

mod prop {
    use std::collections::BTreeMap;
    use std::path::Path;

    use proptest::prelude::*;

    use super::super::policy_file::{parse_text, Names};
    use super::super::refs::Refs;

    /// Lines a policy file is made of, valid and not, to be shuffled and mutated.
    const LINES: &[&str] = &[
        "[[rule]]",
        "[[rule]]",
        "name = \"r1\"",
        "name = \"r2\"",
        "action = \"allow\"",
        "action = \"deny\"",
        "action = \"approve\"",
        "action = \"maybe\"",
        "[rule.approval]",
        "[rule.require]",
        "approvers = [\"alice@example.com\", \"group:sre-leads\"]",
        "approvers = []",
        "quorum = 2",
        "quorum = -1",
        "quorum = 99999999999999999999",
        "quorum = { \"group:sre-leads\" = 1, \"alice@example.com\" = 1 }",
        "quorum = { \"group:nope\" = 0, \"x\" = \"y\" }",
        "path = \"/a/{x}\"",
        "path = \"a/{\"",
        "path_prefix = \"/admin\"",
        "methods = [\"GET\", \"POST\"]",
        "methods = \"GET\"",
        "host = \"*.example.com\"",
        "host = \"\"",
        "hold = \"30s\"",
        "expires = \"5m\"",
        "expires = \"-5m\"",
        "notify = [\"slack:#prod\", \"teams\"]",
        "redact = [\"/token\", \"~2\"]",
        "require = { scopes = [\"a\"] }",
        "claims = { a = \"b\" }",
        "params = { x = \"[0-9]+\" }",
        "self_approval = true",
        "approve_via = \"login\"",
        "unidentified_requester = \"hold\"",
        "x = 1",
        "[rule]",
        "[[rule.approval]]",
        "name = \"\"\"",
        "a.b.c = 1",
        "\"quoted key\" = 'x'",
        "# comment é ☃",
        "",
    ];

    fn text() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            6 => proptest::sample::select(LINES).prop_map(str::to_owned),
            1 => "[ -~]{0,24}",
            1 => "\\PC{0,12}",
        ];
        (
            proptest::collection::vec(line, 0..24),
            proptest::collection::vec((any::<prop::sample::Index>(), "\\PC{0,2}", 0usize..3), 0..3),
            prop_oneof![Just("\n"), Just("\r\n")],
            any::<bool>(),
        )
            .prop_map(|(lines, edits, eol, final_eol)| {
                let mut s = lines.join(eol);
                if final_eol {
                    s.push_str(eol);
                }
                // Character-level edits: insert text, delete a few characters.
                for (at, insert, delete) in edits {
                    let chars: Vec<char> = s.chars().collect();
                    let i = at.index(chars.len() + 1);
                    let end = (i + delete).min(chars.len());
                    let mut out: String = chars[..i].iter().collect();
                    out.push_str(&insert);
                    out.extend(&chars[end..]);
                    s = out;
                }
                s
            })
    }

    proptest! {
        /// Arbitrary policy text never panics; it either loads or every problem points at a
        /// line and column inside the file; text TOML itself rejects never loads; and every
        /// loaded rule names a line of the file.
        #[test]
        fn policy_loader_is_total_and_points_inside_the_file(text in text()) {
            let mut groups = BTreeMap::new();
            groups.insert("sre-leads".to_owned(), vec!["bob@example.com".to_owned()]);
            let refs = Refs { groups: &groups, slack: true, teams: false, login: true, pagerduty: false };
            let mut names = Names::new();
            let path = Path::new("policies/p.toml");
            let (rules, problems) = parse_text(path, &text, refs, &mut names);
            let lines: Vec<&str> = text.split('\n').collect();
            for p in &problems {
                prop_assert_eq!(&p.file, path);
                prop_assert!(p.line >= 1 && p.line <= lines.len(), "{} in {:?}", p, text);
                let width = lines[p.line - 1].chars().count();
                prop_assert!(p.col >= 1 && p.col <= width + 1, "{} in {:?}", p, text);
            }
            if toml::from_str::<toml::Table>(&text).is_err() {
                prop_assert!(!problems.is_empty(), "TOML rejects {:?} but it loaded", text);
            }
            if problems.is_empty() {
                for r in &rules {
                    prop_assert!(r.origin.line >= 1 && r.origin.line <= lines.len());
                }
            }
        }
    }
}

#[test]
fn a_sentinel_store_parses_and_a_bad_one_says_what_is_wrong() {
    let config = |store: &str| {
        format!(
            "{SERVER}{MINIMAL_REST}[approvals]\nstore = \"{store}\"\nsigning_key = \"file:k.pem\"\n"
        )
    };
    let good = config("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/cs/2");
    let dir = folder(&[("countersign.toml", &good), ("k.pem", "pem")]);
    let loaded = load(&dir.path().join("countersign.toml")).unwrap();
    match &loaded.0.approvals.store {
        StoreUrl::Sentinel(u) => {
            assert_eq!(u.sentinels.len(), 3);
            assert_eq!((u.master.as_str(), u.db), ("cs", 2));
        }
        other => panic!("not a Sentinel store: {other:?}"),
    }
    let bad = config("redis+sentinel://10.0.0.1:26379");
    let dir = folder(&[("countersign.toml", &bad), ("k.pem", "pem")]);
    let problems = problems(&dir);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("\"store\": no master name"),
        "{problems:?}"
    );
}
