//! What callers and operators see besides a forwarded request: routing errors, a dead
//! upstream, RFC 9728 metadata, health, readiness and metrics.

mod common;

use std::time::Duration;

use common::{
    assert_error_body, free_port, http_client, json_body, EchoUpstream, LocalIssuer, Proxy, TestDir,
};

const API: &str = "https://api.example.test";

/// Routes: `/api/...` -> a live echo upstream, `/down/...` -> a closed port; nothing else.
fn config(echo_url: &str, issuer: &str) -> String {
    let closed = free_port();
    format!(
        r#"[server]
listen = "{{{{listen}}}}"
control_listen = "{{{{control_listen}}}}"
public_url = "{{{{public_url}}}}"
threads = 1

[[upstream]]
name = "echo"
url = "{echo_url}"

[[upstream]]
name = "down"
url = "http://127.0.0.1:{closed}"

[[route]]
path_prefix = "/api/"
upstream = "echo"

[[route]]
path_prefix = "/down/"
upstream = "down"

[[issuer]]
issuer = "{issuer}"
audiences = ["{API}"]
"#
    )
}

struct Setup {
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
    _dir: TestDir,
}

async fn setup() -> Setup {
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    let mut proxy = Proxy::start(&dir, &config(&echo.url(), &issuer.issuer())).await;
    proxy.wait_ready().await;
    Setup {
        issuer,
        echo,
        proxy,
        _dir: dir,
    }
}

impl Setup {
    fn token(&self) -> String {
        self.issuer.token("svc", API, serde_json::json!({}))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        http_client()
            .get(format!("{}{path}", self.proxy.data_url()))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("request through proxy")
    }
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_path_no_route_matches_is_404_no_route() {
    let s = setup().await;
    let ok = s.get("/api/things").await;
    assert_eq!(ok.status(), 200, "stderr:\n{}", s.proxy.stderr());
    assert_eq!(s.echo.count(), 1);

    let resp = s.get("/elsewhere").await;
    assert_eq!(resp.status(), 404);
    assert!(content_type(&resp).starts_with("application/json"));
    assert_error_body(resp, "no_route").await;
    assert_eq!(s.echo.count(), 1, "an unrouted request reached an upstream");
}

#[tokio::test]
async fn a_closed_upstream_port_is_502_upstream_unavailable() {
    let s = setup().await;
    let resp = s.get("/down/x").await;
    assert_eq!(resp.status(), 502, "stderr:\n{}", s.proxy.stderr());
    let body = assert_error_body(resp, "upstream_unavailable").await;
    // No internals: neither the upstream address nor an OS error text.
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1"), "{text}");
    assert!(!text.to_lowercase().contains("refused"), "{text}");

    // The proxy itself is fine afterwards.
    assert_eq!(s.get("/api/y").await.status(), 200);
}

#[tokio::test]
async fn protected_resource_metadata_is_served_without_a_token() {
    let s = setup().await;
    let resp = http_client()
        .get(format!(
            "{}/.well-known/oauth-protected-resource",
            s.proxy.data_url()
        ))
        .send()
        .await
        .expect("metadata request");
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("application/json"));
    let body = json_body(resp).await;
    assert!(
        body["resource"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let servers = body["authorization_servers"]
        .as_array()
        .unwrap_or_else(|| panic!("authorization_servers missing: {body}"));
    assert!(
        servers
            .iter()
            .any(|s2| s2 == &serde_json::json!(s.issuer.issuer())),
        "issuer not listed: {body}"
    );
    assert_eq!(s.echo.count(), 0, "metadata must not be proxied");
}

#[tokio::test]
async fn health_and_readiness_follow_the_issuer_keys() {
    let issuer = LocalIssuer::start().await;
    // The IdP is down when Countersign starts: alive, but not ready.
    issuer.set_down(true);
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    let mut proxy = Proxy::start(&dir, &config(&echo.url(), &issuer.issuer())).await;
    let client = http_client();

    let health = client
        .get(format!("{}/healthz", proxy.control_url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("{}/readyz", proxy.control_url()))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);

    // Keys never loaded: 503 temporarily_unavailable with Retry-After, never 401.
    let token = issuer.token("svc", API, serde_json::json!({}));
    let resp = client
        .get(format!("{}/api/x", proxy.data_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request while keys missing");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_error_body(resp, "temporarily_unavailable").await;
    assert_eq!(echo.count(), 0);

    // The IdP comes back: Countersign gets ready by itself and lets the token through.
    issuer.set_down(false);
    proxy.wait_ready_within(Duration::from_secs(30)).await;
    let resp = client
        .get(format!("{}/api/x", proxy.data_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request after recovery");
    assert_eq!(resp.status(), 200, "stderr:\n{}", proxy.stderr());
    assert_eq!(echo.count(), 1);
}

#[tokio::test]
async fn control_endpoints_are_not_on_the_data_port() {
    let s = setup().await;
    let resp = http_client()
        .get(format!("{}/metrics", s.proxy.data_url()))
        .bearer_auth(s.token())
        .send()
        .await
        .expect("metrics on data port");
    // Routed like any request (to the 404 table here), never the metrics text.
    assert_eq!(resp.status(), 404, "stderr:\n{}", s.proxy.stderr());
    let text = assert_error_body(resp, "no_route").await.to_string();
    assert!(!text.contains("countersign_requests_total"), "{text}");
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_documented_names() {
    let s = setup().await;
    assert_eq!(s.get("/api/ok").await.status(), 200);
    let bad = http_client()
        .get(format!("{}/api/ok", s.proxy.data_url()))
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .expect("bad token request");
    assert!(
        bad.status() == 400 || bad.status() == 401,
        "{}",
        bad.status()
    );

    let resp = http_client()
        .get(format!("{}/metrics", s.proxy.control_url()))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    let ct = content_type(&resp);
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    assert!(ct.contains("version=0.0.4"), "content-type {ct}");
    let text = resp.text().await.expect("metrics body");
    for name in [
        "countersign_requests_total{",
        "countersign_token_rejections_total{",
        "countersign_jwks_fetches_total{",
        "countersign_upstream_latency_seconds_bucket{",
        "countersign_upstream_latency_seconds_count{",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    // The successful JWKS fetch for our issuer is counted.
    assert!(
        text.lines()
            .any(|l| l.starts_with("countersign_jwks_fetches_total{")
                && l.contains(&s.issuer.issuer())
                && !l.ends_with(" 0")),
        "no successful JWKS fetch counted for the issuer:\n{text}"
    );
    assert!(s.issuer.jwks_fetches() >= 1);
}
