//! The approval background work: executes approved requests nobody holds (woken by change
//! notifications, and by a periodic sweep so a lost notification only delays), expires overdue
//! approvals and cleans the store. Runs until its shutdown signal flips.
//!
//! Owns the loop and the sweep. Must not hold state of its own (everything is in the store)
//! and must not touch pingora: `app.rs` hands it the server's shutdown watch.

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::broker::Broker;
use super::record::ApprovalId;
use super::store::ListFilter;
use crate::shutdown::{stopped, Shutdown};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Pending approvals moved to `Expired`.
    pub expired: usize,
    /// Approved requests executed in the background.
    pub executed: usize,
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
        // At most one sweep at a time; the loop keeps reacting to notifications meanwhile.
        let mut sweeping: Option<JoinHandle<SweepReport>> = None;
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

    /// One sweep: expire overdue pending approvals, execute approved unheld ones, clean up.
    pub async fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let now = self.now_ms();
        match self.store.list(ListFilter::Pending, usize::MAX).await {
            Ok(pending) => {
                for a in pending.iter().filter(|a| now >= a.expires_at) {
                    if self.expire_one(&a.id).await {
                        report.expired += 1;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep: cannot list pending approvals"),
        }
        match self
            .store
            .list(ListFilter::AwaitingExecution, usize::MAX)
            .await
        {
            Ok(ready) => {
                // Concurrently: one slow upstream must not delay every other handoff.
                let runs = ready.iter().map(|a| self.background_one(&a.id));
                let done = futures::future::join_all(runs).await;
                report.executed = done.into_iter().filter(|ran| *ran).count();
            }
            Err(e) => tracing::warn!(error = %e, "sweep: cannot list approved approvals"),
        }
        match self.store.cleanup(now).await {
            Ok(n) => report.cleaned = n,
            Err(e) => tracing::warn!(error = %e, "sweep: cleanup failed"),
        }
        self.refresh_pending_gauge().await;
        report
    }
}
