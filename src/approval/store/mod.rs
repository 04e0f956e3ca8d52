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
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::grant::Grant;
use super::record::{Approval, ApprovalId, Execution, Status, StoredHeader, StoredRequest, Vote};
pub use super::transition::Claimant;
use super::transition::{self, VoteResultKind};

pub mod holders;
pub mod memory;
pub mod redis;
pub mod seal;

pub use holders::{Hold, Holders, Silent};
pub use memory::MemoryChatState;
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// Why the store could not answer. Callers fail closed on both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, timed out, or refused the operation.
    #[error("approval store: {0}")]
    Unavailable(String),
    /// A record failed its integrity check (MAC, encryption, or format): someone other than
    /// Countersign wrote it. Never acted on; the broker audits it (SPEC 8).
    #[error("approval store: {record} failed its integrity check: {why}")]
    Tampered {
        /// Which record (`approval apr_...`, `request apr_...`).
        record: String,
        /// What did not verify.
        why: String,
    },
}

impl StoreError {
    /// The store is unreachable or refused: `what` says why.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable(what.into())
    }
}

/// `m` locked, poisoned or not: a poisoned lock only means another task panicked while holding
/// it, and the store's in-process state is changed in steps that each leave it whole (single
/// inserts, removals and assignments), so what it holds is still usable.
pub(crate) fn unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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
    #[serde(with = "crate::approval::serde_fields::b64")]
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

/// Orders a listing newest first (ties by id, highest first) and keeps at most `limit`: every
/// backend lists in this order, the order of [`Cursor`].
pub fn newest_first(mut out: Vec<Approval>, limit: usize) -> Vec<Approval> {
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    out.truncate(limit);
    out
}

/// A position in a listing (newest first, ties by id highest first): the next page starts
/// strictly after it. Shown to clients as `{created_at}.{id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// `created_at` of the last entry read.
    pub created_at: u64,
    /// Id of the last entry read.
    pub id: ApprovalId,
}

impl Cursor {
    /// The cursor just after `a`.
    pub fn after(a: &Approval) -> Self {
        Self {
            created_at: a.created_at,
            id: a.id.clone(),
        }
    }

