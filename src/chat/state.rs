//! What a chat integration remembers between events, one seam for Slack and Teams:
//!
//! - the posted copies of each approval's message, so whichever replica handles an event can
//!   update every copy (issue 13 item 2, issue 15: conversation references in the store);
//! - the inbound events already handled (a Slack click, a Teams activity), so a replay on any
//!   replica is a no-op;
//! - per approval, which state the messages already show (a lock and a [`Progress`]), so an
//!   older snapshot never overwrites a newer message. The lock is per process: it orders the
//!   notifications of one replica; across replicas the events themselves are ordered by the
//!   store (a vote is notified by the replica that recorded it);
//! - the states shown, noted by every update ([`ChatMemory::note_shown`]) and read by the
//!   replica posting the copies once it has recorded them ([`ChatMemory::newer_than`]): a click
//!   on the first copy while another replica still posts the second (slow, rate-limited chat)
//!   reaches the second as well.
//!
//! Copies and seen events live in a [`ChatState`]: the Redis store itself when
//! `[approvals] store` is Redis (every replica shares them), [`MemoryChatState`] otherwise.
//! Copies are kept until the approval's record is gone ([`copies_ttl`]).
//!
//! Owns the typed (JSON) encoding of copies and the TTLs. Must not talk to a chat API or decide
//! anything about an approval.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::approval::store::{ChatState, MemoryChatState};
use crate::approval::{Approval, ApprovalId, Execution, NotifyError, Status, StoreError};
use crate::clock::SharedClock;

/// How long after `expires_at` the copies of an approval are kept: the broker keeps the record
/// itself that long (`BrokerSettings::retention`, 1 h), and events (an execution after a
/// last-moment approval, a cancellation) can follow until then.
pub const COPIES_MARGIN: Duration = Duration::from_secs(3600);

/// How long the copies of an approval expiring at `expires_at` (unix ms) are kept from `now`
/// (unix ms): until its record is gone.
pub fn copies_ttl(expires_at: u64, now: u64) -> Duration {
    Duration::from_millis(expires_at.saturating_sub(now)) + COPIES_MARGIN
}

/// How far an approval has come; its state only moves forward, so an older snapshot (a
/// notification that lost a race) has a smaller value and must not overwrite a newer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Progress {
    decided: bool,
    votes: usize,
    execution: u8,
}

impl Progress {
    /// Where `a` stands.
    pub fn of(a: &Approval) -> Self {
        Self {
            decided: a.status != Status::Pending,
            votes: a.votes.len(),
            execution: match a.execution {
                Execution::NotStarted => 0,
                Execution::Claimed { .. } => 1,
                Execution::Done { .. } | Execution::Failed { .. } => 2,
            },
        }
    }
}

/// The per-approval notification lock, holding the newest [`Progress`] shown.
pub type Shown = Arc<tokio::sync::Mutex<Option<Progress>>>;

/// One notification's turn at an approval's messages ([`ChatMemory::turn`]): the lock is held
/// until [`Turn::finish`], so notifications of one approval reach chat one at a time.
#[derive(Debug)]
pub struct Turn {
    shown: tokio::sync::OwnedMutexGuard<Option<Progress>>,
    /// Where the snapshot being notified stands; raised when copies are brought further.
    pub progress: Progress,
    /// `false` for a snapshot older than what the messages already show (two votes notified
    /// concurrently): it must not overwrite them.
    pub current: bool,
}

impl Turn {
    /// Records what the messages show now (unless this snapshot was older), releases the
    /// lock, and makes the notification's result of what failed, each failure prefixed by
    /// `name` (the integration) when given.
    pub fn finish(mut self, failures: Vec<String>, name: Option<&str>) -> Result<(), NotifyError> {
        if self.current {
            *self.shown = Some(self.progress);
        }
        match (failures.is_empty(), name) {
            (true, _) => Ok(()),
            (false, Some(name)) => Err(NotifyError(format!("{name}: {}", failures.join("; ")))),
            (false, None) => Err(NotifyError(failures.join("; "))),
        }
    }
}

