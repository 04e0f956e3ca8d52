//! Renders every data-plane failure as a pingora response: the status, code and text come from
//! the one refusal table in `crate::respond`; this module adds the `WWW-Authenticate`
//! challenge, `Retry-After` and the JSON body.
//!
//! Public bodies are JSON `{"error", "error_description", "request_id"}` with a stable code and
//! a description meant for the caller; internals are logged, never sent.

use bytes::Bytes;
use pingora::http::ResponseHeader;

use crate::oidc::TokenError;
use crate::policy::Unmet;
use crate::respond::{Answer, Refusal};

/// Why the proxy answered itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The request line or headers are unusable (bad path, no host).
    BadRequest(&'static str),
    /// No `[[route]]` matches.
    NoRoute,
    /// A bearer-token problem.
    Token(TokenError),
    /// The token is fine but the rule's step-up requirements are not met.
    StepUp(Unmet),
    /// A `deny` rule or `default = "deny"`.
    Denied,
    /// An `approve` rule while approvals are not available (audit log or approval machinery
    /// failed): fail closed.
    ApprovalsUnavailable,
    /// The approval store cannot be reached: fail closed.
    StoreUnavailable,
    /// The requester already has `max_pending_per_requester` approvals pending.
    TooManyPending,
    /// A held request's body is larger than the 1 MiB that can be held.
    PayloadTooLarge,
    /// The rule needs a `Countersign-Reason` header and none was sent.
    ReasonRequired,
    /// Nobody other than the requester may approve this request.
    ApprovalUnsatisfiable,
    /// An `approve` rule and a token that names no person (SPEC 8): the requester could
    /// approve their own request from an identified account.
    IdentityRequired,
    /// An approver denied the request.
    ApprovalDenied {
        /// Who denied.
        by: String,
        /// Why, if they said.
        reason: Option<String>,
    },
    /// Nobody decided before the request expired.
    ApprovalExpired,
    /// The request was withdrawn before it was decided.
    ApprovalCancelled,
    /// The proxy is shutting down and cannot keep holding the request.
    ShuttingDown,
    /// The upstream could not be reached or failed mid-response.
    UpstreamUnavailable,
    /// A bug or an unexpected internal failure (details are logged).
    Internal,
    /// `Countersign-Break-Glass` was sent empty on a `break_glass = true` rule.
    BreakGlassReasonRequired,
    /// Break-glass again inside `break_glass_cooldown`; retry after this many seconds.
    BreakGlassCooldown(u64),
}

/// A rendered error response.
#[derive(Debug)]
pub struct ErrorResponse {
    /// HTTP status.
    pub status: u16,
    /// Stable error code.
    pub code: &'static str,
    /// Human description (public).
    pub description: String,
    /// `WWW-Authenticate` value, when the error is an authentication challenge.
    pub challenge: Option<String>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
}

/// Values every challenge needs.
#[derive(Debug, Clone, Copy)]
pub struct ChallengeContext<'a> {
    /// RFC 9728 metadata URL for this resource.
    pub resource_metadata: &'a str,
}

