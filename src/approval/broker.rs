//! The broker: what the proxy and the control plane call. It owns the approval lifecycle on
//! top of an [`ApprovalStore`]: submit, hold, decide, cancel, execute exactly once, park.
//!
//! Every step that changes state is written to the [`AuditSink`] (awaited) before the broker
//! returns, so callers acknowledge a step only after it is recorded. Notifications go to a
//! [`Notifier`]; a failing notifier is audited as `notify.failed` and never changes a decision.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::executor::{Evidence, Executor, ExecutorError, UpstreamResponse};
use super::record::{
    body_preview, expand_approvers, request_hash, Approval, ApprovalId, Channel, Decision,
    Execution, Requester, Status, StoredRequest, Vote,
};
use super::signer::ApprovalSigner;
use super::store::{
    ApprovalStore, Cas, Claimant, ListFilter, ParkedResult, StoreError, VoteResult,
};
use crate::clock::SharedClock;
use crate::identity::Principal;
use crate::metrics::Metrics;
use crate::policy::{ApproveVia, Rule};

/// The audit log could not record an event. The step it records is not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log: {0}")]
pub struct AuditError(pub String);

/// Where the broker records what happened (the real hash-chained log plugs in here).
#[async_trait]
pub trait AuditSink: Send + Sync + Debug {
    /// Appends one event and returns once it is durable. `fields` is a flat JSON object
    /// (`approval_id`, `rule`, `actor`, ...); it never holds a token, secret or redacted value.
    async fn record(&self, event: &str, fields: Value) -> Result<(), AuditError>;
}

/// A notifier could not deliver a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notify: {0}")]
pub struct NotifyError(pub String);

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A new approval request: tell the approvers.
    Requested,
    /// A vote was counted; still pending.
    VoteCast,
    /// Quorum reached.
    Approved,
    /// Someone denied.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The caller hung up or withdrew the request.
    Cancelled,
    /// The stored request was sent upstream, which answered `status`.
    Executed {
        /// Upstream status code.
        status: u16,
    },
    /// The stored request could not be delivered upstream (not retried).
    ExecutionFailed,
}

impl NotifyEvent {
    /// Name for logs and audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyEvent::Requested => "requested",
            NotifyEvent::VoteCast => "vote_cast",
            NotifyEvent::Approved => "approved",
            NotifyEvent::Denied => "denied",
            NotifyEvent::Expired => "expired",
            NotifyEvent::Cancelled => "cancelled",
            NotifyEvent::Executed { .. } => "executed",
            NotifyEvent::ExecutionFailed => "execution_failed",
        }
    }
}

/// Tells people about approvals (Slack and Teams plug in here, issue 4). Implementations
/// render from `approval`, which always carries the current votes and status.
#[async_trait]
pub trait Notifier: Send + Sync + Debug {
    /// Delivers one notification. Errors are audited and otherwise ignored.
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError>;
}

/// A notifier that only logs (until chat delivery exists, and for the demo).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        tracing::info!(
            approval_id = %approval.id,
            rule = %approval.rule,
            status = approval.status.as_str(),
            event = event.as_str(),
            "approval notification"
        );
        Ok(())
    }
}

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
    /// Background sweep period: expiry, lost notifications, cleanup.
    pub sweep_interval: Duration,
    /// A waiting caller re-reads the state at least this often (lost notifications).
    pub recheck_interval: Duration,
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
            recheck_interval: Duration::from_millis(500),
        }
    }
}

