//! What a policy file may refer to in the config ([`Refs`]: approver groups, Slack, Teams,
//! the approver login, PagerDuty) and the parsers of the keys that refer to it, shared by a
//! rule's `[rule.approval]`, its `quorum` and its `escalate`: `approvers` and `notify`.
//!
//! Owns these references and parsers. Must not parse whole rules or tables (that is
//! [`super::policy_file`], [`super::quorum`] and [`super::nudge`], which import this).

use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::DeTable;

use super::file::email;
use super::walk::{closest, FileCheck};
use super::Config;
use crate::policy::{Approver, NotifyTarget};

/// What policy files may refer to in the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refs<'a> {
    /// `[approvers.groups]`.
    pub groups: &'a BTreeMap<String, Vec<String>>,
    /// `[slack]` is configured.
    pub slack: bool,
    /// `[teams]` is configured.
    pub teams: bool,
    /// `[approver_login]` is configured.
    pub login: bool,
    /// `[pagerduty]` is configured (`pagerduty:` approvers need it).
    pub pagerduty: bool,
}

impl<'a> Refs<'a> {
    /// The references a loaded config offers.
    pub fn of(config: &'a Config) -> Self {
        Self {
            groups: &config.approver_groups,
            slack: config.slack.is_some(),
            teams: config.teams.is_some() || config.teams_bot.is_some(),
            login: config.approver_login.is_some(),
            pagerduty: config.pagerduty.is_some(),
        }
    }
}

/// `approvers = [...]`: emails, `group:NAME` of an existing group, or `pagerduty:SCHEDULE_ID`
/// (also `escalate`'s).
pub(crate) fn approvers(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    refs: Refs<'_>,
) -> Option<Vec<Approver>> {
    let Some((list, span)) = ck.opt_str_list(t, "approvers") else {
        if !t.contains_key("approvers") {
            ck.err(
                header,
                "missing required key \"approvers\" in [rule.approval]",
            );
        }
        return None;
    };
    if list.is_empty() {
        ck.err(&span, "\"approvers\" must name at least one approver");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (s, span) in list {
        if let Some(group) = s.strip_prefix("group:") {
            if refs.groups.contains_key(group) {
                out.push(Approver::Group(group.to_owned()));
                continue;
            }
            let names: Vec<&str> = refs.groups.keys().map(String::as_str).collect();
            let mut m = format!("approver group {group:?} is not defined in [approvers.groups]");
            if let Some(best) = closest(group, &names) {
                m.push_str(&format!("; did you mean \"group:{best}\"?"));
            }
            ck.err(&span, m);
        } else if let Some(schedule) = s.strip_prefix("pagerduty:") {
            if let Some(a) = super::file::on_call_approver(ck, schedule, &span, refs.pagerduty) {
                out.push(a);
                continue;
            }
        } else if let Some(e) = email(s) {
            out.push(Approver::Email(e));
            continue;
        } else {
            ck.err(
                &span,
                format!(
                    "approver {s:?} must be an email address, group:NAME or pagerduty:SCHEDULE_ID"
                ),
            );
        }
        ok = false;
    }
    ok.then_some(out)
}

/// `notify = [...]` (also `escalate`'s).
pub(crate) fn notify(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    refs: Refs<'_>,
) -> Option<Vec<NotifyTarget>> {
    let Some((list, _)) = ck.opt_str_list(t, "notify") else {
        return (!t.contains_key("notify")).then(Vec::new);
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (s, span) in list {
        match notify_target(s, refs) {
            Ok(target) => out.push(target),
            Err(e) => {
                ok = false;
                ck.err(&span, e);
            }
        }
    }
    ok.then_some(out)
}

/// One notify target.
fn notify_target(s: &str, refs: Refs<'_>) -> Result<NotifyTarget, String> {
    if s == "teams" {
        return if refs.teams {
            Ok(NotifyTarget::Teams)
        } else {
            Err("notify target \"teams\" needs a [teams] section in the config".into())
        };
    }
    let Some(rest) = s.strip_prefix("slack:") else {
        return Err(format!(
            "notify target {s:?} must be slack:#channel, slack:@person@example.com or teams"
        ));
    };
    if !refs.slack {
        return Err(format!(
            "notify target {s:?} needs a [slack] section in the config"
        ));
    }
    if let Some(channel) = rest.strip_prefix('#') {
        if !channel.is_empty() && !channel.contains(char::is_whitespace) {
            return Ok(NotifyTarget::SlackChannel(channel.to_owned()));
        }
    } else if let Some(person) = rest.strip_prefix('@').and_then(email) {
        return Ok(NotifyTarget::SlackUser(person));
    }
    Err(format!(
        "notify target {s:?} must be slack:#channel or slack:@person@example.com"
    ))
}
