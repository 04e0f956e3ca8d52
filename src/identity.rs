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
    /// The person behind the token: the issuer's `identity_claim` (default `email`),
    /// lowercase; `None` when the claim is missing or `email_verified` is `false` (SPEC 8).
    pub email: Option<String>,
    /// Whether the issuer sets `approvers = true`: only then may this token cast API votes.
    pub may_approve: bool,
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
    /// Builds a principal from a token's claims (already verified, or decoded for `explain`),
    /// identified by the `email` claim and not an API approver. `None` when `iss`, `sub` or
    /// `exp` is missing or of the wrong type.
    pub fn from_claims(claims: Map<String, Value>) -> Option<Principal> {
        Self::from_claims_as(claims, "email", false)
    }

    /// [`Principal::from_claims`] for an issuer whose `identity_claim` and `approvers`
    /// settings are given.
    pub fn from_claims_as(
        claims: Map<String, Value>,
        identity_claim: &str,
        may_approve: bool,
    ) -> Option<Principal> {
        let issuer = claims.get("iss")?.as_str()?.to_owned();
        let subject = claims.get("sub")?.as_str()?.to_owned();
        let expires_at = claims.get("exp").and_then(numeric_date)?;
        let email = person(&claims, identity_claim);
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
            may_approve,
            scopes,
            acr,
            auth_time,
            expires_at,
            claims,
        })
    }
}

/// The person a token names: `identity_claim` as a non-empty string, lowercase. A token whose
/// `email_verified` is `false` (boolean or the string some IdPs send) names nobody: its holder
/// could have typed any address into the IdP.
fn person(claims: &Map<String, Value>, identity_claim: &str) -> Option<String> {
    let unverified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("false"),
        _ => false,
    };
    if unverified {
        return None;
    }
    claims
        .get(identity_claim)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase)
}

/// A JWT NumericDate: a non-negative JSON number (fractions truncated).
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({"iss": "https://idp", "sub": "u1", "exp": 2_000_000_000u64});
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        match base {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_identity_claim_names_the_person_unless_unverified() {
        let p = Principal::from_claims(claims(json!({"email": "Alice@Example.com"}))).unwrap();
        assert_eq!(p.email.as_deref(), Some("alice@example.com"));
        assert!(!p.may_approve);

        for unverified in [json!(false), json!("false"), json!("FALSE")] {
            let p = Principal::from_claims(claims(
                json!({"email": "alice@example.com", "email_verified": unverified}),
            ))
            .unwrap();
            assert_eq!(p.email, None, "email_verified = {unverified}");
        }
        let p = Principal::from_claims(claims(
            json!({"email": "alice@example.com", "email_verified": true}),
        ))
        .unwrap();
        assert_eq!(p.email.as_deref(), Some("alice@example.com"));

        // Entra: upn names the person; an email claim is then not the identity.
        let entra = claims(json!({"upn": "Bob@Contoso.com", "email": "other@example.com"}));
        let p = Principal::from_claims_as(entra, "upn", true).unwrap();
        assert_eq!(p.email.as_deref(), Some("bob@contoso.com"));
        assert!(p.may_approve);

        // Missing, empty or non-string: nobody.
        for extra in [json!({}), json!({"email": ""}), json!({"email": 7})] {
            assert_eq!(Principal::from_claims(claims(extra)).unwrap().email, None);
        }
    }
}
