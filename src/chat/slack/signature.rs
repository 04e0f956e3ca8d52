//! Slack request signing, version `v0`: `X-Slack-Signature` is
//! `v0=` + hex HMAC-SHA256(signing secret, `v0:{X-Slack-Request-Timestamp}:{raw body}`).
//!
//! Checked on the raw bytes before anything is parsed; the comparison is constant-time and the
//! timestamp must be within [`MAX_SKEW`] of our clock (replays of old captures fail).

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// How far the request timestamp may be from our clock, either way (Slack's recommendation).
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// Header carrying the unix timestamp the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

/// Why a request was not accepted as coming from Slack. All map to 401 without detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Slack-Signature` or `X-Slack-Request-Timestamp` header (or not text).
    #[error("missing Slack signature headers")]
    Missing,
    /// The timestamp is not a unix time in seconds.
    #[error("malformed Slack request timestamp")]
    BadTimestamp,
    /// The timestamp is more than five minutes away from now.
    #[error("stale Slack request timestamp")]
    Stale,
    /// The signature does not match the body (tampered, wrong secret, or not `v0=` hex).
    #[error("Slack signature mismatch")]
    Mismatch,
}

/// The `v0=...` signature Slack would send for `body` at `timestamp`.
pub fn sign(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(mac(signing_secret, timestamp, body).finalize().into_bytes())
    )
}

fn mac(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key
    // (which then never matches a real signature) rather than panic.
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Checks `signature` (`v0=<hex>`) over `body` at `timestamp` against `now_unix`.
pub fn verify(
    signing_secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_unix: u64,
) -> Result<(), SignatureError> {
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if ts.abs_diff(now_unix) > MAX_SKEW.as_secs() {
        return Err(SignatureError::Stale);
    }
    let given = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Mismatch)?;
    // `verify_slice` compares in constant time.
    mac(signing_secret, timestamp.trim(), body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// [`verify`] with the signature and timestamp taken from Slack's headers.
pub fn verify_headers(
    signing_secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_unix: u64,
) -> Result<(), SignatureError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(SignatureError::Missing)
    };
    let timestamp = header(TIMESTAMP_HEADER)?;
    let signature = header(SIGNATURE_HEADER)?;
    verify(signing_secret, timestamp, signature, body, now_unix)
}