    /// Parses the `{created_at}.{id}` form of [`std::fmt::Display`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('.')?;
        Some(Self {
            created_at: at.parse().ok()?,
            id: ApprovalId::parse(id)?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The approvals on this page that match the filter, in listing order.
    pub items: Vec<Approval>,
    /// Where the next page starts; `None` when the listing is exhausted. A page may hold fewer
    /// items than asked (entries that no longer match were skipped) and still have a next one.
    pub next: Option<Cursor>,
}

/// How long after `expires_at` the hold of a record without a lease is believed.
pub use super::transition::HOLD_GRACE;

/// When the background must next look at `a` (unix ms), or `None` if never: a pending
/// approval at its expiry, or sooner when a reminder or its escalation is due or its hold's
/// backstop passes (a lost hold is cancelled: [`transition::cancel_lost_hold`]); an approved,
/// unclaimed one at its hold's backstop if it is held, else (once its decision is audited) at
/// once; any end whose audit line is still owed, once [`transition::AUDIT_GRACE`] passed.
/// Backends keep a due-index by this value so a sweep reads only what is due
/// ([`ApprovalStore::due`]), never the whole store. A holder that dies is found through the
/// heartbeat instead ([`Holders::silent_holders`]), so live holds are never read.
pub fn due_at(a: &Approval) -> Option<u64> {
    let hold = transition::hold_deadline(a);
    // An end whose audit line is still owed ([`transition::audit_owed`]).
    let owed = transition::audit_owed_at(a);
    match a.status {
        Status::Pending => {
            let soonest = hold.map_or(a.expires_at, |h| h.min(a.expires_at));
            // A reminder or the escalation ([`super::nudge`]) may be due sooner.
            Some(super::nudge::next_due(a).map_or(soonest, |n| n.min(soonest)))
        }
        Status::Approved if a.execution == super::record::Execution::NotStarted => {
            match (hold, owed) {
                (Some(h), Some(o)) => Some(h.min(o)),
                (Some(h), None) => Some(h),
                (None, Some(o)) => Some(o),
                (None, None) => Some(0),
            }
        }
        _ => owed,
    }
}

/// A decision on a fresh copy of an approval: changes it and returns `true`, or leaves it
/// untouched and returns `false`. May run more than once (a backend that lost a race re-reads
/// and asks again), so it must depend only on the approval it is given and what it captured.
pub type Change<'a> = dyn FnMut(&mut Approval) -> bool + Send + 'a;

/// Approval state behind one atomic compare-and-set. All methods are safe to call
/// concurrently from any number of tasks and (for shared backends) replicas.
#[async_trait]
pub trait ApprovalStore: Holders + Send + Sync + Debug {
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

    /// THE state-change primitive: atomically runs `change` on the current approval and
    /// writes it back only if `change` returned `true` and nobody wrote in between (else
    /// re-reads and asks `change` again). `change` brings its own time (the transitions take
    /// `now` as an argument). [`Cas::Applied`] with the new state,
    /// [`Cas::Conflict`] with the unchanged state when `change` declined.
    async fn update(&self, id: &ApprovalId, change: &mut Change<'_>) -> Result<Cas, StoreError>;

    /// Parks a response for the requester for `ttl`.
    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The parked response, if any.
    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError>;

    /// One page of approvals matching `filter`, newest first, starting strictly after `after`.
    /// Reads at most `limit` index entries (O(limit), never the whole index): `Pending` reads
    /// the pending index, the other filters the full one.
    async fn list_page(
        &self,
        filter: ListFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// Approvals matching `filter`, newest first, at most `limit`: pages through
    /// [`Self::list_page`] until `limit` are found or the index ends.
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Approval>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<Cursor> = None;
        while out.len() < limit {
            let want = (limit - out.len()).clamp(1, 500);
            let page = self.list_page(filter, after.as_ref(), want).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Ids whose [`due_at`] is at or before `now`, at most `limit`, oldest due first. Each id
    /// returned is leased: it is not returned again (by this or any replica) before
    /// `now + retry` unless its state changes meanwhile, so an item the sweep cannot act on
    /// does not come back every tick and several replicas do not all take the same items.
    async fn due(
        &self,
        now: u64,
        limit: usize,
        retry: Duration,
    ) -> Result<Vec<ApprovalId>, StoreError>;

    /// How many approvals are pending, in all (`None`) or of one requester (`(iss, sub)`).
    /// O(1): backends keep counts (or index cardinalities) up to date on every transition.
    async fn count_pending(&self, requester: Option<(&str, &str)>) -> Result<usize, StoreError>;

    /// Tells every subscriber (on every replica) that `id` changed.
    async fn publish(&self, id: &ApprovalId) -> Result<(), StoreError>;

    /// Change notifications. Receivers may lag and lose ids; waiters must also re-read state
    /// now and then (the broker keeps ONE receiver and wakes only the waiters of each id).
    fn subscribe(&self) -> broadcast::Receiver<ApprovalId>;

    /// Changes value each time this replica may have missed change notifications (the Redis
    /// pub/sub connection came back after an outage, which a store reset also causes): every
    /// waiter should re-read once. `None` for a store that never misses any.
    fn missed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Drops entries whose TTL passed (backends with native TTLs trim their indexes). Reads only
    /// what is due for eviction, never the whole store. Returns how many.
    async fn cleanup(&self, now: u64) -> Result<usize, StoreError>;

    /// How many times this process found that the store lost its data (a Redis restarted
    /// without persistence: its epoch key changed, see the Redis store). Each one means
    /// approvals may be gone; the broker audits `store.reset`. Never for an in-process store.
    fn resets(&self) -> u64 {
        0
    }

    /// Starts cooldown `key` for `ttl` unless one is running, atomically across replicas
    /// (`break_glass_cooldown`, SPEC 9): `Ok(None)` when this call started it, `Ok(Some(left))`
    /// with the time left while one runs. A store that keeps no cooldowns fails (closed).
    async fn start_cooldown(
        &self,
        key: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<Option<Duration>, StoreError> {
        let _ = (key, ttl, now);
        Err(StoreError::unavailable("this store keeps no cooldowns"))
    }

    /// Stores a new grant (SPEC 9) until it expires. A store that keeps no grants fails
    /// (closed): no grant is created.
    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let _ = grant;
        Err(StoreError::unavailable("this store keeps no grants"))
    }

    /// Takes one use, atomically across replicas, of a live grant under lookup `key`
    /// ([`crate::approval::grant::lookup_key`]) at `now`: `Ok(Some(grant))` (uses counted
    /// after this one) when the request may pass, `Ok(None)` when no live grant matches.
    async fn use_grant(&self, key: &str, now: u64) -> Result<Option<Grant>, StoreError> {
        let _ = (key, now);
        Ok(None)
    }

    /// Every grant that has not expired at `now` (used-up and revoked ones included).
    async fn grants(&self, now: u64) -> Result<Vec<Grant>, StoreError> {
        let _ = now;
        Ok(Vec::new())
    }

    /// Revokes grant `id` at once: `Ok(None)` when there is no such grant.
    async fn revoke_grant(&self, id: &str, by: &str) -> Result<Option<Grant>, StoreError> {
        let _ = (id, by);
        Ok(None)
    }

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
            .update(id, &mut |a| {
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
        self.update(id, &mut |a| transition::expire(a, now)).await
    }

    /// [`transition::cancel`].
    async fn cancel(
        &self,
        id: &ApprovalId,
        actor: &str,
        reason: &str,
        now: u64,
    ) -> Result<Cas, StoreError> {
        self.update(id, &mut |a| transition::cancel(a, actor, reason, now))
            .await
    }

    /// [`transition::set_held`]; setting the value it already has is not a conflict.
    async fn set_held(&self, id: &ApprovalId, held: bool) -> Result<Cas, StoreError> {
        Ok(
            match self
                .update(id, &mut |a| transition::set_held(a, held))
                .await?
            {
                Cas::Conflict(a) => Cas::Applied(a),
                other => other,
            },
        )
    }

    /// Like [`Self::update`], but the change is not announced to subscribers: for writes that
    /// are news to nobody (who holds a caller), so they do not wake every replica and holder. The
    /// due-index still follows. Backends that announce on write override it; by default it is
    /// [`Self::update`].
    async fn update_quietly(
        &self,
        id: &ApprovalId,
        change: &mut Change<'_>,
    ) -> Result<Cas, StoreError> {
        self.update(id, change).await
    }

    /// [`transition::take_hold`] for `hold`, quietly ([`Self::update_quietly`]): nobody is
    /// woken by who holds a caller. [`Cas::Conflict`] when there is no live hold to take
    /// (released, decided, claimed or cancelled).
    async fn take_hold(&self, hold: &Hold<'_>) -> Result<Cas, StoreError> {
        self.update_quietly(hold.id, &mut |a| {
            transition::take_hold(a, hold.holder, hold.backstop)
        })
        .await
    }

    /// [`transition::cancel_lost_hold`]: cancels a held request whose backstop passed, or whose
    /// holder is `dead_holder` (a replica that stopped beating).
    async fn cancel_lost_hold(
        &self,
        id: &ApprovalId,
        now: u64,
        dead_holder: Option<&str>,
    ) -> Result<Cas, StoreError> {
        self.update(id, &mut |a| {
            transition::cancel_lost_hold(a, now, dead_holder)
        })
        .await
    }

    /// [`transition::claim`]: exactly one claim ever succeeds per approval.
    async fn claim_execution(
        &self,
        id: &ApprovalId,
        who: Claimant,
        owner: &str,
        now: u64,
    ) -> Result<Cas, StoreError> {
        self.update(id, &mut |a| transition::claim(a, who, owner, now))
            .await
    }

    /// [`transition::confirm_audited`] of an approval: the deciding vote and
    /// `approval.approved` are durable in the audit log, so the approved request may be
    /// executed.
    async fn confirm_audited(&self, id: &ApprovalId) -> Result<Cas, StoreError> {
        self.confirm_audited_end(id, Status::Approved).await
    }

    /// [`transition::confirm_audited`]: the line of the end `status` is durable in the audit
    /// log, so no sweep writes it again. Announced only for an approval (its holder may now
    /// execute it); any other end was announced when it happened.
    async fn confirm_audited_end(
        &self,
        id: &ApprovalId,
        status: Status,
    ) -> Result<Cas, StoreError> {
        let change = &mut |a: &mut Approval| transition::confirm_audited(a, status);
        if status == Status::Approved {
            self.update(id, change).await
        } else {
            self.update_quietly(id, change).await
        }
    }

    /// [`transition::finish`]: records how the claimed execution ended.
    async fn finish_execution(
        &self,
        id: &ApprovalId,
        outcome: Execution,
    ) -> Result<Cas, StoreError> {
        self.update(id, &mut |a| transition::finish(a, &outcome))
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