/// Why an approval request could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The rule has `reason_required` and no `Countersign-Reason` was sent (400).
    #[error("this request needs a Countersign-Reason header")]
    ReasonRequired,
    /// The rule has no `[rule.approval]` (a bug in the caller).
    #[error("rule {0} does not ask for approval")]
    NotAnApprovalRule(String),
    /// Fewer eligible approvers than the quorum: it could never be approved (fail closed).
    #[error("rule needs {quorum} approvers but only {eligible} may approve this request")]
    Unsatisfiable {
        /// Approvers other than the requester (or including them under `self_approval`).
        eligible: usize,
        /// The rule's quorum.
        quorum: u32,
    },
    /// No such approval (or it was cleaned up).
    #[error("no such approval")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed; nothing was acknowledged.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Why a vote was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// The voter is not among the approvers.
    #[error("you are not an approver of this request")]
    NotAnApprover,
    /// The rule has `approve_via = "login"` and the vote did not come from the web page
    /// (where the control plane enforces a fresh login): chat buttons and API calls do not count.
    #[error("this request must be approved on the approval page after a fresh login")]
    LoginRequired,
    /// The requester tried to approve their own request without `self_approval`.
    #[error("you cannot approve your own request")]
    OwnRequest,
    /// This approver already voted; nothing changed.
    #[error("you already voted")]
    AlreadyVoted,
    /// Decided before this vote arrived.
    #[error("already {}", .0.as_str())]
    AlreadyDecided(Status),
    /// The approval expired (now recorded as such).
    #[error("the approval expired")]
    Expired,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed; the decision is not acknowledged (an approval is cancelled).
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Why a cancel did nothing.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// Only the requester may cancel it.
    #[error("only the requester may cancel this request")]
    NotRequester,
    /// Already decided (and executing or executed, for approvals).
    #[error("already {}", .0.as_str())]
    AlreadyDecided(Status),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Why the stored request was not (successfully) sent.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// Not approved (any more).
    #[error("not approved: {}", .0.as_str())]
    NotApproved(Status),
    /// Someone else already claimed the one execution.
    #[error("already executed")]
    AlreadyClaimed,
    /// The approval token could not be signed.
    #[error(transparent)]
    Signer(#[from] super::signer::SignerError),
    /// Upstream unreachable (502).
    #[error(transparent)]
    Upstream(#[from] ExecutorError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a parked result cannot be returned.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// Only the requester may read it.
    #[error("only the requester may read this result")]
    NotRequester,
    /// No parked result (yet): pending, denied, expired, cancelled, executing, delivered to a
    /// held caller, failed upstream, or the result's lifetime passed. The approval says which.
    #[error("no result: approval is {}", .0.status.as_str())]
    Unavailable(Box<Approval>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Who is voting, as established by the control plane (Slack mapping, login, bearer token).
#[derive(Debug, Clone)]
pub struct ApproverIdentity {
    /// Email (any case).
    pub email: String,
    /// Issuer of the identity, when it came from a token or login.
    pub iss: Option<String>,
    /// Subject at that issuer.
    pub sub: Option<String>,
    /// Where the vote came from.
    pub via: Channel,
}

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

/// The approval lifecycle. Cheap to clone; every clone shares the same state.
#[derive(Debug, Clone)]
pub struct Broker {
    store: Arc<dyn ApprovalStore>,
    notifier: Arc<dyn Notifier>,
    audit: Arc<dyn AuditSink>,
    clock: SharedClock,
    signer: Arc<ApprovalSigner>,
    executor: Arc<Executor>,
    groups: Arc<BTreeMap<String, Vec<String>>>,
    metrics: Option<Metrics>,
    settings: BrokerSettings,
    instance: Arc<str>,
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
        }
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

    fn now_ms(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    // ----- submit ------------------------------------------------------------------------

    /// Creates an approval request for `stored`, made by `requester` under `rule`, audits
    /// `approval.requested` and notifies approvers. The new approval is `held` (the caller's
    /// connection waits); call [`Self::release_hold`] when answering 202.
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
        let approvers = expand_approvers(&spec.approvers, &self.groups);
        let eligible = approvers
            .iter()
            .filter(|e| spec.self_approval || requester.email.as_deref() != Some(e.as_str()))
            .count();
        if eligible < spec.quorum as usize || spec.quorum == 0 {
            return Err(BrokerError::Unsatisfiable {
                eligible,
                quorum: spec.quorum,
            });
        }
        let now = self.now_ms();
        let hash = request_hash(
            &stored.method,
            &stored.host,
            &stored.path,
            stored.query.as_deref(),
            &stored.body,
            &requester.iss,
            &requester.sub,
        );
        let approval = Approval {
            id: ApprovalId::generate(),
            rule: rule.name.clone(),
            requester,
            method: stored.method.clone(),
            host: stored.host.clone(),
            path: stored.path.clone(),
            query: stored.query.clone(),
            request_hash: hex::encode(hash),
            reason,
            body_preview: body_preview(&stored.body, stored.content_type(), &spec.redact),
            body_len: stored.body.len() as u64,
            approvers,
            quorum: spec.quorum,
            self_approval: spec.self_approval,
            approve_via: spec.approve_via,
            notify: spec.notify.clone(),
            created_at: now,
            expires_at: now.saturating_add(duration_ms(spec.expires)),
            votes: Vec::new(),
            status: Status::Pending,
            decided_by: None,
            decision_reason: None,
            decided_at: None,
            held: true,
            execution: Execution::NotStarted,
        };
        let ttl = spec.expires.saturating_add(self.settings.retention);
        self.store.create(&approval, &stored, ttl).await?;
        let mut fields = requested_fields(&approval);
        fields["request_id"] = json!(stored.request_id);
        if let Err(e) = self.audit.record("approval.requested", fields).await {
            // Unrecorded requests must not live on: withdraw it, then fail.
            let _ = self
                .store
                .cancel(&approval.id, "countersign", "audit log unavailable", now)
                .await;
            return Err(e.into());
        }
        self.refresh_pending_gauge().await;
        self.notify(&approval, NotifyEvent::Requested).await;
        Ok(approval)
    }

    // ----- wait / hold -------------------------------------------------------------------

    /// Waits up to `hold` for a decision on `id`, woken by decisions from any source.
    ///
    /// Cancel-safe: it only reads, so the proxy can race it against the client hanging up and
    /// drop it. (An expiry it notices is recorded by a spawned task, never by this future.)
    pub async fn wait(&self, id: &ApprovalId, hold: Duration) -> Result<WaitOutcome, BrokerError> {
        let deadline = tokio::time::Instant::now() + hold;
        // Subscribe before reading, so a decision between the read and the wait is not lost.
        let mut changes = self.store.subscribe();
        loop {
            let approval = self.store.get(id).await?.ok_or(BrokerError::NotFound)?;
            if let Some(outcome) = self.outcome_of(&approval) {
                return Ok(outcome);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(WaitOutcome::StillPending);
            }
            let nap = (deadline - now).min(self.settings.recheck_interval);
            tokio::select! {
                _ = next_change_of(&mut changes, id) => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// The final outcome of `a`, or `None` while it is pending (and not past expiry).
    fn outcome_of(&self, a: &Approval) -> Option<WaitOutcome> {
        match a.status {
            Status::Pending if self.now_ms() >= a.expires_at => {
                let broker = self.clone();
                let id = a.id.clone();
                tokio::spawn(async move { broker.expire_one(&id).await });
                Some(WaitOutcome::Expired)
            }
            Status::Pending => None,
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

    // ----- decide ------------------------------------------------------------------------

    /// Whether `approver` may cast `decision` on `approval` now, by the same rules as
    /// [`Self::decide`] (pending, not expired, an approver, right channel, not approving their
    /// own request, not voted yet). For pages showing "you can vote" / why not. `Ok(true)` means
    /// the voter is the requester approving under `self_approval`.
    pub fn check_voter(
        &self,
        approval: &Approval,
        approver: &ApproverIdentity,
        decision: Decision,
    ) -> Result<bool, DecideError> {
        if approval.status != Status::Pending {
            return Err(DecideError::AlreadyDecided(approval.status));
        }
        if self.now_ms() >= approval.expires_at {
            return Err(DecideError::Expired);
        }
        let email = approver.email.trim().to_lowercase();
        if !approval.approvers.contains(&email) {
            return Err(DecideError::NotAnApprover);
        }
        if approval.approve_via == ApproveVia::Login && approver.via != Channel::Web {
            return Err(DecideError::LoginRequired);
        }
        let own = is_requester(&approval.requester, approver, &email);
        if own && decision == Decision::Approve && !approval.self_approval {
            return Err(DecideError::OwnRequest);
        }
        if approval.has_voted(&email) {
            return Err(DecideError::AlreadyVoted);
        }
        Ok(own && decision == Decision::Approve)
    }

    /// Records `approver`'s vote on `id`. The control plane has authenticated `approver` (and,
    /// for `approve_via = "login"` rules, checked the login is fresh). Audits `vote.cast` and then `approval.approved` or
    /// `approval.denied` before returning.
    pub async fn decide(
        &self,
        id: &ApprovalId,
        approver: ApproverIdentity,
        decision: Decision,
        reason: Option<String>,
    ) -> Result<Approval, DecideError> {
        let approval = self.store.get(id).await?.ok_or(DecideError::NotFound)?;
        let now = self.now_ms();
        let own = match self.check_voter(&approval, &approver, decision) {
            Err(DecideError::Expired) => {
                self.expire_one(id).await;
                return Err(DecideError::Expired);
            }
            checked => checked?,
        };
        let email = approver.email.trim().to_lowercase();
        let vote = Vote {
            approver: email,
            decision,
            reason: reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty()),
            at: now,
            via: approver.via,
            self_approval: own,
        };
        if vote.self_approval {
            tracing::warn!(approval_id = %id, approver = %vote.approver,
                "SELF-APPROVAL: the requester approved their own request (self_approval = true)");
        }
        match self.store.record_vote(id, vote.clone(), now).await? {
            VoteResult::NotFound => Err(DecideError::NotFound),
            VoteResult::Duplicate(_) => Err(DecideError::AlreadyVoted),
            VoteResult::NotPending(a) => Err(DecideError::AlreadyDecided(a.status)),
            VoteResult::Expired(a) => {
                self.after_expired(&a).await;
                Err(DecideError::Expired)
            }
            VoteResult::Recorded(a) => {
                self.audit_vote(&a, &approver, &vote).await?;
                self.store.publish(id).await?;
                self.notify(&a, NotifyEvent::VoteCast).await;
                Ok(a)
            }
            VoteResult::Approved(a) => self.after_approved(a, &approver, &vote).await,
            VoteResult::Denied(a) => {
                let recorded = self.audit_vote(&a, &approver, &vote).await;
                let recorded = match recorded {
                    Ok(()) => {
                        self.audit
                            .record("approval.denied", decided_fields(&a))
                            .await
                    }
                    Err(e) => Err(e),
                };
                // Denied is already the fail-closed state: wake the holder either way.
                self.store.publish(id).await?;
                self.record_decision_metrics(&a);
                self.refresh_pending_gauge().await;
                recorded?;
                self.notify(&a, NotifyEvent::Denied).await;
                Ok(a)
            }
        }
    }

    async fn after_approved(
        &self,
        a: Approval,
        approver: &ApproverIdentity,
        vote: &Vote,
    ) -> Result<Approval, DecideError> {
        let recorded = match self.audit_vote(&a, approver, vote).await {
            Ok(()) => {
                self.audit
                    .record("approval.approved", decided_fields(&a))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            // An approval nobody can prove must not be executed: withdraw it.
            let now = self.now_ms();
            let _ = self
                .store
                .cancel(&a.id, "countersign", "audit log unavailable", now)
                .await;
            let _ = self.store.publish(&a.id).await;
            self.refresh_pending_gauge().await;
            return Err(e.into());
        }
        self.store.publish(&a.id).await?;
        self.record_decision_metrics(&a);
        self.refresh_pending_gauge().await;
        self.notify(&a, NotifyEvent::Approved).await;
        Ok(a)
    }

    async fn audit_vote(
        &self,
        a: &Approval,
        approver: &ApproverIdentity,
        vote: &Vote,
    ) -> Result<(), AuditError> {
        let mut fields = json!({
            "approval_id": a.id.as_str(),
            "rule": a.rule,
            "actor": vote.approver,
            "approver_iss": approver.iss,
            "approver_sub": approver.sub,
            "decision": vote.decision.as_str(),
            "reason": vote.reason,
            "via": vote.via.as_str(),
            "self_approval": vote.self_approval,
            "approvals": a.approved_by().len(),
            "quorum": a.quorum,
        });
        if vote.self_approval {
            fields["warning"] =
                json!("SELF-APPROVAL: the requester approved their own request (break-glass)");
        }
        self.audit.record("vote.cast", fields).await
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

    async fn after_expired(&self, a: &Approval) {
        let fields = json!({
            "approval_id": a.id.as_str(),
            "rule": a.rule,
            "actor": "countersign",
            "expires_at": a.expires_at,
        });
        if let Err(e) = self.audit.record("approval.expired", fields).await {
            tracing::error!(approval_id = %a.id, error = %e, "audit failed for approval.expired");
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
                let fields = json!({
                    "approval_id": a.id.as_str(),
                    "rule": a.rule,
                    "actor": actor,
                    "reason": why,
                });
                let recorded = self.audit.record("approval.cancelled", fields).await;
                self.store.publish(id).await?;
                self.record_decision_metrics(&a);
                self.refresh_pending_gauge().await;
                recorded?;
                self.notify(&a, NotifyEvent::Cancelled).await;
                Ok(a)
            }
        }
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

    // ----- execute -----------------------------------------------------------------------

    /// For the holding caller after [`WaitOutcome::Approved`]: claims the one execution, sends
    /// the stored request upstream, audits `request.forwarded` and returns the response (body
    /// at most `held_body_cap`). Any later call gets [`ExecuteError::AlreadyClaimed`].
    pub async fn execute(&self, id: &ApprovalId) -> Result<UpstreamResponse, ExecuteError> {
        let (_, resp, _) = self
            .claim_and_send(id, Claimant::Holder, self.settings.held_body_cap)
            .await?;
        Ok(resp)
    }

    /// Executes `id` if it is approved, not held and not claimed; parks the response.
    /// Returns `Ok(None)` when there was nothing to do (someone else has it, or not approved).
    pub async fn execute_in_background(
        &self,
        id: &ApprovalId,
    ) -> Result<Option<ParkedResult>, ExecuteError> {
        match self
            .claim_and_send(id, Claimant::Background, self.settings.result_cap)
            .await
        {
            Ok((_, _, parked)) => Ok(parked),
            Err(ExecuteError::AlreadyClaimed | ExecuteError::NotApproved(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn claim_and_send(
        &self,
        id: &ApprovalId,
        who: Claimant,
        body_cap: usize,
    ) -> Result<(Approval, UpstreamResponse, Option<ParkedResult>), ExecuteError> {
        let mode = match who {
            Claimant::Holder => "held",
            Claimant::Background => "background",
        };
        let owner = format!("{}/{mode}", self.instance);
        let a = match self
            .store
            .claim_execution(id, who, &owner, self.now_ms())
            .await?
        {
            Cas::Applied(a) => a,
            Cas::Conflict(a) if a.status == Status::Approved => {
                return Err(ExecuteError::AlreadyClaimed)
            }
            Cas::Conflict(a) => return Err(ExecuteError::NotApproved(a.status)),
            Cas::NotFound => return Err(ExecuteError::NotFound),
        };
        let sent = self.send_claimed(&a, body_cap).await;
        // A background result is parked BEFORE the execution is marked done, so a requester
        // polling `/result` never sees "done, nothing parked" for a request that succeeded.
        let parked = match (&who, &sent) {
            (Claimant::Background, Ok(resp)) => {
                let p = ParkedResult {
                    status: resp.status.as_u16(),
                    headers: resp.stored_headers(),
                    body: resp.body.to_vec(),
                    truncated: resp.truncated,
                    at: self.now_ms(),
                };
                Some(
                    self.store
                        .park_result(&a.id, &p, self.settings.result_ttl)
                        .await
                        .map(|()| p),
                )
            }
            _ => None,
        };
        let outcome = match &sent {
            Ok(resp) => Execution::Done {
                status: resp.status.as_u16(),
            },
            Err(e) => Execution::Failed {
                reason: e.to_string(),
            },
        };
        self.store.finish_execution(id, outcome).await?;
        self.record_execution(&a, mode, &sent).await;
        let parked = parked.transpose()?;
        sent.map(|resp| (a, resp, parked))
    }

    async fn send_claimed(
        &self,
        a: &Approval,
        body_cap: usize,
    ) -> Result<UpstreamResponse, ExecuteError> {
        let stored = self
            .store
            .stored_request(&a.id)
            .await?
            .ok_or(ExecuteError::NotFound)?;
        let token = self.signer.sign(a, self.clock.unix())?;
        let evidence = Evidence {
            approval_id: &a.id,
            token: &token,
        };
        Ok(self.executor.send(&stored, &evidence, body_cap).await?)
    }

    async fn record_execution(
        &self,
        a: &Approval,
        mode: &str,
        sent: &Result<UpstreamResponse, ExecuteError>,
    ) {
        let (event, fields, notice) = match sent {
            Ok(resp) => (
                "request.forwarded",
                json!({
                    "approval_id": a.id.as_str(),
                    "rule": a.rule,
                    "actor": "countersign",
                    "mode": mode,
                    "method": a.method,
                    "host": a.host,
                    "path": a.path,
                    "request_hash": a.request_hash,
                    "upstream_status": resp.status.as_u16(),
                }),
                NotifyEvent::Executed {
                    status: resp.status.as_u16(),
                },
            ),
            Err(e) => (
                "request.failed",
                json!({
                    "approval_id": a.id.as_str(),
                    "rule": a.rule,
                    "actor": "countersign",
                    "mode": mode,
                    "error": e.to_string(),
                }),
                NotifyEvent::ExecutionFailed,
            ),
        };
        if let Some(m) = &self.metrics {
            let result = if sent.is_ok() { "ok" } else { "error" };
            m.approval_executions
                .with_label_values(&[mode, result])
                .inc();
        }
        // The upstream call already happened; a failed audit write cannot undo it, so it is
        // logged loudly instead of hiding the upstream's answer from the caller.
        if let Err(e) = self.audit.record(event, fields).await {
            tracing::error!(approval_id = %a.id, error = %e, event, "audit failed after upstream call");
        }
        self.notify(a, notice).await;
    }

    // ----- background --------------------------------------------------------------------

    /// Starts the background task: executes approved requests nobody holds (woken by change
    /// notifications, and by a periodic sweep so a lost notification only delays), expires
    /// overdue approvals and cleans the store. Abort the handle to stop it.
    pub fn spawn_background(&self) -> JoinHandle<()> {
        let broker = self.clone();
        tokio::spawn(async move { broker.run_background().await })
    }

    async fn run_background(self) {
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

    async fn notify(&self, a: &Approval, event: NotifyEvent) {
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
        let (name, mut fields) = match &failure {
            None => ("notify.sent", json!({})),
            Some(err) => {
                tracing::warn!(approval_id = %a.id, event = event.as_str(), error = %err, "notification failed");
                ("notify.failed", json!({ "error": err }))
            }
        };
        fields["approval_id"] = json!(a.id.as_str());
        fields["rule"] = json!(a.rule);
        fields["actor"] = json!("countersign");
        fields["notify_event"] = json!(event.as_str());
        if let Err(e) = self.audit.record(name, fields).await {
            tracing::error!(approval_id = %a.id, error = %e, "audit failed for {name}");
        }
    }

    fn record_decision_metrics(&self, a: &Approval) {
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

    async fn refresh_pending_gauge(&self) {
        let Some(m) = &self.metrics else { return };
        if let Ok(pending) = self.store.list(ListFilter::Pending, usize::MAX).await {
            m.approvals_pending.set(pending.len() as i64);
        }
    }
}

/// Whether the voter is the requester: same (iss, sub), or the same email.
fn is_requester(r: &Requester, voter: &ApproverIdentity, email: &str) -> bool {
    let same_subject = matches!((&voter.iss, &voter.sub), (Some(iss), Some(sub)) if r.is(iss, sub));
    let same_email = r.email.as_deref() == Some(email);
    same_subject || same_email
}

/// Resolves when `id` changed (or notifications were lost, so the caller re-reads).
async fn next_change_of(changes: &mut broadcast::Receiver<ApprovalId>, id: &ApprovalId) {
    loop {
        match changes.recv().await {
            Ok(changed) if &changed == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            // No more notifications: let the periodic re-read do the work.
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn requested_fields(a: &Approval) -> Value {
    json!({
        "approval_id": a.id.as_str(),
        "rule": a.rule,
        "actor": a.requester.email.clone().unwrap_or_else(|| a.requester.sub.clone()),
        "requester_iss": a.requester.iss,
        "requester_sub": a.requester.sub,
        "requester_email": a.requester.email,
        "method": a.method,
        "host": a.host,
        "path": a.path,
        "request_hash": a.request_hash,
        "body_len": a.body_len,
        "reason": a.reason,
        "approvers": a.approvers.join(","),
        "quorum": a.quorum,
        "self_approval": a.self_approval,
        "expires_at": a.expires_at,
    })
}

fn decided_fields(a: &Approval) -> Value {
    json!({
        "approval_id": a.id.as_str(),
        "rule": a.rule,
        "actor": a.decided_by,
        "approvers": a.approved_by().join(","),
        "reason": a.decision_reason,
        "decision_ms": a.decided_at.map(|d| d.saturating_sub(a.created_at)),
    })
}
