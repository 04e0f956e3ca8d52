//! Governed break-glass (SPEC 9, `break_glass = true`): a request sent with
//! `Countersign-Break-Glass: <reason>` is recorded as an approval in [`Status::Review`],
//! audited (`approval.break_glass`), announced to the approvers and then forwarded at once by
//! the holder through the one execution path ([`Broker::execute`]), with `"break_glass": true`
//! in its `Countersign-Approval`. An approver acknowledges it afterwards
//! ([`Broker::acknowledge`], `approval.acknowledged`). `break_glass_cooldown` allows one use per
//! requester and rule per period, counted in the store (cluster-wide on Redis).
//!
//! Owns the break-glass order: cooldown -> create -> audit -> notify; and acknowledgement.
//! Must not decide transitions itself ([`super::transition`]) nor touch pingora, axum or HTML.
//! Fail closed: a store or audit failure returns an error and nothing is forwarded.

use std::time::Duration;

use super::broker::Broker;
use super::error::{BrokerError, DecideError};
use super::ports::{AuditEvent, NotifyEvent};
use super::record::{
    Approval, ApprovalId, ApproverIdentity, BreakGlass, Requester, Status, StoredRequest,
};
use super::store::Cas;
use super::transition;
use crate::identity::Principal;
use crate::policy::Rule;

/// How long a break-glass record is kept for review at least (it stays `review` until
/// acknowledged; a store drops records after their TTL).
pub const REVIEW_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest break-glass reason kept (longer reasons are cut).
pub const MAX_REASON_CHARS: usize = 1000;

/// The cooldown key of `requester` on `rule`: length-prefixed so no two pairs collide.
pub fn cooldown_key(rule: &str, requester: &Requester) -> String {
    format!(
        "break_glass:{}:{rule}:{}:{}:{}",
        rule.len(),
        requester.iss.len(),
        requester.iss,
        requester.sub
    )
}

impl Broker {
    /// Records a break-glass use of `rule` by `requester` for `stored` and tells the approvers;
    /// the caller then forwards it with [`Broker::execute`] (the approval is `held`, so only
    /// the caller may). Errors, in which case nothing may be forwarded: an empty `reason`, the
    /// cooldown running, a rule without `break_glass = true`, the store or the audit log failing.
    pub async fn break_glass(
        &self,
        rule: &Rule,
        principal: &Principal,
        stored: StoredRequest,
        reason: &str,
        caller_reason: Option<String>,
    ) -> Result<Approval, BrokerError> {
        let spec = rule
            .approval
            .as_ref()
            .filter(|s| s.break_glass)
            .ok_or_else(|| BrokerError::NotAnApprovalRule(rule.name.clone()))?;
        let reason: String = reason.trim().chars().take(MAX_REASON_CHARS).collect();
        if reason.is_empty() {
            return Err(BrokerError::BreakGlassReasonRequired);
        }
        let requester = Requester::from_principal(principal);
        let now = self.now_ms();
        if let Some(cooldown) = spec.break_glass_cooldown {
            let key = cooldown_key(&rule.name, &requester);
            if let Some(left) = self.store.start_cooldown(&key, cooldown, now).await? {
                return Err(BrokerError::BreakGlassCooldown { left });
            }
        }
        let mut stored = stored;
        stored.subject.clone_from(&requester.sub);
        stored.issuer.clone_from(&requester.iss);
        let who = requester
            .email
            .clone()
            .unwrap_or_else(|| requester.sub.clone());
        let caller_reason = caller_reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let reason_shown = caller_reason.or_else(|| Some(reason.clone()));
        let mut approval = self.draft(&rule.name, spec, requester, &stored, reason_shown, now);
        approval.status = Status::Review;
        approval.decided_by = Some(who);
        approval.decision_reason = Some(reason.clone());
        approval.decided_at = Some(now);
        // Held (by `draft`): only this caller's proxy may execute it, never the background.
        approval.break_glass = Some(BreakGlass {
            reason,
            acknowledged_by: None,
            acknowledged_at: None,
        });
        let ttl = spec
            .expires
            .max(REVIEW_KEPT)
            .saturating_add(self.settings.retention);
        let event = AuditEvent::BreakGlass {
            approval: &approval,
            request_id: stored.request_id.as_deref(),
        };
        // Unrecorded, so never forwarded.
        self.create_audited(&approval, &stored, ttl, event).await?;
        if let Some(m) = &self.metrics {
            m.break_glass.with_label_values(&[&rule.name]).inc();
        }
        tracing::warn!(approval_id = %approval.id, rule = %rule.name,
            "BREAK-GLASS: forwarded without approval; approvers must review it");
        // Told before it is forwarded (bounded by `notify_timeout`), so the copies exist when
        // the execution updates them.
        self.notify(&approval, NotifyEvent::Requested).await;
        Ok(approval)
    }

    /// Whether `approver` may acknowledge `a` now, by the rules of [`Self::acknowledge`] (for
    /// pages offering an Acknowledge button).
    pub fn check_acknowledger(
        &self,
        a: &Approval,
        approver: &ApproverIdentity,
    ) -> Result<(), DecideError> {
        let email = approver.email.trim().to_lowercase();
        if !a.approvers.contains(&email) {
            return Err(DecideError::NotAnApprover);
        }
        if a.status != Status::Review {
            return Err(DecideError::AlreadyDecided(a.status));
        }
        if super::vote::is_requester(&a.requester, approver, &email) {
            return Err(DecideError::OwnRequest);
        }
        Ok(())
    }

    /// An approver acknowledges break-glass `id` (SPEC 9): `review -> acknowledged`, audited
    /// `approval.acknowledged`. Refused for non-approvers, for the requester themself, and
    /// ([`DecideError::AlreadyDecided`] with the current status) for anything not in review.
    /// Any channel may acknowledge, also on `approve_via = "login"` rules: it only records
    /// that someone looked, it releases nothing.
    pub async fn acknowledge(
        &self,
        id: &ApprovalId,
        approver: ApproverIdentity,
    ) -> Result<Approval, DecideError> {
        let a = self.store.get(id).await?.ok_or(DecideError::NotFound)?;
        self.check_acknowledger(&a, &approver)?;
        let email = approver.email.trim().to_lowercase();
        let now = self.now_ms();
        let changed = self
            .store
            .update(id, &mut |a| transition::acknowledge(a, &email, now))
            .await?;
        let a = match changed {
            Cas::Applied(a) => a,
            Cas::Conflict(a) => return Err(DecideError::AlreadyDecided(a.status)),
            Cas::NotFound => return Err(DecideError::NotFound),
        };
        let recorded = self
            .audit
            .record(AuditEvent::Acknowledged {
                approval: &a,
                approver: &approver,
            })
            .await;
        self.store.publish(id).await?;
        recorded?;
        self.notify(&a, NotifyEvent::VoteCast).await;
        Ok(a)
    }
}
