use std::time::Duration;

use serde_json::json;

use super::*;

fn principal(claims: serde_json::Value) -> Principal {
    let mut base = json!({"iss": "https://idp.example.com", "sub": "u1", "exp": 2_000_000_000u64});
    if let (Some(b), Some(extra)) = (base.as_object_mut(), claims.as_object()) {
        b.extend(extra.clone());
    }
    match base {
        serde_json::Value::Object(map) => Principal::from_claims(map).unwrap(),
        _ => unreachable!(),
    }
}

fn rule(name: &str, action: Action) -> Rule {
    Rule {
        name: name.into(),
        origin: Origin {
            file: "p.toml".into(),
            line: 1,
        },
        methods: None,
        host: None,
        path: PathMatch::Any,
        params: Vec::new(),
        claims: Vec::new(),
        action,
        require: Requirements::default(),
        approval: None,
    }
}

fn facts<'a>(method: &'a http::Method, host: &'a str, path: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        method,
        host,
        path,
        case_insensitive: false,
    }
}

#[test]
fn host_patterns() {
    let exact = HostPattern::parse("Deploy.Example.com.").unwrap();
    assert_eq!(exact, HostPattern::Exact("deploy.example.com".into()));
    assert!(exact.matches("DEPLOY.example.COM"));
    assert!(exact.matches("deploy.example.com."));
    assert!(!exact.matches("xdeploy.example.com"));

    let wild = HostPattern::parse("*.example.com").unwrap();
    assert!(wild.matches("a.example.com"));
    assert!(wild.matches("a.b.Example.com"));
    assert!(!wild.matches("example.com"));
    assert!(!wild.matches(".example.com"));
    assert!(!wild.matches("evilexample.com"));
    assert!(!wild.matches("example.com.evil.net"));
    assert_eq!(wild.to_string(), "*.example.com");

    for bad in [
        "",
        "*",
        "*.",
        "a.*.com",
        "*example.com",
        "a..b",
        "host:8080",
        "a b",
    ] {
        assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
    }
    assert!(HostPattern::parse("127.0.0.1").is_ok());
    assert!(HostPattern::parse("[::1]").is_ok());
}

