//! `Authorization: Bearer` extraction (RFC 6750 section 2.1).

use super::{Reason, TokenError};

/// See [`super::bearer_token`].
pub(super) fn bearer_token<'a>(
    mut authorization: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<&'a str>, TokenError> {
    let Some(value) = authorization.next() else {
        return Ok(None);
    };
    if authorization.next().is_some() {
        return Err(TokenError::InvalidRequest(Reason::Duplicate));
    }
    parse_credentials(value)
}

/// One `Authorization` value: `Bearer` (any case), one or more spaces, a token68.
/// Another scheme is not our business (`Ok(None)`): the request then simply has no bearer token.
fn parse_credentials(value: &[u8]) -> Result<Option<&str>, TokenError> {
    let bad = TokenError::InvalidRequest(Reason::BadHeader);
    let value = trim_trailing_ows(value);
    let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if scheme.is_empty() {
        return Err(bad);
    }
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let token = trim_leading_spaces(rest);
    if !is_token68(token) {
        return Err(bad);
    }
    // token68 is ASCII, so this cannot fail; map it anyway rather than unwrap.
    std::str::from_utf8(token).map(Some).map_err(|_| bad)
}

/// RFC 7235 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(token: &[u8]) -> bool {
    let body_len = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body_len > 0
        && token[..body_len].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

fn trim_leading_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
}

/// Header values normally arrive trimmed; tolerate trailing spaces and tabs anyway.
fn trim_trailing_ows(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &bytes[..end]
}
