//! The shared approval store on Redis (`store = "redis://host:port/db"` or `rediss://`), so
//! that any number of replicas share pending approvals, votes, decisions, stored requests and
//! parked results (SPEC 7, issue 5).
//!
//! Layout (all keys expire natively, so [`ApprovalStore::cleanup`] only trims the index):
//! - `cs:apr:{id}`: hash with `json` (the sealed [`Approval`]) and `ver` (a version bumped on
//!   every write);
//! - `cs:req:{id}`: the sealed [`StoredRequest`], credential header values encrypted;
//! - `cs:res:{id}`: the sealed [`ParkedResult`];
//! - `cs:idx`: sorted set of ids scored by `created_at`, for [`ApprovalStore::list_page`];
//! - `cs:pending`: sorted set of the pending ids scored by `created_at` (the pending listing,
//!   and the cluster-wide pending count by `ZCARD`);
//! - `cs:preq:{sha256(iss, sub)}`: sorted set of one requester's pending ids scored by their
//!   eviction time (`max_pending_per_requester` by `ZCARD`, cluster-wide);
//! - `cs:due`: sorted set scored by the next time (unix ms) the background must look at an id
//!   ([`super::due_at`]); sweeps read it with `ZRANGEBYSCORE ... LIMIT`, O(due items);
//! - `cs:gc`: sorted set scored by eviction time, so cleanup trims the indexes of records Redis
//!   expired without reading the whole index;
//! - channel `cs:changes`: ids of approvals that changed.
//! - `cs:chat:{scope}:{id}`: list of the posted chat copies of an approval ([`ChatState`]),
//!   expiring with the approval (the caller's TTL; extended, never shortened);
//! - `cs:seen:{scope}:{sha256 of key}`: an inbound chat event already handled, `SET NX PX`.
//! - `cs:cool:{sha256 of key}`: a running break-glass cooldown, `SET NX PX` (`cooldown`).
//!
//! Every index is written in the same Lua script as the record it indexes (create, the
//! compare-and-set, park), so indexes and records never disagree except for records Redis
//! expired natively, which cleanup removes from the indexes.
//!
//! Integrity (SPEC 8): every record is sealed with a MAC keyed from `signing_key`
//! ([`super::seal`]); a record that does not verify is never returned, only
//! [`StoreError::Tampered`], and a listing skips it. Someone who can write Redis can delete or
//! replay Countersign's own records for the same id, but cannot make one up or edit one.
//!
//! Owns storage only; the lifecycle rules live in [`crate::approval::transition`] and reach
//! this file as the `change` of [`ApprovalStore::update`]. Must not decide anything itself.
//!
//! Atomicity: [`ApprovalStore::update`] reads the approval and its version, runs the change in
//! Rust, and commits with ONE Lua script that writes only if the version is still the one read
//! (and publishes the id). A lost race re-reads and re-decides, so concurrent votes on different
//! replicas can neither double-count nor lose a vote, and exactly one `claim_execution` wins
//! cluster-wide. Porting the rules to Lua would duplicate them; this keeps one definition.
//!
//! Time: operations without a caller's `now` (`set_held`, `finish_execution`, the per-requester
//! count) ask the injected clock ([`RedisStore::with_clock`]), never the wall.
//!
//! Held requests: `held` is a lease. The record (sealed) names its holder, a replica's instance
//! id, and a backstop (`held_until`); the holder beats once a second for all it holds
//! (`cs:holders`, `cs:held:{instance}`: [`holders`]). Reads report the record as stored: what a
//! passed backstop or a silent holder means is
//! [`crate::approval::transition::cancel_lost_hold`]'s call, which a sweep makes.
//!
//! Faults: every Redis call is bounded by a timeout (1 s by default; 2 s for a new connection)
//! and then returns [`StoreError`]; the connection manager reconnects on its own, and the pub/sub task
//! re-subscribes in a loop (a lost notification only delays a waiter until its periodic
//! re-check).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, ScriptInvocation};
use tokio::sync::{broadcast, OnceCell};

