//! What an approval record remembers about reminders and escalation ([`Nudges`], one field of
//! [`super::record::Approval`]), planned from the rule when the approval is created. Data
//! only: the rules for when a step is due and how it is claimed live in [`super::nudge`].
//!
//! Owns the field's types and their planning. Must not import the record (the record
//! imports this) nor touch storage, audit, notification or chat rendering.

use serde::{Deserialize, Serialize};

use crate::clock::duration_ms as ms;
use crate::notify::NotifyTarget;
use crate::policy::{Approver, NudgeSpec};

/// What an approval remembers about reminders and escalation. Empty (the default, also for
/// records written before reminders existed) means neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nudges {
    /// Re-notify approvers every this many ms while pending (`remind`); 0 = never.
    #[serde(default)]
    pub remind_every: u64,
    /// Reminders sent so far.
    #[serde(default)]
    pub reminders: u32,
    /// When the last reminder was claimed (unix ms); `None` before the first (the clock
    /// starts at `created_at`).
    #[serde(default)]
    pub reminded_at: Option<u64>,
    /// The rule's `escalate`, copied at creation, and whether it happened.
    #[serde(default)]
    pub escalation: Option<Escalation>,
}

/// One approval's escalation: who is added, who is told, when, and (once it happened) who was
/// actually added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Escalate when still pending at this time (unix ms): `created_at + after`.
    pub at: u64,
    /// The approver entries as configured (`group:NAME` or an email), resolved when the
    /// escalation happens, then fixed in `Approval::approvers`.
    pub approvers: Vec<String>,
    /// Where the added approvers are told.
    #[serde(with = "super::serde_fields::notify_serde")]
    pub notify: Vec<NotifyTarget>,
    /// Whether it happened (it happens once).
    #[serde(default)]
    pub done: bool,
    /// The emails it added to `approvers` (those already there are not repeated).
    #[serde(default)]
    pub added: Vec<String>,
}

impl Nudges {
    /// What an approval created at `created_at` under a rule with `spec` remembers.
    pub fn plan(spec: &NudgeSpec, created_at: u64) -> Self {
        Self {
            remind_every: spec.remind.map_or(0, ms),
            reminders: 0,
            reminded_at: None,
            escalation: spec.escalate.as_ref().map(|e| Escalation {
                at: created_at.saturating_add(ms(e.after)),
                approvers: e.approvers.iter().map(entry_of).collect(),
                notify: e.notify.clone(),
                done: false,
                added: Vec::new(),
            }),
        }
    }

    /// When the next reminder is due (unix ms), if reminders are on.
    pub(super) fn next_reminder(&self, created_at: u64) -> Option<u64> {
        (self.remind_every > 0).then(|| {
            self.reminded_at
                .unwrap_or(created_at)
                .saturating_add(self.remind_every)
        })
    }

    /// When the escalation is due (unix ms), unless there is none or it happened.
    pub(super) fn escalation_due(&self) -> Option<u64> {
        self.escalation.as_ref().filter(|e| !e.done).map(|e| e.at)
    }
}

/// An approver entry as the record keeps it: `group:NAME` or an email.
fn entry_of(a: &Approver) -> String {
    match a {
        Approver::Email(e) => e.clone(),
        Approver::Group(g) => format!("group:{g}"),
        Approver::PagerDuty(s) => format!("pagerduty:{s}"),
    }
}

/// The escalation's approver entries (as kept by [`Nudges::plan`]) back as approvers, for
/// resolution when the escalation happens.
pub fn approvers_of(entries: &[String]) -> Vec<Approver> {
    entries
        .iter()
        .map(|e| {
            if let Some(g) = e.strip_prefix("group:") {
                Approver::Group(g.to_owned())
            } else if let Some(s) = e.strip_prefix("pagerduty:") {
                Approver::PagerDuty(s.to_owned())
            } else {
                Approver::Email(e.clone())
            }
        })
        .collect()
}
