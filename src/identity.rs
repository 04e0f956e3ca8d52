//! Who is calling: the facts about a verified bearer token that policy decisions use.
//!
//! Produced by `oidc` (never anywhere else), read by `policy` and `proxy`.

use serde_json::{Map, Value};

/// A caller whose bearer token was verified.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `iss`, exactly as configured.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `email` claim, if any.
    pub email: Option<String>,
    /// Scopes from the `scope` string (space separated) or the `scp` array.
    pub scopes: Vec<String>,
    /// `acr` claim.
    pub acr: Option<String>,
    /// `auth_time` claim (seconds since the epoch).
    pub auth_time: Option<u64>,
    /// `exp` claim (seconds since the epoch).
    pub expires_at: u64,
    /// Every claim of the token, for `claims` conditions in policy rules.
    pub claims: Map<String, Value>,
}

impl Principal {
    /// A claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

impl Principal {
    /// Builds a principal from a token's claims (already verified, or decoded for `explain`).
    /// `None` when `iss`, `sub` or `exp` is missing or of the wrong type.
    pub fn from_claims(claims: Map<String, Value>) -> Option<Principal> {
        let issuer = claims.get("iss")?.as_str()?.to_owned();
        let subject = claims.get("sub")?.as_str()?.to_owned();
        let expires_at = claims.get("exp").and_then(numeric_date)?;
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut scopes: Vec<String> = Vec::new();
        if let Some(scope) = claims.get("scope").and_then(Value::as_str) {
            scopes.extend(
                scope
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        if let Some(scp) = claims.get("scp") {
            match scp {
                Value::Array(items) => {
                    scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                Value::String(s) => {
                    scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned))
                }
                _ => {}
            }
        }
        let acr = claims.get("acr").and_then(Value::as_str).map(str::to_owned);
        let auth_time = claims.get("auth_time").and_then(numeric_date);
        Some(Principal {
            issuer,
            subject,
            email,
            scopes,
            acr,
            auth_time,
            expires_at,
            claims,
        })
    }
}

/// A JWT NumericDate: a non-negative JSON number (fractions truncated).
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}
