//! The canonical request (SPEC 8): hosts, header names, matrix parameters, route resolution
//! and its relaxations, and property tests that equivalent spellings decide the same rule.

use super::*;
use crate::policy::canonical::{
    canonical_host, is_method_override_header, is_reserved_header, override_method,
};
use proptest::prelude::*;

#[test]
fn hosts_compare_lowercase_without_trailing_dot_or_default_port() {
    for (raw, host, authority) in [
        (
            "Deploy.Example.COM",
            "deploy.example.com",
            "deploy.example.com",
        ),
        (
            "deploy.example.com.",
            "deploy.example.com",
            "deploy.example.com",
        ),
        (
            "deploy.example.com:443",
            "deploy.example.com",
            "deploy.example.com",
        ),
        (
            "deploy.example.com.:443",
            "deploy.example.com",
            "deploy.example.com",
        ),
        (
            "deploy.example.com:8443",
            "deploy.example.com",
            "deploy.example.com:8443",
        ),
        ("127.0.0.1:443", "127.0.0.1", "127.0.0.1"),
        ("[::1]:443", "[::1]", "[::1]"),
        ("[::1]:8080", "[::1]", "[::1]:8080"),
    ] {
        let got = canonical_host(raw, 443).unwrap();
        assert_eq!(
            (got.host.as_str(), got.authority.as_str()),
            (host, authority),
            "{raw}"
        );
    }
    for bad in [
        "",
        ".",
        "a..b",
        "user@host",
        "host:",
        "host:x",
        "host:99999",
        "[::1",
        "[zz]",
        "a b",
        "a/b",
        "[::1]x",
    ] {
        assert_eq!(
            canonical_host(bad, 443),
            Err(InvalidRequest::BadHost),
            "{bad:?}"
        );
    }
}

#[test]
fn reserved_and_override_headers_in_any_spelling() {
    for name in [
        "countersign-subject",
        "Countersign-Approval",
        "COUNTERSIGN_SUBJECT",
        "countersign_approval_id",
    ] {
        assert!(is_reserved_header(name), "{name}");
    }
    for name in ["countersign", "x-countersign-subject", "countersignsubject"] {
        assert!(!is_reserved_header(name), "{name}");
    }
    for name in [
        "x-http-method-override",
        "X-HTTP-Method",
        "x_method_override",
        "X_HTTP_METHOD_OVERRIDE",
    ] {
        assert!(is_method_override_header(name), "{name}");
    }
    assert!(!is_method_override_header("x-http-methods"));

    let mut h = http::HeaderMap::new();
    assert_eq!(override_method(&h), Ok(None));
    h.insert("x-http-method-override", "delete".parse().unwrap());
    assert_eq!(override_method(&h), Ok(Some(http::Method::DELETE)));
    h.insert("x-method-override", "PUT".parse().unwrap());
    assert_eq!(override_method(&h), Err(InvalidRequest::BadMethodOverride));
}

#[test]
fn matrix_parameters_are_judged_without_them() {
    for (raw, want) in [
        ("/v1/deployments/production;x", "/v1/deployments/production"),
        (
            "/v1;a=b/deployments;c/production",
            "/v1/deployments/production",
        ),
        ("/;x/admin", "/admin"),
        ("/admin/;x", "/admin/"),
    ] {
        let c = canonical_path(raw).unwrap();
        assert!(c.matrix);
        assert_eq!(c.match_path(), want, "{raw}");
    }
    assert!(!canonical_path("/a/b").unwrap().matrix);
}

fn table(allow_semicolons: bool, allow_method_override: bool, ci: bool) -> RouteTable {
    RouteTable::new(vec![
        RouteEntry {
            host: Some(HostPattern::parse("deploy.example.com").unwrap()),
            prefix: "/v1".into(),
            upstream: 0,
            allow_semicolons,
            allow_method_override,
            case_insensitive: ci,
        },
        RouteEntry {
            host: None,
            prefix: "/static/".into(),
            upstream: 1,
            allow_semicolons: false,
            allow_method_override: false,
            case_insensitive: false,
        },
    ])
}

fn raw<'a>(
    method: &'a http::Method,
    authority: Option<&'a str>,
    path: &'a str,
    headers: &'a http::HeaderMap,
) -> RawRequest<'a> {
    RawRequest {
        method,
        target_authority: authority,
        path,
        query: None,
        headers,
        default_port: 443,
    }
}

fn host_header(v: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.append(http::header::HOST, v.parse().unwrap());
    h
}

#[test]
fn http2_authority_and_http1_host_resolve_alike() {
    let post = http::Method::POST;
    let t = table(false, false, false);
    let none = http::HeaderMap::new();
    let h1 = host_header("DEPLOY.example.com.:443");
    let a = t
        .resolve(&raw(&post, Some("deploy.example.com"), "/v1/x", &none))
        .unwrap();
    let b = t.resolve(&raw(&post, None, "/v1/x", &h1)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.host, "deploy.example.com");

    let other = host_header("evil.example.com");
    assert_eq!(
        t.resolve(&raw(&post, Some("deploy.example.com"), "/v1/x", &other)),
        Err(Unroutable::Invalid(InvalidRequest::HostMismatch))
    );
    let mut two = host_header("deploy.example.com");
    two.append(http::header::HOST, "deploy.example.com".parse().unwrap());
    assert_eq!(
        t.resolve(&raw(&post, None, "/v1/x", &two)),
        Err(Unroutable::Invalid(InvalidRequest::MultipleHosts))
    );
    assert_eq!(
        t.resolve(&raw(&post, None, "/v1/x", &none)),
        Err(Unroutable::Invalid(InvalidRequest::NoHost))
    );
    // Routes match on segments too.
    assert_eq!(
        t.resolve(&raw(&post, None, "/v10/x", &h1)),
        Err(Unroutable::NoRoute)
    );
}

