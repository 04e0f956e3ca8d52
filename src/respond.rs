//! The ONE table from every refusal to what the caller is told: status code, stable error code
//! and public description for JSON answers (data plane and control-plane API), and status,
//! title and message for the HTML pages (approval pages, session guard, approver login).
//!
//! Owns the refusal texts and status codes. Must not touch pingora or axum types, headers,
//! bodies or logging: `proxy::error` and `control` render these answers in their own types,
//! and `explain` prints the same status and code. Internals never appear here.

use std::borrow::Cow;

use crate::oidc::TokenError;
use crate::policy::Unmet;

/// Why a JSON answer refuses the request. Data-plane kinds come first, then the control-plane
/// API's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request line or headers are unusable; the text says why.
    BadRequest(Cow<'static, str>),
    /// No `[[route]]` matches.
    NoRoute,
    /// A bearer-token problem.
    Token(TokenError),
    /// The token is fine but the rule's step-up requirements are not met.
    StepUp(Unmet),
    /// A `deny` rule or `default = "deny"`.
    Denied,
    /// An `approve` rule while approvals are not available: fail closed.
    ApprovalsUnavailable,
    /// The approval store cannot be reached while a request would be held: fail closed.
    StoreUnavailable,
    /// The requester already has the most pending approvals allowed.
    TooManyPending,
    /// A held request's body is larger than can be held.
    PayloadTooLarge,
    /// The rule needs a `Countersign-Reason` header and none was sent.
    ReasonRequired,
    /// Nobody other than the requester may approve this request.
    ApprovalUnsatisfiable,
    /// An `approve` rule and a token that names no person.
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
    /// The held request was withdrawn before it was decided.
    ApprovalCancelled,
    /// The proxy is shutting down and cannot keep holding the request.
    ShuttingDown,
    /// The upstream could not be reached or failed mid-response.
    UpstreamUnavailable,
    /// A bug or an unexpected internal failure (details are logged by the caller).
    Internal,
    /// `Countersign-Break-Glass` was sent empty on a `break_glass = true` rule.
    BreakGlassReasonRequired,
    /// A second break-glass by the same requester on the same rule inside
    /// `break_glass_cooldown`.
    BreakGlassCooldown {
        /// Seconds until the cooldown ends.
        retry_after: u64,
    },

    /// No approval with this id that the caller may see.
    NotFound,
    /// No control-plane endpoint at this path.
    NoEndpoint,
    /// The approval store failed while answering an API call.
    ApiStoreUnavailable,
    /// The audit log failed, so the step was not recorded and did not happen.
    AuditUnavailable,
    /// The voter is not an approver of this request.
    NotAnApprover,
    /// The token's issuer is not trusted to identify approvers.
    IssuerNotApprover,
    /// The token names no person, so it cannot identify an approver.
    NoApproverIdentity,
    /// The request must be approved on the page after a fresh login.
    LoginRequired,
    /// Approving one's own request.
    OwnRequest,
    /// A second vote from the same approver.
    AlreadyVoted,
    /// The request was already decided.
    AlreadyDecided,
    /// The request expired before the vote.
    VoteExpired,
    /// Approve or deny on a break-glass request under review: it can only be acknowledged.
    InReview,
    /// Acknowledge on a request that is not a break-glass under review.
    NotInReview,
    /// `"grant": true` on a deny, or on a rule without `grant` (SPEC 9).
    GrantNotAllowed,
    /// No such grant, or not one the caller may see.
    GrantNotFound,
    /// The decision body is not JSON of the expected shape; the text is the parser's.
    BadDecisionBody(String),
    /// The decision is neither `approve` nor `deny`.
    BadDecision,
    /// Approved, but the upstream call failed; it is never retried.
    ExecutionFailed,
    /// The requester asks for the result of a request they withdrew.
    ResultCancelled,
    /// Approved, but no result is parked.
    ResultUnavailable,
}

/// What a JSON refusal tells the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Stable error code (`error` in the body).
    pub code: &'static str,
    /// Public description (`error_description` in the body).
    pub description: Cow<'static, str>,
    /// `Retry-After` seconds, when retrying later can help.
    pub retry_after: Option<u64>,
}

impl Answer {
    /// `"404 no_route"`: the status and code as `explain` prints them.
    pub fn status_and_code(&self) -> String {
        format!("{} {}", self.status, self.code)
    }
}

