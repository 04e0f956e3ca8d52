//! `remind` and `escalate` in `[rule.approval]` (SPEC 9), checked with file:line:col:
//! `remind = "10m"` (at least 1 s) and
//! `escalate = { after = "30m", approvers = [...], notify = [...] }` (`after` at least 1 s and
//! shorter than `expires`; `approvers` required and checked like the rule's; `notify`
//! optional, checked like the rule's).
//!
//! Owns parsing only; the compiled type is [`crate::policy::NudgeSpec`], the behaviour is
//! [`crate::approval::nudge`]'s.

use std::ops::Range;
use std::time::Duration;

use toml::de::DeTable;

use super::refs::{approvers, notify, Refs};
use super::walk::FileCheck;
use crate::policy::{EscalateSpec, NudgeSpec};

/// The keys of this module in `[rule.approval]`.
pub(super) const KEYS: &[&str] = &["remind", "escalate"];

/// Shortest `remind` and `escalate.after`: the background sweeps about every second.
const MIN: Duration = Duration::from_secs(1);

/// `remind` and `escalate` of one `[rule.approval]` table `t` whose `expires` is `expires`.
/// `None` when a problem was reported.
pub(super) fn nudge(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    expires: Duration,
    refs: Refs<'_>,
) -> Option<NudgeSpec> {
    let has_remind = t.contains_key("remind");
    let remind = ck.opt_duration(t, "remind", MIN);
    if has_remind && remind.is_none() {
        return None;
    }
    let escalate = match t.get("escalate") {
        None => None,
        Some(value) => {
            let table = ck.as_table(value, "\"escalate\"")?;
            Some(escalate(ck, table, &value.span(), expires, refs)?)
        }
    };
    Some(NudgeSpec { remind, escalate })
}

/// The body of `escalate = { ... }`.
fn escalate(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    span: &Range<usize>,
    expires: Duration,
    refs: Refs<'_>,
) -> Option<EscalateSpec> {
    ck.unknown_keys(t, "in \"escalate\"", &["after", "approvers", "notify"]);
    let after = match ck.opt_duration(t, "after", MIN) {
        Some(after) if after >= expires => {
            let at = t.get("after").map_or(span.clone(), |v| v.span());
            ck.err(
                &at,
                format!(
                    "\"after\" ({}) must be shorter than \"expires\" ({}): the request would \
                     expire before it escalates",
                    humantime::format_duration(after),
                    humantime::format_duration(expires)
                ),
            );
            None
        }
        Some(after) => Some(after),
        None => {
            if !t.contains_key("after") {
                ck.err(span, "missing required key \"after\" in \"escalate\"");
            }
            None
        }
    };
    let approvers = if t.contains_key("approvers") {
        approvers(ck, t, span, refs)
    } else {
        ck.err(span, "missing required key \"approvers\" in \"escalate\"");
        None
    };
    let notify = notify(ck, t, refs);
    Some(EscalateSpec {
        after: after?,
        approvers: approvers?,
        notify: notify?,
    })
}

#[cfg(test)]
#[path = "nudge_tests.rs"]
mod tests;
