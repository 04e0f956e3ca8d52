//! The approval background work: executes approved requests nobody holds (woken by change
//! notifications, and by a periodic sweep so a lost notification only delays), expires overdue
//! approvals, cancels held requests whose holder stopped beating (a replica that died holding
//! the caller: [`super::transition::cancel_lost_hold`]) and cleans the store; and beats for
//! the callers this replica holds ([`super::transition::HEARTBEAT_EVERY`]). Runs until its
//! shutdown signal flips.
//!
//! Owns the loop and the sweep. Must not hold state of its own (everything is in the store)
//! and must not touch pingora: `app.rs` hands it the server's shutdown watch.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::broker::Broker;
use super::record::{ApprovalId, Status};
use super::transition::{audit_owed, hold_lost, may_claim, Claimant, HEARTBEAT_EVERY, HOLD_LEASE};
use crate::clock::duration_ms;
use crate::shutdown::{stopped, Shutdown};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Pending approvals moved to `Expired`.
    pub expired: usize,
    /// Approved requests executed in the background.
    pub executed: usize,
    /// Held requests cancelled because their holder died (stopped beating) or never answered.
    pub holder_lost: usize,
    /// Pending approvals this replica sent a reminder or the escalation for.
    pub nudged: usize,
    /// Ends whose audit line its replica never wrote, written late by this sweep.
    pub recorded_late: usize,
    /// Store records dropped.
    pub cleaned: usize,
}

impl Broker {
    /// Starts the background task: executes approved requests nobody holds (woken by change
    /// notifications, and by a periodic sweep so a lost notification only delays), expires
    /// overdue approvals and cleans the store. Abort the handle to stop it.
    pub fn spawn_background(&self) -> JoinHandle<()> {
        let broker = self.clone();
        tokio::spawn(async move { broker.run_background(None).await })
    }

    /// Like [`Self::spawn_background`], stopping when `shutdown` turns `true` (the server's
    /// shutdown watch). A sweep in progress is not interrupted; no new one starts.
    pub fn spawn_background_until(&self, shutdown: Shutdown) -> JoinHandle<()> {
        let broker = self.clone();
        tokio::spawn(async move { broker.run_background(Some(shutdown)).await })
    }

    async fn run_background(self, mut shutdown: Option<Shutdown>) {
        let mut changes = self.store.subscribe();
        let mut tick = tokio::time::interval(self.settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // At most one sweep and one beat at a time; the loop keeps reacting to notifications
        // meanwhile (a slow sweep never delays a beat).
        let mut sweeping: Option<JoinHandle<SweepReport>> = None;
        let mut beating: Option<JoinHandle<()>> = None;
        loop {
            let sweep_due = tokio::select! {
                change = changes.recv() => match change {
                    Ok(id) => {
                        let broker = self.clone();
                        tokio::spawn(async move { broker.background_one(&id).await });
                        false
                    }
                    // Notifications were lost: a sweep finds what they announced.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => true,
                _ = heartbeat.tick() => {
                    if beating.as_ref().is_none_or(JoinHandle::is_finished) {
                        let broker = self.clone();
                        beating = Some(tokio::spawn(async move { broker.beat().await }));
                    }
                    false
                }
                () = stopped(&mut shutdown) => {
                    tracing::debug!("approval sweeper stopped");
                    return;
                }
            };
            if sweep_due && sweeping.as_ref().is_none_or(JoinHandle::is_finished) {
                let broker = self.clone();
                sweeping = Some(tokio::spawn(async move { broker.sweep().await }));
            }
        }
    }

    /// Tells the store this replica is alive, for every caller it holds.
    async fn beat(&self) {
        if let Err(e) = self.store.beat(&self.instance, self.now_ms()).await {
            tracing::warn!(error = %e, "heartbeat: could not reach the store");
        }
    }

    async fn background_one(&self, id: &ApprovalId) -> bool {
        match self.execute_in_background(id).await {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, "background execution failed");
                false
            }
        }
    }

