use std::path::Path;

use serde_json::json;

use super::*;
use crate::config::load;
use crate::policy::Outcome;

const NOW: u64 = 1_700_000_000;

/// Explains against the `valid` fixture (routes for deploy.example.com and
/// *.billing.example.com, rules health / prod-deploy / deploy-read / no-admin, default deny).
fn run(method: &str, url: &str, claims: Option<serde_json::Value>) -> String {
    let (config, policy) = load(Path::new("tests/fixtures/config/valid/countersign.toml")).unwrap();
    let who = claims.map(|c| {
        let mut base = json!({"iss": "https://idp.example.com", "sub": "alice", "exp": NOW + 600});
        base.as_object_mut()
            .unwrap()
            .extend(c.as_object().unwrap().clone());
        Principal::from_claims(base.as_object().unwrap().clone()).unwrap()
    });
    explain(&config, &policy, method, url, who.as_ref(), NOW)
        .unwrap()
        .text
        .replace("tests/fixtures/config/valid/policies/", "")
}

const CALLER: &str = "caller: iss=https://idp.example.com sub=alice\n";
const ROUTE: &str =
    "route: #1 host=deploy.example.com path_prefix=/ upstream=deploy-api (http://127.0.0.1:7000/)\n";
const PROD: &str = "https://deploy.example.com/v1/deployments/production";

#[test]
fn allow_with_skipped_rules_and_their_reasons() {
    let got = run(
        "GET",
        "https://Deploy.Example.com:8443/v1/status?x=1",
        Some(json!({"scope": "deploy:read"})),
    );
    let want = format!(
        "request: GET https://Deploy.Example.com:8443/v1/status?x=1
host: deploy.example.com
path: /v1/status
canonical: GET https://deploy.example.com:8443/v1/status?x=1
{CALLER}caller scopes: deploy:read
caller acr: none
caller auth_time: none
note: explain does not verify the token's signature
{ROUTE}skipped: health (00-public.toml:1): path /v1/status does not match /healthz
skipped: prod-deploy (10-deploy.toml:1): method GET not in POST, PUT
rule: deploy-read (10-deploy.toml:22) matches
action: allow
requires: scopes=deploy:read
outcome: allow: forwarded upstream
"
    );
    assert_eq!(got, want);
}

#[test]
fn deny_rule_and_default_deny() {
    let got = run(
        "GET",
        "https://deploy.example.com/%61dmin/x",
        Some(json!({})),
    );
    assert!(got.contains("path: /admin/x\n"), "{got}");
    assert!(got.ends_with(
        "rule: no-admin (10-deploy.toml:29) matches\nparam: rest=x\naction: deny\noutcome: deny: 403 access_denied\n"
    ), "{got}");

    let got = run("GET", "https://deploy.example.com/v2", Some(json!({})));
    assert!(got.ends_with(
        "skipped: no-admin (10-deploy.toml:29): path /v2 does not match /admin/{*rest}\nrule: none matches; [policy] default = deny\naction: deny\noutcome: deny: 403 access_denied\n"
    ), "{got}");
}

#[test]
fn step_up_for_a_missing_scope() {
    let got = run(
        "POST",
        PROD,
        Some(json!({"groups": ["release-managers"], "scope": "deploy:read"})),
    );
    assert!(
        got.ends_with(
            "skipped: health (00-public.toml:1): method POST not in GET, HEAD
rule: prod-deploy (10-deploy.toml:1) matches
param: env=production
action: approve
requires: scopes=deploy:write acr=phr|urn:mfa max_age=900s
missing scopes: deploy:write
outcome: step-up needed: 403 insufficient_scope scope=\"deploy:write\"
"
        ),
        "{got}"
    );
}