#[test]
fn route_relaxations_are_per_route() {
    let post = http::Method::POST;
    let h = host_header("deploy.example.com");
    let strict = table(false, false, false);
    assert_eq!(
        strict.resolve(&raw(&post, None, "/v1/a;x", &h)),
        Err(Unroutable::Invalid(InvalidRequest::Semicolon))
    );
    let relaxed = table(true, false, false);
    let c = relaxed.resolve(&raw(&post, None, "/v1/a;x", &h)).unwrap();
    assert_eq!(c.path, "/v1/a;x", "the upstream gets the parameters");
    assert_eq!(c.facts().path, "/v1/a", "policy judges without them");

    let mut ov = host_header("deploy.example.com");
    ov.insert("X-HTTP-Method-Override", "DELETE".parse().unwrap());
    assert_eq!(
        strict.resolve(&raw(&post, None, "/v1/a", &ov)),
        Err(Unroutable::Invalid(InvalidRequest::MethodOverride))
    );
    let allowed = table(false, true, false)
        .resolve(&raw(&post, None, "/v1/a", &ov))
        .unwrap();
    assert_eq!(
        allowed.method,
        http::Method::DELETE,
        "policy judges the override"
    );
    assert_eq!(allowed.wire_method, http::Method::POST);

    let ci = table(false, false, true)
        .resolve(&raw(&post, None, "/V1/A", &h))
        .unwrap();
    assert!(ci.facts().case_insensitive);
    assert_eq!(
        table(false, false, false).resolve(&raw(&post, None, "/V1/A", &h)),
        Err(Unroutable::NoRoute)
    );
}

/// A rule set like the shipped one: the approve rule must hold every spelling of its path.
fn deploy_rules() -> PolicySet {
    let mut prod = rule("prod-deploy", Action::Approve);
    prod.methods = Some(vec![http::Method::POST]);
    prod.path = PathMatch::Template(PathTemplate::parse("/v1/deployments/{env}").unwrap());
    prod.params = vec![("env".into(), "production".into())];
    let mut write = rule("deploy-write", Action::Allow);
    write.path = PathMatch::Prefix("/v1/".into());
    PolicySet {
        rules: vec![prod, write],
        default: DefaultAction::Deny,
    }
}

fn decide(set: &PolicySet, path: &str, ci: bool) -> String {
    let who = principal(json!({}));
    let post = http::Method::POST;
    let req = RequestFacts {
        method: &post,
        host: "deploy.example.com",
        path,
        case_insensitive: ci,
    };
    match set.evaluate(&req, Some(&who)) {
        Evaluation::Decided(d) => d.rule_name().to_owned(),
        Evaluation::NeedsToken => "needs-token".into(),
    }
}

/// Spells one path byte the way an attacker might: raw, or percent-encoded in either case.
fn spell(b: u8, how: u8) -> String {
    match how % 3 {
        0 if b != b'%' => char::from(b).to_string(),
        1 => format!("%{b:02X}"),
        _ => format!("%{b:02x}"),
    }
}

fn spelling() -> impl Strategy<Value = (String, String)> {
    let segment = prop_oneof![
        Just("v1".to_owned()),
        Just("deployments".to_owned()),
        Just("production".to_owned()),
        Just("staging".to_owned()),
        "[a-zA-Z0-9._~-]{1,8}".prop_filter("not a dot segment", |s| s != "." && s != ".."),
    ];
    (
        proptest::collection::vec(segment, 1..5),
        proptest::collection::vec(any::<u8>(), 64),
        any::<bool>(),
        1usize..3,
    )
        .prop_map(|(segs, hows, trailing, slashes)| {
            let plain = format!("/{}", segs.join("/"));
            let mut spelled = String::new();
            let mut k = 0;
            for seg in &segs {
                spelled.push_str(&"/".repeat(slashes));
                for b in seg.bytes() {
                    spelled.push_str(&spell(b, hows[k % hows.len()]));
                    k += 1;
                }
            }
            if trailing {
                spelled.push('/');
            }
            (plain, spelled)
        })
}

proptest! {
    /// Every equivalent spelling of a path (unreserved bytes encoded in any case, runs of
    /// slashes, one trailing slash) decides the same rule as the plain path.
    #[test]
    fn equivalent_spellings_match_the_same_rule((plain, spelled) in spelling()) {
        let set = deploy_rules();
        let c = canonical_path(&spelled).unwrap();
        prop_assert_eq!(c.path.trim_end_matches('/'), plain.trim_end_matches('/'));
        prop_assert_eq!(decide(&set, &c.match_path(), false), decide(&set, &plain, false));
        // Case-insensitive upstreams: any case decides like the lowercase path.
        let upper = c.path.to_ascii_uppercase();
        prop_assert_eq!(
            decide(&set, &upper, true),
            decide(&set, &plain.to_ascii_lowercase(), true)
        );
    }

    /// Arbitrary input never panics, and an accepted path is a fixed point: canonicalising
    /// it again changes nothing.
    #[test]
    fn canonicalisation_is_total_and_idempotent(raw in "/[ -~\\x{80}-\\x{10FFFF}]{0,40}") {
        if let Ok(c) = canonical_path(&raw) {
            let again = canonical_path(&c.path).unwrap();
            prop_assert_eq!(again.path, c.path);
        }
        let _ = canonical_host(&raw[1..], 443);
    }
}
