//! `countersign check` coverage lint (SPEC 8) as an operator sees it: `warning:` lines with
//! file:line:col, exit 0 without `--strict`, exit 1 with it; the shipped example is clean.

mod common;

use common::TestDir;

/// A config with `routes` and `extra` sections, and `policy` as the only policy file.
fn setup(routes: &str, extra: &str, policy: &str) -> TestDir {
    let dir = TestDir::new();
    dir.write(
        "countersign.toml",
        format!(
            r#"[server]
listen = "127.0.0.1:8080"

[[upstream]]
name = "api"
url = "http://127.0.0.1:7000"

[[upstream]]
name = "static"
url = "http://127.0.0.1:7001"

{routes}
[[issuer]]
issuer = "https://idp.example.com"
audiences = ["https://api.example.com"]

[policy]
files = ["policies/*.toml"]
{extra}"#
        ),
    );
    dir.write("policies/p.toml", policy);
    dir
}

/// (exit code without --strict, exit code with --strict, stdout with --strict).
fn check(dir: &TestDir) -> (Option<i32>, Option<i32>, String) {
    let config = dir.path().join("countersign.toml");
    let config = config.to_str().unwrap();
    let plain = common::countersign(&["check", "--config", config]);
    let strict = common::countersign(&["check", "--strict", "--config", config]);
    let text =
        String::from_utf8_lossy(&strict.stdout).replace(&format!("{}/", dir.path().display()), "");
    (plain.status.code(), strict.status.code(), text)
}

fn warnings(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("warning: "))
        .collect()
}

const HOST_ROUTE: &str = r#"[[route]]
host = "deploy.example.com"
upstream = "api"
"#;

const PROD_RULE: &str = r#"[[rule]]
name = "prod-deploy"
methods = ["POST"]
host = "deploy.example.com"
path = "/v1/deployments/{env}"
params = { env = "production" }
action = "approve"

[rule.approval]
approvers = ["alice@example.com"]
"#;

#[test]
fn a_host_scoped_rule_whose_upstream_another_route_reaches_is_a_warning() {
    let routes = format!("{HOST_ROUTE}\n[[route]]\nupstream = \"api\"\n");
    let (plain, strict, text) = check(&setup(&routes, "", PROD_RULE));
    assert_eq!((plain, strict), (Some(0), Some(1)), "{text}");
    let w = warnings(&text);
    assert_eq!(w.len(), 1, "{text}");
    assert!(w[0].starts_with("warning: policies/p.toml:1:1: rule \"prod-deploy\" (approve) applies only to host deploy.example.com, but its upstream \"api\" is also reachable through route #2 (countersign.toml:"), "{text}");
    assert!(w[0].contains("(any host)"), "{text}");

    // A route for another host to ANOTHER upstream, or for paths the rule never covers, is
    // no gap.
    let routes = format!(
        "{HOST_ROUTE}\n[[route]]\nupstream = \"static\"\n\n[[route]]\npath_prefix = \"/assets/\"\nupstream = \"api\"\n"
    );
    let (plain, strict, text) = check(&setup(&routes, "", PROD_RULE));
    assert_eq!((plain, strict), (Some(0), Some(0)), "{text}");
    assert!(warnings(&text).is_empty(), "{text}");
}

#[test]
fn an_approve_or_deny_rule_shadowed_by_an_earlier_rule_is_a_warning() {
    let policy = r#"[[rule]]
name = "writes"
path_prefix = "/v1"
action = "allow"

[[rule]]
name = "prod-deploy"
methods = ["POST"]
path = "/v1/deployments/{env}"
action = "approve"

[rule.approval]
approvers = ["alice@example.com"]

[[rule]]
name = "no-admin"
path_prefix = "/admin"
action = "deny"
"#;
    let (plain, strict, text) = check(&setup("[[route]]\nupstream = \"api\"\n", "", policy));
    assert_eq!((plain, strict), (Some(0), Some(1)), "{text}");
    assert_eq!(
        warnings(&text),
        ["warning: policies/p.toml:6:1: rule \"prod-deploy\" (approve) can never match: rule \"writes\" (policies/p.toml:1) matches every request it would, first"],
        "{text}"
    );

    // Only for other methods, or only with a claim: not a full shadow.
    let policy = policy.replacen(
        "action = \"allow\"",
        "methods = [\"GET\"]\naction = \"allow\"",
        1,
    );
    let (_, strict, text) = check(&setup("[[route]]\nupstream = \"api\"\n", "", &policy));
    assert_eq!(strict, Some(0), "{text}");
}

#[test]
fn an_unreachable_quorum_and_an_empty_group_are_warnings() {
    let policy = r#"[[rule]]
name = "payout"
path = "/payouts"
action = "approve"

[rule.approval]
approvers = ["group:finance", "bob@example.com"]
quorum = 3
"#;
    let extra = "\n[approvers.groups]\nfinance = [\"alice@example.com\"]\nnobody = []\n";
    let (plain, strict, text) = check(&setup("[[route]]\nupstream = \"api\"\n", extra, policy));
    assert_eq!((plain, strict), (Some(0), Some(1)), "{text}");
    let w = warnings(&text);
    assert_eq!(w.len(), 2, "{text}");
    assert!(w.contains(&"warning: policies/p.toml:1:1: rule \"payout\": quorum 3 is more than the 2 distinct approvers who could ever vote; no request can be approved"), "{text}");
    assert!(
        w.iter().any(|l| l.starts_with("warning: countersign.toml:")
            && l.ends_with(
                ": approver group \"nobody\" is empty: nobody in it can approve anything"
            )),
        "{text}"
    );
}