/// One integration's memory (`scope` `"slack"` or `"teams"`), with copies of type `T`.
/// Cheap to share behind the integration's `Arc`.
pub struct ChatMemory<T> {
    state: Arc<dyn ChatState>,
    scope: &'static str,
    clock: SharedClock,
    seen_ttl: Duration,
    shown: moka::sync::Cache<ApprovalId, Shown>,
    _copy: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ChatMemory<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatMemory")
            .field("scope", &self.scope)
            .field("state", &self.state)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> ChatMemory<T> {
    /// Memory in `state` under `scope`; an event key is remembered `seen_ttl` (longer than a
    /// replayed event could still pass its signature or token check). `clock` dates copies.
    pub fn new(
        state: Arc<dyn ChatState>,
        scope: &'static str,
        clock: SharedClock,
        seen_ttl: Duration,
    ) -> Self {
        Self {
            state,
            scope,
            clock,
            seen_ttl,
            shown: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(COPIES_MARGIN)
                .build(),
            _copy: PhantomData,
        }
    }

    /// [`Self::new`] with a [`MemoryChatState`] of its own: nothing shared with other processes.
    pub fn in_process(scope: &'static str, clock: SharedClock, seen_ttl: Duration) -> Self {
        Self::new(Arc::new(MemoryChatState::new()), scope, clock, seen_ttl)
    }

    /// Remembers a posted copy of `a` until its record is gone.
    pub async fn add_copy(&self, a: &Approval, copy: &T) -> Result<(), StoreError> {
        let json = serde_json::to_string(copy)
            .map_err(|e| StoreError::unavailable(format!("encoding a {} copy: {e}", self.scope)))?;
        let ttl = copies_ttl(a.expires_at, self.clock.unix_ms());
        self.state.add_copy(self.scope, &a.id, &json, ttl).await
    }

    /// Every copy of `id` posted so far, by any replica, in posting order.
    pub async fn copies(&self, id: &ApprovalId) -> Result<Vec<T>, StoreError> {
        self.state
            .copies(self.scope, id)
            .await?
            .iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| {
                    StoreError::unavailable(format!("decoding a {} copy: {e}", self.scope))
                })
            })
            .collect()
    }

    /// Notes that `a` is being shown now, for [`Self::newer_than`] on any replica. Called
    /// BEFORE the copies are read for an update, so that a replica still posting copies either
    /// had its copy read here or sees this note after recording it.
    pub async fn note_shown(&self, a: &Approval) -> Result<(), StoreError> {
        let json = serde_json::to_string(a).map_err(|e| {
            StoreError::unavailable(format!("encoding a {} state: {e}", self.scope))
        })?;
        let ttl = copies_ttl(a.expires_at, self.clock.unix_ms());
        self.state
            .add_copy(&self.shown_scope(), &a.id, &json, ttl)
            .await
    }

    /// The furthest state any replica noted for `a` ([`Self::note_shown`]), if it is further
    /// than `a`. Called AFTER the copies were recorded.
    pub async fn newer_than(&self, a: &Approval) -> Result<Option<Approval>, StoreError> {
        let notes = self.state.copies(&self.shown_scope(), &a.id).await?;
        let mut newest: Option<Approval> = None;
        for json in &notes {
            let noted: Approval = serde_json::from_str(json).map_err(|e| {
                StoreError::unavailable(format!("decoding a {} state: {e}", self.scope))
            })?;
            if newest
                .as_ref()
                .is_none_or(|n| Progress::of(&noted) > Progress::of(n))
            {
                newest = Some(noted);
            }
        }
        Ok(newest.filter(|n| Progress::of(n) > Progress::of(a)))
    }

    /// Takes this process's turn at the messages of `a` (see [`Turn`]).
    pub async fn turn(&self, a: &Approval) -> Turn {
        let shown = self.shown(&a.id).lock_owned().await;
        let progress = Progress::of(a);
        let current = shown.is_none_or(|s| progress >= s);
        Turn {
            shown,
            progress,
            current,
        }
    }

    /// After posting copies of `a`: when another replica showed a newer state meanwhile (a
    /// click on the first copy), `update` brings the copies just posted up to it and
    /// `turn.progress` rises to it. What failed goes to `failures`.
    pub async fn catch_up<F>(
        &self,
        a: &Approval,
        turn: &mut Turn,
        failures: &mut Vec<String>,
        update: impl FnOnce(Approval) -> F,
    ) where
        F: std::future::Future<Output = Vec<String>>,
    {
        match self.newer_than(a).await {
            Ok(Some(newer)) => {
                turn.progress = turn.progress.max(Progress::of(&newer));
                failures.extend(update(newer).await);
            }
            Ok(None) => {}
            Err(e) => failures.push(format!("cannot read the shown state: {e}")),
        }
    }

    /// Where the shown states are noted: next to the copies, apart from them.
    fn shown_scope(&self) -> String {
        format!("{}:shown", self.scope)
    }

    /// Records event `key`; `false` when any replica recorded it before (a replay or a
    /// retry). An error means it could not be checked: the event must not be acted on.
    pub async fn first_seen(&self, key: &str) -> Result<bool, StoreError> {
        self.state.first_seen(self.scope, key, self.seen_ttl).await
    }

    /// The per-approval notification lock of this process. Held for a whole notification, so
    /// a vote arriving while the request is still being posted (slow, rate-limited chat)
    /// waits and then updates every copy.
    fn shown(&self, id: &ApprovalId) -> Shown {
        self.shown
            .get_with(id.clone(), || Arc::new(tokio::sync::Mutex::new(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_live_until_the_record_is_gone() {
        let now = 1_700_000_000_000;
        assert_eq!(
            copies_ttl(now + 600_000, now),
            Duration::from_secs(600) + COPIES_MARGIN
        );
        assert_eq!(copies_ttl(now - 5_000, now), COPIES_MARGIN);
        assert_eq!(copies_ttl(0, u64::MAX), COPIES_MARGIN);
    }
}
