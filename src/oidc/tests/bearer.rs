//! `Authorization` header parsing.

use super::super::{bearer_token, Reason, TokenError};

fn parse(values: &[&[u8]]) -> Result<Option<&'static str>, TokenError> {
    // Leak to get 'static slices: test-only convenience.
    let owned: Vec<&'static [u8]> = values
        .iter()
        .map(|v| &*Box::leak(v.to_vec().into_boxed_slice()))
        .collect();
    bearer_token(owned.into_iter())
}

#[test]
fn no_header_is_no_token() {
    assert_eq!(parse(&[]), Ok(None));
}

#[test]
fn bearer_scheme_is_case_insensitive_and_spaces_may_repeat() {
    assert_eq!(parse(&[b"Bearer abc.def.ghi"]), Ok(Some("abc.def.ghi")));
    assert_eq!(parse(&[b"bearer   abc"]), Ok(Some("abc")));
    assert_eq!(parse(&[b"BEARER a-b_c~d+e/f=="]), Ok(Some("a-b_c~d+e/f==")));
}

#[test]
fn other_schemes_are_not_bearer_tokens() {
    assert_eq!(parse(&[b"Basic YWxpY2U6c2VjcmV0"]), Ok(None));
    assert_eq!(parse(&[b"Bearerx abc"]), Ok(None));
}

#[test]
fn two_authorization_headers_are_a_duplicate() {
    assert_eq!(
        parse(&[b"Bearer abc", b"Bearer abc"]),
        Err(TokenError::InvalidRequest(Reason::Duplicate))
    );
    assert_eq!(
        parse(&[b"Basic x", b"Bearer abc"]),
        Err(TokenError::InvalidRequest(Reason::Duplicate))
    );
}

#[test]
fn malformed_bearer_credentials_are_bad_headers() {
    let bad = Err(TokenError::InvalidRequest(Reason::BadHeader));
    for value in [
        &b""[..],
        b"Bearer",
        b"Bearer ",
        b"Bearer a b",
        b"Bearer a,Bearer b",
        b"Bearer a=b",
        b"Bearer ====",
        b"Bearer \xff\xfe",
        b" Bearer abc",
    ] {
        assert_eq!(parse(&[value]), bad, "{:?}", String::from_utf8_lossy(value));
    }
}