#[test]
fn step_up_for_acr_and_max_age() {
    let got = run(
        "POST",
        PROD,
        Some(json!({"groups": "release-managers", "scope": "deploy:write", "acr": "pwd"})),
    );
    assert!(got.ends_with(
        "outcome: step-up needed: 401 insufficient_user_authentication acr_values=\"phr urn:mfa\" max_age=900\n"
    ), "{got}");
    let got = run(
        "POST",
        PROD,
        Some(
            json!({"groups": "release-managers", "scope": "deploy:write", "acr": "phr", "auth_time": NOW - 901}),
        ),
    );
    assert!(
        got.ends_with(
            "outcome: step-up needed: 401 insufficient_user_authentication max_age=900\n"
        ),
        "{got}"
    );
}

#[test]
fn approval_required_lists_expanded_approvers_and_settings() {
    let got = run(
        "POST",
        PROD,
        Some(
            json!({"groups": ["release-managers"], "scope": "deploy:write", "acr": "phr",
                     "auth_time": NOW - 60, "email": "alice@example.com"}),
        ),
    );
    let want = format!(
        "request: POST {PROD}
host: deploy.example.com
path: /v1/deployments/production
canonical: POST {PROD}
{CALLER}caller email: alice@example.com
caller scopes: deploy:write
caller acr: phr
caller auth_time: 1699999940 (60s ago)
note: explain does not verify the token's signature
{ROUTE}skipped: health (00-public.toml:1): method POST not in GET, HEAD
rule: prod-deploy (10-deploy.toml:1) matches
param: env=production
action: approve
requires: scopes=deploy:write acr=phr|urn:mfa max_age=900s
approvers: group:sre-leads, carol@example.com
approver emails: alice@example.com, bob@example.com, carol@example.com
quorum: 2
notify: slack:#prod-approvals, slack:@dave@example.com, teams
hold: 30s
expires: 2h
approve_via: login
reason_required: true
self_approval: true
redact: /password, /card/number
outcome: approval required: held until approvers decide
"
    );
    assert_eq!(got, want);
}

#[test]
fn claims_that_do_not_hold_skip_the_rule() {
    let got = run(
        "POST",
        PROD,
        Some(json!({"groups": ["dev"], "scope": "deploy:write"})),
    );
    assert!(got.contains(
        "skipped: prod-deploy (10-deploy.toml:1): claim groups does not hold \"release-managers\"\n"
    ), "{got}");
    assert!(got.ends_with("rule: none matches; [policy] default = deny\naction: deny\noutcome: deny: 403 access_denied\n"), "{got}");
}

#[test]
fn no_route() {
    let got = run("GET", "https://other.example.com/", None);
    assert_eq!(
        got,
        "request: GET https://other.example.com/
host: other.example.com
path: /
caller: none (no token given; pass --token or --claims to decide for a caller)
route: none matches
outcome: 404 no_route
"
    );
}

#[test]
fn without_a_token_says_what_the_outcome_depends_on() {
    let got = run("POST", PROD, None);
    let want = format!(
        "request: POST {PROD}
host: deploy.example.com
path: /v1/deployments/production
canonical: POST {PROD}
caller: none (no token given; pass --token or --claims to decide for a caller)
{ROUTE}skipped: health (00-public.toml:1): method POST not in GET, HEAD
candidate: prod-deploy (10-deploy.toml:1) if the token has groups=release-managers: approve, requires scopes=deploy:write acr=phr|urn:mfa max_age=900s
skipped: deploy-read (10-deploy.toml:22): method POST not in GET
skipped: no-admin (10-deploy.toml:29): path /v1/deployments/production does not match /admin/{{*rest}}
rule: otherwise [policy] default = deny
depends on: claim groups, scope, acr and auth_time
outcome: token required: 401 without a valid bearer token
"
    );
    assert_eq!(got, want);

    let got = run("get", "https://deploy.example.com/healthz", None);
    assert!(got.ends_with(
        "rule: health (00-public.toml:1) matches\naction: public\noutcome: public: forwarded, no token needed\n"
    ), "{got}");
}

#[test]
fn a_token_the_proxy_would_refuse() {
    let got = run(
        "GET",
        "https://deploy.example.com/v1/x",
        Some(json!({"iss": "https://evil.example.com", "exp": 1})),
    );
    assert!(got.contains("warning: issuer https://evil.example.com is not configured\nwarning: the token has expired\n"), "{got}");
    assert!(
        got.ends_with("outcome: 401 invalid_token (issuer not configured)\n"),
        "{got}"
    );
}

