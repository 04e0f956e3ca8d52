//! The approval store: every state change is one atomic operation, so that a Redis backend
//! (issue 5) can implement each as one Lua script or `MULTI` transaction and replicas never
//! disagree. [`MemoryStore`] implements it for one process.
//!
//! Operations take `now` (unix ms) from the caller rather than reading a clock: the broker owns
//! time, and a shared store must not depend on each replica's clock at different moments.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::model::{
    Approval, ApprovalId, Decision, Execution, Status, StoredHeader, StoredRequest, Vote,
};

/// The store could not be reached or answered garbage. Callers fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("approval store: {0}")]
pub struct StoreError(pub String);

/// What recording a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteResult {
    /// Counted; still pending (quorum not reached yet).
    Recorded(Approval),
    /// Counted and the quorum of distinct approvers is reached.
    Approved(Approval),
    /// A deny: the approval is denied.
    Denied(Approval),
    /// This approver already voted: nothing changed.
    Duplicate(Approval),
    /// Not pending any more: nothing changed.
    NotPending(Approval),
    /// Past `expires_at`: the store moved it to `Expired` now (the caller audits that).
    Expired(Approval),
    /// No such approval.
    NotFound,
}

/// Result of a compare-and-set transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// The transition happened; the new state.
    Applied(Approval),
    /// The precondition did not hold; the current state, unchanged.
    Conflict(Approval),
    /// No such approval.
    NotFound,
}

/// Who is claiming the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimant {
    /// The proxy holding the caller's connection (may claim while `held`).
    Holder,
    /// The background executor (only when nobody holds the request).
    Background,
}

/// A parked upstream response for the async path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedResult {
    /// Upstream status.
    pub status: u16,
    /// Upstream end-to-end headers.
    pub headers: Vec<StoredHeader>,
    /// Body, cut at the parking cap.
    #[serde(with = "super::model::b64")]
    pub body: Vec<u8>,
    /// Whether the body was cut.
    pub truncated: bool,
    /// Parked at, unix ms.
    pub at: u64,
}

/// Which approvals to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter {
    /// Pending only.
    Pending,
    /// Every approval the store still holds.
    All,
    /// Approved, not held and not yet claimed: what the background must execute.
    AwaitingExecution,
}

