//! The ONE table that turns every data-plane failure into an HTTP response.
//!
//! Public bodies are JSON `{"error", "error_description", "request_id"}` with a stable code and
//! a description meant for the caller; internals are logged, never sent.

use bytes::Bytes;
use pingora::http::ResponseHeader;

use crate::oidc::{Reason, TokenError};
use crate::policy::Unmet;

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
    /// The status, code and headers for this rejection: the whole mapping, one place.
    pub fn render(&self, cx: ChallengeContext<'_>) -> ErrorResponse {
        match self {
            Rejection::BadRequest(why) => plain(400, "invalid_request", why),
            Rejection::NoRoute => plain(404, "no_route", "no route matches this request"),
            Rejection::Denied => plain(403, "access_denied", "this request is not allowed"),
            Rejection::TooManyPending => ErrorResponse {
                retry_after: Some(60),
                ..plain(
                    429,
                    "too_many_pending",
                    "you already have the most approval requests pending that are allowed; wait for a decision or withdraw one",
                )
            },
            Rejection::IdentityRequired => plain(
                403,
                "identity_required",
                "this request needs approval, and the token does not identify a person (no verified identity claim)",
            ),
            Rejection::ApprovalsUnavailable => ErrorResponse {
                retry_after: Some(30),
                ..plain(
                    503,
                    "approvals_unavailable",
                    "this request needs an approval and approvals are not available",
                )
            },
            Rejection::StoreUnavailable => ErrorResponse {
                retry_after: Some(5),
                ..plain(
                    503,
                    "store_unavailable",
                    "the approval store is unavailable; this request cannot be held safely",
                )
            },
            Rejection::PayloadTooLarge => plain(
                413,
                "payload_too_large",
                "requests that need an approval may carry at most 1 MiB of body",
            ),
            Rejection::ReasonRequired => plain(
                400,
                "reason_required",
                "this request needs an approval: say why in a Countersign-Reason header",
            ),
            Rejection::ApprovalUnsatisfiable => plain(
                403,
                "approval_unsatisfiable",
                "not enough approvers other than the requester could approve this request",
            ),
            Rejection::ApprovalDenied { by, reason } => plain(
                403,
                "approval_denied",
                &match reason {
                    Some(r) => format!("denied by {by}: {r}"),
                    None => format!("denied by {by}"),
                },
            ),
            Rejection::ApprovalExpired => plain(
                403,
                "approval_expired",
                "nobody approved this request before it expired",
            ),
            Rejection::ApprovalCancelled => plain(
                403,
                "approval_cancelled",
                "this request was withdrawn before it was decided",
            ),
            Rejection::ShuttingDown => ErrorResponse {
                retry_after: Some(5),
                ..plain(503, "shutting_down", "the proxy is shutting down; retry")
            },
            Rejection::UpstreamUnavailable => plain(
                502,
                "upstream_unavailable",
                "the upstream service is unavailable",
            ),
            Rejection::Internal => plain(500, "internal_error", "internal error"),
            Rejection::Token(e) => token_error(e, cx),
            Rejection::StepUp(unmet) => step_up(unmet, cx),
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
        }
    }
}

fn plain(status: u16, code: &'static str, description: &str) -> ErrorResponse {
    ErrorResponse {
        status,
        code,
        description: description.to_owned(),
        challenge: None,
        retry_after: None,
    }
}

fn token_error(e: &TokenError, cx: ChallengeContext<'_>) -> ErrorResponse {
    match e {
        TokenError::Missing => ErrorResponse {
            challenge: Some(challenge(cx, &[])),
            ..plain(401, "missing_token", "a bearer token is required")
        },
        TokenError::InvalidRequest(reason) => with_challenge(400, "invalid_request", *reason, cx),
        TokenError::InvalidToken(reason) => with_challenge(401, "invalid_token", *reason, cx),
        TokenError::KeysUnavailable { retry_after } => ErrorResponse {
            retry_after: Some(*retry_after),
            ..plain(
                503,
                "temporarily_unavailable",
                "the token issuer's keys are not available yet; retry shortly",
            )
        },
    }
}

fn with_challenge(
    status: u16,
    code: &'static str,
    reason: Reason,
    cx: ChallengeContext<'_>,
) -> ErrorResponse {
    let description = reason.description();
    ErrorResponse {
        challenge: Some(challenge(
            cx,
            &[("error", code), ("error_description", description)],
        )),
        ..plain(status, code, description)
    }
}

fn step_up(unmet: &Unmet, cx: ChallengeContext<'_>) -> ErrorResponse {
    match unmet {
        Unmet::Scopes { required } => {
            let scope = required.join(" ");
            let description = "the token lacks a required scope";
            ErrorResponse {
                challenge: Some(challenge(
                    cx,
                    &[
                        ("error", "insufficient_scope"),
                        ("error_description", description),
                        ("scope", &scope),
                    ],
                )),
                ..plain(403, "insufficient_scope", description)
            }
        }
        Unmet::Authentication {
            acr_values,
            max_age,
        } => {
            let description = "a stronger or more recent authentication is required";
            let acr = acr_values.join(" ");
            let max_age = max_age.map(|m| m.to_string());
            let mut params = vec![
                ("error", "insufficient_user_authentication"),
                ("error_description", description),
            ];
            if !acr.is_empty() {
                params.push(("acr_values", &acr));
            }
            if let Some(m) = &max_age {
                params.push(("max_age", m));
            }
            ErrorResponse {
                challenge: Some(challenge(cx, &params)),
                ..plain(401, "insufficient_user_authentication", description)
            }
        }
    }
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
