//! Audit lines owed: the line of an end (approved, denied, expired, cancelled) that the store
//! has but the audit log may not, because the replica that made the end died before writing
//! it, or its store write timed out although Redis applied it. Any replica's sweep writes the
//! line once [`super::transition::AUDIT_GRACE`] passed (the event with `recorded_late: true`),
//! clears the debt, and does what the end's replica would have done next (tell approvers; for
//! an approval, make its grant and wake its holder). The rules are in
//! [`super::transition`] (`audit_owed`, `confirm_audited`).
//!
//! Owns the late write only; must not decide or change an approval's state.

use super::broker::Broker;
use super::ports::{AuditEvent, NotifyEvent};
use super::record::{Approval, Status};
use super::store::Cas;

impl Broker {
    /// Writes the owed line of `a`'s end, then clears the debt. Returns whether it wrote one.
    /// Nothing is cleared when the audit log refuses the line: a later sweep tries again.
    pub(super) async fn write_owed_audit(&self, a: &Approval) -> bool {
        let actor = a.decided_by.as_deref().unwrap_or("countersign");
        let reason = a.decision_reason.as_deref().unwrap_or("");
        let (end, told) = match a.status {
            Status::Approved => (AuditEvent::Approved(a), NotifyEvent::Approved),
            Status::Denied => (AuditEvent::Denied(a), NotifyEvent::Denied),
            Status::Expired => (AuditEvent::Expired(a), NotifyEvent::Expired),
            Status::Cancelled => (
                AuditEvent::Cancelled {
                    approval: a,
                    actor,
                    reason,
                },
                NotifyEvent::Cancelled,
            ),
            Status::Pending | Status::Review | Status::Acknowledged => return false,
        };
        if let Err(e) = self.audit.record(AuditEvent::Late(&end)).await {
            tracing::error!(approval_id = %a.id, error = %e, "audit log refused an owed line; retried later");
            return false;
        }
        tracing::warn!(approval_id = %a.id, status = a.status.as_str(),
            "wrote the audit line of an end its replica never recorded (recorded_late)");
        let a = match self.store.confirm_audited_end(&a.id, a.status).await {
            Ok(Cas::Applied(a)) => a,
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(approval_id = %a.id, error = %e, "owed line written; the store could not note it");
                return true;
            }
        };
        if a.status == Status::Approved {
            self.make_grant(&a).await;
        }
        let _ = self.store.publish(&a.id).await;
        self.record_decision_metrics(&a);
        self.refresh_pending_gauge().await;
        self.notify(&a, told).await;
        true
    }
}
