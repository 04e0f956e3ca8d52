//! One notifier in front of several: every approval event goes to each configured channel
//! (log, Slack, Teams) at once; each channel picks its own targets from `Approval::notify`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::approval::{Approval, Notifier, NotifyError, NotifyEvent};

/// Delivers to every inner notifier concurrently; fails if any failed (so the broker audits
/// `notify.failed` naming which), never stops the others.
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    inner: Vec<(&'static str, Arc<dyn Notifier>)>,
}

impl Fanout {
    /// No channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a channel under `name` (used in failure messages).
    pub fn with(mut self, name: &'static str, notifier: Arc<dyn Notifier>) -> Self {
        self.inner.push((name, notifier));
        self
    }
}

#[async_trait]
impl Notifier for Fanout {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        let results = futures::future::join_all(
            self.inner
                .iter()
                .map(|(name, n)| async move { (name, n.notify(approval, event).await) }),
        )
        .await;
        let failures: Vec<String> = results
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {}", e.0)))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NotifyError(failures.join("; ")))
        }
    }
}
