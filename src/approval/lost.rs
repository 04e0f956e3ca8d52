//! When the shared store loses data (Redis restarted without persistence, or a record evicted
//! by hand): a held caller whose approval record is gone is answered 503, never let through,
//! and it is audited as `record.lost`; each time the store reports that it lost everything
//! ([`super::store::ApprovalStore::resets`]), the sweep audits `store.reset` once per replica.
//!
//! A held approval's record cannot vanish by itself: records outlive `expires` (config refuses
//! `hold > expires`) and cancelled or decided ones are kept. So "gone while held" always means
//! lost. Owns these two answers only; must not decide anything else.

use std::sync::atomic::Ordering;

use super::broker::Broker;
use super::error::BrokerError;
use super::ports::AuditEvent;
use super::record::ApprovalId;

/// What `record.lost` says.
const LOST: &str = "the approval store no longer has this approval (store restarted without its data?); failed closed";

impl Broker {
    /// The answer for a held caller whose record is gone: audited `record.lost`, then
    /// [`BrokerError::Lost`] (503 to the caller).
    pub(super) async fn lost(&self, id: &ApprovalId) -> BrokerError {
        tracing::error!(approval_id = %id, "{LOST}");
        let event = AuditEvent::Lost { id, error: LOST };
        if let Err(e) = self.audit.record(event).await {
            tracing::error!(approval_id = %id, error = %e, "audit of a lost record failed");
        }
        BrokerError::Lost
    }

    /// Audits `store.reset` once for every loss the store reported since the last call.
    pub(super) async fn audit_store_resets(&self) {
        let now = self.store.resets();
        let seen = self.resets_seen.swap(now, Ordering::SeqCst);
        for _ in seen..now {
            if let Err(e) = self.audit.record(AuditEvent::StoreReset).await {
                tracing::error!(error = %e, "audit of a store reset failed");
            }
        }
    }
}
