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
//!
//! (break-glass, created so) Review --claim--> Claimed --finish--> Done | Failed
//!                             \--acknowledge--> Acknowledged
//! ```
//!
//! A held request is a lease ([`take_hold`]): one whose holder stopped beating is cancelled
//! with reason [`HOLDER_LOST`] ([`cancel_lost_hold`]), pending or approved, never executed.

use super::record::{Approval, Decision, Execution, Status, Vote};
use crate::clock::duration_ms as ms;

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
            a.audit_pending = true;
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
        a.audit_pending = true;
    }
    due
}

/// Whether `a` may still be cancelled: pending, or approved (or a break-glass under review)
/// while execution has not started (a cancelled request is never executed).
pub fn may_cancel(a: &Approval) -> bool {
    a.status == Status::Pending
        || (matches!(a.status, Status::Approved | Status::Review)
            && a.execution == Execution::NotStarted)
}

/// `Pending | Approved (not started) -> Cancelled` by `actor` for `reason`.
pub fn cancel(a: &mut Approval, actor: &str, reason: &str, now: u64) -> bool {
    let ok = may_cancel(a);
    if ok {
        a.status = Status::Cancelled;
        a.decided_by = Some(actor.to_owned());
        a.decision_reason = Some(reason.to_owned());
        a.decided_at = Some(now);
        a.audit_pending = true;
    }
    ok
}

/// Sets whether a caller connection holds the request; returns whether that changed anything.
pub fn set_held(a: &mut Approval, held: bool) -> bool {
    let changed = a.held != held;
    a.held = held;
    changed
}

/// `audit_pending -> false` for an approval that ended as `status`: its end (for an approval,
/// the deciding vote too) is durable in the audit log, so an approved request may now be
/// executed, and no sweep writes the end's line again ([`audit_owed`]). Confirming another
/// status than the current one changes nothing (a cancel that overtook an approval still owes
/// its own line). Returns whether it changed anything.
pub fn confirm_audited(a: &mut Approval, status: Status) -> bool {
    let changed = a.status == status && a.audit_pending;
    if changed {
        a.audit_pending = false;
    }
    changed
}

// ----- audit lines owed ---------------------------------------------------------------------
//
// Every end (approved, denied, expired, cancelled) is written to the store with
// `audit_pending` set, in the same write; the replica that made it then writes the audit line
// and clears the flag ([`confirm_audited`]). If that replica dies in between, or its store
// write timed out although Redis applied it (no line was written for a change that stands),
// any replica's sweep writes the line itself once [`AUDIT_GRACE`] has passed, marked
// `recorded_late`. So the audit log accounts for every end the store has.

/// How long after an end its audit line may take before a sweep writes it instead.
pub const AUDIT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// When a sweep should write the audit line owed for `a`'s end (unix ms), if one is owed.
pub fn audit_owed_at(a: &Approval) -> Option<u64> {
    let ended = matches!(
        a.status,
        Status::Approved | Status::Denied | Status::Expired | Status::Cancelled
    );
    (a.audit_pending && ended)
        .then(|| a.decided_at.unwrap_or(a.created_at))
        .map(|at| at.saturating_add(ms(AUDIT_GRACE)))
}

/// Whether the audit line of `a`'s end is owed at `now`.
pub fn audit_owed(a: &Approval, now: u64) -> bool {
    audit_owed_at(a).is_some_and(|at| now >= at)
}

