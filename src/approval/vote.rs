//! Votes: who may vote on an approval and what one vote does ([`Broker::check_voter`],
//! [`Broker::decide`]), in the broker's order (store write -> audit -> publish -> notify). A vote
//! that completes an approval is executable only after `vote.cast` and `approval.approved` are
//! durable (SPEC 8). Owns the vote path only; the counting rules are [`super::transition`]'s.

use super::broker::Broker;
use super::error::DecideError;
use super::ports::{AuditError, AuditEvent, NotifyEvent};
use super::record::{
    Approval, ApprovalId, ApproverIdentity, Channel, Decision, Requester, Status, Vote,
};
use super::store::{Cas, VoteResult};
use crate::notify::ApproveVia;

impl Broker {
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
        self.decide_granting(id, approver, decision, reason, false)
            .await
    }

    /// [`Self::decide`], where `grant` asks for a grant with an approval (SPEC 9, "Approve
    /// for 15 min"): refused with [`DecideError::GrantNotAllowed`] on a deny or when the rule
    /// makes no grants. When the approval completes and every approving vote asked for one,
    /// the grant is made ([`super::grant::from_approval`]) and audited `grant.created`.
    pub async fn decide_granting(
        &self,
        id: &ApprovalId,
        approver: ApproverIdentity,
        decision: Decision,
        reason: Option<String>,
        grant: bool,
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
        // Only someone who may vote learns whether the rule makes grants.
        if grant && (decision != Decision::Approve || approval.grant_offer.is_none()) {
            return Err(DecideError::GrantNotAllowed);
        }
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
            grant,
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
                    Ok(()) => self.audit.record(AuditEvent::Denied(&a)).await,
                    Err(e) => Err(e),
                };
                if recorded.is_ok() {
                    self.confirm_end(&a).await;
                }
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
            Ok(()) => self.audit.record(AuditEvent::Approved(&a)).await,
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
        // Only now, with `vote.cast` and `approval.approved` durable, may anyone execute it
        // (SPEC 8). A store failure here leaves it unexecutable: fail closed.
        let a = match self.store.confirm_audited(&a.id).await? {
            Cas::Applied(confirmed) => confirmed,
            // Withdrawn meanwhile (the caller hung up): nothing to confirm.
            Cas::Conflict(current) => current,
            Cas::NotFound => a,
        };
        // The grant is made before the holder is woken, so the approved request's own answer
        // and the next request see it. Failing to make it loses only the reuse: the approval
        // stands, and later requests are held as usual (fail closed).
        self.make_grant(&a).await;
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
        self.audit
            .record(AuditEvent::VoteCast {
                approval: a,
                approver,
                vote,
            })
            .await
    }
}

/// Whether the voter is the requester: same (iss, sub), or the same email.
pub(super) fn is_requester(r: &Requester, voter: &ApproverIdentity, email: &str) -> bool {
    let same_subject = matches!((&voter.iss, &voter.sub), (Some(iss), Some(sub)) if r.is(iss, sub));
    let same_email = r.email.as_deref() == Some(email);
    same_subject || same_email
}
