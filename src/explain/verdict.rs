//! The data side of `explain`: the [`Verdict`] that [`super::judge`] returns, and the caller
//! built from hand-written claims ([`caller_from_claims`]) that both `explain --claims` and
//! `countersign test` cases use. Must not evaluate anything itself: the walk is in
//! [`super::report`].

use crate::config::Config;
use crate::identity::Principal;
use crate::policy::{Action, Outcome};

/// What Countersign would do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The final outcome (enforcing rules only).
    pub outcome: Outcome,
    /// The deciding rule's name; `"default"` when `[policy] default` decided (the name logs and
    /// metrics use); `None` when no rule was reached (no route, a refused path, no token).
    pub rule: Option<String>,
    /// Shadow rules that matched on the way, in order, with their actions.
    pub shadow: Vec<(String, Action)>,
}

/// A caller from claims written by hand (`--claims`, a test case's `claims`): `iss` defaults
/// to the first configured issuer, `sub` to `"explain"`, `exp` to an hour after `now`, and the
/// person is identified by the issuer's `identity_claim`, as the proxy would. Nothing is
/// verified: there is no signature.
pub fn caller_from_claims(
    config: &Config,
    mut map: serde_json::Map<String, serde_json::Value>,
    now: u64,
) -> Result<Principal, String> {
    use serde_json::Value;
    map.entry("iss").or_insert_with(|| {
        Value::String(
            config
                .issuers
                .first()
                .map(|i| i.issuer.clone())
                .unwrap_or_default(),
        )
    });
    map.entry("sub")
        .or_insert_with(|| Value::String("explain".into()));
    map.entry("exp").or_insert_with(|| Value::from(now + 3600));
    let issuer = map
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| config.issuers.iter().find(|i| i.issuer == iss));
    let (claim, approvers) = issuer.map_or(("email", false), |i| {
        (i.identity_claim.as_str(), i.approvers)
    });
    Principal::from_claims_as(map, claim, approvers)
        .ok_or_else(|| "iss, sub and exp must be a string, a string and a number".to_owned())
}