#[test]
fn bypass_paths_are_refused() {
    let got = run("GET", "https://deploy.example.com/v1/%2e%2e/admin", None);
    assert!(got.ends_with(
        "path: /v1/%2e%2e/admin rejected: the request path contains a \".\" or \"..\" segment (also when percent-encoded)\noutcome: 400 invalid_request (the request is refused before any policy)\n"
    ), "{got}");
}

#[test]
fn bad_input_is_an_error() {
    let (config, policy) = load(Path::new("tests/fixtures/config/valid/countersign.toml")).unwrap();
    assert_eq!(
        explain(&config, &policy, "GE T", "https://a/", None, NOW).map(|r| r.text),
        Err("\"GE T\" is not an HTTP method".into())
    );
    assert!(explain(&config, &policy, "GET", "/relative", None, NOW).is_err());
    assert!(explain(&config, &policy, "GET", "ftp://a/", None, NOW).is_err());
}

/// The fixture's policy with a shadow copy of `no-admin` (named `watch`, deny, any path under
/// /v1/) put first.
fn with_shadow_first() -> (crate::config::Config, PolicySet) {
    let (config, mut policy) =
        load(Path::new("tests/fixtures/config/valid/countersign.toml")).unwrap();
    let mut watch = policy
        .rules
        .iter()
        .find(|r| r.name == "no-admin")
        .unwrap()
        .clone();
    watch.name = "watch".into();
    watch.mode = crate::policy::Mode::Shadow;
    watch.path = PathMatch::Prefix("/v1/".into());
    policy.rules.insert(0, watch);
    (config, policy)
}

#[test]
fn a_shadow_match_is_shown_in_order_and_does_not_decide() {
    let (config, policy) = with_shadow_first();
    let who = Principal::from_claims(
        json!({"iss": "https://idp.example.com", "sub": "alice", "exp": NOW + 600, "scope": "deploy:read"})
            .as_object()
            .unwrap()
            .clone(),
    )
    .unwrap();
    let url = "https://deploy.example.com/v1/status";
    let got = explain(&config, &policy, "GET", url, Some(&who), NOW)
        .unwrap()
        .text
        .replace("tests/fixtures/config/valid/policies/", "");
    assert!(got.contains(&format!("{ROUTE}shadow: watch (10-deploy.toml:29) matches and would have denied it; recorded only, not enforced\nskipped: health")), "{got}");
    assert!(
        got.ends_with(
            "action: allow\nrequires: scopes=deploy:read\noutcome: allow: forwarded upstream\n"
        ),
        "{got}"
    );
    let verdict = explain(&config, &policy, "GET", url, Some(&who), NOW)
        .and_then(Report::verdict)
        .unwrap();
    assert_eq!(
        verdict,
        Verdict {
            outcome: Outcome::Allow,
            rule: Some("deploy-read".into()),
            shadow: vec![("watch".into(), Action::Deny)],
        }
    );

    // Without a token the shadow rule neither decides nor asks for anything.
    let got = explain(&config, &policy, "GET", url, None, NOW)
        .unwrap()
        .text;
    assert!(got.contains("shadow: watch ("), "{got}");
    assert!(got.contains("rule: deploy-read ("), "{got}");
    // ... but a request refused for want of a token records no shadow match.
    let verdict = explain(&config, &policy, "GET", url, None, NOW)
        .and_then(Report::verdict)
        .unwrap();
    assert_eq!(
        (verdict.outcome, verdict.shadow),
        (Outcome::TokenRequired, vec![])
    );
}