/// The public description of a token without a required scope.
pub const INSUFFICIENT_SCOPE: &str = "the token lacks a required scope";
/// The public description of a token whose authentication is too weak or too old.
pub const INSUFFICIENT_AUTHENTICATION: &str =
    "a stronger or more recent authentication is required";

impl Refusal {
    /// The status, code, description and retry hint: the whole mapping, one place.
    pub fn answer(&self) -> Answer {
        match self {
            Refusal::BadRequest(why) => described(400, "invalid_request", why.clone()),
            Refusal::NoRoute => fixed(404, "no_route", "no route matches this request"),
            Refusal::Token(e) => token(e),
            Refusal::StepUp(Unmet::Scopes { .. }) => {
                fixed(403, "insufficient_scope", INSUFFICIENT_SCOPE)
            }
            Refusal::StepUp(Unmet::Authentication { .. }) => fixed(
                401,
                "insufficient_user_authentication",
                INSUFFICIENT_AUTHENTICATION,
            ),
            Refusal::Denied => fixed(403, "access_denied", "this request is not allowed"),
            Refusal::ApprovalsUnavailable => retry(
                30,
                fixed(
                    503,
                    "approvals_unavailable",
                    "this request needs an approval and approvals are not available",
                ),
            ),
            Refusal::StoreUnavailable => retry(
                5,
                fixed(
                    503,
                    "store_unavailable",
                    "the approval store is unavailable; this request cannot be held safely",
                ),
            ),
            Refusal::TooManyPending => retry(
                60,
                fixed(
                    429,
                    "too_many_pending",
                    "you already have the most approval requests pending that are allowed; wait for a decision or withdraw one",
                ),
            ),
            Refusal::PayloadTooLarge => fixed(
                413,
                "payload_too_large",
                "requests that need an approval may carry at most 1 MiB of body",
            ),
            Refusal::ReasonRequired => fixed(
                400,
                "reason_required",
                "this request needs an approval: say why in a Countersign-Reason header",
            ),
            Refusal::ApprovalUnsatisfiable => fixed(
                403,
                "approval_unsatisfiable",
                "not enough approvers other than the requester could approve this request",
            ),
            Refusal::IdentityRequired => fixed(
                403,
                "identity_required",
                "this request needs approval, and the token does not identify a person (no verified identity claim)",
            ),
            Refusal::ApprovalDenied { by, reason } => owned(
                403,
                "approval_denied",
                match reason {
                    Some(r) => format!("denied by {by}: {r}"),
                    None => format!("denied by {by}"),
                },
            ),
            Refusal::ApprovalExpired => fixed(
                403,
                "approval_expired",
                "nobody approved this request before it expired",
            ),
            Refusal::ApprovalCancelled => fixed(
                403,
                "approval_cancelled",
                "this request was withdrawn before it was decided",
            ),
            Refusal::ShuttingDown => retry(
                5,
                fixed(503, "shutting_down", "the proxy is shutting down; retry"),
            ),
            Refusal::UpstreamUnavailable => fixed(
                502,
                "upstream_unavailable",
                "the upstream service is unavailable",
            ),
            Refusal::Internal => fixed(500, "internal_error", "internal error"),
            Refusal::BreakGlassReasonRequired => fixed(
                400,
                "break_glass_reason_required",
                "Countersign-Break-Glass needs a reason: say why the request cannot wait for an approval",
            ),
            Refusal::BreakGlassCooldown { retry_after } => retry(
                *retry_after,
                fixed(
                    429,
                    "break_glass_cooldown",
                    "you already broke the glass on this rule recently; wait for the cooldown or ask for an approval",
                ),
            ),

            Refusal::NotFound => fixed(404, "not_found", "no such approval"),
            Refusal::NoEndpoint => fixed(404, "not_found", "no such endpoint"),
            Refusal::ApiStoreUnavailable => fixed(
                503,
                "store_unavailable",
                "the approval store is unavailable",
            ),
            Refusal::AuditUnavailable => fixed(
                503,
                "audit_unavailable",
                "the audit log is unavailable; nothing was recorded",
            ),
            Refusal::NotAnApprover => fixed(
                403,
                "not_an_approver",
                "you are not an approver of this request",
            ),
            Refusal::IssuerNotApprover => fixed(
                403,
                "not_an_approver",
                "this token's issuer is not trusted to identify approvers (it needs approvers = true)",
            ),
            Refusal::NoApproverIdentity => fixed(
                403,
                "not_an_approver",
                "the token has no verified identity claim, so it cannot identify an approver",
            ),
            Refusal::LoginRequired => fixed(
                403,
                "login_required",
                "this request must be approved on the approval page after a fresh login",
            ),
            Refusal::OwnRequest => fixed(403, "own_request", "you cannot approve your own request"),
            Refusal::AlreadyVoted => fixed(
                409,
                "already_voted",
                "you already voted on this request",
            ),
            Refusal::AlreadyDecided => fixed(
                409,
                "already_decided",
                "this request was already decided",
            ),
            Refusal::VoteExpired => fixed(
                409,
                "approval_expired",
                "this request expired before your vote",
            ),
            Refusal::InReview => fixed(
                409,
                "in_review",
                "this request was already forwarded by break-glass: approvers acknowledge it ({\"decision\": \"acknowledge\"}), approve and deny do not apply",
            ),
            Refusal::NotInReview => fixed(
                409,
                "not_in_review",
                "only a break-glass request under review can be acknowledged",
            ),
            Refusal::GrantNotAllowed => fixed(
                400,
                "grant_not_allowed",
                "\"grant\": true goes only with an approval on a rule that sets \"grant\" in [rule.approval]",
            ),
            Refusal::GrantNotFound => fixed(404, "not_found", "no such grant"),
            Refusal::BadDecisionBody(why) => owned(
                400,
                "invalid_request",
                format!("expected {{\"decision\": \"approve\"|\"deny\", \"reason\": \"...\"}}: {why}"),
            ),
            Refusal::BadDecision => fixed(
                400,
                "invalid_request",
                "decision must be \"approve\", \"deny\" or \"acknowledge\"",
            ),
            Refusal::ExecutionFailed => fixed(
                502,
                "upstream_unavailable",
                "approved, but the upstream service could not be reached; the request is not retried",
            ),
            Refusal::ResultCancelled => {
                fixed(403, "approval_cancelled", "this request was withdrawn")
            }
            Refusal::ResultUnavailable => fixed(
                404,
                "result_unavailable",
                "approved, but no result is parked: it is still executing, was already delivered to the held caller, failed upstream, or its lifetime passed",
            ),
        }
    }
}