use epoch::Epoch;
use link::Link;
pub use link::{SentinelUrl, SENTINEL_SCHEME};

mod chat_state;
mod cooldown;
mod epoch;
mod grants;
mod holders;
mod keys;
mod link;
mod list;
mod pubsub;

use super::seal::RecordSeal;
use super::{ApprovalStore, Cas, Change, Cursor, ListFilter, Page, ParkedResult, StoreError};
use crate::approval::grant::Grant;
use crate::approval::record::{Approval, ApprovalId, StoredRequest};
use crate::clock::{SharedClock, SystemClock};
use keys::*;

/// How long after `expires_at` the hold of a record without a lease is believed.
pub use super::HOLD_GRACE;

/// The Redis-backed [`ApprovalStore`]. Cheap to share behind an `Arc`; connects lazily so a
/// replica starts (and serves allow/deny routes) while Redis is down.
pub struct RedisStore {
    link: Arc<Link>,
    timeout: Duration,
    changes: broadcast::Sender<ApprovalId>,
    listening: Arc<AtomicBool>,
    epoch: Arc<Epoch>,
    /// Bumped when pub/sub re-subscribes ([`ApprovalStore::missed`]).
    missed: Arc<tokio::sync::watch::Sender<u64>>,
    clock: SharedClock,
    create: Script,
    cas: Script,
    park: Script,
    seal: Arc<RecordSeal>,
    due: Script,
    gc: Script,
    count: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `url` (`redis://[:password@]host:port/db` or `rediss://...`) that connects on
    /// first use. Fails only on a malformed URL.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Self::with_password(url, None)
    }

    /// Like [`Self::new`], with `password` (from `store_password`) replacing any in the URL.
    pub fn with_password(url: &str, password: Option<&str>) -> Result<Self, StoreError> {
        Self::with_options(url, password, None)
    }

    /// Like [`Self::with_password`]; for `rediss://`, `ca_pem` (PEM certificates, from
    /// `store_ca`) replaces the web PKI roots the server certificate is checked against.
    pub fn with_options(
        url: &str,
        password: Option<&str>,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        let mut info =
            redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| err("url", e))?;
        if let Some(pw) = password {
            info.redis.password = Some(pw.to_owned());
        }
        let client = match ca_pem {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| err("url", e))?;
        Self::from_link(Link::Direct {
            client,
            conn: OnceCell::new(),
        })
    }

    /// A store on the master that the Sentinels of `url` name (`redis+sentinel://`), with
    /// `password` (from `store_password`) for the master and replicas. Connects on first use;
    /// every write waits for a replica (see [`link`]).
    pub fn sentinel(url: SentinelUrl, password: Option<&str>) -> Result<Self, StoreError> {
        Self::from_link(Link::sentinel(url, password)?)
    }

    fn from_link(link: Link) -> Result<Self, StoreError> {
        let (changes, _) = broadcast::channel(1024);
        let seal = RecordSeal::random().map_err(|e| err("record keys", e))?;
        Ok(Self {
            link: Arc::new(link),
            timeout: DEFAULT_TIMEOUT,
            changes,
            listening: Arc::new(AtomicBool::new(false)),
            epoch: Arc::default(),
            missed: Arc::new(tokio::sync::watch::channel(0).0),
            clock: Arc::new(SystemClock),
            create: Script::new(CREATE_LUA),
            cas: Script::new(CAS_LUA),
            park: Script::new(PARK_LUA),
            seal: Arc::new(seal),
            due: Script::new(DUE_LUA),
            gc: Script::new(GC_LUA),
            count: Script::new(COUNT_LUA),
        })
    }

    /// Seals records with `seal` (derived from `signing_key`, the same on every replica)
    /// instead of the random per-process keys a new store starts with.
    pub fn with_seal(mut self, seal: Arc<RecordSeal>) -> Self {
        self.seal = seal;
        self
    }

    /// `v` as a sealed record of `kind` for `id`.
    fn seal<T: serde::Serialize>(
        &self,
        kind: &str,
        id: &ApprovalId,
        v: &T,
    ) -> Result<String, StoreError> {
        let json = serde_json::to_string(v).map_err(|e| err(&format!("encoding {kind}"), e))?;
        Ok(self.seal.seal(kind, id, &json))
    }

    /// The record of `kind` for `id` in `raw`, once its MAC verifies.
    fn open<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        id: &ApprovalId,
        raw: &str,
    ) -> Result<T, StoreError> {
        let json = self
            .seal
            .open(kind, id, raw)
            .map_err(|e| tampered(kind, id, e))?;
        // A verified record that does not decode was written by another Countersign version.
        serde_json::from_str(json).map_err(|e| err(&format!("decoding {kind}"), e))
    }

    /// Like [`Self::new`], then connects and subscribes to change notifications right away, so
    /// an unreachable Redis is reported now and publishes from other replicas are not missed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::new(url)?;
        store.conn().await?;
        let ready = store.start_listener();
        // Not an error if it takes longer: waiters re-check periodically.
        let _ = tokio::time::timeout(store.timeout, ready).await;
        Ok(store)
    }

    /// Reads time from `clock` (the one the broker uses) instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Bounds every Redis round trip by `timeout` instead of 1 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.link.conn(self.timeout).await
    }

    /// After a write on `c`: with Sentinel, it counts only once a replica has it.
    async fn durable(&self, c: &mut ConnectionManager) -> Result<(), StoreError> {
        let done = self.link.durable(c, self.timeout).await;
        if done.is_err() {
            self.link.failed().await;
        }
        done
    }

    /// Runs one Redis round trip under the timeout.
    async fn call<T, F>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let failed = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => err(what, e),
            Err(_) => err(what, "timed out"),
        };
        // With Sentinel the failure may be a failover: look the master up again next time.
        self.link.failed().await;
        Err(failed)
    }

    /// Runs the write script `inv` (`what` names it in errors), which answers 1 when it wrote:
    /// that counts once durable ([`Self::durable`]). Any other answer means it found nothing to
    /// write to, and fails with `refused()`.
    async fn write(
        &self,
        what: &str,
        inv: &ScriptInvocation<'_>,
        refused: impl FnOnce() -> String + Send,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let wrote: i64 = self
            .call(what, async { inv.invoke_async(&mut c).await })
            .await?;
        if wrote == 1 {
            self.durable(&mut c).await
        } else {
            Err(StoreError::unavailable(refused()))
        }
    }

    /// Starts the pub/sub task once (needs a tokio runtime); the returned future resolves when
    /// the first subscription is active.
    fn start_listener(&self) -> impl std::future::Future<Output = ()> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let first = !self.listening.swap(true, Ordering::SeqCst);
        if first {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(pubsub::listen(
                    self.link.clone(),
                    self.epoch.clone(),
                    self.missed.clone(),
                    self.changes.clone(),
                    self.timeout,
                    ready_tx,
                ));
            } else {
                // No runtime here: try again on the next subscribe().
                self.listening.store(false, Ordering::SeqCst);
            }
        }
        async move {
            let _ = ready_rx.await;
        }
    }

    /// Reads the approval and its version.
    async fn read(&self, id: &ApprovalId) -> Result<Option<(Approval, String)>, StoreError> {
        let mut c = self.conn().await?;
        let key = apr_key(id);
        let (json, ver): (Option<String>, Option<String>) = self
            .call("read", async { c.hget(&key, &["json", "ver"]).await })
            .await?;
        match (json, ver) {
            (Some(json), Some(ver)) => Ok(Some((self.open(APPROVAL, id, &json)?, ver))),
            _ => Ok(None),
        }
    }

    /// One compare-and-set round: read, decide, write if the version is unchanged, and
    /// publish the id if `announce`. `None` when the approval is gone; `Some(Err(a))` when
    /// another writer won.
    async fn try_update(
        &self,
        id: &ApprovalId,
        change: &mut Change<'_>,
        announce: bool,
    ) -> Result<Option<Result<Cas, ()>>, StoreError> {
        let Some((mut a, ver)) = self.read(id).await? else {
            return Ok(None);
        };
        if !change(&mut a) {
            return Ok(Some(Ok(Cas::Conflict(a))));
        }
        let json = self.seal(APPROVAL, id, &a)?;
        let mut c = self.conn().await?;
        let mut inv = self.cas.prepare_invoke();
        inv.key(apr_key(id))
            .key(PENDING)
            .key(preq_key(&a.requester.iss, &a.requester.sub))
            .key(DUE)
            .arg(&ver)
            .arg(&json)
            .arg(id.as_str())
            .arg(if announce { CHANNEL } else { "" })
            .arg(pending_arg(&a))
            .arg(due_arg(&a));
        let written: i64 = self
            .call("write", async { inv.invoke_async(&mut c).await })
            .await?;
        if written == 1 {
            self.durable(&mut c).await?;
        }
        Ok(match written {
            1 => Some(Ok(Cas::Applied(a))),
            -1 => None,
            _ => Some(Err(())),
        })
    }

    /// [`ApprovalStore::update`], publishing the id on a write if `announce`.
    async fn update_announcing(
        &self,
        id: &ApprovalId,
        change: &mut Change<'_>,
        announce: bool,
    ) -> Result<Cas, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            match self.try_update(id, change, announce).await? {
                None => return Ok(Cas::NotFound),
                Some(Ok(done)) => return Ok(done),
                // Lost the race: someone else wrote; decide again on their state.
                Some(Err(())) => tokio::task::yield_now().await,
            }
        }
        Err(StoreError::unavailable(format!(
            "approval {id}: too much contention, gave up after {MAX_ATTEMPTS} attempts"
        )))
    }
}

