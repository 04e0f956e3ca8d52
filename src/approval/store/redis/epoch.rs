//! The store's epoch: how a replica notices that Redis came back without its data. Owns the
//! `cs:epoch` key only; must not read or write records.

use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::keys::EPOCH;

/// The store's epoch (`cs:epoch`): a random value the first replica to connect writes with
/// `SET NX`. Redis restarted without its data has no epoch; the next replica to connect writes a
/// new one, and every replica that knew the old one counts a reset ([`ApprovalStore::resets`]):
/// the approvals it held may be gone, and the broker fails them closed and audits it.
#[derive(Debug, Default)]
pub(super) struct Epoch {
    known: std::sync::Mutex<Option<String>>,
    pub(super) resets: std::sync::atomic::AtomicU64,
}

impl Epoch {
    pub(super) async fn check(&self, client: &redis::Client) -> redis::RedisResult<()> {
        let mut c = client.get_multiplexed_async_connection().await?;
        let fresh = crate::approval::record::ApprovalId::generate();
        let mut set = redis::cmd("SET");
        set.arg(EPOCH).arg(fresh.as_str()).arg("NX");
        let _: Option<String> = set.query_async(&mut c).await?;
        let now: Option<String> = c.get(EPOCH).await?;
        let mut known = crate::approval::store::unpoisoned(&self.known);
        match (known.as_deref(), now.as_deref()) {
            (Some(old), Some(new)) if old != new => {
                self.resets.fetch_add(1, Ordering::SeqCst);
                tracing::error!(
                    "the approval store lost its data (Redis came back without its epoch key): \
                     approvals pending before are gone and fail closed"
                );
            }
            _ => {}
        }
        if now.is_some() {
            *known = now;
        }
        Ok(())
    }
}
