//! Quorum across approver entries (SPEC 9): the table form of `quorum` resolved into the
//! approval record when a request is created, and the counting rule for it.
//!
//! `quorum = { "group:dba" = 1, "group:security" = 1 }` needs every entry met at once, and one
//! person's approval fills one slot of one entry only, even when they are in several groups.
//! So the question is not a sum but whether the approvers can be *assigned* to distinct slots:
//! a bipartite matching of approve-voters to entry slots ([`crate::policy::quorum::assign`]).
//!
//! Owns the resolved entries ([`QuorumEntry`], [`resolve`]), whether an approval is met
//! ([`Approval::quorum_met`]), whether a new one could ever be ([`reachable`]) and the
//! per-entry progress approvers see ([`Approval::quorum_progress`],
//! [`Approval::quorum_summary`]). Pure: no I/O, no clock; the lifecycle applies it in
//! [`super::transition::vote`]. Must not parse policy files.

use std::collections::BTreeMap;

use serde::Serialize;

use super::record::Approval;
pub use super::record::QuorumEntry;
use crate::policy::{Approver, Quorum};

/// How far one entry is: shown on the page, in chat and in the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryProgress {
    /// The entry as written (`group:dba`).
    pub entry: String,
    /// The name shown to people (`dba`).
    #[serde(skip)]
    pub label: String,
    /// Approvals it needs.
    pub need: u32,
    /// Approvals assigned to it so far.
    pub have: u32,
    /// The approvers assigned to it, in vote order.
    pub by: Vec<String>,
}

/// Resolves the table form of `quorum` with `groups` (`[approvers.groups]` at creation). A
/// number resolves to no entries (the record's `quorum` count is the whole rule then). An
/// unknown group resolves to nobody: config validation reports it, and at run time an entry
/// nobody can fill is the fail-closed choice.
pub fn resolve(quorum: &Quorum, groups: &BTreeMap<String, Vec<String>>) -> Vec<QuorumEntry> {
    let Quorum::Entries(entries) = quorum else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|e| {
            let people: &[String] = match &e.approver {
                Approver::Email(email) => std::slice::from_ref(email),
                Approver::Group(g) => groups.get(g).map(Vec::as_slice).unwrap_or_default(),
                // Config refuses on-call entries in a quorum table; were one here, nobody.
                Approver::PagerDuty(_) => &[],
            };
            let mut members: Vec<String> = Vec::new();
            for p in people {
                let p = p.trim().to_lowercase();
                if !p.is_empty() && !members.contains(&p) {
                    members.push(p);
                }
            }
            QuorumEntry {
                entry: e.approver.to_string(),
                need: e.count,
                members,
            }
        })
        .collect()
}

/// A largest assignment of `voters` (in order) to the slots of `entries`: for each entry, the
/// voters filling it, in vote order ([`crate::policy::quorum::assign`]).
pub fn assign(entries: &[QuorumEntry], voters: &[String]) -> Vec<Vec<String>> {
    let needs: Vec<(u32, &[String])> = entries
        .iter()
        .map(|e| (e.need, e.members.as_slice()))
        .collect();
    crate::policy::quorum::assign(&needs, voters)
        .into_iter()
        .map(|by| by.into_iter().map(|v| voters[v].clone()).collect())
        .collect()
}

/// Whether `voters` can meet every entry at once.
pub fn met(entries: &[QuorumEntry], voters: &[String]) -> bool {
    assign(entries, voters)
        .iter()
        .zip(entries)
        .all(|(by, e)| by.len() >= e.need as usize)
}

/// Whether a request could ever be approved: `total` distinct approvals are possible among
/// `eligible`, and (table form) `eligible` can meet every entry at once.
pub fn reachable(total: u32, entries: &[QuorumEntry], eligible: &[String]) -> bool {
    total > 0 && eligible.len() >= total as usize && (entries.is_empty() || met(entries, eligible))
}

impl Approval {
    /// Whether the approvals so far meet the quorum: `quorum` distinct approvers, or (table
    /// form) every entry at once with one slot per approver.
    pub fn quorum_met(&self) -> bool {
        let approved = self.approved_by();
        if self.quorum_entries.is_empty() {
            approved.len() >= self.quorum as usize
        } else {
            met(&self.quorum_entries, &approved)
        }
    }

    /// Approvals still needed: `quorum` minus the approvals so far, or (table form) the slots
    /// no approver can be assigned to yet.
    pub fn approvals_missing(&self) -> u32 {
        if self.quorum_entries.is_empty() {
            return self.quorum.saturating_sub(self.approved_by().len() as u32);
        }
        self.quorum_progress()
            .iter()
            .map(|p| p.need.saturating_sub(p.have))
            .sum()
    }

    /// Per-entry progress (empty for a numeric quorum).
    pub fn quorum_progress(&self) -> Vec<EntryProgress> {
        if self.quorum_entries.is_empty() {
            return Vec::new();
        }
        let assigned = assign(&self.quorum_entries, &self.approved_by());
        self.quorum_entries
            .iter()
            .zip(assigned)
            .map(|(e, by)| EntryProgress {
                entry: e.entry.clone(),
                label: e.label().to_owned(),
                need: e.need,
                have: by.len() as u32,
                by,
            })
            .collect()
    }

    /// `dba 1/1, security 0/1` for a table quorum; `None` for a number (callers keep their
    /// "1 of 2 approvals" text).
    pub fn quorum_summary(&self) -> Option<String> {
        let progress = self.quorum_progress();
        (!progress.is_empty()).then(|| {
            progress
                .iter()
                .map(|p| format!("{} {}/{}", p.label, p.have, p.need))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

#[cfg(test)]
#[path = "quorum_tests.rs"]
mod tests;
