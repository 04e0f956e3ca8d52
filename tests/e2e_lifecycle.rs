//! The process as an operator drives it (SPEC 2): SIGHUP reloads policy files (a bad file
//! keeps the old policy, logged and counted), SIGTERM drains in-flight requests and exits.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_error_body, basic_config, http_client, EchoUpstream, LocalIssuer, Proxy, TestDir,
};

const API: &str = "https://api.example.test";

const OPEN: &str = r#"
[[rule]]
name = "open"
path_prefix = "/"
action = "allow"
"#;

const NO_ADMIN: &str = r#"
[[rule]]
name = "no-admin"
path_prefix = "/admin/"
action = "deny"

[[rule]]
name = "open"
path_prefix = "/"
action = "allow"
"#;

async fn status_of(proxy: &Proxy, token: &str, path: &str) -> reqwest::StatusCode {
    http_client()
        .get(format!("{}{path}", proxy.data_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("request through proxy")
        .status()
}

async fn metrics(proxy: &Proxy) -> String {
    http_client()
        .get(format!("{}/metrics", proxy.control_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of the first sample line starting with `prefix` (0 when absent).
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Policy files one folder below the glob's base folder. The file watcher watches only the
/// base folder (`policies/`, non-recursively), so it never sees these files change: the
/// SIGHUP handler is the only way a change here can take effect, and a broken handler fails
/// the test instead of being covered by the watcher.
const POLICY_BELOW_THE_WATCHED_FOLDER: &str = r#"
[policy]
files = ["policies/*/*.toml"]
"#;

/// Reloads that the SIGHUP handler ran (its log lines carry `trigger` SIGHUP; the file watcher
/// logs `file change`), so a check cannot pass on the watcher alone.
fn sighup_reloads(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("SIGHUP"))
        .filter(|l| l.contains("policy reloaded") || l.contains("policy reload rejected"))
        .count()
}

/// Waits until the SIGHUP handler logged more reloads than `before`.
async fn wait_for_sighup_reload(proxy: &Proxy, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sighup_reloads(&proxy.stderr()) <= before {
        assert!(
            Instant::now() < deadline,
            "no reload by the SIGHUP handler within 10 s; stderr:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_policies_and_a_bad_file_keeps_the_old_policy() {
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    dir.write("policies/main/10-main.toml", OPEN);
    let config =
        basic_config(&echo.url(), &issuer.issuer(), &[API]) + POLICY_BELOW_THE_WATCHED_FOLDER;
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    let token = issuer.token("svc", API, serde_json::json!({}));
    assert_eq!(status_of(&proxy, &token, "/admin/x").await, 200);

    // A valid new policy takes effect after SIGHUP; the watcher cannot see this file.
    let hups = sighup_reloads(&proxy.stderr());
    dir.write("policies/main/10-main.toml", NO_ADMIN);
    proxy.send_signal("HUP");
    wait_for_sighup_reload(&proxy, hups).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&proxy, &token, "/admin/x").await != 403 {
        assert!(
            Instant::now() < deadline,
            "new policy not active 10 s after SIGHUP; stderr:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = http_client()
        .get(format!("{}/admin/x", proxy.data_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("denied request");
    assert_error_body(resp, "access_denied").await;
    let forwarded = echo.count();

    // A broken file: the reload fails, is counted and logged, and the old policy stays.
    let errors_before = sample(
        &metrics(&proxy).await,
        "countersign_policy_reloads_total{result=\"error\"}",
    );
    let hups = sighup_reloads(&proxy.stderr());
    dir.write(
        "policies/main/20-broken.toml",
        "[[rule]]\nname = \"oops\"\naction = \n",
    );
    proxy.send_signal("HUP");
    wait_for_sighup_reload(&proxy, hups).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(&proxy).await;
        if sample(&m, "countersign_policy_reloads_total{result=\"error\"}") > errors_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failed reload not counted within 10 s:\n{m}\nstderr:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.stderr().contains("20-broken.toml"),
        "the bad file is not named in the log:\n{}",
        proxy.stderr()
    );
    assert_eq!(status_of(&proxy, &token, "/admin/x").await, 403);
    assert_eq!(status_of(&proxy, &token, "/other").await, 200);
    assert_eq!(
        echo.count(),
        forwarded + 1,
        "a denied request was forwarded"
    );
    // Every reload came from SIGHUP: the watcher never reloaded, so nothing above can have
    // passed on its account.
    assert!(
        !proxy.stderr().contains("file change"),
        "the file watcher reloaded; the test no longer isolates SIGHUP:\n{}",
        proxy.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    echo.set_latency(Duration::from_millis(1500));
    let dir = TestDir::new();
    let mut proxy = Proxy::start(&dir, &basic_config(&echo.url(), &issuer.issuer(), &[API])).await;
    proxy.wait_ready().await;
    let token = issuer.token("svc", API, serde_json::json!({}));

    let url = format!("{}/slow", proxy.data_url());
    let in_flight = tokio::spawn(async move {
        http_client()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status())
    });
    // Wait until the upstream has the request, so it is truly in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while echo.count() == 0 {
        assert!(Instant::now() < deadline, "request never reached upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.send_signal("TERM");

    let status = in_flight
        .await
        .expect("request task")
        .expect("in-flight request was cut off by SIGTERM");
    assert_eq!(status, 200);
    let code = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(20)));
    assert_eq!(code, Some(0), "stderr:\n{}", proxy.stderr());
}