/// Approval state behind atomic operations. All methods are safe to call concurrently from any
/// number of tasks and (for shared backends) replicas.
#[async_trait]
pub trait ApprovalStore: Send + Sync + Debug {
    /// Creates an approval and its stored request; both are dropped after `ttl`.
    async fn create(
        &self,
        approval: &Approval,
        request: &StoredRequest,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The approval, if the store still holds it.
    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError>;

    /// The stored request of an approval.
    async fn stored_request(&self, id: &ApprovalId) -> Result<Option<StoredRequest>, StoreError>;

    /// Atomically: expire it if `now >= expires_at`; refuse if not pending; ignore a second
    /// vote by the same approver; a deny denies; `quorum` distinct approvals approve.
    async fn record_vote(
        &self,
        id: &ApprovalId,
        vote: Vote,
        now: u64,
    ) -> Result<VoteResult, StoreError>;

    /// `Pending -> Expired` when `now >= expires_at`.
    async fn expire(&self, id: &ApprovalId, now: u64) -> Result<Cas, StoreError>;

    /// `Pending -> Cancelled`, or `Approved -> Cancelled` while execution has not started (a
    /// cancelled request is never executed).
    async fn cancel(
        &self,
        id: &ApprovalId,
        actor: &str,
        reason: &str,
        now: u64,
    ) -> Result<Cas, StoreError>;

    /// Sets whether a caller connection holds the request.
    async fn set_held(&self, id: &ApprovalId, held: bool) -> Result<Cas, StoreError>;

    /// Claims the one execution: `Approved` and `NotStarted` (and not held, for the background)
    /// -> `Claimed`. Exactly one claim ever succeeds per approval.
    async fn claim_execution(
        &self,
        id: &ApprovalId,
        who: Claimant,
        owner: &str,
        now: u64,
    ) -> Result<Cas, StoreError>;

    /// Records how the claimed execution ended (`Done` or `Failed`).
    async fn finish_execution(
        &self,
        id: &ApprovalId,
        outcome: Execution,
    ) -> Result<Cas, StoreError>;

    /// Parks a response for the requester for `ttl`.
    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The parked response, if any.
    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError>;

    /// Approvals matching `filter`, newest first, at most `limit`.
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Approval>, StoreError>;

    /// Tells every subscriber (on every replica) that `id` changed.
    async fn publish(&self, id: &ApprovalId) -> Result<(), StoreError>;

    /// Change notifications. Receivers may lag and lose ids; waiters must also re-read state
    /// now and then.
    fn subscribe(&self) -> broadcast::Receiver<ApprovalId>;

    /// Drops entries whose TTL passed (backends with native TTLs do nothing). Returns how many.
    async fn cleanup(&self, now: u64) -> Result<usize, StoreError>;
}

/// One approval in memory, with its evictions.
#[derive(Debug)]
struct Entry {
    approval: Approval,
    request: StoredRequest,
    evict_at: u64,
    result: Option<(ParkedResult, u64)>,
}

/// A store inside this process (`store = "memory"`).
#[derive(Debug)]
pub struct MemoryStore {
    entries: Mutex<HashMap<ApprovalId, Entry>>,
    changes: broadcast::Sender<ApprovalId>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            entries: Mutex::new(HashMap::new()),
            changes,
        }
    }

    /// Runs `f` on the entry under the lock. A poisoned lock only means another task panicked
    /// mid-update; every update below is a single assignment sequence, so the data is usable.
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ApprovalId, Entry>) -> T) -> T {
        let mut guard = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn cas(&self, id: &ApprovalId, f: impl FnOnce(&mut Approval) -> bool) -> Cas {
        self.with(|m| match m.get_mut(id) {
            None => Cas::NotFound,
            Some(e) => {
                if f(&mut e.approval) {
                    Cas::Applied(e.approval.clone())
                } else {
                    Cas::Conflict(e.approval.clone())
                }
            }
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The vote state machine, shared by every backend's semantics (a Redis Lua script mirrors it).
pub fn apply_vote(a: &mut Approval, vote: Vote, now: u64) -> VoteResultKind {
    if a.status != Status::Pending {
        return VoteResultKind::NotPending;
    }
    if now >= a.expires_at {
        a.status = Status::Expired;
        a.decided_at = Some(now);
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
            let distinct = a.approved_by().len();
            if distinct >= a.quorum as usize {
                a.status = Status::Approved;
                a.decided_by = Some(approver);
                a.decided_at = Some(now);
                VoteResultKind::Approved
            } else {
                VoteResultKind::Recorded
            }
        }
    }
}

/// What [`apply_vote`] did.
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

/// Whether `who` may claim `a` now; the claim rule every backend implements.
pub fn may_claim(a: &Approval, who: Claimant) -> bool {
    a.status == Status::Approved
        && a.execution == Execution::NotStarted
        && (who == Claimant::Holder || !a.held)
}

#[async_trait]
impl ApprovalStore for MemoryStore {
    async fn create(
        &self,
        approval: &Approval,
        request: &StoredRequest,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let evict_at = approval.created_at.saturating_add(ms(ttl));
        self.with(|m| {
            if m.contains_key(&approval.id) {
                return Err(StoreError(format!("duplicate approval id {}", approval.id)));
            }
            m.insert(
                approval.id.clone(),
                Entry {
                    approval: approval.clone(),
                    request: request.clone(),
                    evict_at,
                    result: None,
                },
            );
            Ok(())
        })
    }

    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        Ok(self.with(|m| m.get(id).map(|e| e.approval.clone())))
    }

    async fn stored_request(&self, id: &ApprovalId) -> Result<Option<StoredRequest>, StoreError> {
        Ok(self.with(|m| m.get(id).map(|e| e.request.clone())))
    }

    async fn record_vote(
        &self,
        id: &ApprovalId,
        vote: Vote,
        now: u64,
    ) -> Result<VoteResult, StoreError> {
        Ok(self.with(|m| {
            let Some(e) = m.get_mut(id) else {
                return VoteResult::NotFound;
            };
            let kind = apply_vote(&mut e.approval, vote, now);
            let a = e.approval.clone();
            match kind {
                VoteResultKind::Recorded => VoteResult::Recorded(a),
                VoteResultKind::Approved => VoteResult::Approved(a),
                VoteResultKind::Denied => VoteResult::Denied(a),
                VoteResultKind::Duplicate => VoteResult::Duplicate(a),
                VoteResultKind::NotPending => VoteResult::NotPending(a),
                VoteResultKind::Expired => VoteResult::Expired(a),
            }
        }))
    }

    async fn expire(&self, id: &ApprovalId, now: u64) -> Result<Cas, StoreError> {
        Ok(self.cas(id, |a| {
            let due = a.status == Status::Pending && now >= a.expires_at;
            if due {
                a.status = Status::Expired;
                a.decided_at = Some(now);
            }
            due
        }))
    }

    async fn cancel(
        &self,
        id: &ApprovalId,
        actor: &str,
        reason: &str,
        now: u64,
    ) -> Result<Cas, StoreError> {
        Ok(self.cas(id, |a| {
            let cancellable = a.status == Status::Pending
                || (a.status == Status::Approved && a.execution == Execution::NotStarted);
            if cancellable {
                a.status = Status::Cancelled;
                a.decided_by = Some(actor.to_owned());
                a.decision_reason = Some(reason.to_owned());
                a.decided_at = Some(now);
            }
            cancellable
        }))
    }

    async fn set_held(&self, id: &ApprovalId, held: bool) -> Result<Cas, StoreError> {
        Ok(self.cas(id, |a| {
            a.held = held;
            true
        }))
    }

    async fn claim_execution(
        &self,
        id: &ApprovalId,
        who: Claimant,
        owner: &str,
        now: u64,
    ) -> Result<Cas, StoreError> {
        Ok(self.cas(id, |a| {
            let ok = may_claim(a, who);
            if ok {
                a.execution = Execution::Claimed {
                    owner: owner.to_owned(),
                    at: now,
                };
            }
            ok
        }))
    }

    async fn finish_execution(
        &self,
        id: &ApprovalId,
        outcome: Execution,
    ) -> Result<Cas, StoreError> {
        Ok(self.cas(id, |a| {
            let claimed = matches!(a.execution, Execution::Claimed { .. });
            if claimed {
                a.execution = outcome;
            }
            claimed
        }))
    }

    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|m| match m.get_mut(id) {
            None => Err(StoreError(format!("no approval {id} to park a result for"))),
            Some(e) => {
                let until = result.at.saturating_add(ms(ttl));
                // The record must live as long as its result.
                e.evict_at = e.evict_at.max(until);
                e.result = Some((result.clone(), until));
                Ok(())
            }
        })
    }

    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError> {
        Ok(self.with(|m| {
            m.get(id)
                .and_then(|e| e.result.as_ref().map(|(r, _)| r.clone()))
        }))
    }

    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Approval>, StoreError> {
        let mut out: Vec<Approval> = self.with(|m| {
            m.values()
                .map(|e| &e.approval)
                .filter(|a| match filter {
                    ListFilter::Pending => a.status == Status::Pending,
                    ListFilter::All => true,
                    ListFilter::AwaitingExecution => may_claim(a, Claimant::Background),
                })
                .cloned()
                .collect()
        });
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn publish(&self, id: &ApprovalId) -> Result<(), StoreError> {
        // No receiver is not an error: nobody is waiting.
        let _ = self.changes.send(id.clone());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<ApprovalId> {
        self.changes.subscribe()
    }

    async fn cleanup(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.with(|m| {
            let before = m.len();
            for e in m.values_mut() {
                if e.result.as_ref().is_some_and(|(_, until)| now >= *until) {
                    e.result = None;
                }
            }
            m.retain(|_, e| now < e.evict_at);
            before - m.len()
        }))
    }
}
