//! Inbound: the Bot Framework token on every activity Teams sends to `POST /teams/messages`
//! ("Authenticate requests from the Bot Connector service to your bot").
//!
//! A request is accepted only when all of these hold:
//! 1. `Authorization: Bearer <JWT>`;
//! 2. the JWT is signed with RS256 by a key from the JWKS that the Bot Framework's OpenID
//!    metadata names (`jwks_uri`), found by `kid`; when that key lists `endorsements`, they
//!    include the activity's `channelId`;
//! 3. `iss` is `https://api.botframework.com`;
//! 4. `aud` is the bot's app id;
//! 5. `exp` (required) and `nbf` are within [`CLOCK_SKEW`] of our clock;
//! 6. the `serviceUrl` claim equals the activity's `serviceUrl` (so a token issued for one
//!    region or conversation cannot carry another's activities, and outbound calls with our own
//!    token only go where Microsoft said).
//!
//! Keys are fetched on first use and kept for [`KEYS_MAX_AGE`]; a `kid` we do not know triggers
//! a refetch at most every [`REFETCH_MIN_INTERVAL`]. When the keys cannot be fetched at all the
//! answer is "unavailable" (503), never "accepted".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::clock::SharedClock;

/// The issuer of every Bot Framework token sent to bots.
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";
/// The clock skew the Bot Framework allows on `exp` and `nbf`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Keys older than this are refetched before use (Microsoft rotates them, announcing new keys
/// in advance).
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// An unknown `kid` refetches the keys at most this often (forged tokens cannot make us hammer
/// the metadata endpoint).
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// While no key was ever fetched, a failed fetch is retried at most this often.
const FIRST_FETCH_RETRY: Duration = Duration::from_secs(1);
/// Longest token we look at.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why an inbound activity was not accepted as coming from the Bot Framework.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// Not a compact JWS we can read, or not RS256, or no `kid`.
    #[error("malformed token")]
    Malformed,
    /// No key with the token's `kid` in the Bot Framework's JWKS.
    #[error("unknown signing key")]
    UnknownKey,
    /// The key does not endorse the activity's channel.
    #[error("signing key not endorsed for channel {0:?}")]
    NotEndorsed(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the Bot Framework.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` is not our app id.
    #[error("wrong audience")]
    Audience,
    /// `exp` passed (beyond the allowed skew), or is missing.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the allowed skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// The `serviceUrl` claim is missing or differs from the activity's.
    #[error("serviceUrl claim does not match the activity")]
    ServiceUrl,
    /// The Bot Framework keys could not be fetched (503: Teams retries; nothing accepted).
    #[error("bot framework keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// OpenID metadata (only what we use).
#[derive(Deserialize)]
struct Metadata {
    jwks_uri: Url,
}

/// One JWK (only what we use).
#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    endorsements: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// A usable key.
struct Key {
    decoding: DecodingKey,
    endorsements: Option<Vec<String>>,
}

/// The key set and when it was fetched.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<Key>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Verifies Bot Framework tokens.
pub struct BotAuth {
    http: reqwest::Client,
    metadata_url: Url,
    app_id: String,
    clock: SharedClock,
    keys: tokio::sync::Mutex<KeySet>,
}

impl std::fmt::Debug for BotAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotAuth")
            .field("metadata_url", &self.metadata_url.as_str())
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl BotAuth {
    /// Verifies tokens for the bot `app_id` against the keys named by `metadata_url`.
    pub fn new(
        http: reqwest::Client,
        metadata_url: Url,
        app_id: String,
        clock: SharedClock,
    ) -> Self {
        Self {
            http,
            metadata_url,
            app_id,
            clock,
            keys: tokio::sync::Mutex::new(KeySet::default()),
        }
    }

    /// Checks the `Authorization` header of an activity whose root has `service_url` and
    /// `channel_id`. Returns the token's claims.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        service_url: &str,
        channel_id: &str,
    ) -> Result<Value, AuthError> {
        let token = bearer(authorization)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Malformed);
        }
        let kid = header.kid.ok_or(AuthError::Malformed)?;
        let key = self.key(&kid).await?;
        if let Some(endorsements) = &key.endorsements {
            if !endorsements.iter().any(|e| e == channel_id) {
                return Err(AuthError::NotEndorsed(channel_id.to_owned()));
            }
        }
        let mut validation = Validation::new(Algorithm::RS256);
        // Time is checked below against the injected clock; presence is checked here.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => AuthError::Expired,
                _ => AuthError::Malformed,
            })?
            .claims;
        self.check_claims(&claims, service_url)?;
        Ok(claims)
    }

    /// Issuer, audience, time and `serviceUrl` (the signature already verified).
    fn check_claims(&self, claims: &Value, service_url: &str) -> Result<(), AuthError> {
        if claims["iss"].as_str() != Some(BOT_FRAMEWORK_ISSUER) {
            return Err(AuthError::Issuer);
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a.eq_ignore_ascii_case(&self.app_id),
            Value::Array(list) => list.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(&self.app_id))
            }),
            _ => false,
        };
        if !aud_ok {
            return Err(AuthError::Audience);
        }
        let now = self.clock.unix();
        let skew = CLOCK_SKEW.as_secs();
        match claims["exp"].as_u64() {
            Some(exp) if now <= exp.saturating_add(skew) => {}
            _ => return Err(AuthError::Expired),
        }
        if let Some(nbf) = claims.get("nbf").filter(|v| !v.is_null()) {
            match nbf.as_u64() {
                Some(nbf) if nbf <= now.saturating_add(skew) => {}
                _ => return Err(AuthError::NotYetValid),
            }
        }
        let claimed = claims["serviceUrl"].as_str().ok_or(AuthError::ServiceUrl)?;
        if !claimed.eq_ignore_ascii_case(service_url) {
            return Err(AuthError::ServiceUrl);
        }
        Ok(())
    }

    /// The key `kid`, fetching the key set when it is missing, stale, or lacks `kid`.
    async fn key(&self, kid: &str) -> Result<Arc<Key>, AuthError> {
        let mut set = self.keys.lock().await;
        let now = Instant::now();
        let stale = set
            .fetched_at
            .is_none_or(|t| now.duration_since(t) >= KEYS_MAX_AGE);
        let unknown = !set.keys.contains_key(kid);
        let may_retry = set.last_attempt.is_none_or(|t| {
            let wait = if set.fetched_at.is_some() {
                REFETCH_MIN_INTERVAL
            } else {
                FIRST_FETCH_RETRY
            };
            now.duration_since(t) >= wait
        });
        if (stale || unknown) && may_retry {
            set.last_attempt = Some(now);
            match self.fetch().await {
                Ok(keys) => {
                    set.keys = keys;
                    set.fetched_at = Some(now);
                }
                // A stale set still serves: Microsoft announces keys long before using them.
                Err(e) if set.fetched_at.is_some() => {
                    tracing::warn!(error = %e, "teams: Bot Framework keys could not be refreshed; keeping the previous ones");
                }
                Err(e) => return Err(AuthError::KeysUnavailable(e)),
            }
        } else if set.fetched_at.is_none() {
            return Err(AuthError::KeysUnavailable(
                "not fetched yet; retrying shortly".into(),
            ));
        }
        set.keys.get(kid).cloned().ok_or(AuthError::UnknownKey)
    }

    /// Metadata, then the JWKS it names; RSA signing keys only.
    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let metadata: Metadata = self.get_json(self.metadata_url.clone()).await?;
        let set: JwkSet = self.get_json(metadata.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
                continue;
            };
            if jwk.kty != "RSA" {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_rsa_components(&n, &e) else {
                continue;
            };
            keys.insert(
                kid,
                Arc::new(Key {
                    decoding,
                    endorsements: jwk.endorsements,
                }),
            );
        }
        if keys.is_empty() {
            return Err("the JWKS has no usable RSA key".into());
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T, String> {
        let response = self
            .http
            .get(url.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "{url}: {}",
                    crate::chat::teams::error_chain(&e.without_url())
                )
            })?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status().as_u16()));
        }
        response
            .json()
            .await
            .map_err(|_| format!("{url}: not the expected JSON"))
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}
