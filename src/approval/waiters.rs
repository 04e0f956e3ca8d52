//! Wakes the callers held on an approval when that approval changes, and nobody else.
//!
//! ONE task per broker reads the store's change notifications ([`ApprovalStore::subscribe`],
//! fed by Redis pub/sub across replicas) and wakes only the waiters registered for the changed
//! id: a change costs O(waiters of that id), not O(everyone held). Lost notifications (a lagging
//! receiver wakes everyone once; a pub/sub reconnect loses messages) are covered by each
//! waiter's own slow, jittered safety re-read in [`super::Broker::wait`].
//!
//! Owns the registry of waiters only. Must not read or change approval state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{broadcast, Notify};

use super::record::ApprovalId;
use super::store::ApprovalStore;

type Registry = Mutex<HashMap<ApprovalId, Slot>>;

/// The waiters of one id.
#[derive(Debug)]
struct Slot {
    notify: Arc<Notify>,
    count: usize,
}

/// Who waits on which approval. Shared by every clone of a broker.
#[derive(Debug, Default)]
pub struct Waiters {
    registry: Arc<Registry>,
    started: AtomicBool,
}

fn lock(r: &Registry) -> std::sync::MutexGuard<'_, HashMap<ApprovalId, Slot>> {
    // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
    match r.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Waiters {
    /// Registers a waiter for `id` (starting the dispatcher on first use; needs a runtime).
    /// Create the [`Notify::notified`] future and `enable` it BEFORE reading the state, so a
    /// change between the read and the wait is not missed.
    pub fn watch(&self, store: &dyn ApprovalStore, id: &ApprovalId) -> Watch {
        if !self.started.swap(true, Ordering::SeqCst) {
            let rx = store.subscribe();
            let missed = store.missed();
            tokio::spawn(dispatch(rx, missed, Arc::downgrade(&self.registry)));
        }
        let mut map = lock(&self.registry);
        let slot = map.entry(id.clone()).or_insert_with(|| Slot {
            notify: Arc::new(Notify::new()),
            count: 0,
        });
        slot.count += 1;
        Watch {
            notify: slot.notify.clone(),
            id: id.clone(),
            registry: self.registry.clone(),
        }
    }

    /// How many ids have waiters (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.registry).len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One registered waiter; unregisters when dropped (the proxy drops a hold on hang-up).
#[derive(Debug)]
pub struct Watch {
    notify: Arc<Notify>,
    id: ApprovalId,
    registry: Arc<Registry>,
}

impl Watch {
    /// Fires when the approval may have changed.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut map = lock(&self.registry);
        if let Some(slot) = map.get_mut(&self.id) {
            slot.count = slot.count.saturating_sub(1);
            if slot.count == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// Forwards change notifications to the waiters of each id until the store or the broker is
/// gone.
async fn dispatch(
    mut rx: broadcast::Receiver<ApprovalId>,
    mut missed: Option<tokio::sync::watch::Receiver<u64>>,
    registry: Weak<Registry>,
) {
    loop {
        let changed = tokio::select! {
            changed = rx.recv() => changed,
            Some(Ok(())) = async {
                match missed.as_mut() {
                    Some(m) => Some(m.changed().await),
                    None => None,
                }
            } => Err(broadcast::error::RecvError::Lagged(0)),
        };
        let Some(registry) = registry.upgrade() else {
            return;
        };
        match changed {
            Ok(id) => {
                if let Some(slot) = lock(&registry).get(&id) {
                    slot.notify.notify_waiters();
                }
            }
            // Some ids were lost (a lagging receiver, or the store says it missed some):
            // everyone re-reads once.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for slot in lock(&registry).values() {
                    slot.notify.notify_waiters();
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
