//! The broker: what the proxy and the control plane call. It orchestrates the approval
//! lifecycle on top of an [`ApprovalStore`]: submit, hold, decide, cancel; execution lives in
//! [`super::execute`], the background loop in [`super::sweeper`].
//!
//! Every step that changes state is written to the [`AuditSink`] (awaited) before the broker
//! returns, so callers acknowledge a step only after it is recorded. Notifications go to a
//! [`Notifier`]; a failing notifier is audited as `notify.failed` and never changes a decision.
//! Owns the order of store write -> audit -> publish -> notify. Must not decide a transition
//! itself (that is [`super::transition`]) and must not touch pingora, axum or HTML.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::error::{BrokerError, CancelError, ResultError};
use super::executor::Executor;
use super::ports::{AuditEvent, AuditSink, Notifier, NotifyEvent, OnCallResolver};
use super::quorum;
pub use super::record::ApproverIdentity;
use super::record::{
    expand_approvers_with, Approval, ApprovalId, Requester, Status, StoredRequest,
};
use super::signer::ApprovalSigner;
use super::store::{ApprovalStore, Cas, Cursor, Hold, ListFilter, Page, ParkedResult, StoreError};
use super::transition;
use super::waiters::Waiters;
use crate::clock::duration_ms;
use crate::clock::SharedClock;
use crate::identity::Principal;
use crate::metrics::Metrics;
use crate::policy::Rule;

/// Tunables with sensible defaults.
#[derive(Debug, Clone, Copy)]
pub struct BrokerSettings {
    /// Records stay in the store this long after `expires_at` (for status pages and results).
    pub retention: Duration,
    /// How long a parked result is kept.
    pub result_ttl: Duration,
    /// Largest parked body; longer bodies are cut and flagged.
    pub result_cap: usize,
    /// Largest body returned to a holding caller by [`Broker::execute`].
    pub held_body_cap: usize,
    /// A notifier taking longer than this counts as failed.
    pub notify_timeout: Duration,
    /// Background sweep period: expiry, lost notifications, cleanup. Each sweep reads only
    /// what is due (the store's due-index), never the whole store.
    pub sweep_interval: Duration,
    /// Safety net for lost change notifications: a held caller that no notification woke
    /// re-reads its approval after a random time in [0.75, 1.25) x this (jittered so 10,000
    /// holders do not re-read together). A decision whose notification was lost therefore
    /// reaches its holder within 1.25 x this (or at the end of the hold, whichever is first).
    pub recheck_interval: Duration,
    /// Most approvals one requester (issuer and subject) may have pending at once.
    pub max_pending_per_requester: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(3600),
            result_ttl: Duration::from_secs(3600),
            result_cap: 1024 * 1024,
            held_body_cap: 16 * 1024 * 1024,
            notify_timeout: Duration::from_secs(2),
            sweep_interval: Duration::from_secs(1),
            recheck_interval: Duration::from_secs(10),
            max_pending_per_requester: 20,
        }
    }
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Quorum reached: call [`Broker::execute`].
    Approved,
    /// Denied (403 `approval_denied`).
    Denied {
        /// Who denied.
        by: Option<String>,
        /// Why.
        reason: Option<String>,
    },
    /// Expired (403 `approval_expired`).
    Expired,
    /// Cancelled (by the requester or a hang-up).
    Cancelled {
        /// Who cancelled.
        by: Option<String>,
        /// Why.
        reason: Option<String>,
    },
    /// The hold ended first: call [`Broker::release_hold`] and answer 202.
    StillPending,
}

/// The approval lifecycle. Cheap to clone; every clone shares the same state.
#[derive(Debug, Clone)]
pub struct Broker {
    pub(super) store: Arc<dyn ApprovalStore>,
    notifier: Arc<dyn Notifier>,
    pub(super) audit: Arc<dyn AuditSink>,
    pub(super) clock: SharedClock,
    pub(super) signer: Arc<ApprovalSigner>,
    pub(super) executor: Arc<Executor>,
    pub(super) groups: Arc<BTreeMap<String, Vec<String>>>,
    pub(super) metrics: Option<Metrics>,
    pub(super) settings: BrokerSettings,
    pub(super) instance: Arc<str>,
    waiters: Arc<Waiters>,
    /// How many store resets were audited ([`super::lost`]).
    pub(super) resets_seen: Arc<std::sync::atomic::AtomicU64>,
    /// Who is on call, for `pagerduty:` approvers ([`super::oncall`]); none: they count nobody.
    on_call: Option<Arc<dyn OnCallResolver>>,
}