fn fixed(status: u16, code: &'static str, description: &'static str) -> Answer {
    described(status, code, Cow::Borrowed(description))
}

fn owned(status: u16, code: &'static str, description: String) -> Answer {
    described(status, code, Cow::Owned(description))
}

fn described(status: u16, code: &'static str, description: Cow<'static, str>) -> Answer {
    Answer {
        status,
        code,
        description,
        retry_after: None,
    }
}

fn retry(secs: u64, answer: Answer) -> Answer {
    Answer {
        retry_after: Some(secs),
        ..answer
    }
}

fn token(e: &TokenError) -> Answer {
    match e {
        TokenError::Missing => fixed(401, "missing_token", "a bearer token is required"),
        TokenError::InvalidRequest(reason) => fixed(400, "invalid_request", reason.description()),
        TokenError::InvalidToken(reason) => fixed(401, "invalid_token", reason.description()),
        TokenError::KeysUnavailable { retry_after } => retry(
            *retry_after,
            fixed(
                503,
                "temporarily_unavailable",
                "the token issuer's keys are not available yet; retry shortly",
            ),
        ),
    }
}

/// Declares [`PageRefusal`] and its table in one list: each row is a refusal's doc, name,
/// status, title and message, so every refusal page is written down once.
macro_rules! page_refusals {
    ($($(#[$doc:meta])* $name:ident => ($status:literal, $title:literal, $message:literal $(,)?),)+) => {
        /// Why an HTML page refuses: the approval pages, the session guard and the approver
        /// login.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum PageRefusal {
            $($(#[$doc])* $name,)+
        }

        impl PageRefusal {
            /// Status, title and message: the whole mapping for pages, one place.
            pub fn page(self) -> Page {
                let (status, title, message) = match self {
                    $(Self::$name => ($status, $title, $message),)+
                };
                Page {
                    status,
                    title,
                    message,
                }
            }
        }
    };
}

page_refusals! {
    /// The page needs `[approver_login]`, which is not configured.
    LoginNotConfigured => (
        404,
        "Approver login is not configured",
        "This Countersign has no [approver_login]: approvers decide through the API or chat.",
    ),
    /// A form vote arrived, but `[approver_login]` is not configured.
    VoteWithoutLogin => (404, "Approver login is not configured", "Use the API."),
    /// No such approval, or not one the person may see.
    NotFound => (404, "Not found", "No such approval request."),
    /// The approval store cannot be reached.
    StoreUnavailable => (
        503,
        "Approvals unavailable",
        "The approval store cannot be reached. Try again shortly.",
    ),
    /// A form vote without a session.
    SessionEnded => (401, "Please sign in", "Your session has ended. Sign in and vote again."),
    /// A non-page request without a session.
    SignInRequired => (
        401,
        "Sign-in required",
        "Your sign-in has expired. Open the approval link again to sign in.",
    ),
    /// The vote form could not be read.
    BadForm => (400, "Bad form", "The vote could not be read."),
    /// The CSRF token does not match.
    StaleForm => (
        403,
        "Vote refused",
        "This form is stale or was not sent by the approval page. Open the request again.",
    ),
    /// The request needs a fresh sign-in before deciding.
    FreshSignInNeeded => (
        403,
        "Sign in again",
        "This request needs a fresh sign-in before you decide.",
    ),
    /// Login: `next` points off this host.
    UnsafeNext => (
        400,
        "Bad login link",
        "This login link points somewhere outside Countersign, so it was not followed.",
    ),
    /// Login: the callback lacks `code` or `state`.
    BadCallback => (
        400,
        "Bad login response",
        "The identity provider's answer was incomplete. Open the approval link again.",
    ),
    /// Login: no flow cookie for this callback.
    NoFlow => (
        400,
        "Login expired",
        "This sign-in was not started in this browser or took too long. \
         Open the approval link again.",
    ),
    /// Login: the IdP answered with an error.
    IdpRefused => (400, "Sign-in refused", "The identity provider did not sign you in."),
    /// Login: the token endpoint refused the code.
    CodeRejected => (
        400,
        "Sign-in failed",
        "The identity provider did not accept this sign-in (it may have been used already).",
    ),
    /// Login: the ID token did not verify.
    BadIdToken => (
        400,
        "Sign-in could not be verified",
        "The identity provider's answer did not pass verification.",
    ),
    /// Login: no email claim.
    NoEmail => (
        400,
        "No email address",
        "Your identity provider did not share an email address, which approvals need.",
    ),
    /// Login: `email_verified` is false.
    EmailUnverified => (
        400,
        "Email not verified",
        "Your identity provider says your email address is not verified.",
    ),
    /// Login: the `acr` asked for was not met.
    AcrNotMet => (
        400,
        "Stronger sign-in needed",
        "This approval needs a stronger sign-in method than the one used.",
    ),
    /// Login: `auth_time` is too old for a fresh login.
    NotFresh => (400, "Fresh sign-in needed", "This approval needs you to sign in again just now."),
    /// Login: the IdP cannot be reached.
    IdpUnavailable => (
        502,
        "Identity provider unavailable",
        "The identity provider could not be reached. Try again in a moment.",
    ),
    /// Login: the IdP's answer is not usable.
    IdpMisconfigured => (
        502,
        "Identity provider problem",
        "The identity provider's answer was not usable for signing in.",
    ),
    /// A grant was revoked, but the audit log could not record the revocation.
    RevokedNotRecorded => (
        503,
        "Revoked, not recorded",
        "The grant is revoked, but the audit log could not record it. Tell an operator.",
    ),
    /// Something went wrong (logged by the caller).
    Internal => (500, "Internal error", "Something went wrong. Try again."),
}

/// The title of the page that refuses a vote the broker did not count; its status and message
/// are the API's answer to the same refusal (see `Refusal`).
pub const VOTE_NOT_COUNTED: &str = "Vote not counted";

/// What a refusal page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// HTTP status.
    pub status: u16,
    /// Page title.
    pub title: &'static str,
    /// The sentence under the title.
    pub message: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_has_an_error_status() {
        for r in [
            Refusal::NoRoute,
            Refusal::Denied,
            Refusal::NotFound,
            Refusal::ApiStoreUnavailable,
            Refusal::ExecutionFailed,
        ] {
            let a = r.answer();
            assert!((400..600).contains(&a.status), "{r:?}: {a:?}");
        }
    }

    #[test]
    fn explain_prints_status_and_code() {
        assert_eq!(Refusal::NoRoute.answer().status_and_code(), "404 no_route");
    }
}