impl Rejection {
    /// The refusal in the shared table (`crate::respond`), which owns status, code and text.
    pub fn refusal(&self) -> Refusal<'_> {
        match self {
            Rejection::BadRequest(why) => Refusal::BadRequest(why),
            Rejection::NoRoute => Refusal::NoRoute,
            Rejection::Token(e) => Refusal::Token(e),
            Rejection::StepUp(unmet) => Refusal::StepUp(unmet),
            Rejection::Denied => Refusal::Denied,
            Rejection::ApprovalsUnavailable => Refusal::ApprovalsUnavailable,
            Rejection::StoreUnavailable => Refusal::StoreUnavailable,
            Rejection::TooManyPending => Refusal::TooManyPending,
            Rejection::PayloadTooLarge => Refusal::PayloadTooLarge,
            Rejection::ReasonRequired => Refusal::ReasonRequired,
            Rejection::ApprovalUnsatisfiable => Refusal::ApprovalUnsatisfiable,
            Rejection::IdentityRequired => Refusal::IdentityRequired,
            Rejection::ApprovalDenied { by, reason } => Refusal::ApprovalDenied {
                by,
                reason: reason.as_deref(),
            },
            Rejection::ApprovalExpired => Refusal::ApprovalExpired,
            Rejection::ApprovalCancelled => Refusal::ApprovalCancelled,
            Rejection::ShuttingDown => Refusal::ShuttingDown,
            Rejection::UpstreamUnavailable => Refusal::UpstreamUnavailable,
            Rejection::Internal => Refusal::Internal,
            Rejection::BreakGlassReasonRequired => Refusal::BreakGlassReasonRequired,
            Rejection::BreakGlassCooldown(retry_after) => Refusal::BreakGlassCooldown {
                retry_after: *retry_after,
            },
        }
    }

    /// The status, code and headers for this rejection: the table's answer plus the
    /// `WWW-Authenticate` challenge that token and step-up refusals carry.
    pub fn render(&self, cx: ChallengeContext<'_>) -> ErrorResponse {
        let answer = self.refusal().answer();
        let challenge = match self {
            Rejection::Token(e) => token_challenge(e, &answer, cx),
            Rejection::StepUp(unmet) => Some(step_up_challenge(unmet, &answer, cx)),
            _ => None,
        };
        ErrorResponse {
            status: answer.status,
            code: answer.code,
            description: answer.description.into_owned(),
            challenge,
            retry_after: answer.retry_after,
        }
    }

    /// The label used for `countersign_requests_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_request",
            Rejection::NoRoute => "no_route",
            Rejection::Token(TokenError::Missing) => "unauthenticated",
            Rejection::Token(TokenError::InvalidRequest(_)) => "bad_request",
            Rejection::Token(TokenError::InvalidToken(_)) => "invalid_token",
            Rejection::Token(TokenError::KeysUnavailable { .. }) => "keys_unavailable",
            Rejection::StepUp(_) => "step_up",
            Rejection::Denied => "denied",
            Rejection::ApprovalsUnavailable => "approvals_unavailable",
            Rejection::StoreUnavailable => "store_unavailable",
            Rejection::PayloadTooLarge => "payload_too_large",
            Rejection::ReasonRequired => "reason_required",
            Rejection::ApprovalUnsatisfiable => "approval_unsatisfiable",
            Rejection::IdentityRequired => "identity_required",
            Rejection::TooManyPending => "too_many_pending",
            Rejection::ApprovalDenied { .. } => "approval_denied",
            Rejection::ApprovalExpired => "approval_expired",
            Rejection::ApprovalCancelled => "approval_cancelled",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::UpstreamUnavailable => "upstream_error",
            Rejection::Internal => "internal_error",
            Rejection::BreakGlassReasonRequired => "break_glass_reason_required",
            Rejection::BreakGlassCooldown(_) => "break_glass_cooldown",
        }
    }
}

fn token_challenge(e: &TokenError, answer: &Answer, cx: ChallengeContext<'_>) -> Option<String> {
    match e {
        TokenError::Missing => Some(challenge(cx, &[])),
        TokenError::InvalidRequest(_) | TokenError::InvalidToken(_) => Some(challenge(
            cx,
            &[
                ("error", answer.code),
                ("error_description", &answer.description),
            ],
        )),
        TokenError::KeysUnavailable { .. } => None,
    }
}

fn step_up_challenge(unmet: &Unmet, answer: &Answer, cx: ChallengeContext<'_>) -> String {
    let mut params = vec![
        ("error", answer.code.to_owned()),
        ("error_description", answer.description.clone().into_owned()),
    ];
    match unmet {
        Unmet::Scopes { required } => params.push(("scope", required.join(" "))),
        Unmet::Authentication {
            acr_values,
            max_age,
        } => {
            if !acr_values.is_empty() {
                params.push(("acr_values", acr_values.join(" ")));
            }
            if let Some(m) = max_age {
                params.push(("max_age", m.to_string()));
            }
        }
    }
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    challenge(cx, &params)
}