impl Broker {
    /// A broker over `store`. `groups` is `[approvers.groups]`.
    pub fn new(
        store: Arc<dyn ApprovalStore>,
        notifier: Arc<dyn Notifier>,
        audit: Arc<dyn AuditSink>,
        clock: SharedClock,
        signer: Arc<ApprovalSigner>,
        executor: Arc<Executor>,
        groups: BTreeMap<String, Vec<String>>,
    ) -> Self {
        let instance: u64 = rand::random();
        Self {
            store,
            notifier,
            audit,
            clock,
            signer,
            executor,
            groups: Arc::new(groups),
            metrics: None,
            settings: BrokerSettings::default(),
            instance: Arc::from(format!("{instance:016x}")),
            waiters: Arc::new(Waiters::default()),
            resets_seen: Arc::default(),
            on_call: None,
        }
    }

    /// Resolves `pagerduty:` approvers through `resolver` when a request is created.
    pub fn with_on_call(mut self, resolver: Arc<dyn OnCallResolver>) -> Self {
        self.on_call = Some(resolver);
        self
    }

    /// Records pending count, decisions and time to decision in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Overrides the defaults.
    pub fn with_settings(mut self, settings: BrokerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Replaces `[approvers.groups]` (config reload).
    pub fn with_groups(mut self, groups: BTreeMap<String, Vec<String>>) -> Self {
        self.groups = Arc::new(groups);
        self
    }

    /// The signer (for `/.well-known/jwks.json`).
    pub fn signer(&self) -> &ApprovalSigner {
        &self.signer
    }

    /// The settings in force.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    /// The broker's clock now, unix ms (for views that say whether something is still live).
    pub fn now(&self) -> u64 {
        self.now_ms()
    }

    // ----- submit ------------------------------------------------------------------------

    /// Creates an approval request for `stored`, made by `requester` under `rule`, audits
    /// `approval.requested` and notifies approvers. The new approval is `held` (the caller's
    /// connection waits) under a hold lease that [`Self::wait`] takes; call
    /// [`Self::release_hold`] when answering 202.
    pub async fn submit(
        &self,
        rule: &Rule,
        requester: &Principal,
        stored: StoredRequest,
        reason: Option<String>,
    ) -> Result<Approval, BrokerError> {
        let spec = rule
            .approval
            .as_ref()
            .ok_or_else(|| BrokerError::NotAnApprovalRule(rule.name.clone()))?;
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if spec.reason_required && reason.is_none() {
            return Err(BrokerError::ReasonRequired);
        }
        let requester = Requester::from_principal(requester);
        // The request is bound to the verified caller, whatever the caller of `submit` filled
        // in: execution checks the stored subject and issuer against the approval (SPEC 8).
        let mut stored = stored;
        stored.subject.clone_from(&requester.sub);
        stored.issuer.clone_from(&requester.iss);
        // On-call entries are fixed now, like group members; a failed one counts nobody.
        let on_call = super::oncall::resolve(
            self.on_call.as_deref(),
            &*self.audit,
            &rule.name,
            &spec.approvers,
            stored.request_id.as_deref(),
        )
        .await?;
        let approvers = expand_approvers_with(&spec.approvers, &self.groups, &on_call);
        // Table quorum: entry members are fixed now, with the approvers (SPEC 9).
        let quorum_entries = quorum::resolve(&spec.quorum, &self.groups);
        let eligible: Vec<String> = approvers
            .iter()
            .filter(|e| spec.self_approval || requester.email.as_deref() != Some(e.as_str()))
            .cloned()
            .collect();
        if !quorum::reachable(spec.quorum.total(), &quorum_entries, &eligible) {
            return Err(BrokerError::Unsatisfiable {
                eligible: eligible.len(),
                quorum: spec.quorum.total(),
            });
        }
        // Bounded (SPEC 8): one caller cannot flood approvers or the store. O(1): the store
        // keeps a per-requester pending count (cluster-wide on Redis).
        let mine = self
            .store
            .count_pending(Some((&requester.iss, &requester.sub)))
            .await?;
        if mine >= self.settings.max_pending_per_requester {
            return Err(BrokerError::TooManyPending {
                limit: self.settings.max_pending_per_requester,
            });
        }
        let now = self.now_ms();
        let mut approval = self.draft(&rule.name, spec, requester, &stored, reason, now);
        approval.approvers = approvers;
        approval.quorum_entries = quorum_entries;
        // The holder takes the hold ([`Self::wait`]) only once this returns, after approvers
        // were told (bounded by `notify_timeout`): this first backstop covers that.
        approval.held_until = Some(transition::hold_lease_from(
            now.saturating_add(duration_ms(self.settings.notify_timeout)),
        ));
        approval.nudges = super::nudges::Nudges::plan(&spec.nudge, now);
        let ttl = spec.expires.saturating_add(self.settings.retention);
        let requested = AuditEvent::Requested {
            approval: &approval,
            request_id: stored.request_id.as_deref(),
        };
        self.create_audited(&approval, &stored, ttl, requested)
            .await?;
        self.refresh_pending_gauge().await;
        self.notify(&approval, NotifyEvent::Requested).await;
        Ok(approval)
    }

    // ----- wait / hold -------------------------------------------------------------------

    /// Waits up to `hold` for a decision on `id`, woken by decisions from any source.
    ///
    /// Reads the approval only when woken: by a change notification for this id (any replica),
    /// at its expiry, at the end of the hold, or by the slow jittered safety re-read
    /// ([`BrokerSettings::recheck_interval`]). So a held caller costs no work while nothing
    /// happens to its approval, and a change wakes only its own holders.
    ///
    /// Before it waits it takes the hold for this replica ([`Self::take_hold`]): a replica
    /// that dies holding a caller stops beating ([`transition::HEARTBEAT_EVERY`]), and a
    /// surviving replica's sweep cancels the request ([`transition::cancel_lost_hold`]).
    /// Whoever calls `wait` must answer the caller (or [`Self::release_hold`]) promptly after
    /// it returns: the hold outlasts its end by [`transition::HOLD_LEASE`], no more.
    ///
    /// Cancel-safe: the proxy can race it against the client hanging up and drop it (the
    /// waiter unregisters on drop; taking the hold is a compare-and-set that changes only a
    /// still-held request).
    pub async fn wait(&self, id: &ApprovalId, hold: Duration) -> Result<WaitOutcome, BrokerError> {
        if !hold.is_zero() {
            self.take_hold(id, hold).await;
        }
        self.wait_for_decision(id, hold).await
    }

    /// Takes the hold on `id` for this replica until the end of `hold` plus
    /// [`transition::HOLD_LEASE`]: first notes it among this replica's holds (so a sweep
    /// finds it if this replica dies), then names this replica in the record. One store write
    /// per held caller; from then on the replica's heartbeat keeps it. A failure only warns:
    /// the hold then ends at the backstop `submit` wrote (the notification time plus the
    /// lease), and the request is cancelled then, never run for a caller who left.
    async fn take_hold(&self, id: &ApprovalId, hold: Duration) {
        let now = self.now_ms();
        let backstop = transition::hold_lease_from(now.saturating_add(duration_ms(hold)));
        let hold = Hold {
            holder: &self.instance,
            id,
            backstop,
        };
        let taken = match self.store.add_hold(&hold, now).await {
            Ok(()) => self.store.take_hold(&hold).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = taken {
            tracing::warn!(approval_id = %id, error = %e, "could not take the hold lease");
        }
    }

    /// [`Self::wait`] once the hold is taken.
    async fn wait_for_decision(
        &self,
        id: &ApprovalId,
        hold: Duration,
    ) -> Result<WaitOutcome, BrokerError> {
        let deadline = tokio::time::Instant::now() + hold;
        // Register before reading, so a decision between the read and the wait is not lost.
        let watch = self.waiters.watch(&*self.store, id);
        loop {
            let woken = watch.notify().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let read = self.store.get(id).await;
            let Some(approval) = self.refuse_tampered(id, read).await? else {
                return Err(self.lost(id).await);
            };
            if approval.status == Status::Pending && self.now_ms() >= approval.expires_at {
                // Answer only what the store decided: a vote may land before the expiry does,
                // and a caller told 403 `approval_expired` must never be executed later
                // (SPEC 8). Re-read after the compare-and-set either way.
                if !self.expire_one(id).await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
            if let Some(outcome) = self.outcome_of(&approval) {
                return Ok(outcome);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(WaitOutcome::StillPending);
            }
            let to_expiry =
                Duration::from_millis(approval.expires_at.saturating_sub(self.now_ms()));
            let nap = (deadline - now)
                .min(to_expiry)
                .min(jittered(self.settings.recheck_interval));
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// The final outcome of `a`, or `None` while it is pending (expiry is the store's call:
    /// see [`Broker::wait`]).
    fn outcome_of(&self, a: &Approval) -> Option<WaitOutcome> {
        match a.status {
            Status::Pending => None,
            // Decided, but not executable until the decision is durable in the audit log.
            Status::Approved if a.audit_pending => None,
            Status::Approved => Some(WaitOutcome::Approved),
            Status::Denied => Some(WaitOutcome::Denied {
                by: a.decided_by.clone(),
                reason: a.decision_reason.clone(),
            }),
            Status::Expired => Some(WaitOutcome::Expired),
            Status::Cancelled => Some(WaitOutcome::Cancelled {
                by: a.decided_by.clone(),
                reason: a.decision_reason.clone(),
            }),
            // Break-glass is forwarded by its caller at once and never waited on: nothing to
            // wake a holder for (a holder would end with its hold, fail closed).
            Status::Review | Status::Acknowledged => None,
        }
    }

    /// The caller is no longer held (the proxy answered 202): from now on the background
    /// executes the request if it is approved.
    pub async fn release_hold(&self, id: &ApprovalId) -> Result<Approval, BrokerError> {
        let approval = match self.store.set_held(id, false).await? {
            Cas::Applied(a) | Cas::Conflict(a) => a,
            Cas::NotFound => return Err(BrokerError::NotFound),
        };
        // Wake the background: it may have skipped this one while it was held.
        self.store.publish(id).await?;
        Ok(approval)
    }

    // ----- expire / cancel ---------------------------------------------------------------

    /// Moves `id` to `Expired` if it is pending and past `expires_at`; audits and notifies.
    /// Returns whether this call expired it.
    pub async fn expire_one(&self, id: &ApprovalId) -> bool {
        match self.store.expire(id, self.now_ms()).await {
            Ok(Cas::Applied(a)) => {
                self.after_expired(&a).await;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, "could not expire approval");
                false
            }
        }
    }

    pub(super) async fn after_expired(&self, a: &Approval) {
        match self.audit.record(AuditEvent::Expired(a)).await {
            Ok(()) => self.confirm_end(a).await,
            Err(e) => {
                tracing::error!(approval_id = %a.id, error = %e, "audit failed for approval.expired");
            }
        }
        let _ = self.store.publish(&a.id).await;
        self.record_decision_metrics(a);
        self.refresh_pending_gauge().await;
        self.notify(a, NotifyEvent::Expired).await;
    }

    /// Cancels `id` (the caller hung up, or an operator): `Pending` or approved-but-not-started
    /// becomes `Cancelled` and is never executed. Cancelling twice is not an error.
    pub async fn cancel(
        &self,
        id: &ApprovalId,
        actor: &str,
        why: &str,
    ) -> Result<Approval, CancelError> {
        let now = self.now_ms();
        match self.store.cancel(id, actor, why, now).await? {
            Cas::NotFound => Err(CancelError::NotFound),
            Cas::Conflict(a) if a.status == Status::Cancelled => Ok(a),
            Cas::Conflict(a) => Err(CancelError::AlreadyDecided(a.status)),
            Cas::Applied(a) => {
                self.after_cancelled(&a, actor, why).await?;
                Ok(a)
            }
        }
    }

    /// Audits `approval.cancelled`, wakes the holders, counts it and (once the audit write
    /// succeeded) tells approvers: the one path for every cancellation.
    async fn after_cancelled(
        &self,
        a: &Approval,
        actor: &str,
        why: &str,
    ) -> Result<(), CancelError> {
        let cancelled = AuditEvent::Cancelled {
            approval: a,
            actor,
            reason: why,
        };
        let recorded = self.audit.record(cancelled).await;
        if recorded.is_ok() {
            self.confirm_end(a).await;
        }
        self.store.publish(&a.id).await?;
        self.record_decision_metrics(a);
        self.refresh_pending_gauge().await;
        recorded?;
        self.notify(a, NotifyEvent::Cancelled).await;
        Ok(())
    }

    /// Clears the audit line owed for `a`'s end, now that it is written
    /// ([`transition::confirm_audited`]). A failure only means a sweep writes the line again
    /// later, marked `recorded_late`.
    pub(super) async fn confirm_end(&self, a: &Approval) {
        if let Err(e) = self.store.confirm_audited_end(&a.id, a.status).await {
            tracing::warn!(approval_id = %a.id, error = %e,
                "audit line written, but the store could not note it: a sweep writes it again");
        }
    }

    /// Cancels `id` if its holder was lost at `now` ([`transition::cancel_lost_hold`]: held,
    /// nothing sent upstream, and its backstop passed or it is held by `dead_holder`), then
    /// audits `approval.cancelled` with reason
    /// [`transition::HOLDER_LOST`] and updates approvers' messages like any cancellation.
    /// Returns whether this call cancelled it.
    pub async fn cancel_lost_hold(
        &self,
        id: &ApprovalId,
        now: u64,
        dead_holder: Option<&str>,
    ) -> bool {
        let lost = self.store.cancel_lost_hold(id, now, dead_holder).await;
        let a = match self.refuse_tampered(id, lost).await {
            Ok(Cas::Applied(a)) => a,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, "could not cancel a lost hold");
                return false;
            }
        };
        tracing::warn!(approval_id = %id,
            "the replica holding this request died or never answered: cancelled, never executed");
        let actor = transition::HOLDER_LOST_ACTOR;
        if let Err(e) = self
            .after_cancelled(&a, actor, transition::HOLDER_LOST)
            .await
        {
            tracing::error!(approval_id = %id, error = %e, "lost hold cancelled, but not fully recorded");
        }
        true
    }

    /// The requester's `DELETE /approvals/{id}`: only the requester (same iss and sub) may.
    pub async fn cancel_as_requester(
        &self,
        id: &ApprovalId,
        iss: &str,
        sub: &str,
    ) -> Result<Approval, CancelError> {
        let a = self.store.get(id).await?.ok_or(CancelError::NotFound)?;
        if !a.requester.is(iss, sub) {
            return Err(CancelError::NotRequester);
        }
        let actor = a.requester.email.clone().unwrap_or_else(|| sub.to_owned());
        self.cancel(id, &actor, "withdrawn by the requester").await
    }

    // ----- reads -------------------------------------------------------------------------

    /// One approval.
    pub async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        self.store.get(id).await
    }

    /// Approvals, newest first.
    pub async fn list(
        &self,
        filter: ListFilter,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        self.store.list(filter, limit).await
    }

    /// One page of approvals, newest first, strictly after `after`; reads at most `limit`
    /// index entries.
    pub async fn list_page(
        &self,
        filter: ListFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.store.list_page(filter, after, limit).await
    }

    /// The parked upstream response, for the requester only (same iss and sub).
    pub async fn result(
        &self,
        id: &ApprovalId,
        iss: &str,
        sub: &str,
    ) -> Result<ParkedResult, ResultError> {
        let a = self.store.get(id).await?.ok_or(ResultError::NotFound)?;
        if !a.requester.is(iss, sub) {
            return Err(ResultError::NotRequester);
        }
        match self.store.result(id).await? {
            Some(parked) => Ok(parked),
            None => Err(ResultError::Unavailable(Box::new(a))),
        }
    }

    // ----- helpers -----------------------------------------------------------------------

    pub(super) async fn notify(&self, a: &Approval, event: NotifyEvent) {
        // A request passed under a grant has no message of its own: approvers were told when
        // they gave the grant, and each use is audited (`grant.used`, `request.forwarded`).
        if a.granted.is_some() {
            return;
        }
        let sent = tokio::time::timeout(
            self.settings.notify_timeout,
            self.notifier.notify(a, &event),
        )
        .await;
        let failure = match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.0),
            Err(_) => Some("notifier timed out".to_owned()),
        };
        if let Some(err) = &failure {
            tracing::warn!(approval_id = %a.id, event = event.as_str(), error = %err, "notification failed");
        }
        let notified = AuditEvent::Notified {
            approval: a,
            event: &event,
            error: failure.as_deref(),
        };
        let kind = notified.kind();
        if let Err(e) = self.audit.record(notified).await {
            tracing::error!(approval_id = %a.id, error = %e, "audit failed for {kind}");
        }
    }

    pub(super) fn record_decision_metrics(&self, a: &Approval) {
        let Some(m) = &self.metrics else { return };
        let outcome = a.status.as_str();
        m.approval_decisions.with_label_values(&[outcome]).inc();
        if let Some(at) = a.decided_at {
            let secs = at.saturating_sub(a.created_at) as f64 / 1000.0;
            m.approval_decision_seconds
                .with_label_values(&[outcome])
                .observe(secs);
        }
    }

    /// Sets `countersign_approvals_pending` from the store's pending count: O(1) (an index
    /// cardinality, cluster-wide on Redis), so it can run on every transition.
    pub(super) async fn refresh_pending_gauge(&self) {
        let Some(m) = &self.metrics else { return };
        if let Ok(pending) = self.store.count_pending(None).await {
            m.approvals_pending
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
        }
    }

    /// How many approvals have a held caller waiting in this process.
    pub fn holders(&self) -> usize {
        self.waiters.len()
    }
}

/// `base` scaled by a random factor in [0.75, 1.25).
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.75 + rand::random::<f64>() / 2.0)
}
