//! Why a login did not work, and the one table from each cause to the page the person sees
//! (status, title, message, and a "Sign in again" link when retrying can help).
//!
//! Owns the login's refusal texts. Must not talk to the IdP or touch sessions; internals are
//! logged by the flow, never shown here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Flow;
use crate::control::html::{error_page, error_page_with_link};
use crate::control::urls::login_url;

/// Why a login did not work. `retry` is a login link that repeats what the flow asked for
/// (same `next`, freshness and `acr`).
#[derive(Debug)]
pub(super) enum Failure {
    UnsafeNext,
    BadCallback,
    NoFlow,
    IdpRefused { retry: String },
    CodeRejected { retry: String },
    BadIdToken { retry: String },
    NoEmail,
    EmailUnverified,
    AcrNotMet { retry: String },
    NotFresh { retry: String },
    IdpUnavailable,
    IdpMisconfigured,
    Internal,
}

/// The link that starts `flow` over.
pub(super) fn retry_link(flow: &Flow) -> String {
    login_url(&flow.next, flow.fresh, &flow.acr)
}

impl Failure {
    /// Status, title and message for the person; never internals (those are logged).
    fn text(&self) -> (StatusCode, &'static str, &'static str) {
        const BAD: StatusCode = StatusCode::BAD_REQUEST;
        const GATEWAY: StatusCode = StatusCode::BAD_GATEWAY;
        match self {
            Self::UnsafeNext => (
                BAD,
                "Bad login link",
                "This login link points somewhere outside Countersign, so it was not followed.",
            ),
            Self::BadCallback => (
                BAD,
                "Bad login response",
                "The identity provider's answer was incomplete. Open the approval link again.",
            ),
            Self::NoFlow => (
                BAD,
                "Login expired",
                "This sign-in was not started in this browser or took too long. \
                 Open the approval link again.",
            ),
            Self::IdpRefused { .. } => (
                BAD,
                "Sign-in refused",
                "The identity provider did not sign you in.",
            ),
            Self::CodeRejected { .. } => (
                BAD,
                "Sign-in failed",
                "The identity provider did not accept this sign-in (it may have been used already).",
            ),
            Self::BadIdToken { .. } => (
                BAD,
                "Sign-in could not be verified",
                "The identity provider's answer did not pass verification.",
            ),
            Self::NoEmail => (
                BAD,
                "No email address",
                "Your identity provider did not share an email address, which approvals need.",
            ),
            Self::EmailUnverified => (
                BAD,
                "Email not verified",
                "Your identity provider says your email address is not verified.",
            ),
            Self::AcrNotMet { .. } => (
                BAD,
                "Stronger sign-in needed",
                "This approval needs a stronger sign-in method than the one used.",
            ),
            Self::NotFresh { .. } => (
                BAD,
                "Fresh sign-in needed",
                "This approval needs you to sign in again just now.",
            ),
            Self::IdpUnavailable => (
                GATEWAY,
                "Identity provider unavailable",
                "The identity provider could not be reached. Try again in a moment.",
            ),
            Self::IdpMisconfigured => (
                GATEWAY,
                "Identity provider problem",
                "The identity provider's answer was not usable for signing in.",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "Something went wrong. Try again.",
            ),
        }
    }

    fn retry(&self) -> Option<&str> {
        match self {
            Self::IdpRefused { retry }
            | Self::CodeRejected { retry }
            | Self::BadIdToken { retry }
            | Self::AcrNotMet { retry }
            | Self::NotFresh { retry } => Some(retry),
            Self::UnsafeNext
            | Self::BadCallback
            | Self::NoFlow
            | Self::NoEmail
            | Self::EmailUnverified
            | Self::IdpUnavailable
            | Self::IdpMisconfigured
            | Self::Internal => None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, title, message) = self.text();
        match self.retry() {
            Some(link) => error_page_with_link(status, title, message, link, "Sign in again"),
            None => error_page(status, title, message),
        }
    }
}
