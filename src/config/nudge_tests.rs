//! Tests of `remind` and `escalate` in `[rule.approval]`: both compile, and each mistake is
//! reported at its file:line:col.

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::fixture::{compile_policy, groups_only};
use super::super::refs::Refs;
use crate::policy::{Approver, EscalateSpec, NotifyTarget, NudgeSpec};

/// Compiles one rule whose `[rule.approval]` body is `approval` (starting on line 5).
fn compile(approval: &str) -> (Option<NudgeSpec>, Vec<String>) {
    let text =
        format!("[[rule]]\nname = \"deploy\"\naction = \"approve\"\n[rule.approval]\n{approval}");
    let groups = BTreeMap::from([("managers".to_owned(), vec!["mia@example.com".to_owned()])]);
    let refs = Refs {
        slack: true,
        ..groups_only(&groups)
    };
    let (rules, problems) = compile_policy(&text, refs);
    let nudge = rules
        .first()
        .and_then(|r| r.approval.as_ref())
        .map(|a| a.nudge.clone());
    (nudge, problems)
}

#[test]
fn remind_and_escalate_compile() {
    let (nudge, problems) = compile(
        r#"approvers = ["a@example.com"]
expires = "1h"
remind = "10m"
escalate = { after = "30m", approvers = ["group:managers", "Carol@Example.com"], notify = ["slack:#escalations"] }
"#,
    );
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(
        nudge,
        Some(NudgeSpec {
            remind: Some(Duration::from_secs(600)),
            escalate: Some(EscalateSpec {
                after: Duration::from_secs(1800),
                approvers: vec![
                    Approver::Group("managers".into()),
                    Approver::Email("carol@example.com".into()),
                ],
                notify: vec![NotifyTarget::SlackChannel("escalations".into())],
            }),
        })
    );
}

#[test]
fn both_are_optional() {
    let (nudge, problems) = compile("approvers = [\"a@example.com\"]\n");
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(nudge, Some(NudgeSpec::default()));
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let cases = [
        (
            "remind = \"500ms\"",
            "p.toml:7:10: \"remind\" must be at least 1s",
        ),
        (
            "remind = 10",
            "p.toml:7:10: \"remind\" must be a string, found integer",
        ),
        (
            "escalate = { after = \"2h\", approvers = [\"b@example.com\"] }",
            "p.toml:7:22: \"after\" (2h) must be shorter than \"expires\" (1h): the request would expire before it escalates",
        ),
        (
            "escalate = { approvers = [\"b@example.com\"] }",
            "p.toml:7:12: missing required key \"after\" in \"escalate\"",
        ),
        (
            "escalate = { after = \"5m\" }",
            "p.toml:7:12: missing required key \"approvers\" in \"escalate\"",
        ),
        (
            "escalate = { after = \"5m\", approvers = [\"group:manager\"] }",
            "p.toml:7:41: approver group \"manager\" is not defined in [approvers.groups]; did you mean \"group:managers\"?",
        ),
        (
            "escalate = { after = \"5m\", approvers = [\"b@example.com\"], notify = [\"teams\"] }",
            "p.toml:7:69: notify target \"teams\" needs a [teams] section in the config",
        ),
        (
            "escalate = { after = \"5m\", approvers = [\"b@example.com\"], notfy = [] }",
            "p.toml:7:59: unknown key \"notfy\" in \"escalate\"; did you mean \"notify\"?",
        ),
        (
            "escalate = \"5m\"",
            "p.toml:7:12: \"escalate\" must be a table, found string",
        ),
    ];
    for (line, want) in cases {
        let body = format!("approvers = [\"a@example.com\"]\nexpires = \"1h\"\n{line}\n");
        let (_, problems) = compile(&body);
        assert_eq!(problems, [want], "{line}");
    }
}
