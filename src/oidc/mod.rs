//! Bearer tokens: extraction (RFC 6750), OIDC discovery, per-issuer JWKS caches, JWS
//! verification, claim validation and a cache of verified tokens. Never decides authorization:
//! it answers "who is this" ([`Principal`]) or "why not" ([`TokenError`]).
//!
//! Layout: `bearer` (header syntax), `token` (compact JWS parsing and claim checks, pure),
//! `jwks` (JWK sets and the one signature-check function), `discovery` (HTTP fetches),
//! `issuer` (per-issuer key set behind `ArcSwap`, refresh, single-flight refetch), `cache`
//! (verified tokens, and tokens whose signature failed), `verify` (the pipeline that ties them
//! together).
//!
//! Hot path: a repeated token costs a SHA-256, a cache lookup and a pointer comparison against
//! the issuer's current key set; no lock, no JSON, no signature check. So does a repeated token
//! whose signature failed, while its issuer serves the same key set (`cache::RejectedCache`).

mod bearer;
mod cache;
mod discovery;
mod issuer;
mod jwks;
#[cfg(test)]
mod tests;
mod token;
mod verify;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use verify::Inner;

use crate::clock::SharedClock;
use crate::config::Issuer;
use crate::identity::Principal;
use crate::metrics::Metrics;

/// Why a bearer token was not accepted. Mapped to HTTP by the proxy's error table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization: Bearer` credentials: 401 with a bare challenge.
    Missing,
    /// Malformed request (bad header syntax, token sent twice): 400 `invalid_request`.
    InvalidRequest(Reason),
    /// The token is not acceptable: 401 `invalid_token`.
    InvalidToken(Reason),
    /// The issuer's keys were never loaded: 503 `temporarily_unavailable`.
    KeysUnavailable {
        /// Seconds the client should wait.
        retry_after: u64,
    },
}

/// A stable, low-cardinality reason (metrics label, log field, public description).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not three base64url parts, bad JSON, trailing garbage, JWE, too long.
    Malformed,
    /// Authorization header repeated, or token in more than one place.
    Duplicate,
    /// Authorization scheme is not Bearer or header syntax is wrong.
    BadHeader,
    /// `alg` missing, unknown, `none`, HMAC or not in the issuer's allow-list.
    AlgorithmNotAllowed,
    /// `crit` names an extension we do not understand.
    UnsupportedCritical,
    /// `typ` does not match `require_typ`.
    WrongType,
    /// `iss` missing or not configured.
    UnknownIssuer,
    /// No key with that `kid` for the issuer (after a refetch).
    UnknownKey,
    /// Signature did not verify.
    BadSignature,
    /// `exp` missing.
    MissingExpiry,
    /// `exp` in the past (beyond leeway).
    Expired,
    /// `nbf` or `iat` in the future (beyond leeway).
    NotYetValid,
    /// `aud` does not name a configured audience.
    WrongAudience,
    /// `sub` missing or not a string.
    MissingSubject,
}

impl Reason {
    /// Metric label / log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Duplicate => "duplicate",
            Reason::BadHeader => "bad_header",
            Reason::AlgorithmNotAllowed => "alg_not_allowed",
            Reason::UnsupportedCritical => "unsupported_crit",
            Reason::WrongType => "wrong_typ",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::MissingExpiry => "missing_exp",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::MissingSubject => "missing_sub",
        }
    }

    /// The `error_description` shown to clients (never internals).
    pub fn description(self) -> &'static str {
        match self {
            Reason::Malformed => "the bearer token is malformed",
            Reason::Duplicate => "credentials were sent more than once",
            Reason::BadHeader => "the Authorization header is not a valid Bearer credential",
            Reason::AlgorithmNotAllowed => "the token's signing algorithm is not accepted",
            Reason::UnsupportedCritical => "the token uses an unsupported critical header",
            Reason::WrongType => "the token type is not accepted",
            Reason::UnknownIssuer => "the token issuer is not trusted",
            Reason::UnknownKey => "the token was signed with an unknown key",
            Reason::BadSignature => "the token signature is invalid",
            Reason::MissingExpiry => "the token has no expiry",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not yet valid",
            Reason::WrongAudience => "the token is not meant for this resource",
            Reason::MissingSubject => "the token has no subject",
        }
    }
}

/// Extracts the bearer token from the request's `Authorization` header values (all of them, in
/// order). `Ok(None)` when there is none (or the scheme is not Bearer); RFC 6750 syntax errors
/// and duplicates are `InvalidRequest`.
pub fn bearer_token<'a>(
    authorization: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<&'a str>, TokenError> {
    bearer::bearer_token(authorization)
}

/// Verifies tokens for every configured issuer. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    started: Arc<AtomicBool>,
}

impl Verifier {
    /// A verifier for `issuers`. Nothing is fetched until [`Verifier::start`].
    pub fn new(
        issuers: Vec<Issuer>,
        http: reqwest::Client,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner::new(issuers, http, clock, metrics)),
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Spawns (on the current tokio runtime) the background tasks that fetch discovery and JWKS
    /// for every issuer and keep them fresh. Calling it again does nothing. The tasks end when
    /// the last clone of the verifier is dropped.
    pub fn start(&self) {
        self.start_with(None);
    }

    /// Like [`Self::start`]; the refresh tasks also end when `shutdown` turns `true`.
    pub fn start_until(&self, shutdown: crate::shutdown::Shutdown) {
        self.start_with(Some(shutdown));
    }

    fn start_with(&self, shutdown: Option<crate::shutdown::Shutdown>) {
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!("Verifier::start needs a tokio runtime; keys will not be fetched");
            return;
        }
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        for issuer in &self.inner.issuers {
            issuer.spawn_refresher(shutdown.clone());
        }
    }

    /// Verifies `token` (the bearer credential) and returns the caller. Every rejection is
    /// counted in `countersign_token_rejections_total{reason}`.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        self.inner.verify(token).await
    }

    /// Counts a rejection that happened outside [`Verifier::verify`] (e.g. a malformed or
    /// repeated `Authorization` header found by [`bearer_token`]).
    pub fn record_rejection(&self, error: &TokenError) {
        self.inner.record_rejection(error);
    }

    /// True when every issuer has a usable key set.
    pub fn ready(&self) -> bool {
        self.inner.ready()
    }

    /// Waits until ready or `timeout` passes; returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.ready() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Signature verifications performed so far (tests prove cache hits do none).
    #[cfg(test)]
    pub(crate) fn signature_checks(&self) -> usize {
        self.inner.signature_checks.load(Ordering::SeqCst)
    }

    /// Wakes every issuer's refresher so it re-reads the (manual) clock now.
    #[cfg(test)]
    pub(crate) fn wake_refreshers(&self) {
        for issuer in &self.inner.issuers {
            issuer.wake();
        }
    }
}

/// How often [`Verifier::wait_ready`] looks.
const READY_POLL: Duration = Duration::from_millis(20);
