//! The approval store inside one process (`store = "memory"`): a map under a mutex, so every
//! [`ApprovalStore::update`] is trivially atomic.
//!
//! Owns storage only: evictions by TTL, parked results, the in-process change broadcast, and
//! the indexes that keep periodic work O(what is due): listing order and pending listing
//! (`BTreeSet` by `created_at`), the due-index (`BTreeSet` by [`due_at`]), the eviction index
//! (by evict time) and pending counts (in all and per requester). Must not decide anything
//! about the lifecycle (that is [`crate::approval::transition`], applied through `update`).
//!
//! [`MemoryChatState`] is the in-process [`ChatState`] that goes with it: posted copies and
//! seen event keys in maps with deadlines, pruned as they expire.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::ChatState;
use super::{
    due_at, unpoisoned, ApprovalStore, Cas, Change, Cursor, Hold, Holders, ListFilter, Page,
    ParkedResult, Silent, StoreError,
};
use crate::approval::grant::{self, Grant};
use crate::approval::record::{Approval, ApprovalId, Status, StoredRequest};
use crate::clock::duration_ms as ms;

/// One approval in memory, with its evictions.
#[derive(Debug)]
struct Entry {
    approval: Approval,
    request: StoredRequest,
    evict_at: u64,
    result: Option<(ParkedResult, u64)>,
    /// Its key in the due-index, if it is there (may be leased later than [`due_at`]).
    due: Option<u64>,
}

/// `(time, id)`: an index key.
type Key = (u64, ApprovalId);

/// The map and its indexes, always changed together under the lock.
#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ApprovalId, Entry>,
    /// Every approval, by `created_at`.
    order: BTreeSet<Key>,
    /// Pending approvals, by `created_at`.
    pending: BTreeSet<Key>,
    /// What the background must look at, by due time.
    due: BTreeSet<Key>,
    /// Evictions, by evict time.
    evict: BTreeSet<Key>,
    /// Parked results, by the time they are dropped.
    results: BTreeSet<Key>,
    /// Pending approvals per requester `(iss, sub)`.
    per_requester: HashMap<(String, String), usize>,
    /// Running cooldowns ([`ApprovalStore::start_cooldown`]): key -> until (unix ms).
    cooldowns: HashMap<String, u64>,
    /// Grants by id, each with its lookup key ([`ApprovalStore::put_grant`]; the key is
    /// hashed once, not per lookup); expired ones are dropped as new ones come.
    grants: HashMap<String, (String, Grant)>,
    /// Holders ([`ApprovalStore::beat`]): instance id -> last beat (unix ms).
    holders: HashMap<String, u64>,
    /// What each holder holds ([`ApprovalStore::add_hold`]): id -> backstop (unix ms).
    holds: HashMap<String, HashMap<ApprovalId, u64>>,
}

impl Inner {
    fn requester_key(a: &Approval) -> (String, String) {
        (a.requester.iss.clone(), a.requester.sub.clone())
    }

    /// Moves `id` in the due-index to `to`.
    fn set_due(&mut self, id: &ApprovalId, to: Option<u64>) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if let Some(old) = e.due.take() {
            self.due.remove(&(old, id.clone()));
        }
        if let Some(at) = to {
            self.due.insert((at, id.clone()));
            e.due = Some(at);
        }
    }

    /// Leaves the pending index and counts (a pending approval became something else, or
    /// is evicted while pending).
    fn unpend(&mut self, a: &Approval) {
        if self.pending.remove(&(a.created_at, a.id.clone())) {
            let key = Self::requester_key(a);
            if let Some(n) = self.per_requester.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_requester.remove(&key);
                }
            }
        }
    }

    fn remove(&mut self, id: &ApprovalId) -> Option<Entry> {
        self.set_due(id, None);
        let e = self.entries.remove(id)?;
        self.unpend(&e.approval);
        self.order.remove(&(e.approval.created_at, id.clone()));
        self.evict.remove(&(e.evict_at, id.clone()));
        if let Some((_, until)) = &e.result {
            self.results.remove(&(*until, id.clone()));
        }
        Some(e)
    }
}

/// A store inside this process (`store = "memory"`).
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
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
            inner: Mutex::new(Inner::default()),
            changes,
        }
    }

    /// Runs `f` on the map under the lock ([`unpoisoned`]).
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut unpoisoned(&self.inner))
    }
}

#[async_trait]
impl Holders for MemoryStore {
    async fn beat(&self, holder: &str, now: u64) -> Result<(), StoreError> {
        self.with(|m| {
            m.holders.insert(holder.to_owned(), now);
            if let Some(held) = m.holds.get_mut(holder) {
                held.retain(|_, backstop| *backstop >= now);
            }
        });
        Ok(())
    }

