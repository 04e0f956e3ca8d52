//! The approval store: storage behind ONE compare-and-set primitive ([`ApprovalStore::update`])
//! plus create/get/list/park/subscribe. The lifecycle operations (vote, expire, cancel, hold,
//! claim, finish) are provided methods that run the pure rules of [`super::transition`] through
//! that primitive, so every backend applies the same rules and none writes them again.
//!
//! Owns the storage contract and its shared types. Backends ([`memory`], [`redis`]) own only
//! storage: they must not decide anything about the lifecycle. Must not touch audit,
//! notification or HTTP.
//!
//! [`ChatState`] is a second, small contract on the same backends: what the chat integrations
//! must remember across replicas (posted copies of each approval's message, inbound events
//! already handled). It holds opaque strings and knows nothing about Slack or Teams.
//!
//! Operations take `now` (unix ms) from the caller rather than reading a clock: the broker owns
//! time, and a shared store must not depend on each replica's clock at different moments.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::record::{Approval, ApprovalId, Execution, Status, StoredHeader, StoredRequest, Vote};
pub use super::transition::Claimant;
use super::transition::{self, VoteResultKind};

pub mod memory;
pub mod redis;

pub use memory::MemoryChatState;
pub use memory::MemoryStore;
pub use redis::RedisStore;

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

/// A parked upstream response for the async path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedResult {
    /// Upstream status.
    pub status: u16,
    /// Upstream end-to-end headers.
    pub headers: Vec<StoredHeader>,
    /// Body, cut at the parking cap.
    #[serde(with = "crate::approval::record::b64")]
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

impl ListFilter {
    /// Whether `a` belongs in this listing.
    pub fn matches(self, a: &Approval) -> bool {
        match self {
            ListFilter::Pending => a.status == Status::Pending,
            ListFilter::All => true,
            ListFilter::AwaitingExecution => transition::may_claim(a, Claimant::Background),
        }
    }
}

/// Orders a listing newest first (ties by id) and keeps at most `limit`: every backend lists
/// in this order.
pub fn newest_first(mut out: Vec<Approval>, limit: usize) -> Vec<Approval> {
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    out.truncate(limit);
    out
}

/// A decision on a fresh copy of an approval: changes it and returns `true`, or leaves it
/// untouched and returns `false`. May run more than once (a backend that lost a race re-reads
/// and asks again), so it must depend only on the approval it is given and what it captured.
pub type Change<'a> = dyn FnMut(&mut Approval) -> bool + Send + 'a;

/// Approval state behind one atomic compare-and-set. All methods are safe to call
/// concurrently from any number of tasks and (for shared backends) replicas.
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

    /// THE state-change primitive: atomically runs `change` on the current approval (as seen
    /// at `now`) and writes it back only if `change` returned `true` and nobody wrote in
    /// between (else re-reads and asks `change` again). [`Cas::Applied`] with the new state,
    /// [`Cas::Conflict`] with the unchanged state when `change` declined.
    async fn update(
        &self,
        id: &ApprovalId,
        now: u64,
        change: &mut Change<'_>,
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

    /// The time, unix ms, for changes whose caller passes none ([`Self::set_held`],
    /// [`Self::finish_execution`]). Backends whose reads depend on time (the Redis hold lease)
    /// answer from their injected clock.
    fn now_ms(&self) -> u64 {
        crate::clock::Clock::unix_ms(&crate::clock::SystemClock)
    }

    // ----- the lifecycle, on top of `update` -------------------------------------------------

    /// Records a vote by [`transition::vote`].
    async fn record_vote(
        &self,
        id: &ApprovalId,
        vote: Vote,
        now: u64,
    ) -> Result<VoteResult, StoreError> {
        let mut kind = VoteResultKind::NotPending;
        let done = self
            .update(id, now, &mut |a| {
                kind = transition::vote(a, vote.clone(), now);
                kind.changed()
            })
            .await?;
        let a = match done {
            Cas::NotFound => return Ok(VoteResult::NotFound),
            Cas::Applied(a) | Cas::Conflict(a) => a,
        };
        Ok(match kind {
            VoteResultKind::Recorded => VoteResult::Recorded(a),
            VoteResultKind::Approved => VoteResult::Approved(a),
            VoteResultKind::Denied => VoteResult::Denied(a),
            VoteResultKind::Duplicate => VoteResult::Duplicate(a),
            VoteResultKind::NotPending => VoteResult::NotPending(a),
            VoteResultKind::Expired => VoteResult::Expired(a),
        })
    }

    /// [`transition::expire`].
    async fn expire(&self, id: &ApprovalId, now: u64) -> Result<Cas, StoreError> {
        self.update(id, now, &mut |a| transition::expire(a, now))
            .await
    }

    /// [`transition::cancel`].
    async fn cancel(
        &self,
        id: &ApprovalId,
        actor: &str,
        reason: &str,
        now: u64,
    ) -> Result<Cas, StoreError> {
        self.update(id, now, &mut |a| transition::cancel(a, actor, reason, now))
            .await
    }

    /// [`transition::set_held`]; setting the value it already has is not a conflict.
    async fn set_held(&self, id: &ApprovalId, held: bool) -> Result<Cas, StoreError> {
        let now = self.now_ms();
        Ok(
            match self
                .update(id, now, &mut |a| transition::set_held(a, held))
                .await?
            {
                Cas::Conflict(a) => Cas::Applied(a),
                other => other,
            },
        )
    }

    /// [`transition::claim`]: exactly one claim ever succeeds per approval.
    async fn claim_execution(
        &self,
        id: &ApprovalId,
        who: Claimant,
        owner: &str,
        now: u64,
    ) -> Result<Cas, StoreError> {
        self.update(id, now, &mut |a| transition::claim(a, who, owner, now))
            .await
    }

    /// [`transition::confirm_audited`]: the decision is durable in the audit log, so the
    /// approved request may be executed.
    async fn confirm_audited(&self, id: &ApprovalId, now: u64) -> Result<Cas, StoreError> {
        self.update(id, now, &mut transition::confirm_audited).await
    }

    /// [`transition::finish`]: records how the claimed execution ended.
    async fn finish_execution(
        &self,
        id: &ApprovalId,
        outcome: Execution,
    ) -> Result<Cas, StoreError> {
        let now = self.now_ms();
        self.update(id, now, &mut |a| transition::finish(a, &outcome))
            .await
    }
}

/// What chat integrations remember between events, shared by every replica that shares the
/// approval store: the posted copies of each approval's message (so any replica can update
/// all of them) and the inbound events already handled (so a replay on any replica is a
/// no-op). Values are opaque to the store; `scope` keeps integrations apart (`"slack"`,
/// `"teams"`). Every method fails with [`StoreError`] when the backend cannot answer; callers
/// fail closed (a click whose replay check failed is not applied).
#[async_trait]
pub trait ChatState: Send + Sync + Debug {
    /// Appends `copy` to the posted copies of approval `id` in `scope`; the list is kept at
    /// least `ttl` from now (a later, longer `ttl` extends it, a shorter one never shortens it).
    async fn add_copy(
        &self,
        scope: &str,
        id: &ApprovalId,
        copy: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Every copy of `id` in `scope` added so far, in the order added (empty when none or
    /// when they expired).
    async fn copies(&self, scope: &str, id: &ApprovalId) -> Result<Vec<String>, StoreError>;

    /// Records `key` in `scope` for `ttl`, atomically across replicas: `true` for the first
    /// caller, `false` while it is still recorded (a replay or a retry).
    async fn first_seen(&self, scope: &str, key: &str, ttl: Duration) -> Result<bool, StoreError>;
}
