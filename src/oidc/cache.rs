//! Verified-token cache: a repeated token costs a SHA-256 and a lookup, no JSON parsing and no
//! signature check. Entries never outlive the token (`exp` + leeway) nor [`MAX_TTL`].
//!
//! Also the bad-signature cache ([`RejectedCache`]): a token whose signature failed against an
//! issuer's key set fails again against that very key set (same bytes, same keys), so a repeated
//! forged or tampered token costs the same lookup instead of a signature check, until the
//! issuer's key set changes. Bounded in size and time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};

use super::jwks::{KeySet, VerifyKey};
use crate::identity::Principal;

/// Longest an entry lives, whatever the token's `exp` says.
const MAX_TTL: Duration = Duration::from_secs(600);
/// Most tokens remembered at once.
const MAX_ENTRIES: u64 = 100_000;

/// Cache key: SHA-256 of the token (the token itself is never stored).
pub(crate) type TokenHash = [u8; 32];

/// Hashes a token for the cache.
pub(crate) fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// What we remember about a verified token.
#[derive(Debug)]
pub(crate) struct Verified {
    /// The caller.
    pub(crate) principal: Arc<Principal>,
    /// Index of the issuer in the verifier.
    pub(crate) issuer: usize,
    /// The key the signature verified with: the entry is only good while the issuer's current
    /// key set still holds this very `Arc`.
    pub(crate) key: Arc<VerifyKey>,
    /// Last second (by the injected clock) at which the token is acceptable: `exp` + leeway.
    pub(crate) valid_until: u64,
    /// How long moka keeps the entry.
    ttl: Duration,
}

impl Verified {
    /// An entry for a token verified at `now` (seconds).
    pub(crate) fn new(
        principal: Arc<Principal>,
        issuer: usize,
        key: Arc<VerifyKey>,
        valid_until: u64,
        now: u64,
    ) -> Self {
        let ttl = Duration::from_secs(valid_until.saturating_sub(now)).min(MAX_TTL);
        Self {
            principal,
            issuer,
            key,
            valid_until,
            ttl,
        }
    }
}

/// Per-entry expiry from [`Verified::ttl`].
struct ByTokenExpiry;

impl Expiry<TokenHash, Arc<Verified>> for ByTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Tokens by hash, each with what we remember about it (`V`): a bounded moka cache. Holds no
/// token, only its SHA-256.
#[derive(Clone)]
pub(crate) struct ByHash<V> {
    entries: Cache<TokenHash, Arc<V>>,
}

/// Only the size: moka's own `Debug` would print every entry (cached principals).
impl<V> std::fmt::Debug for ByHash<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByHash")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl<V: Send + Sync + 'static> ByHash<V> {
    /// The entry for a token hash.
    pub(crate) fn get(&self, hash: &TokenHash) -> Option<Arc<V>> {
        self.entries.get(hash)
    }

    /// Remembers a token.
    pub(crate) fn insert(&self, hash: TokenHash, value: V) {
        self.entries.insert(hash, Arc::new(value));
    }

    /// Forgets a token.
    pub(crate) fn remove(&self, hash: &TokenHash) {
        self.entries.invalidate(hash);
    }
}

/// Verified tokens: each for its own lifetime ([`Verified::ttl`]), at most [`MAX_ENTRIES`].
pub(crate) type TokenCache = ByHash<Verified>;

impl TokenCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(ByTokenExpiry)
                .build(),
        }
    }
}

/// Most bad-signature tokens remembered at once.
const MAX_REJECTED: u64 = 10_000;
/// Longest a bad-signature token is remembered.
const REJECTED_TTL: Duration = Duration::from_secs(60);

/// A token whose signature failed against `keys`, the key set issuer `issuer` served then.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// Index of the issuer in the verifier.
    pub(crate) issuer: usize,
    /// The key set the signature failed against: the entry holds only while the issuer still
    /// serves this very `Arc`.
    pub(crate) keys: Arc<KeySet>,
}

/// Tokens whose signature failed: at most [`MAX_REJECTED`], each for at most
/// [`REJECTED_TTL`]; only the hash and the key set it failed on.
pub(crate) type RejectedCache = ByHash<Rejected>;

impl RejectedCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(MAX_REJECTED)
                .time_to_live(REJECTED_TTL)
                .build(),
        }
    }
}
