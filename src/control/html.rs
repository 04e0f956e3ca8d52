//! The HTML response envelope every control-plane page uses (security headers, no caching)
//! and the small error pages. Shared by the approval pages, the login flow and the session
//! guard, so none of them has to import another.
//!
//! Owns the page headers and the error page. Must not know about approvals, sessions or
//! login: callers pass finished text and links.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::respond::PageRefusal;

#[derive(Debug)]
struct Link {
    href: String,
    text: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    viewer: Option<&'a str>,
    title: &'a str,
    message: &'a str,
    link: Option<Link>,
}

/// A small error page (no details beyond `message`, which must be safe to show).
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    render_error(status, title, message, None)
}

/// The page for `r`, with status, title and message from the one refusal table.
pub fn refusal_page(r: PageRefusal) -> Response {
    let p = r.page();
    error_page(status(p.status), p.title, p.message)
}

/// The page for `r` with one button (see [`error_page_with_link`]).
pub fn refusal_page_with_link(r: PageRefusal, href: &str, link_text: &str) -> Response {
    let p = r.page();
    error_page_with_link(status(p.status), p.title, p.message, href, link_text)
}

/// A table status as an HTTP status (the table holds only valid ones).
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error page with one button, e.g. "Sign in again" -> `/login?...`. `href` must be a
/// relative URL on this host.
pub fn error_page_with_link(
    status: StatusCode,
    title: &str,
    message: &str,
    href: &str,
    link_text: &str,
) -> Response {
    let link = Link {
        href: href.to_owned(),
        text: link_text.to_owned(),
    };
    render_error(status, title, message, Some(link))
}

fn render_error(status: StatusCode, title: &str, message: &str, link: Option<Link>) -> Response {
    let page = ErrorPage {
        viewer: None,
        title,
        message,
        link,
    };
    html(status, page.render())
}

/// Wraps rendered HTML with headers that keep the page out of frames (no clickjacking of the
/// Approve button), out of caches and away from any external resource.
pub(crate) fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    let body = match rendered {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "internal error",
            )
                .into_response();
        }
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
