//! The approval store inside one process (`store = "memory"`): a map under a mutex, so every
//! [`ApprovalStore::update`] is trivially atomic.
//!
//! Owns storage only: evictions by TTL, parked results, the in-process change broadcast. Must
//! not decide anything about the lifecycle (that is [`crate::approval::transition`], applied
//! through `update`).
//!
//! [`MemoryChatState`] is the in-process [`ChatState`] that goes with it: posted copies and
//! seen event keys in maps with deadlines, pruned as they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::ChatState;
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
                return Err(StoreError(format!("duplicate approval id {}", approval.id)));
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
            None => Err(StoreError(format!("no approval {id} to park a result for"))),
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

/// [`ChatState`] inside one process (used with `store = "memory"`): exact per-entry TTLs on a
/// monotonic clock; expired entries are ignored at once and dropped every
/// [`MemoryChatState::PRUNE_EVERY`] writes, so memory stays bounded by what is still live.
#[derive(Debug, Default)]
pub struct MemoryChatState {
    maps: Mutex<ChatMaps>,
}

#[derive(Debug, Default)]
struct ChatMaps {
    copies: HashMap<(String, ApprovalId), (Vec<String>, std::time::Instant)>,
    seen: HashMap<(String, String), std::time::Instant>,
    writes: usize,
}

impl ChatMaps {
    /// Counts a write and drops expired entries now and then.
    fn wrote(&mut self, now: std::time::Instant) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes % MemoryChatState::PRUNE_EVERY == 0 {
            self.copies.retain(|_, (_, until)| now < *until);
            self.seen.retain(|_, until| now < *until);
        }
    }
}

impl MemoryChatState {
    /// Expired entries are swept once per this many writes.
    pub const PRUNE_EVERY: usize = 1024;

    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` under the lock; a poisoned lock still holds whole entries (single inserts).
    fn with<T>(&self, f: impl FnOnce(&mut ChatMaps) -> T) -> T {
        let mut guard = match self.maps.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

#[async_trait]
impl ChatState for MemoryChatState {
    async fn add_copy(
        &self,
        scope: &str,
        id: &ApprovalId,
        copy: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = std::time::Instant::now();
        let until = now + ttl;
        self.with(|m| {
            let entry = m
                .copies
                .entry((scope.to_owned(), id.clone()))
                .or_insert_with(|| (Vec::new(), until));
            if entry.1 <= now {
                // Expired but not swept yet: start over.
                entry.0.clear();
            }
            entry.0.push(copy.to_owned());
            entry.1 = entry.1.max(until);
            m.wrote(now);
        });
        Ok(())
    }

    async fn copies(&self, scope: &str, id: &ApprovalId) -> Result<Vec<String>, StoreError> {
        let now = std::time::Instant::now();
        Ok(self.with(|m| {
            m.copies
                .get(&(scope.to_owned(), id.clone()))
                .filter(|(_, until)| now < *until)
                .map(|(list, _)| list.clone())
                .unwrap_or_default()
        }))
    }

    async fn first_seen(&self, scope: &str, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        Ok(self.with(|m| {
            let slot = m
                .seen
                .entry((scope.to_owned(), key.to_owned()))
                .or_insert(now);
            let first = *slot <= now;
            if first {
                *slot = now + ttl;
                m.wrote(now);
            }
            first
        }))
    }
}

#[cfg(test)]
mod chat_state_tests {
    use super::*;

    #[tokio::test]
    async fn copies_keep_their_order_per_scope_and_expire() {
        let s = MemoryChatState::new();
        let id = ApprovalId::generate();
        let ttl = Duration::from_millis(150);
        s.add_copy("slack", &id, "one", ttl).await.unwrap();
        s.add_copy("slack", &id, "two", ttl).await.unwrap();
        s.add_copy("teams", &id, "card", ttl).await.unwrap();
        assert_eq!(s.copies("slack", &id).await.unwrap(), ["one", "two"]);
        assert_eq!(s.copies("teams", &id).await.unwrap(), ["card"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(s.copies("slack", &id).await.unwrap().is_empty());
        s.add_copy("slack", &id, "three", ttl).await.unwrap();
        assert_eq!(s.copies("slack", &id).await.unwrap(), ["three"]);
    }

    #[tokio::test]
    async fn first_seen_once_per_ttl_and_scope() {
        let s = MemoryChatState::new();
        let ttl = Duration::from_millis(150);
        assert!(s.first_seen("slack", "k", ttl).await.unwrap());
        assert!(!s.first_seen("slack", "k", ttl).await.unwrap());
        assert!(s.first_seen("teams", "k", ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(s.first_seen("slack", "k", ttl).await.unwrap());
    }
}
