//! The record of a new approval for a stored request under a rule ([`Broker::draft`]), shared
//! by the three ways one is made: held for votes ([`Broker::submit`]), forwarded at once by
//! break-glass ([`Broker::break_glass`]) and passed under a grant ([`Broker::pass_under_grant`]).
//!
//! Owns the fields every new approval fills the same way (what is shown and bound, who may
//! vote, the rule's terms). Must not write the store, audit or notify: each caller sets its
//! own status and then does that in its own order.

use std::time::Duration;

use super::broker::Broker;
use super::error::BrokerError;
use super::ports::AuditEvent;
use super::preview::{body_preview_of, body_sha256, shown_headers};
use super::quorum;
use super::record::{
    expand_approvers, Approval, ApprovalId, Execution, GrantOffer, Requester, Status, StoredRequest,
};
use super::transition;
use crate::clock::duration_ms as ms;
use crate::policy::ApprovalSpec;

impl Broker {
    /// Stores new approval `a` with its request for `ttl`, then writes `event` (which records
    /// it) to the audit log. An approval the audit log does not have must not live on: it is
    /// withdrawn (cancelled) and the audit error returned, so nobody acts on it.
    pub(super) async fn create_audited(
        &self,
        a: &Approval,
        stored: &StoredRequest,
        ttl: Duration,
        event: AuditEvent<'_>,
    ) -> Result<(), BrokerError> {
        self.store.create(a, stored, ttl).await?;
        if let Err(e) = self.audit.record(event).await {
            let now = self.now_ms();
            let _ = self
                .store
                .cancel(&a.id, "countersign", "audit log unavailable", now)
                .await;
            return Err(e.into());
        }
        Ok(())
    }

    /// A new `Pending`, held approval of `stored` by `requester` under rule `rule` at `now`:
    /// approvers are the rule's with groups expanded (no on-call lookup: [`Self::submit`]
    /// replaces them), expiring after the rule's `expires`, no votes, no nudges planned.
    /// `stored` must already name `requester` as its subject and issuer.
    pub(super) fn draft(
        &self,
        rule: &str,
        spec: &ApprovalSpec,
        requester: Requester,
        stored: &StoredRequest,
        reason: Option<String>,
        now: u64,
    ) -> Approval {
        let (body_preview, body_preview_cut) =
            body_preview_of(&stored.body, stored.content_type(), &spec.redact);
        Approval {
            id: ApprovalId::generate(),
            rule: rule.to_owned(),
            requester,
            method: stored.method.clone(),
            host: stored.host.clone(),
            path: stored.path.clone(),
            query: stored.query.clone(),
            request_hash: stored.hash_hex(),
            reason: reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty()),
            body_preview,
            body_len: stored.body.len() as u64,
            body_preview_cut,
            body_sha256: body_sha256(&stored.body),
            headers: shown_headers(&stored.headers),
            approvers: expand_approvers(&spec.approvers, &self.groups),
            quorum: spec.quorum.total(),
            quorum_entries: quorum::resolve(&spec.quorum, &self.groups),
            self_approval: spec.self_approval,
            approve_via: spec.approve_via,
            notify: spec.notify.clone(),
            created_at: now,
            expires_at: now.saturating_add(ms(spec.expires)),
            votes: Vec::new(),
            status: Status::Pending,
            decided_by: None,
            decision_reason: None,
            decided_at: None,
            held: true,
            held_until: Some(transition::hold_lease_from(now)),
            holder: None,
            execution: Execution::NotStarted,
            audit_pending: false,
            nudges: Default::default(),
            break_glass: None,
            grant_offer: spec.grant.map(GrantOffer::from),
            granted: None,
        }
    }
}
