//! Unit tests of the login flow's pure parts.

use super::*;

#[test]
fn next_must_be_a_path_on_this_host() {
    for ok in ["/", "/approvals", "/approvals/apr_1?x=1&y=%2F"] {
        assert_eq!(safe_next(ok), Some(ok), "{ok}");
    }
    for bad in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "http:/evil",
        "javascript:alert(1)",
        "evil.example",
        "/ok\\..\\x",
        "/a b",
        "/a\nLocation: x",
        "/\u{e9}",
        "",
    ] {
        assert_eq!(safe_next(bad), None, "{bad:?}");
    }
    assert_eq!(safe_next(&format!("/{}", "a".repeat(MAX_NEXT_LEN))), None);
}

#[test]
fn login_url_encodes_next() {
    assert_eq!(
        login_url("/approvals/apr_1?a=b&c", false, &[]),
        "/login?next=%2Fapprovals%2Fapr_1%3Fa%3Db%26c"
    );
    assert_eq!(
        login_url("/x", true, &["phr".into(), "urn:mfa".into()]),
        "/login?next=%2Fx&fresh=1&acr_values=phr%20urn%3Amfa"
    );
}

#[test]
fn client_secret_post_only_when_basic_is_not_offered() {
    use CoreClientAuthMethod::{ClientSecretBasic, ClientSecretPost};
    let basic = |t| matches!(t, AuthType::BasicAuth);
    assert!(basic(client_auth_type(None)));
    assert!(basic(client_auth_type(Some(&vec![
        ClientSecretPost,
        ClientSecretBasic
    ]))));
    let post = client_auth_type(Some(&vec![ClientSecretPost]));
    assert!(matches!(post, AuthType::RequestBody));
}

#[test]
fn flow_cookie_names_are_tame() {
    assert_eq!(
        flow_cookie_name("abc;def=ghi\r\n"),
        "countersign_login_abcdefghi"
    );
    assert_eq!(
        flow_cookie_name("0123456789abcdefXYZ"),
        "countersign_login_0123456789abcdef"
    );
}
