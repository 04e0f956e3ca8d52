//! [`Outcome`]: what finally happens to one request, in the words `countersign test` cases use
//! (`expect = "approve"`) and `explain` reports. Owns only the names; deciding an outcome is
//! [`crate::explain`]'s job (which evaluates with [`super::PolicySet::evaluate_traced`]).

use std::fmt;

/// What happens to a request, once routing, the token and the enforcing rules have spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A `public` rule forwards it without looking at any token.
    Public,
    /// Forwarded with a valid token (an `allow` rule, or `[policy] default = "allow"`).
    Allow,
    /// 403 `access_denied` (a `deny` rule, or `[policy] default = "deny"`).
    Deny,
    /// Held until approvers countersign.
    Approve,
    /// 403 `identity_required`: an `approve` rule, and the token names no person (SPEC 8).
    IdentityRequired,
    /// 403 `insufficient_scope`: the rule's `require.scopes` are not all in the token.
    InsufficientScope,
    /// 401 `insufficient_user_authentication`: `acr` or `max_age` not met (RFC 9470).
    StepUp,
    /// 404 `no_route`: no `[[route]]` takes the request.
    NoRoute,
    /// 401 without a token: the matching rule is not `public` (or depends on claims).
    TokenRequired,
    /// 401 `invalid_token`: the token's issuer is not configured, or it has expired.
    InvalidToken,
    /// 400 `invalid_request`: the path is refused before any policy (e.g. `..` above root).
    InvalidRequest,
}

impl Outcome {
    /// Every outcome, in the order documented.
    pub const ALL: [Outcome; 11] = [
        Outcome::Public,
        Outcome::Allow,
        Outcome::Deny,
        Outcome::Approve,
        Outcome::IdentityRequired,
        Outcome::InsufficientScope,
        Outcome::StepUp,
        Outcome::NoRoute,
        Outcome::TokenRequired,
        Outcome::InvalidToken,
        Outcome::InvalidRequest,
    ];

    /// The word used in test files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Public => "public",
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Approve => "approve",
            Outcome::IdentityRequired => "identity_required",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::StepUp => "step_up",
            Outcome::NoRoute => "no_route",
            Outcome::TokenRequired => "token_required",
            Outcome::InvalidToken => "invalid_token",
            Outcome::InvalidRequest => "invalid_request",
        }
    }

    /// Parses the word [`Outcome::as_str`] gives.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
