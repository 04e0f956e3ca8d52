//! One issuer's keys: the current [`KeySet`] behind an `ArcSwapOption` (read without locks on
//! every request), and the fetch machinery that replaces it: scheduled refresh, backoff on
//! failure, single-flight refetch for unknown kids, kicks while keys were never loaded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use tokio::sync::{Mutex, Notify};
use url::Url;

use super::discovery;
use super::jwks::KeySet;
use crate::clock::SharedClock;
use crate::config::Issuer;
use crate::metrics::Metrics;

/// Scheduled fetches never happen more often than this, whatever Cache-Control says.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Refetches for unknown kids (and kicks while keys were never loaded) happen at most this often.
const KID_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After this many consecutive failures, discovery runs again before the next JWKS fetch.
const REDISCOVER_AFTER: u32 = 3;
/// The refresher re-reads the clock at least this often, so a moved clock is noticed.
const POLL: Duration = Duration::from_secs(1);

/// Fetch bookkeeping; only touched under the fetch lock (never on the request hit path).
#[derive(Debug)]
struct FetchState {
    /// JWKS location: configured, or found by discovery (then kept).
    jwks_uri: Option<Url>,
    /// When the next scheduled fetch is due.
    next_due: SystemTime,
    /// Consecutive failed fetches.
    failures: u32,
    /// Last fetch (any reason).
    last_attempt: Option<SystemTime>,
    /// Last fetch triggered by an unknown kid or a kick.
    last_on_demand: Option<SystemTime>,
}

/// An issuer and its keys.
pub(crate) struct IssuerState {
    /// Its configuration.
    pub(crate) config: Issuer,
    keys: ArcSwapOption<KeySet>,
    fetch: Mutex<FetchState>,
    wake: Arc<Notify>,
    /// A request found no keys at all and asked for a fetch.
    kicked: AtomicBool,
    /// Unix millis of the last fetch attempt (0 = never), readable without the lock.
    last_attempt_ms: AtomicU64,
    http: reqwest::Client,
    clock: SharedClock,
    metrics: Metrics,
}

impl std::fmt::Debug for IssuerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerState")
            .field("issuer", &self.config.issuer)
            .field("keys", &self.keys.load().as_ref().map(|k| k.len()))
            .finish_non_exhaustive()
    }
}

