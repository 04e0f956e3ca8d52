//! [`RecordingAudit`]: an in-memory [`AuditSink`] for broker-level tests. It keeps every event
//! as (kind, flat JSON of its fields), exactly what the hash-chained log would record, and can
//! be told to fail like a full disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use countersign::approval::{ApprovalId, AuditError, AuditEvent, AuditSink};
use serde_json::Value;

/// Records audit events in memory; `fail` makes every record fail.
#[derive(Debug, Default)]
pub struct RecordingAudit {
    /// (kind, fields) in order.
    pub events: Mutex<Vec<(String, Value)>>,
    /// When set, `record` fails with "disk full".
    pub fail: AtomicBool,
    /// `(kind, delay, fail)`: writing an event of `kind` takes `delay`, then fails if `fail`
    /// (a slow or dying disk at exactly that step).
    pub stall_at: Mutex<Option<(String, std::time::Duration, bool)>>,
}

#[async_trait]
impl AuditSink for RecordingAudit {
    async fn record(&self, event: AuditEvent<'_>) -> Result<(), AuditError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(AuditError("disk full".into()));
        }
        let stall = self.stall_at.lock().unwrap().clone();
        if let Some((kind, delay, fail)) = stall.filter(|(k, _, _)| k == event.kind()) {
            let _ = kind;
            tokio::time::sleep(delay).await;
            if fail {
                return Err(AuditError("disk died".into()));
            }
        }
        let e = event.to_event();
        let entry = (e.kind().to_owned(), e.to_flat_json());
        self.events.lock().unwrap().push(entry);
        Ok(())
    }
}

impl RecordingAudit {
    /// Kinds recorded for `id`, in order, without `notify.*`.
    pub fn names_for(&self, id: &ApprovalId) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| f["approval_id"] == id.as_str())
            .map(|(e, _)| e.clone())
            .filter(|e| !e.starts_with("notify."))
            .collect()
    }

    /// The fields of every `event` recorded for `id`.
    pub fn find(&self, id: &ApprovalId, event: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, f)| e == event && f["approval_id"] == id.as_str())
            .map(|(_, f)| f.clone())
            .collect()
    }
}
