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

/// A rendered error response: the table's answer and, for token and step-up refusals, the
/// `WWW-Authenticate` challenge.
#[derive(Debug)]
pub struct ErrorResponse {
    /// Status, code, public description and `Retry-After`, from `crate::respond`.
    pub answer: Answer,
    /// `WWW-Authenticate` value, when the error is an authentication challenge.
    pub challenge: Option<String>,
}

/// Values every challenge needs.
#[derive(Debug, Clone, Copy)]
pub struct ChallengeContext<'a> {
    /// RFC 9728 metadata URL for this resource.
    pub resource_metadata: &'a str,
}

/// The status, code and headers for `refusal`: the table's answer plus the `WWW-Authenticate`
/// challenge that token and step-up refusals carry.
pub fn render(refusal: &Refusal, cx: ChallengeContext<'_>) -> ErrorResponse {
    let answer = refusal.answer();
    let challenge = match refusal {
        Refusal::Token(e) => token_challenge(e, &answer, cx),
        Refusal::StepUp(unmet) => Some(step_up_challenge(unmet, &answer, cx)),
        _ => None,
    };
    ErrorResponse { answer, challenge }
}

/// The label used for `countersign_requests_total{outcome}`.
pub fn outcome(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::BadRequest(_) => "bad_request",
        Refusal::NoRoute => "no_route",
        Refusal::Token(TokenError::Missing) => "unauthenticated",
        Refusal::Token(TokenError::InvalidRequest(_)) => "bad_request",
        Refusal::Token(TokenError::InvalidToken(_)) => "invalid_token",
        Refusal::Token(TokenError::KeysUnavailable { .. }) => "keys_unavailable",
        Refusal::StepUp(_) => "step_up",
        Refusal::Denied => "denied",
        Refusal::ApprovalsUnavailable => "approvals_unavailable",
        Refusal::StoreUnavailable => "store_unavailable",
        Refusal::PayloadTooLarge => "payload_too_large",
        Refusal::ReasonRequired => "reason_required",
        Refusal::ApprovalUnsatisfiable => "approval_unsatisfiable",
        Refusal::IdentityRequired => "identity_required",
        Refusal::TooManyPending => "too_many_pending",
        Refusal::ApprovalDenied { .. } => "approval_denied",
        Refusal::ApprovalExpired => "approval_expired",
        Refusal::ApprovalCancelled => "approval_cancelled",
        Refusal::ShuttingDown => "shutting_down",
        Refusal::UpstreamUnavailable => "upstream_error",
        Refusal::Internal => "internal_error",
        Refusal::BreakGlassReasonRequired => "break_glass_reason_required",
        Refusal::BreakGlassCooldown { .. } => "break_glass_cooldown",
        // The control plane's refusals never come from the proxy; were one to, its code says
        // what it was.
        other => other.answer().code,
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
            "error": self.answer.code,
            "error_description": self.answer.description,
            "request_id": request_id,
        });
        Bytes::from(v.to_string())
    }

    /// The response header for this error (body length known).
    pub fn header(&self, body_len: usize, request_id: &str) -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.answer.status, Some(6))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        resp.insert_header("countersign-request-id", request_id)?;
        if let Some(c) = &self.challenge {
            resp.insert_header(http::header::WWW_AUTHENTICATE, c.as_str())?;
        }
        if let Some(r) = self.answer.retry_after {
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
        let r = render(&Refusal::Token(TokenError::Missing), CX);
        assert_eq!(r.answer.status, 401);
        assert_eq!(
            r.challenge.as_deref(),
            Some("Bearer realm=\"countersign\", resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource\"")
        );
    }

    #[test]
    fn scope_challenge_lists_required_scopes() {
        let r = render(
            &Refusal::StepUp(Unmet::Scopes {
                required: vec!["deploy:write".into(), "deploy:read".into()],
            }),
            CX,
        );
        assert_eq!(r.answer.status, 403);
        let c = r.challenge.unwrap_or_default();
        assert!(c.contains("error=\"insufficient_scope\""), "{c}");
        assert!(c.contains("scope=\"deploy:write deploy:read\""), "{c}");
    }

    #[test]
    fn step_up_challenge_carries_acr_and_max_age() {
        let r = render(
            &Refusal::StepUp(Unmet::Authentication {
                acr_values: vec!["phr".into(), "urn:mfa".into()],
                max_age: Some(900),
            }),
            CX,
        );
        assert_eq!(r.answer.status, 401);
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
        let r = render(
            &Refusal::Token(TokenError::KeysUnavailable { retry_after: 5 }),
            CX,
        );
        assert_eq!(r.answer.status, 503);
        assert_eq!(r.answer.code, "temporarily_unavailable");
        assert_eq!(r.answer.retry_after, Some(5));
    }

    #[test]
    fn body_is_json_with_request_id() {
        let r = render(&Refusal::NoRoute, CX);
        let body: serde_json::Value = serde_json::from_slice(&r.body("abc123")).unwrap_or_default();
        assert_eq!(body["error"], "no_route");
        assert_eq!(body["request_id"], "abc123");
        assert!(body["error_description"].is_string());
    }
}
