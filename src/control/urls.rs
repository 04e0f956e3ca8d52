//! Control-plane URLs that several modules build: the login link and the percent-encoding
//! set for one path or query component. Kept apart so the login flow, the pages and the
//! session guard do not import each other.
//!
//! Owns URL construction only. Must not touch sessions, the IdP or HTML.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// URL-encodes everything but RFC 3986 unreserved characters.
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The link that starts a login which comes back to `next`; `fresh` demands a new
/// authentication (`approve_via = "login"`), `acr` asks for authentication context classes.
pub fn login_url(next: &str, fresh: bool, acr: &[String]) -> String {
    let mut url = format!("/login?next={}", utf8_percent_encode(next, COMPONENT));
    if fresh {
        url.push_str("&fresh=1");
    }
    if !acr.is_empty() {
        url.push_str("&acr_values=");
        url.push_str(&utf8_percent_encode(&acr.join(" "), COMPONENT).to_string());
    }
    url
}