#[test]
fn judge_names_every_outcome_explain_prints() {
    let (config, policy) = load(Path::new("tests/fixtures/config/valid/countersign.toml")).unwrap();
    let caller = |extra: serde_json::Value| {
        let mut map = extra.as_object().unwrap().clone();
        map.insert("iss".into(), "https://idp.example.com".into());
        caller_from_claims(&config, map, NOW).unwrap()
    };
    let judge = |method: &str, url: &str, who: Option<&Principal>| {
        let v = explain(&config, &policy, method, url, who, NOW)
            .and_then(Report::verdict)
            .unwrap();
        (v.outcome, v.rule)
    };
    let d = "https://deploy.example.com";
    let read = caller(json!({"scope": "deploy:read"}));
    let none = caller(json!({}));
    let stale = caller(json!({"exp": 1}));
    let mfa_stale = caller(json!({
        "groups": ["release-managers"], "scope": "deploy:write", "acr": "phr", "auth_time": NOW - 3600
    }));
    let prod = format!("{d}/v1/deployments/production");
    let mut fresh = json!({
        "groups": ["release-managers"], "scope": "deploy:write", "acr": "phr", "auth_time": NOW - 60
    });
    let unnamed = caller(fresh.clone());
    fresh["email"] = "dev@example.com".into();
    let named = caller(fresh);
    // method, URL, caller: the outcome and the deciding rule.
    #[rustfmt::skip]
    let cases = [
        ("GET", format!("{d}/healthz"), None, Outcome::Public, Some("health")),
        ("GET", format!("{d}/v1/x"), Some(&read), Outcome::Allow, Some("deploy-read")),
        ("GET", format!("{d}/v1/x"), Some(&none), Outcome::InsufficientScope, Some("deploy-read")),
        ("GET", format!("{d}/admin/x"), Some(&read), Outcome::Deny, Some("no-admin")),
        ("GET", format!("{d}/v2"), Some(&read), Outcome::Deny, Some("default")),
        ("GET", format!("{d}/v1/x"), None, Outcome::TokenRequired, None),
        ("GET", "https://other.example.com/".to_owned(), None, Outcome::NoRoute, None),
        ("GET", format!("{d}/v1/%2e%2e/admin"), None, Outcome::InvalidRequest, None),
        ("GET", format!("{d}/v1/x"), Some(&stale), Outcome::InvalidToken, Some("deploy-read")),
        ("POST", prod.clone(), Some(&mfa_stale), Outcome::StepUp, Some("prod-deploy")),
        // Held only for a requester the token names (SPEC 8), as the proxy does.
        ("POST", prod.clone(), Some(&unnamed), Outcome::IdentityRequired, Some("prod-deploy")),
        ("POST", prod, Some(&named), Outcome::Approve, Some("prod-deploy")),
    ];
    for (method, url, who, outcome, rule) in cases {
        assert_eq!(
            judge(method, &url, who),
            (outcome, rule.map(str::to_owned)),
            "{method} {url}"
        );
    }
}

#[test]
fn an_on_call_approver_is_described_without_asking_pagerduty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.toml"),
        "[[rule]]\nname = \"r\"\naction = \"approve\"\n[rule.approval]\napprovers = [\"pagerduty:PABC123\", \"carol@example.com\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("pd-token"), "t\n").unwrap();
    // Nothing listens there: explain must not call it.
    std::fs::write(
        dir.path().join("countersign.toml"),
        "[server]\nlisten = \"127.0.0.1:8080\"\n[[upstream]]\nname = \"api\"\nurl = \"http://127.0.0.1:7000\"\n[[route]]\nupstream = \"api\"\n[[issuer]]\nissuer = \"https://idp.example.com\"\naudiences = [\"aud\"]\n[pagerduty]\napi_token = \"file:pd-token\"\napi_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let (config, policy) = load(&dir.path().join("countersign.toml")).unwrap();
    let who = json!({"iss": "https://idp.example.com", "sub": "dan", "exp": NOW + 600});
    let who = Principal::from_claims(who.as_object().unwrap().clone()).unwrap();
    let got = explain(
        &config,
        &policy,
        "POST",
        "https://x.example.com/",
        Some(&who),
        NOW,
    )
    .unwrap()
    .text;
    assert!(
        got.contains("approvers: pagerduty:PABC123, carol@example.com\napprover emails: on call in PagerDuty schedule PABC123 (resolved when a request is created), carol@example.com\n"),
        "{got}"
    );
}