#[test]
fn the_shipped_example_passes_strict() {
    let out = common::countersign(&["check", "--strict", "--config", "examples/countersign.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("0 warning(s)"), "{text}");
}

#[tokio::test]
async fn run_logs_the_warnings_and_counts_them_at_start_and_on_reload() {
    let issuer = common::LocalIssuer::start().await;
    let echo = common::EchoUpstream::start().await;
    let dir = TestDir::new();
    dir.write("policies/p.toml", PROD_RULE);
    let config = format!(
        r#"[server]
listen = "{{{{listen}}}}"
control_listen = "{{{{control_listen}}}}"
public_url = "{{{{public_url}}}}"
threads = 1

[[upstream]]
name = "api"
url = "{}"

{HOST_ROUTE}
[[route]]
upstream = "api"

[[issuer]]
issuer = "{}"
audiences = ["https://api.example.com"]

[policy]
files = ["policies/*.toml"]
"#,
        echo.url(),
        issuer.issuer()
    );
    let mut proxy = common::Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    let gauge = || async {
        let text = common::http_client()
            .get(format!("{}/metrics", proxy.control_url()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        text.lines()
            .find(|l| l.starts_with("countersign_policy_warnings "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(gauge().await, Some(1.0));
    assert!(
        proxy
            .stderr()
            .contains("applies only to host deploy.example.com"),
        "{}",
        proxy.stderr()
    );
    // A reload that closes the gap (the rule no longer names a host) clears the gauge.
    dir.write(
        "policies/p.toml",
        PROD_RULE.replace("host = \"deploy.example.com\"\n", ""),
    );
    proxy.send_signal("HUP");
    let mut now = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        now = gauge().await;
        if now == Some(0.0) {
            break;
        }
    }
    assert_eq!(now, Some(0.0), "{}", proxy.stderr());
}

#[test]
fn shadow_rules_are_no_coverage_and_a_shadow_rule_nothing_reaches_is_a_warning() {
    // A shadow catch-all first: the deny after it still applies, so no "can never match".
    let policy = r#"[[rule]]
name = "watch-everything"
action = "deny"
mode = "shadow"

[[rule]]
name = "no-admin"
path_prefix = "/admin/"
action = "deny"
"#;
    let (plain, strict, text) = check(&setup(HOST_ROUTE, "", policy));
    assert_eq!((plain, strict), (Some(0), Some(0)), "{text}");
    assert!(warnings(&text).is_empty(), "{text}");

    // A host-scoped shadow rule guards nothing, so another route to its upstream is no bypass.
    let routes = format!("{HOST_ROUTE}\n[[route]]\nupstream = \"api\"\n");
    let shadow_prod = PROD_RULE.replace(
        "action = \"approve\"",
        "action = \"approve\"\nmode = \"shadow\"",
    );
    let (_, strict, text) = check(&setup(&routes, "", &shadow_prod));
    assert_eq!(strict, Some(0), "{text}");

    // An enforcing rule first that takes every request: the shadow rule can never record.
    let policy = r#"[[rule]]
name = "allow-all"
action = "allow"

[[rule]]
name = "watch-admin"
path_prefix = "/admin/"
action = "allow"
mode = "shadow"
"#;
    let (plain, strict, text) = check(&setup(HOST_ROUTE, "", policy));
    assert_eq!((plain, strict), (Some(0), Some(1)), "{text}");
    assert_eq!(
        warnings(&text),
        ["warning: policies/p.toml:5:1: shadow rule \"watch-admin\" (allow) can never match, so it records nothing: rule \"allow-all\" (policies/p.toml:1) matches every request it would, first"],
        "{text}"
    );
}

#[test]
fn an_on_call_schedule_makes_no_quorum_warning_and_needs_its_section() {
    let policy = r#"[[rule]]
name = "payout"
path = "/payouts"
action = "approve"

[rule.approval]
approvers = ["pagerduty:PABC123", "bob@example.com"]
quorum = 3
"#;
    // Who is on call is known only when a request is created: nothing to warn about.
    let extra = "\n[pagerduty]\napi_token = \"file:pd-token\"\n";
    let dir = setup("[[route]]\nupstream = \"api\"\n", extra, policy);
    dir.write("pd-token", "u+token\n");
    let (plain, strict, text) = check(&dir);
    assert_eq!((plain, strict), (Some(0), Some(0)), "{text}");
    assert!(warnings(&text).is_empty(), "{text}");

    // Without `[pagerduty]`, `check` fails at the entry.
    let dir = setup("[[route]]\nupstream = \"api\"\n", "", policy);
    let config = dir.path().join("countersign.toml");
    let out = common::countersign(&["check", "--config", config.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(&format!("{}/", dir.path().display()), "");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("policies/p.toml:7:14: approver \"pagerduty:PABC123\" needs a [pagerduty] section in the config"),
        "{text}"
    );
}
