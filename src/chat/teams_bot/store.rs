//! What the bot must remember between requests: the posted copies of each approval card
//! (conversation reference + activity id, so every copy can be updated) and the activities
//! already handled (replay protection).
//!
//! [`BotState`] is the seam for a shared implementation (every replica updating every copy and
//! refusing a replay seen by another replica). Only [`MemoryBotState`] exists today: with
//! several replicas, a copy is updated by the replica that posted it, and a replay is refused
//! by the replica that saw the original.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalId, StoreError};

/// One posted copy of an approval card: where it is and which activity it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedCard {
    /// The conversation's Bot Connector endpoint.
    pub service_url: String,
    /// Channel or chat id.
    pub conversation_id: String,
    /// Activity id the Bot Connector returned.
    pub activity_id: String,
}

/// Shared memory of the bot.
#[async_trait]
pub trait BotState: Send + Sync + std::fmt::Debug {
    /// Remembers a posted copy of approval `id` for at least `ttl`.
    async fn add_copy(
        &self,
        id: &ApprovalId,
        copy: PostedCard,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Every copy of `id` posted so far, in posting order.
    async fn copies(&self, id: &ApprovalId) -> Result<Vec<PostedCard>, StoreError>;

    /// Records `key`; `false` when it was recorded before (within `ttl`): a replay.
    async fn first_seen(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;
}

/// [`BotState`] in this process.
#[derive(Debug)]
pub struct MemoryBotState {
    copies: moka::sync::Cache<ApprovalId, Arc<Mutex<Vec<PostedCard>>>>,
    seen: moka::sync::Cache<String, ()>,
}

impl MemoryBotState {
    /// Copies are kept `copies_ttl` after their last use, activity keys `seen_ttl`.
    pub fn new(copies_ttl: Duration, seen_ttl: Duration) -> Self {
        Self {
            copies: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(copies_ttl)
                .build(),
            seen: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(seen_ttl)
                .build(),
        }
    }
}

#[async_trait]
impl BotState for MemoryBotState {
    async fn add_copy(
        &self,
        id: &ApprovalId,
        copy: PostedCard,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        let list = self
            .copies
            .get_with(id.clone(), || Arc::new(Mutex::new(Vec::new())));
        lock(&list).push(copy);
        Ok(())
    }

    async fn copies(&self, id: &ApprovalId) -> Result<Vec<PostedCard>, StoreError> {
        Ok(self
            .copies
            .get(id)
            .map(|list| lock(&list).clone())
            .unwrap_or_default())
    }

    async fn first_seen(&self, key: &str, _ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.seen.entry(key.to_owned()).or_insert(()).is_fresh())
    }
}

/// A poisoned lock still holds valid data (plain pushes).
fn lock(m: &Mutex<Vec<PostedCard>>) -> std::sync::MutexGuard<'_, Vec<PostedCard>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