#[async_trait]
impl ApprovalStore for RedisStore {
    async fn create(
        &self,
        approval: &Approval,
        request: &StoredRequest,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let id = &approval.id;
        let json = self.seal(APPROVAL, id, approval)?;
        let at_rest = self
            .seal
            .encrypt_credentials(id, request)
            .map_err(|e| err("encrypting credentials", e))?;
        let req = self.seal(REQUEST, id, &at_rest)?;
        let mut inv = self.create.prepare_invoke();
        inv.key(apr_key(&approval.id))
            .key(req_key(&approval.id))
            .key(INDEX)
            .key(PENDING)
            .key(preq_key(&approval.requester.iss, &approval.requester.sub))
            .key(DUE)
            .key(GC)
            .arg(json)
            .arg(req)
            .arg(ms(ttl))
            .arg(approval.created_at)
            .arg(approval.id.as_str())
            .arg(pending_arg(approval))
            .arg(due_arg(approval))
            .arg(approval.created_at.saturating_add(ms(ttl)));
        self.write("create", &inv, || format!("duplicate approval id {id}"))
            .await
    }

    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        Ok(self.read(id).await?.map(|(a, _)| a))
    }

    async fn start_cooldown(
        &self,
        key: &str,
        ttl: Duration,
        _now: u64,
    ) -> Result<Option<Duration>, StoreError> {
        self.start_cooldown_here(key, ttl).await
    }

    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.put_grant_here(grant, self.now_ms()).await
    }

    async fn use_grant(&self, key: &str, now: u64) -> Result<Option<Grant>, StoreError> {
        self.use_grant_here(key, now).await
    }

    async fn grants(&self, now: u64) -> Result<Vec<Grant>, StoreError> {
        self.grants_here(now).await
    }

    async fn revoke_grant(&self, id: &str, by: &str) -> Result<Option<Grant>, StoreError> {
        self.revoke_grant_here(id, by, self.now_ms()).await
    }

    async fn stored_request(&self, id: &ApprovalId) -> Result<Option<StoredRequest>, StoreError> {
        let mut c = self.conn().await?;
        let key = req_key(id);
        let json: Option<String> = self
            .call("stored request", async { c.get(&key).await })
            .await?;
        let Some(raw) = json else {
            return Ok(None);
        };
        let at_rest: StoredRequest = self.open(REQUEST, id, &raw)?;
        self.seal
            .decrypt_credentials(id, at_rest)
            .map(Some)
            .map_err(|e| tampered(REQUEST, id, e))
    }

    async fn update(&self, id: &ApprovalId, change: &mut Change<'_>) -> Result<Cas, StoreError> {
        self.update_announcing(id, change, true).await
    }

    async fn update_quietly(
        &self,
        id: &ApprovalId,
        change: &mut Change<'_>,
    ) -> Result<Cas, StoreError> {
        self.update_announcing(id, change, false).await
    }

    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = self.seal(RESULT, id, result)?;
        let mut inv = self.park.prepare_invoke();
        inv.key(apr_key(id))
            .key(req_key(id))
            .key(res_key(id))
            .key(GC)
            .arg(json)
            .arg(ms(ttl))
            .arg(id.as_str())
            .arg(result.at.saturating_add(ms(ttl)));
        self.write("park result", &inv, || {
            format!("no approval {id} to park a result for")
        })
        .await
    }

    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError> {
        let mut c = self.conn().await?;
        let key = res_key(id);
        let json: Option<String> = self.call("result", async { c.get(&key).await }).await?;
        json.map(|j| self.open(RESULT, id, &j)).transpose()
    }

    async fn list_page(
        &self,
        filter: ListFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.list_page_here(filter, after, limit).await
    }

    async fn due(
        &self,
        now: u64,
        limit: usize,
        retry: Duration,
    ) -> Result<Vec<ApprovalId>, StoreError> {
        let mut c = self.conn().await?;
        let mut inv = self.due.prepare_invoke();
        inv.key(DUE)
            .arg(now)
            .arg(limit)
            .arg(now.saturating_add(ms(retry)));
        let ids: Vec<String> = self
            .call("due", async { inv.invoke_async(&mut c).await })
            .await?;
        Ok(ids.iter().filter_map(|id| ApprovalId::parse(id)).collect())
    }

    async fn count_pending(&self, requester: Option<(&str, &str)>) -> Result<usize, StoreError> {
        let mut c = self.conn().await?;
        match requester {
            None => {
                self.call("count pending", async { c.zcard(PENDING).await })
                    .await
            }
            Some((iss, sub)) => {
                let mut inv = self.count.prepare_invoke();
                inv.key(preq_key(iss, sub)).arg(self.now_ms());
                self.call("count pending", async { inv.invoke_async(&mut c).await })
                    .await
            }
        }
    }

    async fn publish(&self, id: &ApprovalId) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .call("publish", async { c.publish(CHANNEL, id.as_str()).await })
            .await?;
        Ok(())
    }

    fn resets(&self) -> u64 {
        self.epoch.resets.load(Ordering::SeqCst)
    }

    fn missed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.missed.subscribe())
    }

    fn subscribe(&self) -> broadcast::Receiver<ApprovalId> {
        // Receiver first, so nothing forwarded after this call is missed.
        let rx = self.changes.subscribe();
        drop(self.start_listener());
        rx
    }

    fn now_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    async fn cleanup(&self, now: u64) -> Result<usize, StoreError> {
        // Records expire natively; drop the index entries of those that are gone, reading only
        // what is due for eviction.
        let mut c = self.conn().await?;
        let mut inv = self.gc.prepare_invoke();
        inv.key(GC)
            .key(INDEX)
            .key(PENDING)
            .key(DUE)
            .arg(now)
            .arg(BATCH);
        self.call("cleanup", async { inv.invoke_async(&mut c).await })
            .await
    }
}
