//! The approval state machine as pure functions: each takes the current [`Approval`] and
//! either changes it and returns that it did, or leaves it untouched. No I/O, no clock (time
//! comes in as `now`, unix milliseconds), no store.
//!
//! Owns every rule of the lifecycle: who may vote when, when quorum is reached, what may be
//! cancelled, who may claim the one execution, and who may see an approval ([`visible_to`]). Every store backend
//! applies these through its one compare-and-set update, so the rules exist exactly once.
//! Must not touch storage, audit, notification or HTTP.
//!
//! ```text
//! Pending --vote (quorum)--> Approved --claim--> Claimed --finish--> Done | Failed
//!    |  \--vote (deny)--> Denied
//!    |   \--expire (now >= expires_at)--> Expired
//!    \------cancel------> Cancelled <--cancel-- Approved (not yet claimed)
//! ```

use super::record::{Approval, Decision, Execution, Status, Vote};

/// Who is claiming the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimant {
    /// The proxy holding the caller's connection (may claim while `held`).
    Holder,
    /// The background executor (only when nobody holds the request).
    Background,
}

/// What [`vote`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResultKind {
    /// Counted, still pending.
    Recorded,
    /// Quorum reached.
    Approved,
    /// Denied.
    Denied,
    /// Same approver again: unchanged.
    Duplicate,
    /// Not pending: unchanged.
    NotPending,
    /// Expired now.
    Expired,
}

impl VoteResultKind {
    /// Whether the approval was changed (and must be written back).
    pub fn changed(self) -> bool {
        match self {
            VoteResultKind::Recorded
            | VoteResultKind::Approved
            | VoteResultKind::Denied
            | VoteResultKind::Expired => true,
            VoteResultKind::Duplicate | VoteResultKind::NotPending => false,
        }
    }
}

/// Counts `vote`: expires it if `now >= expires_at`; refuses if not pending; ignores a second
/// vote by the same approver; a deny denies; `quorum` distinct approvals approve, or (table
/// quorum) approvals that meet every entry at once, one entry per approver
/// ([`Approval::quorum_met`]).
pub fn vote(a: &mut Approval, vote: Vote, now: u64) -> VoteResultKind {
    if a.status != Status::Pending {
        return VoteResultKind::NotPending;
    }
    if expire(a, now) {
        return VoteResultKind::Expired;
    }
    if a.has_voted(&vote.approver) {
        return VoteResultKind::Duplicate;
    }
    let decision = vote.decision;
    let approver = vote.approver.clone();
    let reason = vote.reason.clone();
    a.votes.push(vote);
    match decision {
        Decision::Deny => {
            a.status = Status::Denied;
            a.decided_by = Some(approver);
            a.decision_reason = reason;
            a.decided_at = Some(now);
            VoteResultKind::Denied
        }
        Decision::Approve => {
            if a.quorum_met() {
                a.status = Status::Approved;
                a.decided_by = Some(approver);
                a.decided_at = Some(now);
                // Not executable until the decision is in the audit log: see `confirm_audited`.
                a.audit_pending = true;
                VoteResultKind::Approved
            } else {
                VoteResultKind::Recorded
            }
        }
    }
}

/// `Pending -> Expired` when `now >= expires_at`.
pub fn expire(a: &mut Approval, now: u64) -> bool {
    let due = a.status == Status::Pending && now >= a.expires_at;
    if due {
        a.status = Status::Expired;
        a.decided_at = Some(now);
    }
    due
}

/// Whether `a` may still be cancelled: pending, or approved while execution has not started
/// (a cancelled request is never executed).
pub fn may_cancel(a: &Approval) -> bool {
    a.status == Status::Pending
        || (a.status == Status::Approved && a.execution == Execution::NotStarted)
}

/// `Pending | Approved (not started) -> Cancelled` by `actor` for `reason`.
pub fn cancel(a: &mut Approval, actor: &str, reason: &str, now: u64) -> bool {
    let ok = may_cancel(a);
    if ok {
        a.status = Status::Cancelled;
        a.decided_by = Some(actor.to_owned());
        a.decision_reason = Some(reason.to_owned());
        a.decided_at = Some(now);
    }
    ok
}

/// Sets whether a caller connection holds the request; returns whether that changed anything.
pub fn set_held(a: &mut Approval, held: bool) -> bool {
    let changed = a.held != held;
    a.held = held;
    changed
}

/// `audit_pending -> false`: the deciding vote and the approval are durable in the audit log,
/// so the approved request may now be executed. Returns whether that changed anything.
pub fn confirm_audited(a: &mut Approval) -> bool {
    let changed = a.status == Status::Approved && a.audit_pending;
    a.audit_pending = false;
    changed
}

/// Whether `who` may claim `a` now: approved with its decision audited, not started, and (for
/// the background) not held.
pub fn may_claim(a: &Approval, who: Claimant) -> bool {
    a.status == Status::Approved
        && !a.audit_pending
        && a.execution == Execution::NotStarted
        && (who == Claimant::Holder || !a.held)
}

/// `Approved, NotStarted -> Claimed { owner, at: now }`; exactly one claim ever succeeds.
pub fn claim(a: &mut Approval, who: Claimant, owner: &str, now: u64) -> bool {
    let ok = may_claim(a, who);
    if ok {
        a.execution = Execution::Claimed {
            owner: owner.to_owned(),
            at: now,
        };
    }
    ok
}

/// Who is looking at an approval: an API caller (bearer token) or a signed-in approver.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// Issuer of the viewer's identity.
    pub iss: &'a str,
    /// Subject at that issuer.
    pub sub: &'a str,
    /// The viewer's email, when the identity carries one.
    pub email: Option<&'a str>,
}

/// THE visibility rule, for pages and API alike: an approval is visible to its approvers (by
/// email, any case) and to its requester (same issuer and subject, or same email).
pub fn visible_to(a: &Approval, v: &Viewer<'_>) -> bool {
    let is_mine = |e: &str| v.email.is_some_and(|mine| mine.eq_ignore_ascii_case(e));
    a.requester.is(v.iss, v.sub)
        || a.requester.email.as_deref().is_some_and(is_mine)
        || a.approvers.iter().any(|e| is_mine(e))
}

/// `Claimed -> Done | Failed` (`outcome`).
pub fn finish(a: &mut Approval, outcome: &Execution) -> bool {
    let claimed = matches!(a.execution, Execution::Claimed { .. });
    if claimed {
        a.execution = outcome.clone();
    }
    claimed
}
