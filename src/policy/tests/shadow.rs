//! Shadow rules (`mode = "shadow"`) in evaluation order: recorded when they match, never
//! deciding, and invisible to the coverage lint's "can never match" reasoning.

use std::collections::BTreeMap;

use serde_json::json;

use super::{facts, principal, rule};
use crate::policy::lint::{lint, Input};
use crate::policy::*;

fn shadow(name: &str, action: Action) -> Rule {
    Rule {
        mode: Mode::Shadow,
        ..rule(name, action)
    }
}

fn prefixed(mut r: Rule, prefix: &str) -> Rule {
    r.path = PathMatch::Prefix(prefix.into());
    r
}

/// `r` limited to tokens whose `groups` claim holds `group`.
fn in_group(mut r: Rule, group: &str) -> Rule {
    r.claims = vec![("groups".into(), group.into())];
    r
}

/// (deciding rule name, action, shadow rule names) for `path` with a principal.
fn decide(set: &PolicySet, path: &str) -> (String, Action, Vec<String>) {
    let who = principal(json!({"groups": ["ops"]}));
    let get = http::Method::GET;
    match set.evaluate(&facts(&get, "h", path), Some(&who)) {
        Evaluation::Decided(d) => (
            d.rule_name().to_owned(),
            d.action,
            d.shadow.iter().map(|r| r.name.clone()).collect(),
        ),
        Evaluation::NeedsToken => panic!("a principal always decides"),
    }
}

#[test]
fn a_shadow_rule_never_decides_and_the_next_enforcing_rule_does() {
    let set = PolicySet {
        rules: vec![
            prefixed(shadow("would-deny", Action::Deny), "/v1/"),
            prefixed(rule("allow-v1", Action::Allow), "/v1/"),
        ],
        default: DefaultAction::Deny,
    };
    assert_eq!(
        decide(&set, "/v1/x"),
        ("allow-v1".into(), Action::Allow, vec!["would-deny".into()])
    );
    // Not matching: not recorded.
    assert_eq!(
        decide(&set, "/v2/x"),
        ("default".into(), Action::Deny, vec![])
    );
}

#[test]
fn every_matching_shadow_rule_before_the_decision_is_recorded_in_order() {
    let set = PolicySet {
        rules: vec![
            shadow("first", Action::Deny),
            in_group(shadow("dev-would-deny", Action::Deny), "dev"),
            in_group(shadow("ops-would-approve", Action::Approve), "ops"),
            prefixed(shadow("elsewhere", Action::Deny), "/admin/"),
            shadow("third", Action::Allow),
        ],
        default: DefaultAction::Allow,
    };
    // No enforcing rule at all: the default decides, after every shadow match.
    assert_eq!(
        decide(&set, "/v1/x"),
        (
            "default".into(),
            Action::Allow,
            vec!["first".into(), "ops-would-approve".into(), "third".into()]
        )
    );
}

#[test]
fn a_shadow_rule_after_the_deciding_rule_is_not_evaluated() {
    let set = PolicySet {
        rules: vec![
            rule("deny-all", Action::Deny),
            shadow("too-late", Action::Allow),
        ],
        default: DefaultAction::Allow,
    };
    assert_eq!(
        decide(&set, "/x"),
        ("deny-all".into(), Action::Deny, vec![])
    );
}

#[test]
fn without_a_token_a_shadow_rule_neither_asks_for_one_nor_hides_a_public_rule() {
    let set = PolicySet {
        rules: vec![
            in_group(shadow("claims-unknown", Action::Deny), "ops"),
            shadow("would-deny", Action::Deny),
            rule("open", Action::Public),
        ],
        default: DefaultAction::Deny,
    };
    let get = http::Method::GET;
    match set.evaluate(&facts(&get, "h", "/healthz"), None) {
        Evaluation::Decided(d) => {
            assert_eq!((d.rule_name(), d.action), ("open", Action::Public));
            // The claims of the first cannot be judged without a token: not recorded.
            let names: Vec<&str> = d.shadow.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["would-deny"]);
        }
        Evaluation::NeedsToken => panic!("a shadow rule must not ask for a token"),
    }
}

#[test]
fn the_trace_reports_skips_and_shadow_matches_in_rule_order() {
    let set = PolicySet {
        rules: vec![
            prefixed(rule("admin", Action::Deny), "/admin/"),
            shadow("watch", Action::Deny),
            rule("allow-all", Action::Allow),
        ],
        default: DefaultAction::Deny,
    };
    let who = principal(json!({}));
    let get = http::Method::GET;
    let mut steps = Vec::new();
    let got = set.evaluate_traced(&facts(&get, "h", "/v1"), Some(&who), |s| {
        steps.push(match s {
            Step::Skipped(r, why) => format!("skipped {} {why:?}", r.name),
            Step::Shadow(r) => format!("shadow {}", r.name),
        })
    });
    assert_eq!(steps, ["skipped admin Path", "shadow watch"]);
    assert!(matches!(got, Evaluation::Decided(d) if d.rule_name() == "allow-all"));
}

#[test]
fn the_lint_does_not_count_shadow_rules_as_coverage() {
    let lint_of = |rules: Vec<Rule>| {
        let set = PolicySet {
            rules,
            default: DefaultAction::Allow,
        };
        lint(&Input {
            routes: &[],
            route_labels: &[],
            upstream_names: &[],
            policy: &set,
            groups: &BTreeMap::new(),
        })
        .into_iter()
        .map(|f| f.message)
        .collect::<Vec<_>>()
    };
    // An earlier shadow catch-all hides nothing: the later deny still applies.
    assert_eq!(
        lint_of(vec![
            shadow("watch-all", Action::Deny),
            prefixed(rule("no-admin", Action::Deny), "/admin/"),
        ]),
        Vec::<String>::new()
    );
    // An enforcing catch-all first: the later shadow rule can never record anything.
    let findings = lint_of(vec![
        rule("allow-all", Action::Allow),
        prefixed(shadow("watch-admin", Action::Allow), "/admin/"),
    ]);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].starts_with(
            "shadow rule \"watch-admin\" (allow) can never match, so it records nothing: rule \"allow-all\""
        ),
        "{findings:?}"
    );
}