/// `Bearer realm="countersign", error=..., resource_metadata="..."` (RFC 6750 3, RFC 9728 5.1).
fn challenge(cx: ChallengeContext<'_>, params: &[(&str, &str)]) -> String {
    let mut out = String::from("Bearer realm=\"countersign\"");
    for (k, v) in params {
        out.push_str(", ");
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(&quote_safe(v));
        out.push('"');
    }
    out.push_str(", resource_metadata=\"");
    out.push_str(&quote_safe(cx.resource_metadata));
    out.push('"');
    out
}

/// Strips characters that cannot appear inside an RFC 7230 quoted-string we generate.
fn quote_safe(v: &str) -> String {
    v.chars()
        .filter(|c| *c != '"' && *c != '\\' && (*c == ' ' || c.is_ascii_graphic()))
        .collect()
}

impl ErrorResponse {
    /// The JSON body.
    pub fn body(&self, request_id: &str) -> Bytes {
        let v = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
            "request_id": request_id,
        });
        Bytes::from(v.to_string())
    }

    /// The response header for this error (body length known).
    pub fn header(&self, body_len: usize, request_id: &str) -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(6))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        resp.insert_header("countersign-request-id", request_id)?;
        if let Some(c) = &self.challenge {
            resp.insert_header(http::header::WWW_AUTHENTICATE, c.as_str())?;
        }
        if let Some(r) = self.retry_after {
            resp.insert_header(http::header::RETRY_AFTER, r.to_string())?;
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CX: ChallengeContext<'static> = ChallengeContext {
        resource_metadata: "https://api.example.com/.well-known/oauth-protected-resource",
    };

    #[test]
    fn missing_token_has_bare_challenge() {
        let r = Rejection::Token(TokenError::Missing).render(CX);
        assert_eq!(r.status, 401);
        assert_eq!(
            r.challenge.as_deref(),
            Some("Bearer realm=\"countersign\", resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource\"")
        );
    }

    #[test]
    fn scope_challenge_lists_required_scopes() {
        let r = Rejection::StepUp(Unmet::Scopes {
            required: vec!["deploy:write".into(), "deploy:read".into()],
        })
        .render(CX);
        assert_eq!(r.status, 403);
        let c = r.challenge.unwrap_or_default();
        assert!(c.contains("error=\"insufficient_scope\""), "{c}");
        assert!(c.contains("scope=\"deploy:write deploy:read\""), "{c}");
    }

    #[test]
    fn step_up_challenge_carries_acr_and_max_age() {
        let r = Rejection::StepUp(Unmet::Authentication {
            acr_values: vec!["phr".into(), "urn:mfa".into()],
            max_age: Some(900),
        })
        .render(CX);
        assert_eq!(r.status, 401);
        let c = r.challenge.unwrap_or_default();
        assert!(
            c.contains("error=\"insufficient_user_authentication\""),
            "{c}"
        );
        assert!(c.contains("acr_values=\"phr urn:mfa\""), "{c}");
        assert!(c.contains("max_age=\"900\""), "{c}");
    }

    #[test]
    fn keys_unavailable_is_503_with_retry_after_never_401() {
        let r = Rejection::Token(TokenError::KeysUnavailable { retry_after: 5 }).render(CX);
        assert_eq!(r.status, 503);
        assert_eq!(r.code, "temporarily_unavailable");
        assert_eq!(r.retry_after, Some(5));
    }

    #[test]
    fn body_is_json_with_request_id() {
        let r = Rejection::NoRoute.render(CX);
        let body: serde_json::Value = serde_json::from_slice(&r.body("abc123")).unwrap_or_default();
        assert_eq!(body["error"], "no_route");
        assert_eq!(body["request_id"], "abc123");
        assert!(body["error_description"].is_string());
    }
}
