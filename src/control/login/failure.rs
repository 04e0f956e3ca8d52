//! Why a login did not work, and which refusal page (`crate::respond`) the person sees, with a
//! "Sign in again" link when retrying can help.
//!
//! Owns the login's failure causes (the texts live in the one refusal table). Must not talk to the IdP or touch sessions; internals are
//! logged by the flow, never shown here.

use axum::response::{IntoResponse, Response};

use super::Flow;
use crate::control::html::{refusal_page, refusal_page_with_link};
use crate::control::urls::login_url;
use crate::respond::PageRefusal;

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
    /// The refusal this is in the one table (`crate::respond`), which owns status, title
    /// and message; never internals (those are logged).
    fn refusal(&self) -> PageRefusal {
        match self {
            Self::UnsafeNext => PageRefusal::UnsafeNext,
            Self::BadCallback => PageRefusal::BadCallback,
            Self::NoFlow => PageRefusal::NoFlow,
            Self::IdpRefused { .. } => PageRefusal::IdpRefused,
            Self::CodeRejected { .. } => PageRefusal::CodeRejected,
            Self::BadIdToken { .. } => PageRefusal::BadIdToken,
            Self::NoEmail => PageRefusal::NoEmail,
            Self::EmailUnverified => PageRefusal::EmailUnverified,
            Self::AcrNotMet { .. } => PageRefusal::AcrNotMet,
            Self::NotFresh { .. } => PageRefusal::NotFresh,
            Self::IdpUnavailable => PageRefusal::IdpUnavailable,
            Self::IdpMisconfigured => PageRefusal::IdpMisconfigured,
            Self::Internal => PageRefusal::Internal,
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
        let refusal = self.refusal();
        match self.retry() {
            Some(link) => refusal_page_with_link(refusal, link, "Sign in again"),
            None => refusal_page(refusal),
        }
    }
}
