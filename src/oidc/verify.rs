//! The verification pipeline: cache, parse, pick issuer and key, check signature and claims.

use std::collections::HashMap;
use std::sync::Arc;

use super::cache::{self, Rejected, RejectedCache, TokenCache, Verified};
use super::issuer::IssuerState;
use super::jwks::{verify_signature, KeySet, VerifyKey};
use super::token::{self, Parts};
use super::{Reason, TokenError};
use crate::clock::SharedClock;
use crate::config::{Algorithm, Issuer};
use crate::identity::Principal;
use crate::metrics::Metrics;

/// Everything a [`super::Verifier`] shares between clones.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) issuers: Vec<Arc<IssuerState>>,
    by_iss: HashMap<String, usize>,
    cache: TokenCache,
    /// Tokens whose signature failed against an issuer's current key set.
    rejected: RejectedCache,
    clock: SharedClock,
    metrics: Metrics,
    /// Signature verifications performed (tests prove cache hits do none).
    #[cfg(test)]
    pub(crate) signature_checks: std::sync::atomic::AtomicUsize,
}

impl Inner {
    pub(crate) fn new(
        issuers: Vec<Issuer>,
        http: reqwest::Client,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Self {
        let mut by_iss = HashMap::new();
        for (i, issuer) in issuers.iter().enumerate() {
            by_iss.entry(issuer.issuer.clone()).or_insert(i);
        }
        let issuers = issuers
            .into_iter()
            .map(|config| {
                Arc::new(IssuerState::new(
                    config,
                    http.clone(),
                    Arc::clone(&clock),
                    metrics.clone(),
                ))
            })
            .collect();
        Self {
            issuers,
            by_iss,
            cache: TokenCache::new(),
            rejected: RejectedCache::new(),
            clock,
            metrics,
            #[cfg(test)]
            signature_checks: Default::default(),
        }
    }

    /// Verifies a token and counts a rejection by reason.
    pub(crate) async fn verify(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let result = self.verify_uncounted(token).await;
        if let Err(error) = &result {
            self.record_rejection(error);
        }
        result
    }

    /// `countersign_token_rejections_total{reason}` += 1.
    pub(crate) fn record_rejection(&self, error: &TokenError) {
        let reason = match error {
            TokenError::Missing => "missing",
            TokenError::InvalidRequest(r) | TokenError::InvalidToken(r) => r.as_str(),
            TokenError::KeysUnavailable { .. } => "keys_unavailable",
        };
        self.metrics
            .token_rejections
            .with_label_values(&[reason])
            .inc();
    }

    async fn verify_uncounted(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let invalid = TokenError::InvalidToken;
        if token.len() > token::MAX_TOKEN_LEN {
            return Err(invalid(Reason::Malformed));
        }
        let hash = cache::hash(token);
        let now = self.clock.unix();
        if let Some(principal) = self.cached(&hash, now) {
            return Ok(principal);
        }
        if self.rejected_before(&hash) {
            return Err(invalid(Reason::BadSignature));
        }
        let parts = token::split(token).map_err(invalid)?;
        let header = token::parse_header(&parts.header).map_err(invalid)?;
        let alg = token::header_alg(&header).map_err(invalid)?;
        token::check_crit(&header).map_err(invalid)?;
        let claims = token::parse_claims(&parts.payload).map_err(invalid)?;
        let index = token::issuer_claim(&claims)
            .and_then(|iss| self.by_iss.get(iss).copied())
            .ok_or(invalid(Reason::UnknownIssuer))?;
        let issuer = self
            .issuers
            .get(index)
            .ok_or(invalid(Reason::UnknownIssuer))?;
        token::check_allowed(alg, &issuer.config).map_err(invalid)?;
        token::check_typ(&header, &issuer.config).map_err(invalid)?;
        let key = self
            .verify_signature((index, issuer), header.kid.as_deref(), alg, &parts, hash)
            .await?;
        let valid_until = token::check_claims(&claims, &issuer.config, now).map_err(invalid)?;
        let principal = Principal::from_claims_as(
            claims,
            &issuer.config.identity_claim,
            issuer.config.approvers,
        );
        let principal = Arc::new(principal.ok_or(invalid(Reason::Malformed))?);
        self.cache.insert(
            hash,
            Verified::new(Arc::clone(&principal), index, key, valid_until, now),
        );
        Ok(principal)
    }

    /// A cached principal, if the token is cached, not expired by our clock, and the key that
    /// verified it is still in the issuer's current key set (pointer comparison).
    fn cached(&self, hash: &cache::TokenHash, now: u64) -> Option<Arc<Principal>> {
        let hit = self.cache.get(hash)?;
        let key_still_published = self
            .issuers
            .get(hit.issuer)
            .is_some_and(|issuer| issuer.still_publishes(&hit.key));
        if now < hit.valid_until && key_still_published {
            return Some(Arc::clone(&hit.principal));
        }
        // Re-verify from scratch: that yields the precise reason (expired, unknown key, ...).
        self.cache.remove(hash);
        None
    }

    /// True when the token with this hash failed its signature check against the key set its
    /// issuer still serves: it would fail again.
    fn rejected_before(&self, hash: &cache::TokenHash) -> bool {
        self.rejected.get(hash).is_some_and(|r| {
            self.issuers
                .get(r.issuer)
                .is_some_and(|issuer| issuer.serves(&r.keys))
        })
    }

    /// Finds the key for (issuer, kid), refetching once for an unknown kid, and checks the
    /// signature. Returns the key that verified; remembers a token none verified (`hash`) under
    /// the issuer's index.
    async fn verify_signature(
        &self,
        (index, issuer): (usize, &IssuerState),
        kid: Option<&str>,
        alg: Algorithm,
        parts: &Parts<'_>,
        hash: cache::TokenHash,
    ) -> Result<Arc<VerifyKey>, TokenError> {
        let Some(mut keys) = issuer.keys() else {
            issuer.kick();
            return Err(TokenError::KeysUnavailable {
                retry_after: issuer.retry_after(),
            });
        };
        if keys.candidates(kid, alg).is_none() {
            issuer.refetch_for_unknown_kid(&keys).await;
            if let Some(fresh) = issuer.keys() {
                keys = fresh;
            }
        }
        let candidates = select(&keys, kid, alg)?;
        for key in candidates {
            #[cfg(test)]
            self.signature_checks
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if verify_signature(key, alg, parts.signing_input.as_bytes(), parts.signature) {
                return Ok(Arc::clone(key));
            }
        }
        self.rejected.insert(
            hash,
            Rejected {
                issuer: index,
                keys: Arc::clone(&keys),
            },
        );
        Err(TokenError::InvalidToken(Reason::BadSignature))
    }

    /// True when every issuer has loaded keys.
    pub(crate) fn ready(&self) -> bool {
        self.issuers.iter().all(|issuer| issuer.has_keys())
    }
}

/// The keys to try: with a kid, those carrying it that fit `alg`; without one, the single key
/// that fits `alg` (several would be a guess, so none is used).
fn select<'k>(
    keys: &'k KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Vec<&'k Arc<VerifyKey>>, TokenError> {
    let candidates = keys
        .candidates(kid, alg)
        .ok_or(TokenError::InvalidToken(Reason::UnknownKey))?;
    match (kid, candidates.len()) {
        // The kid exists, but none of its keys may be used with this alg.
        (Some(_), 0) => Err(TokenError::InvalidToken(Reason::AlgorithmNotAllowed)),
        (None, 1) | (Some(_), _) => Ok(candidates),
        (None, _) => Err(TokenError::InvalidToken(Reason::UnknownKey)),
    }
}
