//! Grants in the lifecycle (SPEC 9): made when an approval completes with every approving vote
//! asking for one ([`Broker::make_grant`]), used by the same requester's later matching
//! requests ([`Broker::pass_under_grant`]), listed and revoked by approvers
//! ([`Broker::grants_for`], [`Broker::revoke_grant`]).
//!
//! Owns the order of each: a grant is audited before it is stored (nothing passes under a grant
//! the audit log does not have); a use is stored, then audited, and forwarded only once audited;
//! a revocation is stored (it takes effect at once), then audited. Must not decide whether a grant matches or is live
//! (that is [`super::grant`]) nor touch pingora, axum or HTML.

use super::broker::Broker;
use super::error::{BrokerError, RevokeError};
use super::grant::{self, Grant};
use super::ports::AuditEvent;
use super::record::{Approval, Granted, Requester, Status, StoredRequest};
use crate::identity::Principal;
use crate::policy::Rule;

/// Who is asking to see or revoke grants: a verified email (approvers) and the token's
/// issuer and subject (requesters see their own).
#[derive(Debug, Clone)]
pub struct GrantViewer<'a> {
    /// Lowercase email, when the caller is identified as a person.
    pub email: Option<&'a str>,
    /// Token issuer.
    pub iss: &'a str,
    /// Token subject.
    pub sub: &'a str,
}

impl Broker {
    /// Makes the grant approval `a` asked for, if it did ([`grant::from_approval`]): audits
    /// `grant.created` first, then stores it, so no request can pass under a grant the audit
    /// log does not have. Never fails the approval: a grant that cannot be audited or stored is
    /// not made (a stored-after-audit failure is logged), and later requests are held as usual.
    pub(super) async fn make_grant(&self, a: &Approval) {
        let Some(g) = grant::from_approval(a, self.now_ms()) else {
            return;
        };
        let created = AuditEvent::GrantCreated {
            approval: a,
            grant: &g,
        };
        if let Err(e) = self.audit.record(created).await {
            tracing::error!(approval_id = %a.id, error = %e, "grant not made: audit failed");
            return;
        }
        if let Err(e) = self.store.put_grant(&g).await {
            tracing::error!(approval_id = %a.id, grant_id = %g.id, error = %e,
                "grant audited but not made: store failed; no request will pass under it");
        }
    }

    /// If `principal` holds a live grant for this request under `rule` (same rule, method,
    /// host and path), takes one use (cluster-wide), records an approval approved under it and
    /// audits `grant.used`; the caller then forwards it with [`Broker::execute`] (it is held,
    /// so only the caller may). `Ok(None)`: no grant applies (the request is held as usual).
    /// On an error nothing may be forwarded.
    pub async fn pass_under_grant(
        &self,
        rule: &Rule,
        principal: &Principal,
        stored: &mut StoredRequest,
        reason: Option<String>,
    ) -> Result<Option<(Approval, Grant)>, BrokerError> {
        let Some(spec) = rule.approval.as_ref().filter(|s| s.grant.is_some()) else {
            return Ok(None);
        };
        let requester = Requester::from_principal(principal);
        stored.subject.clone_from(&requester.sub);
        stored.issuer.clone_from(&requester.iss);
        let key = grant::lookup_key(
            &requester,
            &rule.name,
            &stored.method,
            &stored.host,
            &stored.path,
        );
        let now = self.now_ms();
        let Some(g) = self.store.use_grant(&key, now).await? else {
            return Ok(None);
        };
        let mut a = self.draft(&rule.name, spec, requester, stored, reason, now);
        a.status = Status::Approved;
        a.decided_by = Some(g.approvers.join(", "));
        a.decided_at = Some(now);
        a.grant_offer = None; // a use of a grant makes no grant
        a.granted = Some(Granted {
            grant_id: g.id.clone(),
            from_approval: g.approval_id.clone(),
            approvers: g.approvers.clone(),
        });
        let ttl = spec.expires.saturating_add(self.settings.retention);
        let used = AuditEvent::GrantUsed {
            approval: &a,
            grant: &g,
            request_id: stored.request_id.as_deref(),
        };
        // Unrecorded, so never forwarded.
        self.create_audited(&a, stored, ttl, used).await?;
        if let Some(m) = &self.metrics {
            m.grant_uses.with_label_values(&[&rule.name]).inc();
        }
        tracing::info!(approval_id = %a.id, grant_id = %g.id, rule = %rule.name,
            uses = g.uses, uses_max = g.uses_max, "request passed under a grant");
        Ok(Some((a, g)))
    }

    /// The grants `who` may see that have not expired: their own, and those made by
    /// approvals they were an approver of. Newest first.
    pub async fn grants_for(&self, who: &GrantViewer<'_>) -> Result<Vec<Grant>, BrokerError> {
        let mut all = self.store.grants(self.now_ms()).await?;
        all.retain(|g| g.visible_to(who.email, who.iss, who.sub));
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Revokes grant `id` for `who` (its requester or an approver of the approval that made
    /// it), at once on every replica, and audits `grant.revoked`. Revoking a revoked grant
    /// changes nothing and answers it again.
    pub async fn revoke_grant(
        &self,
        id: &str,
        who: &GrantViewer<'_>,
    ) -> Result<Grant, RevokeError> {
        let now = self.now_ms();
        let found = self
            .store
            .grants(now)
            .await?
            .into_iter()
            .find(|g| g.id == id && g.visible_to(who.email, who.iss, who.sub));
        let Some(found) = found else {
            return Err(RevokeError::NotFound);
        };
        if found.revoked_by.is_some() {
            return Ok(found);
        }
        let by = who.email.unwrap_or(who.sub);
        let revoked = self
            .store
            .revoke_grant(id, by)
            .await?
            .ok_or(RevokeError::NotFound)?;
        let event = AuditEvent::GrantRevoked {
            grant: &revoked,
            by,
        };
        // Revoked already (fail closed); a failed audit is reported to the caller.
        self.audit.record(event).await?;
        Ok(revoked)
    }
}

/// Human form of a grant's length, e.g. "15 min" (for "Approve for 15 min" buttons).
pub fn ttl_label(ttl_ms: u64) -> String {
    let secs = ttl_ms / 1000;
    match secs {
        s if s % 3600 == 0 && s >= 3600 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttl_labels_read_as_people_say_them() {
        assert_eq!(super::ttl_label(15 * 60_000), "15 min");
        assert_eq!(super::ttl_label(2 * 3_600_000), "2 h");
        assert_eq!(super::ttl_label(90_000), "90 s");
    }
}