    /// One sweep: cancel the held requests of dead holders, expire overdue pending approvals,
    /// cancel held ones whose backstop passed, execute approved unheld ones, clean up.
    ///
    /// Reads only what is due: the store's due-index ([`super::store::ApprovalStore::due`]) in batches of
    /// [`SWEEP_BATCH`] (at most [`SWEEP_BATCHES`] per sweep; the rest waits for the next tick),
    /// so a sweep costs O(due items) however many approvals are pending. An item this sweep
    /// cannot act on comes back after [`DUE_RETRY`].
    pub async fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        self.audit_store_resets().await;
        let now = self.now_ms();
        report.holder_lost += self.cancel_holds_of_dead_holders(now).await;
        for _ in 0..SWEEP_BATCHES {
            let due = match self.store.due(now, SWEEP_BATCH, DUE_RETRY).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep: cannot read the due-index");
                    break;
                }
            };
            let last = due.len() < SWEEP_BATCH;
            // Concurrently (bounded): one slow upstream or audit write must not delay the rest.
            let done: Vec<Acted> = futures::stream::iter(due)
                .map(|id| async move { self.act_on_due(&id, now).await })
                .buffer_unordered(SWEEP_CONCURRENCY)
                .collect()
                .await;
            report.expired += done.iter().filter(|a| **a == Acted::Expired).count();
            report.executed += done.iter().filter(|a| **a == Acted::Executed).count();
            report.holder_lost += done.iter().filter(|a| **a == Acted::HolderLost).count();
            report.nudged += done.iter().filter(|a| **a == Acted::Nudged).count();
            report.recorded_late += done.iter().filter(|a| **a == Acted::RecordedLate).count();
            if last {
                break;
            }
        }
        match self.store.cleanup(now).await {
            Ok(n) => report.cleaned = n,
            Err(e) => tracing::warn!(error = %e, "sweep: cleanup failed"),
        }
        self.refresh_pending_gauge().await;
        report
    }

    /// Cancels every request held by a replica that has not beaten for [`HOLD_LEASE`] (it
    /// died, or stalled that long), then forgets what it held. Costs one read per sweep while
    /// every replica is alive. Never declares this replica dead: it is running this. Returns
    /// how many requests it cancelled.
    async fn cancel_holds_of_dead_holders(&self, now: u64) -> usize {
        let silent_since = now.saturating_sub(duration_ms(HOLD_LEASE));
        let dead = match self.store.silent_holders(silent_since, DEAD_HOLDERS).await {
            Ok(dead) => dead,
            Err(e) => {
                tracing::warn!(error = %e, "sweep: cannot read the holders");
                return 0;
            }
        };
        let mut cancelled = 0;
        for silent in dead {
            let holder = silent.holder.as_str();
            if holder == &*self.instance {
                continue;
            }
            for _ in 0..SWEEP_BATCHES {
                let ids = match self.store.holds_of(holder, SWEEP_BATCH).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        tracing::warn!(holder, error = %e, "sweep: cannot read a dead holder's holds");
                        break;
                    }
                };
                let last = ids.len() < SWEEP_BATCH;
                let done: Vec<(ApprovalId, Option<bool>)> = futures::stream::iter(ids)
                    .map(|id| self.cancel_orphan(id, holder, now))
                    .buffer_unordered(SWEEP_CONCURRENCY)
                    .collect()
                    .await;
                cancelled += done.iter().filter(|(_, c)| *c == Some(true)).count();
                // What could not be read or written stays for the next sweep.
                let dealt: Vec<ApprovalId> = done
                    .into_iter()
                    .filter_map(|(id, c)| c.is_some().then_some(id))
                    .collect();
                let stuck = dealt.is_empty() && !last;
                if let Err(e) = self.store.forget_holds(&silent, &dealt).await {
                    tracing::warn!(holder, error = %e, "sweep: cannot forget a dead holder's holds");
                    break;
                }
                if last || stuck {
                    break;
                }
            }
        }
        cancelled
    }

    /// Cancels `id` if `holder` (dead) still holds it: `Some(true)` cancelled, `Some(false)`
    /// nothing to do (answered, decided, gone or taken over), `None` when the store failed.
    async fn cancel_orphan(
        &self,
        id: ApprovalId,
        holder: &str,
        now: u64,
    ) -> (ApprovalId, Option<bool>) {
        let a = match self.store.get(&id).await {
            Ok(Some(a)) => a,
            Ok(None) => return (id, Some(false)),
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, "sweep: cannot read approval");
                return (id, None);
            }
        };
        if !hold_lost(&a, now, Some(holder)) {
            return (id, Some(false));
        }
        let done = self.cancel_lost_hold(&id, now, Some(holder)).await;
        (id, done.then_some(true))
    }

    /// Does what a due approval needs: write the audit line its end is owed
    /// ([`super::owed`]), expire it, cancel it (its holder was lost), execute it
    /// in the background, or send a reminder or its escalation ([`super::remind`]).
    async fn act_on_due(&self, id: &ApprovalId, now: u64) -> Acted {
        let a = match self.store.get(id).await {
            Ok(Some(a)) => a,
            Ok(None) => return Acted::Nothing,
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, "sweep: cannot read approval");
                return Acted::Nothing;
            }
        };
        if audit_owed(&a, now) {
            if self.write_owed_audit(&a).await {
                return Acted::RecordedLate;
            }
        } else if a.status == Status::Pending && now >= a.expires_at {
            if self.expire_one(id).await {
                return Acted::Expired;
            }
        } else if hold_lost(&a, now, None) {
            if self.cancel_lost_hold(id, now, None).await {
                return Acted::HolderLost;
            }
        } else if may_claim(&a, Claimant::Background) && self.background_one(id).await {
            return Acted::Executed;
        } else if super::nudge::due(&a, now) && self.nudge_due(&a, now).await {
            return Acted::Nudged;
        }
        Acted::Nothing
    }
}

/// What the sweep did with one due approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acted {
    Expired,
    Executed,
    HolderLost,
    Nudged,
    RecordedLate,
    Nothing,
}

/// Due ids one read of the due-index takes.
pub const SWEEP_BATCH: usize = 500;

/// Batches one sweep takes at most.
pub const SWEEP_BATCHES: usize = 20;

/// Dead holders one sweep looks at, at most (the rest wait for the next tick).
const DEAD_HOLDERS: usize = 16;

/// Due approvals acted on at once.
const SWEEP_CONCURRENCY: usize = 32;

/// How long a due approval the sweep could not act on (held, or a failed write) waits before
/// a sweep (of any replica) looks at it again, unless it changes meanwhile.
pub const DUE_RETRY: Duration = Duration::from_secs(5);
