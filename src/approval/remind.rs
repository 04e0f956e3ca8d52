//! The broker's side of reminders and escalation (SPEC 9): when the sweep finds one due
//! ([`super::nudge::due`]), claim it through the store's compare-and-set, and only if this
//! replica's claim landed, audit and notify. Two replicas sweeping the same approval therefore
//! send each reminder, and the escalation, once.
//!
//! Owns the order claim -> audit -> publish -> notify for these two steps. Must not decide
//! when they are due (that is [`super::nudge`]) and must not touch chat APIs or HTTP.

use super::broker::Broker;
use super::nudge;
use super::ports::{AuditEvent, NotifyEvent};
use super::record::{expand_approvers, Approval};
use super::store::Cas;

impl Broker {
    /// Sends what is due on `a` at `now`: the escalation, then a reminder. Returns whether
    /// this replica sent anything.
    pub async fn nudge_due(&self, a: &Approval, now: u64) -> bool {
        let mut sent = false;
        if nudge::escalation_due(a, now) {
            sent |= self.escalate(a, now).await;
        }
        if nudge::reminder_due(a, now) {
            sent |= self.remind(a, now).await;
        }
        sent
    }

    /// Claims the escalation of `a` (its approvers resolved with the groups in force now),
    /// audits `approval.escalated`, wakes pages and holders, and notifies. Fail closed: if the
    /// audit log cannot record who was added, the request is cancelled.
    async fn escalate(&self, a: &Approval, now: u64) -> bool {
        let Some(esc) = &a.nudges.escalation else {
            return false;
        };
        let resolved = expand_approvers(&super::nudges::approvers_of(&esc.approvers), &self.groups);
        let claimed = self
            .store
            .update(&a.id, &mut |a| nudge::escalate(a, &resolved, now))
            .await;
        let a = match self.refuse_tampered(&a.id, claimed).await {
            Ok(Cas::Applied(a)) => a,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(approval_id = %a.id, error = %e, "could not escalate");
                return false;
            }
        };
        let added = a
            .nudges
            .escalation
            .as_ref()
            .map(|e| e.added.clone())
            .unwrap_or_default();
        let escalated = AuditEvent::Escalated {
            approval: &a,
            added: &added,
        };
        if let Err(e) = self.audit.record(escalated).await {
            tracing::error!(approval_id = %a.id, error = %e,
                "escalated but not audited: cancelling (fail closed)");
            let _ = self
                .cancel(&a.id, "countersign", "audit log unavailable")
                .await;
            return true;
        }
        tracing::info!(approval_id = %a.id, added = %added.join(","), "approval escalated");
        if let Err(e) = self.store.publish(&a.id).await {
            tracing::warn!(approval_id = %a.id, error = %e, "could not announce the escalation");
        }
        self.notify(&a, NotifyEvent::Escalated).await;
        true
    }

    /// Claims the reminder due on `a` (quietly: nobody waits for it) and notifies; the
    /// notification is audited (`notify.sent`, `notify_event = "reminder"`).
    async fn remind(&self, a: &Approval, now: u64) -> bool {
        let claimed = self
            .store
            .update_quietly(&a.id, &mut |a| nudge::remind(a, now))
            .await;
        match self.refuse_tampered(&a.id, claimed).await {
            Ok(Cas::Applied(a)) => {
                self.notify(&a, NotifyEvent::Reminder).await;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(approval_id = %a.id, error = %e, "could not claim a reminder");
                false
            }
        }
    }
}
