//! Tests of `quorum` in `[rule.approval]`: the number form still parses, the table form
//! compiles, and each mistake is reported at its file:line:col.

use std::collections::BTreeMap;

use super::super::fixture::{assert_starts_with, compile_policy, groups_only};
use crate::policy::{Approver, Quorum, QuorumEntry, Rule};

/// `[approvers.groups]` for every test: dba has two members, security one.
fn groups() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        (
            "dba".to_owned(),
            vec!["alice@example.com".into(), "carol@example.com".into()],
        ),
        ("security".to_owned(), vec!["bob@example.com".into()]),
        ("solo".to_owned(), vec!["alice@example.com".into()]),
    ])
}

/// Compiles one rule whose `[rule.approval]` body is `approval` (starting on line 5).
fn compile(approval: &str) -> (Vec<Rule>, Vec<String>) {
    let text =
        format!("[[rule]]\nname = \"db\"\naction = \"approve\"\n[rule.approval]\n{approval}");
    compile_policy(&text, groups_only(&groups()))
}

fn entry(approver: Approver, count: u32) -> QuorumEntry {
    QuorumEntry { approver, count }
}

#[test]
fn a_number_still_parses_and_defaults_to_one() {
    let (rules, problems) = compile("approvers = [\"group:dba\"]\nquorum = 2\n");
    assert_eq!(problems, Vec::<String>::new());
    let spec = rules[0].approval.as_ref().unwrap();
    assert_eq!(spec.quorum, Quorum::Count(2));
    let (rules, _) = compile("approvers = [\"group:dba\"]\n");
    assert_eq!(rules[0].approval.as_ref().unwrap().quorum, Quorum::Count(1));
    let (_, problems) = compile("approvers = [\"group:dba\"]\nquorum = 0\n");
    assert_eq!(problems, ["p.toml:6:10: \"quorum\" must be at least 1"]);
    let (_, problems) = compile("approvers = [\"group:dba\"]\nquorum = 4294967296\n");
    assert_eq!(problems, ["p.toml:6:10: \"quorum\" is too large"]);
    let (_, problems) = compile("approvers = [\"group:dba\"]\nquorum = \"2\"\n");
    assert_eq!(
        problems,
        ["p.toml:6:10: \"quorum\" must be an integer or a table like { \"group:dba\" = 1 }, found string"]
    );
}

#[test]
fn a_table_without_approvers_makes_its_keys_the_approvers() {
    let (rules, problems) = compile(
        "quorum = { \"group:dba\" = 2, \"group:security\" = 1, \"Dave@Example.com\" = 1 }\n",
    );
    assert_eq!(problems, Vec::<String>::new());
    let spec = rules[0].approval.as_ref().unwrap();
    let want = [
        entry(Approver::Group("dba".into()), 2),
        entry(Approver::Group("security".into()), 1),
        entry(Approver::Email("dave@example.com".into()), 1),
    ];
    // The file's key order may not survive the TOML map; compare as sets.
    let Quorum::Entries(got) = &spec.quorum else {
        panic!("{:?}", spec.quorum)
    };
    assert_eq!(got.len(), want.len());
    assert!(want.iter().all(|w| got.contains(w)), "{got:?}");
    assert_eq!(spec.quorum.total(), 4);
    assert_eq!(spec.approvers.len(), 3);
    assert!(want.iter().all(|w| spec.approvers.contains(&w.approver)));
}

#[test]
fn a_table_with_approvers_needs_every_key_among_them() {
    let ok = "approvers = [\"group:dba\", \"group:security\", \"eve@example.com\"]\n\
              quorum = { \"group:dba\" = 1, \"group:security\" = 1, \"carol@example.com\" = 1 }\n";
    let (rules, problems) = compile(ok);
    assert_eq!(problems, Vec::<String>::new());
    // `approvers` stays as listed (eve may vote; she fills no entry).
    assert_eq!(rules[0].approval.as_ref().unwrap().approvers.len(), 3);
    let (_, problems) = compile(
        "approvers = [\"group:dba\"]\nquorum = { \"group:dba\" = 1, \"group:security\" = 1 }\n",
    );
    assert_eq!(
        problems,
        ["p.toml:6:29: quorum entry \"group:security\" is not among \"approvers\"; list it there, or leave \"approvers\" out to let the quorum's keys name the approvers"]
    );
    let (_, problems) =
        compile("approvers = [\"group:dba\"]\nquorum = { \"bob@example.com\" = 1 }\n");
    assert_starts_with(
        &problems,
        &["p.toml:6:12: quorum entry \"bob@example.com\" is not among"],
    );
}

#[test]
fn each_mistake_in_a_table_is_reported_where_it_is() {
    let cases: &[(&str, &str)] = &[
        (
            "quorum = { \"group:dbas\" = 1 }\n",
            "p.toml:5:12: quorum entry \"group:dbas\": approver group \"dbas\" is not defined in [approvers.groups]; did you mean \"group:dba\"?",
        ),
        (
            "quorum = { \"group:dba\" = 0 }\n",
            "p.toml:5:26: quorum for \"group:dba\" must be at least 1",
        ),
        (
            "quorum = { \"group:dba\" = 3 }\n",
            "p.toml:5:26: quorum for \"group:dba\" is 3 but group \"dba\" has only 2 member(s)",
        ),
        (
            "quorum = { \"carol@example.com\" = 2 }\n",
            "p.toml:5:34: quorum for \"carol@example.com\" must be 1: one person approves once",
        ),
        (
            "quorum = { \"dba\" = 1 }\n",
            "p.toml:5:12: quorum entry \"dba\" must be an email address or group:NAME",
        ),
        (
            "quorum = { \"group:dba\" = \"1\" }\n",
            "p.toml:5:26: quorum for \"group:dba\" must be an integer, found string",
        ),
        (
            "quorum = {}\n",
            "p.toml:5:10: \"quorum\" table must name at least one approver entry, like { \"group:dba\" = 1 }",
        ),
        (
            // solo is alice alone: one person for two entries.
            "quorum = { \"group:solo\" = 1, \"alice@example.com\" = 1 }\n",
            "p.toml:5:10: no set of distinct approvers can meet every quorum entry at once (one person counts toward one entry only)",
        ),
    ];
    for (approval, want) in cases {
        let (rules, problems) = compile(approval);
        assert_eq!(problems, [*want], "for {approval:?}");
        assert!(rules.is_empty(), "a rule with a bad quorum was compiled");
    }
}

#[test]
fn missing_approvers_without_a_table_is_still_an_error() {
    let (_, problems) = compile("quorum = 1\n");
    assert_eq!(
        problems,
        ["p.toml:4:1: missing required key \"approvers\" in [rule.approval]"]
    );
}