#[test]
fn path_templates() {
    let t = PathTemplate::parse("/v1/deployments/{env}").unwrap();
    assert_eq!(t.param_names(), ["env"]);
    assert_eq!(
        t.matches("/v1/deployments/production", false),
        Some(vec![("env".into(), "production".into())])
    );
    assert_eq!(t.matches("/v1/deployments/", false), None);
    assert_eq!(t.matches("/v1/deployments/a/b", false), None);
    assert_eq!(t.matches("/v1/deployments", false), None);
    // An encoded slash stays inside one segment and the value comes back decoded.
    assert_eq!(
        t.matches("/v1/deployments/a%2Fb", false),
        Some(vec![("env".into(), "a/b".into())])
    );

    let rest = PathTemplate::parse("/files/{*rest}").unwrap();
    assert_eq!(
        rest.matches("/files/a/b%20c", false),
        Some(vec![("rest".into(), "a/b c".into())])
    );
    assert_eq!(rest.matches("/files/", false), None);
    assert_eq!(rest.matches("/files", false), None);

    let literal = PathTemplate::parse("/healthz").unwrap();
    assert!(literal.matches("/healthz", false).is_some());
    // One trailing slash is not significant (SPEC 8).
    assert!(literal.matches("/healthz/", false).is_some());
    assert!(literal.matches("/HEALTHZ", false).is_none());
    assert!(literal.matches("/HEALTHZ", true).is_some());
    assert!(PathTemplate::parse("/")
        .unwrap()
        .matches("/", false)
        .is_some());
    let trailing = PathTemplate::parse("/dir/").unwrap();
    assert!(trailing.matches("/dir/", false).is_some());
    assert!(trailing.matches("/dir", false).is_some());
    assert_eq!(
        t.matches("/v1/deployments/production/", false),
        Some(vec![("env".into(), "production".into())])
    );

    // Literals are normalized like request paths.
    let enc = PathTemplate::parse("/%7euser/{id}").unwrap();
    assert!(enc.matches("/~user/1", false).is_some());

    for bad in [
        "v1",
        "/a/{*rest}/b",
        "/{a}/{a}",
        "/{1x}",
        "/x{a}",
        "/{}",
        "/a/../b",
        "/a%zz",
        "/a//b",
    ] {
        assert!(PathTemplate::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn normalize_path_closes_bypasses() {
    let ok = [
        ("/%61dmin", "/admin"),
        ("//admin", "/admin"),
        ("/a//b/", "/a/b/"),
        ("/%7Euser", "/~user"),
        ("/x%3a", "/x%3A"),
        ("/a b", "/a%20b"),
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/a...b/...", "/a...b/..."),
        ("/a%c3%a9", "/a%C3%A9"),
        ("/", "/"),
    ];
    for (raw, want) in ok {
        assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw:?}");
    }
    use InvalidRequest as PathError;
    let bad = [
        ("/a%2fb", PathError::EncodedSlash),
        ("/a%2Fb", PathError::EncodedSlash),
        ("/a%5cb", PathError::EncodedSlash),
        ("/a\\b", PathError::Backslash),
        ("/a;b", PathError::Semicolon),
        ("/a%0ab", PathError::ControlChar),
        ("/a%09b", PathError::ControlChar),
        ("/a%7Fb", PathError::ControlChar),
        ("/a\tb", PathError::ControlChar),
        ("/a%C0%AF", PathError::NotUtf8),
        ("/a%E0%80%AFb", PathError::NotUtf8),
        ("/a%ffb", PathError::NotUtf8),
        ("/a/..;x/admin", PathError::DotSegment),
        ("/a/../admin", PathError::DotSegment),
        ("/a/%2e%2e/admin", PathError::DotSegment),
        ("/a/.%2E/admin", PathError::DotSegment),
        ("/./admin", PathError::DotSegment),
        ("/a/..", PathError::DotSegment),
        ("/a%00b", PathError::Nul),
        ("/a\0b", PathError::Nul),
        ("/a%zz", PathError::InvalidEscape),
        ("/a%2", PathError::InvalidEscape),
        ("admin", PathError::NotAbsolute),
        ("", PathError::NotAbsolute),
    ];
    for (raw, err) in bad {
        assert_eq!(normalize_path(raw), Err(err), "{raw:?}");
    }
}

#[test]
fn encoded_paths_match_the_rule_they_spell() {
    let mut deny = rule("no-admin", Action::Deny);
    deny.path = PathMatch::Template(PathTemplate::parse("/admin/{*rest}").unwrap());
    let set = PolicySet {
        rules: vec![deny],
        default: DefaultAction::Allow,
    };
    let who = principal(json!({}));
    for raw in ["/admin/x", "/%61dmin/x", "//admin/x", "/ADMIN/x"] {
        let path = normalize_path(raw).unwrap();
        let got = set.evaluate(&facts(&http::Method::GET, "h", &path), Some(&who));
        let Evaluation::Decided(d) = got else {
            panic!("{raw}")
        };
        // Paths are case-sensitive, as upstreams treat them.
        let want = if raw == "/ADMIN/x" {
            "default"
        } else {
            "no-admin"
        };
        assert_eq!(d.rule_name(), want, "{raw}");
    }
}

#[test]
fn conditions_methods_host_prefix_params_claims() {
    let mut r = rule("r", Action::Allow);
    r.methods = Some(vec![http::Method::POST]);
    r.host = Some(HostPattern::parse("*.example.com").unwrap());
    r.path = PathMatch::Template(PathTemplate::parse("/v1/{env}").unwrap());
    r.params = vec![("env".into(), "prod".into())];
    r.claims = vec![
        ("groups".into(), "ops".into()),
        ("level".into(), "3".into()),
    ];
    let who = principal(json!({"groups": ["dev", "ops"], "level": 3}));
    let post = http::Method::POST;
    assert_eq!(
        r.shape_mismatch(&facts(&post, "a.example.com", "/v1/prod")),
        Ok(vec![("env".into(), "prod".into())])
    );
    assert!(r.claims_match(&who));
    assert_eq!(
        r.shape_mismatch(&facts(&http::Method::GET, "a.example.com", "/v1/prod")),
        Err(Mismatch::Method)
    );
    assert_eq!(
        r.shape_mismatch(&facts(&post, "example.com", "/v1/prod")),
        Err(Mismatch::Host)
    );
    assert_eq!(
        r.shape_mismatch(&facts(&post, "a.example.com", "/v2/prod")),
        Err(Mismatch::Path)
    );
    assert_eq!(
        r.shape_mismatch(&facts(&post, "a.example.com", "/v1/dev")),
        Err(Mismatch::Param {
            name: "env".into(),
            want: "prod".into(),
            got: "dev".into()
        })
    );
    let other = principal(json!({"groups": "ops", "level": "3"}));
    assert!(r.claims_match(&other));
    let wrong = principal(json!({"groups": ["dev"], "level": 3}));
    assert_eq!(
        r.claim_mismatch(&wrong),
        Some(Mismatch::Claim {
            name: "groups".into(),
            want: "ops".into()
        })
    );
    let mut b = rule("b", Action::Allow);
    b.claims = vec![("admin".into(), "true".into())];
    assert!(b.claims_match(&principal(json!({"admin": true}))));
    assert!(!b.claims_match(&principal(json!({"admin": false}))));
    assert!(!b.claims_match(&principal(json!({}))));

    // Prefixes match whole segments (SPEC 8): "/v1" and "/v1/" cover "/v1", "/v1/" and
    // "/v1/x", never "/v10".
    for prefix in ["/v1", "/v1/"] {
        let mut p = rule("p", Action::Allow);
        p.path = PathMatch::Prefix(prefix.into());
        for path in ["/v1", "/v1/", "/v1/x"] {
            assert!(
                p.shape_matches(&facts(&post, "h", path)).is_some(),
                "{prefix} {path}"
            );
        }
        for path in ["/v10/x", "/v10", "/v2", "/"] {
            assert!(
                p.shape_matches(&facts(&post, "h", path)).is_none(),
                "{prefix} {path}"
            );
        }
    }
}

#[test]
fn evaluate_first_match_wins_and_default_applies() {
    let mut public = rule("health", Action::Public);
    public.path = PathMatch::Template(PathTemplate::parse("/healthz").unwrap());
    let mut ops = rule("ops-only", Action::Approve);
    ops.claims = vec![("groups".into(), "ops".into())];
    ops.path = PathMatch::Prefix("/v1/".into());
    let mut deny = rule("deny-v1", Action::Deny);
    deny.path = PathMatch::Prefix("/v1/".into());
    let set = PolicySet {
        rules: vec![public, ops, deny],
        default: DefaultAction::Deny,
    };
    let get = http::Method::GET;

    let health = set.evaluate(&facts(&get, "h", "/healthz"), None);
    assert!(
        matches!(&health, Evaluation::Decided(d) if d.rule_name() == "health" && d.action == Action::Public)
    );
    assert_eq!(
        set.evaluate(&facts(&get, "h", "/v1/x"), None),
        Evaluation::NeedsToken
    );
    assert_eq!(
        set.evaluate(&facts(&get, "h", "/other"), None),
        Evaluation::NeedsToken
    );

    let op = principal(json!({"groups": ["ops"]}));
    let dev = principal(json!({"groups": ["dev"]}));
    let decided =
        |who: &Principal, path: &str| match set.evaluate(&facts(&get, "h", path), Some(who)) {
            Evaluation::Decided(d) => (d.rule_name().to_owned(), d.action),
            Evaluation::NeedsToken => panic!("a principal always decides"),
        };
    assert_eq!(decided(&op, "/v1/x"), ("ops-only".into(), Action::Approve));
    assert_eq!(decided(&dev, "/v1/x"), ("deny-v1".into(), Action::Deny));
    assert_eq!(decided(&dev, "/healthz"), ("health".into(), Action::Public));
    assert_eq!(decided(&dev, "/other"), ("default".into(), Action::Deny));

    let allow_default = PolicySet {
        rules: Vec::new(),
        default: DefaultAction::Allow,
    };
    let d = allow_default.evaluate(&facts(&get, "h", "/"), Some(&dev));
    assert!(matches!(
        d,
        Evaluation::Decided(Decision {
            rule: None,
            action: Action::Allow,
            ..
        })
    ));
}

#[test]
fn public_rule_after_a_claims_rule_still_needs_a_token() {
    let mut claims = rule("claims-first", Action::Deny);
    claims.claims = vec![("blocked".into(), "true".into())];
    let public = rule("open", Action::Public);
    let set = PolicySet {
        rules: vec![claims, public],
        default: DefaultAction::Allow,
    };
    let get = http::Method::GET;
    assert_eq!(
        set.evaluate(&facts(&get, "h", "/"), None),
        Evaluation::NeedsToken
    );
}

#[test]
fn requirements() {
    let req = Requirements {
        scopes: vec!["deploy:write".into(), "deploy:read".into()],
        acr: vec!["phr".into(), "urn:mfa".into()],
        max_age: Some(Duration::from_secs(900)),
    };
    let now = 1_700_000_000;
    let good = principal(
        json!({"scope": "deploy:read deploy:write", "acr": "phr", "auth_time": now - 900}),
    );
    assert_eq!(req.check(&good, now), Ok(()));

    let few = principal(json!({"scope": "deploy:read", "acr": "phr", "auth_time": now}));
    assert_eq!(
        req.check(&few, now),
        Err(Unmet::Scopes {
            required: vec!["deploy:write".into(), "deploy:read".into()]
        })
    );
    let weak =
        principal(json!({"scp": ["deploy:read", "deploy:write"], "acr": "pwd", "auth_time": now}));
    assert_eq!(
        req.check(&weak, now),
        Err(Unmet::Authentication {
            acr_values: vec!["phr".into(), "urn:mfa".into()],
            max_age: None
        })
    );
    let old = principal(
        json!({"scope": "deploy:read deploy:write", "acr": "urn:mfa", "auth_time": now - 901}),
    );
    assert_eq!(
        req.check(&old, now),
        Err(Unmet::Authentication {
            acr_values: vec![],
            max_age: Some(900)
        })
    );
    let neither = principal(json!({"scope": "deploy:read deploy:write"}));
    assert_eq!(
        req.check(&neither, now),
        Err(Unmet::Authentication {
            acr_values: vec!["phr".into(), "urn:mfa".into()],
            max_age: Some(900)
        })
    );
    assert_eq!(Requirements::default().check(&neither, now), Ok(()));
}

// ----- canonical request (SPEC 8) -----

mod canonical_request {
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
}
