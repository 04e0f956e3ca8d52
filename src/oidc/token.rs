//! Compact JWS parsing and claim checks: pure functions, no I/O, no keys, time passed in.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Reason;
use crate::config::{Algorithm, Issuer};

/// Longest bearer token we look at. Real access tokens are a few KiB; anything larger is
/// rejected before hashing, decoding or parsing.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The three parts of a compact JWS, checked to be strict base64url.
#[derive(Debug)]
pub(crate) struct Parts<'t> {
    /// `header.payload`, what the signature covers.
    pub(crate) signing_input: &'t str,
    /// The signature, still base64url (it is what `jsonwebtoken::crypto::verify` takes).
    pub(crate) signature: &'t str,
    /// Decoded header bytes.
    pub(crate) header: Vec<u8>,
    /// Decoded payload bytes.
    pub(crate) payload: Vec<u8>,
}

/// Splits a compact JWS: exactly three dot-separated parts, each canonical base64url without
/// padding (so a JWE's five parts, padding, whitespace or trailing garbage are `Malformed`).
pub(crate) fn split(token: &str) -> Result<Parts<'_>, Reason> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Reason::Malformed);
    }
    let mut pieces = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(Reason::Malformed);
    };
    let header_bytes = decode(header)?;
    let payload_bytes = decode(payload)?;
    // Decoded only to prove it is canonical base64url; verification decodes it again.
    decode(signature)?;
    Ok(Parts {
        signing_input: &token[..header.len() + 1 + payload.len()],
        signature,
        header: header_bytes,
        payload: payload_bytes,
    })
}

/// Strict base64url: only the URL-safe alphabet, no padding, zero trailing bits.
fn decode(part: &str) -> Result<Vec<u8>, Reason> {
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Reason::Malformed);
    }
    URL_SAFE_NO_PAD.decode(part).map_err(|_| Reason::Malformed)
}

/// The JOSE header members we act on. Everything else (`jwk`, `jku`, `x5u`, `x5c`, `x5t`, ...)
/// is deliberately ignored: keys only ever come from the issuer's configured JWKS.
/// Serde rejects a header that repeats one of these members.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    /// `alg`.
    alg: Option<String>,
    /// `kid`.
    pub(crate) kid: Option<String>,
    /// `typ`.
    typ: Option<String>,
    /// `crit`: any value at all means an extension we do not understand.
    crit: Option<Value>,
}

/// Parses the header JSON object.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, Reason> {
    serde_json::from_slice(bytes).map_err(|_| Reason::Malformed)
}

/// The header's algorithm, if it is one we could ever accept (never `none` in any casing,
/// never HMAC, never unknown). The per-issuer allow-list is checked by [`check_allowed`].
pub(crate) fn header_alg(header: &Header) -> Result<Algorithm, Reason> {
    header
        .alg
        .as_deref()
        .and_then(Algorithm::from_jose)
        .ok_or(Reason::AlgorithmNotAllowed)
}

/// Rejects any `crit` header: we understand no JWS extensions (RFC 7515 section 4.1.11).
pub(crate) fn check_crit(header: &Header) -> Result<(), Reason> {
    match header.crit {
        Some(_) => Err(Reason::UnsupportedCritical),
        None => Ok(()),
    }
}

/// `alg` must be in the issuer's allow-list.
pub(crate) fn check_allowed(alg: Algorithm, issuer: &Issuer) -> Result<(), Reason> {
    if issuer.algorithms.contains(&alg) {
        Ok(())
    } else {
        Err(Reason::AlgorithmNotAllowed)
    }
}

/// RFC 9068 explicit typing: when the issuer requires a `typ`, the header must carry it,
/// compared case-insensitively with or without the `application/` prefix.
pub(crate) fn check_typ(header: &Header, issuer: &Issuer) -> Result<(), Reason> {
    let Some(required) = issuer.require_typ.as_deref() else {
        return Ok(());
    };
    match header.typ.as_deref() {
        Some(typ) if media_type_eq(typ, required) => Ok(()),
        _ => Err(Reason::WrongType),
    }
}

fn media_type_eq(a: &str, b: &str) -> bool {
    fn short(s: &str) -> &str {
        match s.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &s[12..],
            _ => s,
        }
    }
    short(a).eq_ignore_ascii_case(short(b))
}

/// Parses the payload JSON object (the claims).
pub(crate) fn parse_claims(bytes: &[u8]) -> Result<Map<String, Value>, Reason> {
    serde_json::from_slice(bytes).map_err(|_| Reason::Malformed)
}

/// The `iss` claim, if it is a string.
pub(crate) fn issuer_claim(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("iss").and_then(Value::as_str)
}

/// Time checks and audience/subject, for a token whose signature already verified. Returns the
/// last second at which the token is still acceptable (`exp` + leeway).
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    now: u64,
) -> Result<u64, Reason> {
    let leeway = issuer.leeway.as_secs();
    let exp = match claims.get("exp") {
        None => return Err(Reason::MissingExpiry),
        Some(v) => numeric_date(v).ok_or(Reason::Malformed)?,
    };
    // RFC 7519 4.1.4: the current time must be before exp.
    let valid_until = exp.saturating_add(leeway);
    if now >= valid_until {
        return Err(Reason::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(v) = claims.get(name) {
            let at = numeric_date(v).ok_or(Reason::Malformed)?;
            if at > now.saturating_add(leeway) {
                return Err(Reason::NotYetValid);
            }
        }
    }
    if !audience_ok(claims.get("aud"), &issuer.audiences) {
        return Err(Reason::WrongAudience);
    }
    if !claims.get("sub").is_some_and(Value::is_string) {
        return Err(Reason::MissingSubject);
    }
    Ok(valid_until)
}

/// `aud` is a string or an array of strings; one of them must be a configured audience.
fn audience_ok(aud: Option<&Value>, accepted: &[String]) -> bool {
    let named = |s: &str| accepted.iter().any(|a| a == s);
    match aud {
        Some(Value::String(s)) => named(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(named),
        _ => false,
    }
}

/// A JWT NumericDate: a non-negative JSON number; fractions truncated.
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}
