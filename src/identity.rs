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