    async fn add_hold(&self, hold: &Hold<'_>, now: u64) -> Result<(), StoreError> {
        self.with(|m| {
            m.holders.insert(hold.holder.to_owned(), now);
            m.holds
                .entry(hold.holder.to_owned())
                .or_default()
                .insert(hold.id.clone(), hold.backstop);
        });
        Ok(())
    }

    async fn silent_holders(&self, since: u64, limit: usize) -> Result<Vec<Silent>, StoreError> {
        let mut silent: Vec<Silent> = self.with(|m| {
            m.holders
                .iter()
                .filter(|(_, beat)| **beat < since)
                .map(|(h, beat)| Silent {
                    holder: h.clone(),
                    last_beat: *beat,
                })
                .collect()
        });
        silent.sort_by(|a, b| (a.last_beat, &a.holder).cmp(&(b.last_beat, &b.holder)));
        silent.truncate(limit);
        Ok(silent)
    }

    async fn holds_of(&self, holder: &str, limit: usize) -> Result<Vec<ApprovalId>, StoreError> {
        let mut ids: Vec<ApprovalId> = self.with(|m| {
            m.holds
                .get(holder)
                .map(|held| held.keys().cloned().collect())
                .unwrap_or_default()
        });
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn forget_holds(&self, silent: &Silent, ids: &[ApprovalId]) -> Result<(), StoreError> {
        let holder = silent.holder.as_str();
        self.with(|m| {
            let empty = m.holds.get_mut(holder).is_none_or(|held| {
                for id in ids {
                    held.remove(id);
                }
                held.is_empty()
            });
            if empty && m.holders.get(holder) == Some(&silent.last_beat) {
                m.holders.remove(holder);
                m.holds.remove(holder);
            }
        });
        Ok(())
    }
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
            if m.entries.contains_key(&approval.id) {
                return Err(StoreError::unavailable(format!(
                    "duplicate approval id {}",
                    approval.id
                )));
            }
            let id = approval.id.clone();
            m.entries.insert(
                id.clone(),
                Entry {
                    approval: approval.clone(),
                    request: request.clone(),
                    evict_at,
                    result: None,
                    due: None,
                },
            );
            m.order.insert((approval.created_at, id.clone()));
            m.evict.insert((evict_at, id.clone()));
            if approval.status == Status::Pending {
                m.pending.insert((approval.created_at, id.clone()));
                *m.per_requester
                    .entry(Inner::requester_key(approval))
                    .or_insert(0) += 1;
            }
            m.set_due(&id, due_at(approval));
            Ok(())
        })
    }

    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let now = self.now_ms();
        self.with(|m| {
            m.grants.retain(|_, (_, g)| g.expires_at > now);
            m.grants
                .insert(grant.id.clone(), (grant.key(), grant.clone()));
        });
        Ok(())
    }

    async fn use_grant(&self, key: &str, now: u64) -> Result<Option<Grant>, StoreError> {
        Ok(self.with(|m| {
            let g = m
                .grants
                .values_mut()
                .filter(|(k, g)| k == key && g.is_live(now))
                .map(|(_, g)| g)
                .min_by_key(|g| (g.expires_at, g.id.clone()))?;
            (grant::use_grant(g, now) == grant::UseOutcome::Used).then(|| g.clone())
        }))
    }

    async fn grants(&self, now: u64) -> Result<Vec<Grant>, StoreError> {
        let mut all: Vec<Grant> = self.with(|m| {
            m.grants
                .values()
                .filter(|(_, g)| g.expires_at > now)
                .map(|(_, g)| g.clone())
                .collect()
        });
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    async fn revoke_grant(&self, id: &str, by: &str) -> Result<Option<Grant>, StoreError> {
        Ok(self.with(|m| {
            let (_, g) = m.grants.get_mut(id)?;
            if g.revoked_by.is_none() {
                g.revoked_by = Some(by.to_owned());
            }
            Some(g.clone())
        }))
    }

    async fn start_cooldown(
        &self,
        key: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<Option<Duration>, StoreError> {
        Ok(self.with(|m| {
            if m.cooldowns.len() >= 1024 {
                m.cooldowns.retain(|_, until| *until > now);
            }
            match m.cooldowns.get(key) {
                Some(until) if *until > now => Some(Duration::from_millis(until - now)),
                _ => {
                    m.cooldowns
                        .insert(key.to_owned(), now.saturating_add(ms(ttl)));
                    None
                }
            }
        }))
    }

    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        Ok(self.with(|m| m.entries.get(id).map(|e| e.approval.clone())))
    }

    async fn stored_request(&self, id: &ApprovalId) -> Result<Option<StoredRequest>, StoreError> {
        Ok(self.with(|m| m.entries.get(id).map(|e| e.request.clone())))
    }

    async fn update(&self, id: &ApprovalId, change: &mut Change<'_>) -> Result<Cas, StoreError> {
        // The rules leave an approval untouched when they decline, so deciding in place under
        // the lock is the compare-and-set.
        Ok(self.with(|m| {
            let Some(e) = m.entries.get_mut(id) else {
                return Cas::NotFound;
            };
            let was_pending = e.approval.status == Status::Pending;
            if !change(&mut e.approval) {
                return Cas::Conflict(e.approval.clone());
            }
            let a = e.approval.clone();
            if was_pending && a.status != Status::Pending {
                m.unpend(&a);
            }
            m.set_due(id, due_at(&a));
            Cas::Applied(a)
        }))
    }

    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|m| {
            let Some(e) = m.entries.get_mut(id) else {
                return Err(StoreError::unavailable(format!(
                    "no approval {id} to park a result for"
                )));
            };
            let until = result.at.saturating_add(ms(ttl));
            if let Some((_, before)) = e.result.replace((result.clone(), until)) {
                m.results.remove(&(before, id.clone()));
            }
            m.results.insert((until, id.clone()));
            let Some(e) = m.entries.get_mut(id) else {
                return Ok(());
            };
            // The record must live as long as its result.
            let old = e.evict_at;
            e.evict_at = old.max(until);
            let new = e.evict_at;
            if new != old {
                m.evict.remove(&(old, id.clone()));
                m.evict.insert((new, id.clone()));
            }
            Ok(())
        })
    }

    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError> {
        Ok(self.with(|m| {
            m.entries
                .get(id)
                .and_then(|e| e.result.as_ref().map(|(r, _)| r.clone()))
        }))
    }

    async fn list_page(
        &self,
        filter: ListFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        Ok(self.with(|m| {
            let index = match filter {
                ListFilter::Pending => &m.pending,
                ListFilter::All | ListFilter::AwaitingExecution => &m.order,
            };
            let keys: Box<dyn Iterator<Item = &Key>> = match after {
                Some(c) => Box::new(index.range(..(c.created_at, c.id.clone())).rev()),
                None => Box::new(index.iter().rev()),
            };
            let mut page = Page::default();
            let mut read = 0;
            for (at, id) in keys {
                if read == limit {
                    break;
                }
                read += 1;
                page.next = Some(Cursor {
                    created_at: *at,
                    id: id.clone(),
                });
                if let Some(e) = m.entries.get(id) {
                    if filter.matches(&e.approval) {
                        page.items.push(e.approval.clone());
                    }
                }
            }
            if read < limit {
                page.next = None;
            }
            page
        }))
    }

    async fn due(
        &self,
        now: u64,
        limit: usize,
        retry: Duration,
    ) -> Result<Vec<ApprovalId>, StoreError> {
        let later = now.saturating_add(ms(retry));
        Ok(self.with(|m| {
            let ids: Vec<ApprovalId> = m
                .due
                .iter()
                .take_while(|(at, _)| *at <= now)
                .take(limit)
                .map(|(_, id)| id.clone())
                .collect();
            for id in &ids {
                m.set_due(id, Some(later));
            }
            ids
        }))
    }

    async fn count_pending(&self, requester: Option<(&str, &str)>) -> Result<usize, StoreError> {
        Ok(self.with(|m| match requester {
            None => m.pending.len(),
            Some((iss, sub)) => m
                .per_requester
                .get(&(iss.to_owned(), sub.to_owned()))
                .copied()
                .unwrap_or(0),
        }))
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
            let dropped: Vec<Key> = m
                .results
                .iter()
                .take_while(|(until, _)| *until <= now)
                .cloned()
                .collect();
            for key in dropped {
                m.results.remove(&key);
                if let Some(e) = m.entries.get_mut(&key.1) {
                    e.result = None;
                }
            }
            let gone: Vec<ApprovalId> = m
                .evict
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, id)| id.clone())
                .collect();
            for id in &gone {
                m.remove(id);
            }
            gone.len()
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

    /// Runs `f` under the lock ([`unpoisoned`]).
    fn with<T>(&self, f: impl FnOnce(&mut ChatMaps) -> T) -> T {
        f(&mut unpoisoned(&self.maps))
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
