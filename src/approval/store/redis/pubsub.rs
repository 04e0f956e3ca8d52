//! The pub/sub loop of the Redis store: forwards changed approval ids from `cs:changes` to
//! this process's waiters, checks the store epoch on every (re)subscribe, and tells waiters
//! when notifications may have been missed. Owns the subscription only; must not write records.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

use super::epoch::Epoch;
use super::keys::CHANNEL;
use super::link::Link;
use crate::approval::record::ApprovalId;

/// The pub/sub loop: forwards ids from `cs:changes` into the local broadcast, re-subscribing
/// after any failure. Lives as long as the process (one per store).
pub(super) async fn listen(
    link: Arc<Link>,
    epoch: Arc<Epoch>,
    missed: Arc<tokio::sync::watch::Sender<u64>>,
    changes: broadcast::Sender<ApprovalId>,
    timeout: Duration,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        let attempt = async {
            let client = link.client(timeout).await.map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::IoError, "master", e.to_string()))
            })?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            // Every restart of Redis drops this connection, so here is where a restart that
            // lost the data is noticed.
            epoch.check(&client).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(pubsub)) => {
                match ready.take() {
                    Some(tx) => {
                        let _ = tx.send(());
                    }
                    // Back after an outage: whatever was published meanwhile is lost, so
                    // every waiter re-reads once now rather than at its next safety re-read.
                    None => missed.send_modify(|n| *n = n.wrapping_add(1)),
                }
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    let Ok(raw) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(id) = ApprovalId::parse(&raw) {
                        // No receiver is fine: nobody waits right now.
                        let _ = changes.send(id);
                    }
                }
                tracing::warn!("redis pub/sub connection closed; re-subscribing");
                // With Sentinel the master may have changed.
                link.failed().await;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "redis pub/sub: cannot subscribe"),
            Err(_) => tracing::warn!("redis pub/sub: subscribe timed out"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
