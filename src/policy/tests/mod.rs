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
        mode: Mode::Enforce,
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
mod canonical_request;
mod shadow;