impl IssuerState {
    /// State for `config`, no keys yet.
    pub(crate) fn new(
        config: Issuer,
        http: reqwest::Client,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Self {
        let fetch = FetchState {
            jwks_uri: config.jwks_uri.clone(),
            next_due: UNIX_EPOCH,
            failures: 0,
            last_attempt: None,
            last_on_demand: None,
        };
        Self {
            config,
            keys: ArcSwapOption::empty(),
            fetch: Mutex::new(fetch),
            wake: Arc::new(Notify::new()),
            kicked: AtomicBool::new(false),
            last_attempt_ms: AtomicU64::new(0),
            http,
            clock,
            metrics,
        }
    }

    /// The current key set (`None` until the first successful fetch). Lock-free.
    pub(crate) fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// True when `key` (that very `Arc`) is in the current key set. Lock-free and allocation-free:
    /// this runs on every cache hit.
    pub(crate) fn still_publishes(&self, key: &Arc<super::jwks::VerifyKey>) -> bool {
        self.keys
            .load()
            .as_ref()
            .is_some_and(|keys| keys.contains(key))
    }

    /// True when `keys` (that very `Arc`) is the current key set. Lock-free.
    pub(crate) fn serves(&self, keys: &Arc<KeySet>) -> bool {
        self.keys
            .load()
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, keys))
    }

    /// True once a key set was loaded.
    pub(crate) fn has_keys(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Spawns the background refresher. It ends when the issuer state is dropped.
    pub(crate) fn spawn_refresher(
        self: &Arc<Self>,
        mut shutdown: Option<crate::shutdown::Shutdown>,
    ) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let wake = Arc::clone(&self.wake);
        tokio::spawn(async move {
            loop {
                let wait = match weak.upgrade() {
                    Some(state) => state.tick().await,
                    None => return,
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wake.notified() => {}
                    () = crate::shutdown::stopped(&mut shutdown) => return,
                }
            }
        });
    }

    /// Wakes the refresher so it re-reads the clock now (tests move a manual clock).
    #[cfg(test)]
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks for a fetch because a request found no keys at all. The refresher fetches if no
    /// on-demand fetch happened in the last 5 s.
    pub(crate) fn kick(&self) {
        self.kicked.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Seconds a client should wait before retrying while keys were never loaded.
    pub(crate) fn retry_after(&self) -> u64 {
        let now = millis(self.clock.now());
        let last = self.last_attempt_ms.load(Ordering::Relaxed);
        let next = last.saturating_add(KID_REFETCH_INTERVAL.as_millis() as u64);
        next.saturating_sub(now).div_ceil(1000).clamp(1, 30)
    }

    /// One refresher step: fetch if due (or kicked while keys are missing), then say how long to
    /// sleep.
    async fn tick(&self) -> Duration {
        let mut st = self.fetch.lock().await;
        let now = self.clock.now();
        if self.has_keys() {
            // Kicks only matter while keys were never loaded.
            self.kicked.store(false, Ordering::Relaxed);
        }
        let kicked =
            self.kicked.load(Ordering::Relaxed) && on_demand_allowed(st.last_on_demand, now);
        if now >= st.next_due || kicked {
            if now < st.next_due {
                st.last_on_demand = Some(now);
            }
            self.kicked.store(false, Ordering::Relaxed);
            self.fetch_locked(&mut st).await;
        }
        let now = self.clock.now();
        st.next_due
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_millis(10), POLL)
    }

    /// Single-flight refetch for a kid missing from `seen` (the key set the request looked at).
    /// Every request waiting here shares one fetch: whoever gets the lock first fetches; the
    /// others find the key set already replaced, or the 5-second budget spent.
    pub(crate) async fn refetch_for_unknown_kid(&self, seen: &Arc<KeySet>) {
        let mut st = self.fetch.lock().await;
        let replaced = self
            .keys
            .load()
            .as_ref()
            .is_some_and(|current| !Arc::ptr_eq(current, seen));
        if replaced {
            return;
        }
        let now = self.clock.now();
        if !on_demand_allowed(st.last_on_demand, now) {
            return;
        }
        st.last_on_demand = Some(now);
        self.fetch_locked(&mut st).await;
    }

    /// Discovery (when needed) and a JWKS fetch; swaps the key set on success, schedules the
    /// next fetch either way. Failures keep the last good keys.
    async fn fetch_locked(&self, st: &mut FetchState) {
        let now = self.clock.now();
        st.last_attempt = Some(now);
        self.last_attempt_ms.store(millis(now), Ordering::Relaxed);
        match self.fetch_keys(st).await {
            Ok(max_age) => {
                st.failures = 0;
                let every = max_age
                    .map_or(self.config.refresh, |age| age.min(self.config.refresh))
                    .max(MIN_REFRESH);
                st.next_due = now + every;
            }
            Err(error) => {
                st.failures = st.failures.saturating_add(1);
                // A discovered jwks_uri may have moved: look it up again now and then.
                if self.config.jwks_uri.is_none() && st.failures % REDISCOVER_AFTER == 0 {
                    st.jwks_uri = None;
                }
                let backoff = backoff(st.failures, self.config.refresh);
                st.next_due = now + backoff;
                tracing::warn!(
                    issuer = %self.config.issuer,
                    %error,
                    retry_in = ?backoff,
                    serving_last_good = self.has_keys(),
                    "could not refresh the issuer's signing keys"
                );
            }
        }
    }

    /// Downloads and installs the key set; returns the response's max-age.
    async fn fetch_keys(&self, st: &mut FetchState) -> Result<Option<Duration>, String> {
        let jwks_uri = match &st.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let found = discovery::discover(&self.http, &self.config.issuer).await;
                self.count(if found.is_ok() {
                    "discovery_ok"
                } else {
                    "discovery_error"
                });
                let uri = found.map_err(|e| format!("discovery: {e}"))?;
                st.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let installed = self.download_jwks(jwks_uri).await;
        self.count(if installed.is_ok() { "ok" } else { "error" });
        installed
    }

    async fn download_jwks(&self, jwks_uri: Url) -> Result<Option<Duration>, String> {
        let fetched = discovery::get(&self.http, jwks_uri)
            .await
            .map_err(|e| format!("JWKS: {e}"))?;
        let previous = self.keys.load_full();
        let (set, skipped) = KeySet::parse(&fetched.body, previous.as_deref())?;
        tracing::debug!(
            issuer = %self.config.issuer,
            keys = set.len(),
            skipped,
            "loaded signing keys"
        );
        self.keys.store(Some(Arc::new(set)));
        Ok(fetched.max_age)
    }

    fn count(&self, result: &str) {
        self.metrics
            .jwks_fetches
            .with_label_values(&[self.config.issuer.as_str(), result])
            .inc();
    }
}

/// True when no on-demand fetch happened in the last [`KID_REFETCH_INTERVAL`].
fn on_demand_allowed(last: Option<SystemTime>, now: SystemTime) -> bool {
    last.is_none_or(|at| {
        now.duration_since(at)
            .is_ok_and(|d| d >= KID_REFETCH_INTERVAL)
    })
}

/// 1 s, 2 s, 4 s, ... capped at the refresh interval and at one minute.
fn backoff(failures: u32, refresh: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp)
        .min(refresh)
        .min(MAX_BACKOFF)
        .max(MIN_REFRESH)
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
