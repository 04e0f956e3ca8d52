//! `[pagerduty]` and `pagerduty:` approvers: what loads, and every mistake with file:line:col.

use crate::config::fixture::{assert_starts_with, folder, load_folder, minimal_with};
use crate::config::Config;
use crate::policy::{Approver, PolicySet};

/// Loads the minimal config + `extra` (from line 14) as `countersign.toml` with `policy` as
/// `policies/p.toml`; problems are returned with the folder prefix cut.
fn load_with(extra: &str, policy: &str) -> Result<(Config, PolicySet), Vec<String>> {
    load_folder(&folder(&[
        ("policies/p.toml", policy),
        ("pd-token", "u+pdTOKENsecret\n"),
        ("countersign.toml", &minimal_with(extra)),
    ]))
}

fn rule(approvers: &str) -> String {
    format!(
        "[[rule]]\nname = \"r\"\naction = \"approve\"\n[rule.approval]\napprovers = {approvers}\n"
    )
}

/// The problems of `section` in a config whose policy names no on-call schedule.
fn section_problems(section: &str) -> Vec<String> {
    load_with(section, &rule(r#"["a@example.com"]"#)).unwrap_err()
}

const SECTION: &str = "[pagerduty]\napi_token = \"file:pd-token\"\n";

#[test]
fn section_loads_with_defaults_and_the_approver_compiles() {
    let (config, policy) =
        load_with(SECTION, &rule(r#"["pagerduty:PABC123", "a@example.com"]"#)).unwrap();
    let pd = config.pagerduty.unwrap();
    assert_eq!(pd.api_token.expose(), "u+pdTOKENsecret");
    assert_eq!(pd.api_url.as_str(), "https://api.pagerduty.com/");
    assert_eq!(pd.cache, std::time::Duration::from_secs(60));
    assert!(
        !format!("{pd:?}").contains("pdTOKEN"),
        "Debug redacts the token"
    );
    let spec = policy.rules[0].approval.as_ref().unwrap();
    assert_eq!(
        spec.approvers,
        vec![
            Approver::PagerDuty("PABC123".into()),
            Approver::Email("a@example.com".into())
        ]
    );
}

#[test]
fn api_url_and_cache_can_be_set() {
    let config = load_with(
        &format!("{SECTION}api_url = \"http://127.0.0.1:9999/pd\"\ncache = \"5s\"\n"),
        &rule(r#"["pagerduty:S1"]"#),
    )
    .unwrap()
    .0;
    let pd = config.pagerduty.unwrap();
    assert_eq!(pd.api_url.as_str(), "http://127.0.0.1:9999/pd");
    assert_eq!(pd.cache, std::time::Duration::from_secs(5));
}

#[test]
fn a_pagerduty_approver_without_the_section_is_an_error_at_its_position() {
    let problems = load_with("", &rule(r#"["a@example.com", "pagerduty:PABC123"]"#)).unwrap_err();
    assert_eq!(
        problems,
        vec!["policies/p.toml:5:31: approver \"pagerduty:PABC123\" needs a [pagerduty] section in the config"]
    );
}

#[test]
fn empty_or_malformed_schedule_ids_are_errors() {
    let problems = load_with(SECTION, &rule(r#"["pagerduty:", "pagerduty:S 1/x"]"#)).unwrap_err();
    assert_eq!(
        problems,
        vec![
            "policies/p.toml:5:14: approver \"pagerduty:\" needs a schedule id, like \"pagerduty:PABC123\"",
            "policies/p.toml:5:28: approver \"pagerduty:S 1/x\": a PagerDuty schedule id is letters and digits, like \"PABC123\"",
        ]
    );
}

#[test]
fn an_inline_token_is_refused() {
    let problems = load_with(
        "[pagerduty]\napi_token = \"u+abcdef\"\n",
        &rule(r#"["pagerduty:S1"]"#),
    )
    .unwrap_err();
    assert_eq!(
        problems,
        vec!["countersign.toml:15:13: \"api_token\": secrets must be given as env:NAME or file:PATH, never inline"]
    );
}

#[test]
fn a_missing_token_is_an_error_at_the_section() {
    let problems = section_problems("[pagerduty]\n");
    assert_eq!(
        problems,
        vec!["countersign.toml:14:1: missing required key \"api_token\" in [pagerduty]"]
    );
}

#[test]
fn a_plain_http_api_url_off_loopback_and_a_bad_url_are_refused() {
    let problems = section_problems(&format!(
        "{SECTION}api_url = \"http://api.pagerduty.com\"\n"
    ));
    assert_eq!(
        problems,
        vec!["countersign.toml:16:11: \"api_url\" must use https:// (http:// is only accepted for 127.0.0.1 or localhost), not \"http://api.pagerduty.com\""]
    );
    let problems = section_problems(&format!("{SECTION}api_url = \"pagerduty\"\n"));
    assert_starts_with(
        &problems,
        &["countersign.toml:16:11: \"api_url\" is not a valid URL"],
    );
}

#[test]
fn unknown_keys_and_a_bad_cache_are_errors() {
    let problems = section_problems(&format!("{SECTION}api_key = \"env:X\"\ncache = \"soon\"\n"));
    assert_starts_with(
        &problems,
        &[
            "countersign.toml:16:1: unknown key \"api_key\" in [pagerduty]",
            "countersign.toml:17:9: \"cache\":",
        ],
    );
}

#[test]
fn an_on_call_schedule_cannot_be_a_quorum_entry() {
    let problems = load_with(
        SECTION,
        "[[rule]]\nname = \"r\"\naction = \"approve\"\n[rule.approval]\nquorum = { \"pagerduty:S1\" = 1 }\n",
    )
    .unwrap_err();
    assert_starts_with(&problems, &["policies/p.toml:5:12: quorum entry \"pagerduty:S1\": an on-call schedule cannot be a quorum entry"]);
}
