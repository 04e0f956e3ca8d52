//! The approval store inside one process (`store = "memory"`): a map under a mutex, so every
//! [`ApprovalStore::update`] is trivially atomic.
//!
//! Owns storage only: evictions by TTL, parked results, the in-process change broadcast. Must
//! not decide anything about the lifecycle (that is [`crate::approval::transition`], applied
//! through `update`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{newest_first, ApprovalStore, Cas, Change, ListFilter, ParkedResult, StoreError};
use crate::approval::record::{Approval, ApprovalId, StoredRequest};

/// One approval in memory, with its evictions.
#[derive(Debug)]
struct Entry {
    approval: Approval,
    request: StoredRequest,
    evict_at: u64,
    result: Option<(ParkedResult, u64)>,
}

/// A store inside this process (`store = "memory"`).
#[derive(Debug)]
pub struct MemoryStore {
    entries: Mutex<HashMap<ApprovalId, Entry>>,
    changes: broadcast::Sender<ApprovalId>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            entries: Mutex::new(HashMap::new()),
            changes,
        }
    }

    /// Runs `f` on the map under the lock. A poisoned lock only means another task panicked
    /// mid-update; every update below is a single assignment sequence, so the data is usable.
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ApprovalId, Entry>) -> T) -> T {
        let mut guard = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl ApprovalStore for MemoryStore {
    async fn create(
        &self,
        approval: &Approval,
        request: &StoredRequest,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let evict_at = approval.created_at.saturating_add(ms(ttl));
        self.with(|m| {
            if m.contains_key(&approval.id) {
                return Err(StoreError::unavailable(format!(
                    "duplicate approval id {}",
                    approval.id
                )));
            }
            m.insert(
                approval.id.clone(),
                Entry {
                    approval: approval.clone(),
                    request: request.clone(),
                    evict_at,
                    result: None,
                },
            );
            Ok(())
        })
    }

    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        Ok(self.with(|m| m.get(id).map(|e| e.approval.clone())))
    }

    async fn stored_request(&self, id: &ApprovalId) -> Result<Option<StoredRequest>, StoreError> {
        Ok(self.with(|m| m.get(id).map(|e| e.request.clone())))
    }

    async fn update(
        &self,
        id: &ApprovalId,
        _now: u64,
        change: &mut Change<'_>,
    ) -> Result<Cas, StoreError> {
        // The rules leave an approval untouched when they decline, so deciding in place under
        // the lock is the compare-and-set.
        Ok(self.with(|m| {
            let Some(e) = m.get_mut(id) else {
                return Cas::NotFound;
            };
            if change(&mut e.approval) {
                Cas::Applied(e.approval.clone())
            } else {
                Cas::Conflict(e.approval.clone())
            }
        }))
    }

    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|m| match m.get_mut(id) {
            None => Err(StoreError::unavailable(format!(
                "no approval {id} to park a result for"
            ))),
            Some(e) => {
                let until = result.at.saturating_add(ms(ttl));
                // The record must live as long as its result.
                e.evict_at = e.evict_at.max(until);
                e.result = Some((result.clone(), until));
                Ok(())
            }
        })
    }

    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError> {
        Ok(self.with(|m| {
            m.get(id)
                .and_then(|e| e.result.as_ref().map(|(r, _)| r.clone()))
        }))
    }

    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Approval>, StoreError> {
        let all = self.with(|m| {
            m.values()
                .map(|e| &e.approval)
                .filter(|a| filter.matches(a))
                .cloned()
                .collect()
        });
        Ok(newest_first(all, limit))
    }

    async fn publish(&self, id: &ApprovalId) -> Result<(), StoreError> {
        // No receiver is not an error: nobody is waiting.
        let _ = self.changes.send(id.clone());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<ApprovalId> {
        self.changes.subscribe()
    }

    async fn cleanup(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.with(|m| {
            let before = m.len();
            for e in m.values_mut() {
                if e.result.as_ref().is_some_and(|(_, until)| now >= *until) {
                    e.result = None;
                }
            }
            m.retain(|_, e| now < e.evict_at);
            before - m.len()
        }))
    }
}