/// Whether `who` may claim `a` now: approved with its decision audited (or a break-glass
/// under review, whose `approval.break_glass` was audited before it was created as such), not
/// started, and (for the background) not held.
pub fn may_claim(a: &Approval, who: Claimant) -> bool {
    let sendable = match a.status {
        Status::Approved => !a.audit_pending,
        Status::Review => a.break_glass.is_some(),
        _ => false,
    };
    sendable && a.execution == Execution::NotStarted && (who == Claimant::Holder || !a.held)
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

/// `Review -> Acknowledged` by approver `by` (lowercase email) at `now`: the break-glass was
/// looked at afterwards. Only a break-glass under review can be acknowledged, once.
pub fn acknowledge(a: &mut Approval, by: &str, now: u64) -> bool {
    if a.status != Status::Review {
        return false;
    }
    let Some(bg) = a.break_glass.as_mut() else {
        return false;
    };
    bg.acknowledged_by = Some(by.to_owned());
    bg.acknowledged_at = Some(now);
    a.status = Status::Acknowledged;
    true
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

// ----- the hold lease ----------------------------------------------------------------------
//
// A caller held on a replica is a lease, not a plain flag. Each held record names its holder
// (the replica's instance id) and carries a backstop (`held_until`: the end of the hold plus
// [`HOLD_LEASE`]); each replica beats once every [`HEARTBEAT_EVERY`] for all the callers it
// holds ([`super::store::ApprovalStore::beat`]). A replica that dies stops beating, and any
// replica's sweep then cancels every request it held ([`cancel_lost_hold`] with the dead
// holder) rather than executing it: its caller saw a connection error and may retry, so running
// it too could run the action twice. A hold whose backstop passed is lost too, whoever holds
// it (a holder that never answered its caller). A released hold (the caller was answered 202)
// is never lost: the background of any replica executes it once approved.
//
// So a held caller costs the store one write when its hold starts, not one per second: the
// heartbeat is one per replica.

/// How often each replica tells the store it is alive (and still holds its callers).
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long after its last heartbeat a holder counts as dead, and how long a hold outlasts its
/// end: three heartbeats, so one slow or failed store write (or up to ~1.5 s of clock skew
/// between replicas) does not lose a live hold, and a dead holder is noticed by a 1 s sweep
/// within [`HOLD_LEASE`] + 1 s.
pub const HOLD_LEASE: std::time::Duration = std::time::Duration::from_secs(3);

/// How long after `expires_at` the hold of a record without `held_until` (written before
/// leases) is believed.
pub const HOLD_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The `decision_reason` (and audited `reason`) of a request cancelled because its holder
/// died or never answered its caller.
pub const HOLDER_LOST: &str = "holder_lost";

/// Who cancels a request whose holder was lost.
pub const HOLDER_LOST_ACTOR: &str = "countersign";

/// A hold taken at `now` for at most `until` (unix ms) is believed until this.
pub fn hold_lease_from(until: u64) -> u64 {
    until.saturating_add(ms(HOLD_LEASE))
}

/// When the hold on `a` runs out whoever holds it (unix ms); `None` when nobody holds it.
pub fn hold_deadline(a: &Approval) -> Option<u64> {
    a.held.then(|| {
        a.held_until
            .unwrap_or_else(|| a.expires_at.saturating_add(ms(HOLD_GRACE)))
    })
}

/// Takes the hold on `a` for `holder` (a replica's instance id) until `backstop` (unix ms):
/// only a live hold (held, and pending or approved but not started) is taken, so a write
/// racing the release of the hold (202) or a decision never takes the hold back. Returns
/// whether it changed anything.
pub fn take_hold(a: &mut Approval, holder: &str, backstop: u64) -> bool {
    let live = a.held && may_cancel(a);
    if live {
        a.holder = Some(holder.to_owned());
        a.held_until = Some(backstop);
    }
    live
}

/// Whether the holder of `a` is lost at `now`: held, nothing sent upstream yet, and either its
/// backstop passed or it is held by `dead_holder` (a replica that stopped beating). A pending
/// approval past `expires_at` expires instead (the expiry wins: it is what the holder would
/// have answered).
pub fn hold_lost(a: &Approval, now: u64, dead_holder: Option<&str>) -> bool {
    let expiring = a.status == Status::Pending && now >= a.expires_at;
    let dead = a.held && dead_holder.is_some_and(|d| a.holder.as_deref() == Some(d));
    may_cancel(a) && !expiring && (dead || hold_deadline(a).is_some_and(|until| now >= until))
}

/// `Pending | Approved (not started) -> Cancelled` by [`HOLDER_LOST_ACTOR`] for
/// [`HOLDER_LOST`], when [`hold_lost`]. Fail closed: an approved request whose holder died
/// before claiming it is cancelled, never executed by another replica, because its caller got
/// no answer and may have retried.
pub fn cancel_lost_hold(a: &mut Approval, now: u64, dead_holder: Option<&str>) -> bool {
    hold_lost(a, now, dead_holder) && cancel(a, HOLDER_LOST_ACTOR, HOLDER_LOST, now)
}
