//! The canonical request through the real binary (SPEC 8), sent as raw bytes so no client
//! library tidies the attack away: refused spellings get a precise 400, accepted ones reach
//! the upstream in canonical form, reserved headers in any spelling are stripped, and the
//! per-route/per-upstream relaxations do what the README says.

mod common;

use std::time::Duration;

use common::{EchoUpstream, LocalIssuer, Proxy, TestDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API: &str = "https://api.example.test";

const POLICY: &str = r#"[[rule]]
name = "no-admin"
path_prefix = "/admin"
action = "deny"

[[rule]]
name = "no-delete"
methods = ["DELETE"]
action = "deny"

[[rule]]
name = "rest"
action = "allow"
"#;

struct Setup {
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
    _dir: TestDir,
}

/// Routes: `strict.test` (defaults), `matrix.test` (allow_semicolons), `override.test`
/// (allow_method_override), `ci.test` (a case_insensitive_paths upstream).
async fn setup() -> Setup {
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    dir.write("policies/p.toml", POLICY);
    let config = format!(
        r#"[server]
listen = "{{{{listen}}}}"
control_listen = "{{{{control_listen}}}}"
public_url = "{{{{public_url}}}}"
threads = 1

[[upstream]]
name = "echo"
url = "{echo}"

[[upstream]]
name = "echo-ci"
url = "{echo}"
case_insensitive_paths = true

[[route]]
host = "strict.test"
upstream = "echo"

[[route]]
host = "matrix.test"
upstream = "echo"
allow_semicolons = true

[[route]]
host = "override.test"
upstream = "echo"
allow_method_override = true

[[route]]
host = "ci.test"
upstream = "echo-ci"

[[issuer]]
issuer = "{iss}"
audiences = ["{API}"]

[policy]
files = ["policies/*.toml"]
default = "deny"
"#,
        echo = echo.url(),
        iss = issuer.issuer(),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    Setup {
        issuer,
        echo,
        proxy,
        _dir: dir,
    }
}

/// Status line and body of one raw HTTP/1.1 exchange.
async fn raw(proxy: &Proxy, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(proxy.listen())
        .await
        .expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    if body.is_empty() {
        eprintln!("empty body in: {text:?}");
    }
    (status, body)
}

impl Setup {
    fn token(&self) -> String {
        self.issuer.token(
            "svc-1",
            API,
            serde_json::json!({"email": "svc@example.com"}),
        )
    }

    /// `METHOD target` with `host` and extra header lines, with the bearer token.
    async fn send(&self, method: &str, target: &str, host: &str, extra: &str) -> (u16, String) {
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.token()
        );
        raw(&self.proxy, &req).await
    }
}

fn description(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            assert_eq!(v["error"], "invalid_request", "{body}");
            v["error_description"].as_str().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("not a JSON error body: {body:?}"))
}

#[tokio::test]
async fn refused_spellings_get_400_with_a_precise_description() {
    let s = setup().await;
    let cases = [
        ("/v1/a%2Fb", "encoded slash or backslash"),
        ("/v1/a%2fb", "encoded slash or backslash"),
        ("/v1/a%5Cb", "encoded slash or backslash"),
        ("/v1/a%5cb", "encoded slash or backslash"),
        ("/v1/a\\b", "contains a backslash"),
        ("/v1/production;x", "matrix parameters"),
        ("/v1/a%00", "NUL"),
        ("/v1/a%0a", "control character"),
        ("/v1/a%09b", "control character"),
        ("/v1/a%7F", "control character"),
        ("/v1/%2e%2e/admin", "\"..\" segment"),
        ("/v1/..;x/admin", "\"..\" segment"),
        ("/v1/%C0%AF", "valid UTF-8"),
    ];
    for (target, want) in cases {
        let (status, body) = s.send("POST", target, "strict.test", "").await;
        assert_eq!(status, 400, "{target}: {body}");
        let d = description(&body);
        assert!(d.contains(want), "{target}: {d}");
    }
    for header in [
        "X-HTTP-Method-Override: DELETE\r\n",
        "X-HTTP-Method: DELETE\r\n",
        "X-Method-Override: DELETE\r\n",
        "x_http_method_override: DELETE\r\n",
    ] {
        let (status, body) = s.send("POST", "/v1/x", "strict.test", header).await;
        assert_eq!(status, 400, "{header}: {body}");
        assert!(description(&body).contains("method-override"), "{body}");
    }
    // Host disagreements (pingora itself already refuses an absolute-form target whose host
    // differs from Host, with an empty 400; either way nothing is forwarded).
    let (status, body) = s
        .send("GET", "http://strict.test/v1/x", "matrix.test", "")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.echo.count(), 0, "nothing refused reached the upstream");
}

#[tokio::test]
async fn the_upstream_gets_the_canonical_request_and_no_reserved_header() {
    let s = setup().await;
    let extra = "Countersign-Subject: forged\r\nCOUNTERSIGN_SUBJECT: forged\r\ncountersign_approval: forged\r\nCountersign_Issuer: forged\r\n";
    let (status, body) = s
        .send("GET", "//v1//%61bc/?q=%2F", "STRICT.Test.:80", extra)
        .await;
    assert_eq!(status, 200, "{body}");
    let got = s.echo.last().expect("forwarded");
    assert_eq!(got.uri, "/v1/abc/?q=%2F", "canonical path, query as sent");
    assert_eq!(got.header("host"), Some("strict.test"));
    assert_eq!(got.header("countersign-subject"), Some("svc-1"));
    assert_eq!(
        got.header("countersign-issuer"),
        Some(s.issuer.issuer().as_str())
    );
    for (name, _) in &got.headers {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        if folded.starts_with("countersign-") {
            assert!(
                matches!(
                    folded.as_str(),
                    "countersign-subject" | "countersign-issuer" | "countersign-request-id"
                ),
                "client header {name} reached the upstream"
            );
        }
    }
    assert_eq!(got.header_all("countersign-subject"), ["svc-1"]);

    // Absolute-form (as HTTP/2's :authority) is judged like Host, and sent on in origin-form.
    let (status, body) = s
        .send("GET", "http://Strict.Test./v1/%7Ex", "Strict.Test.", "")
        .await;
    assert_eq!(status, 200, "{body}");
    let got = s.echo.last().expect("forwarded");
    assert_eq!(got.uri, "/v1/~x");
    assert_eq!(got.header("host"), Some("strict.test"));
}

#[tokio::test]
async fn paths_match_on_segments_with_or_without_a_trailing_slash() {
    let s = setup().await;
    for target in ["/admin", "/admin/", "/admin/x", "/%61dmin/x", "//admin"] {
        let (status, body) = s.send("GET", target, "strict.test", "").await;
        assert_eq!(status, 403, "{target} must hit no-admin: {body}");
    }
    let (status, body) = s.send("GET", "/administrator", "strict.test", "").await;
    assert_eq!(status, 200, "/administrator is not under /admin: {body}");
    // Case matters for a case-sensitive upstream, not for a case-insensitive one.
    let (status, _) = s.send("GET", "/ADMIN/x", "strict.test", "").await;
    assert_eq!(status, 200);
    let (status, body) = s.send("GET", "/ADMIN/x", "ci.test", "").await;
    assert_eq!(status, 403, "case_insensitive_paths: {body}");
}

#[tokio::test]
async fn relaxations_are_per_route_and_policy_still_judges() {
    let s = setup().await;
    // allow_semicolons: forwarded with its parameters, judged without them.
    let (status, body) = s.send("GET", "/v1/a;jsessionid=1", "matrix.test", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.echo.last().expect("forwarded").uri, "/v1/a;jsessionid=1");
    let (status, body) = s.send("GET", "/admin;x/y", "matrix.test", "").await;
    assert_eq!(status, 403, "/admin;x is judged as /admin: {body}");
    let (status, _) = s.send("GET", "/admin/..;/x", "matrix.test", "").await;
    assert_eq!(status, 400);

    // allow_method_override: the override is what policy judges.
    let n = s.echo.count();
    let (status, body) = s
        .send(
            "POST",
            "/v1/x",
            "override.test",
            "X-HTTP-Method-Override: DELETE\r\n",
        )
        .await;
    assert_eq!(status, 403, "judged as DELETE: {body}");
    assert_eq!(s.echo.count(), n);
    let (status, body) = s
        .send(
            "POST",
            "/v1/x",
            "override.test",
            "X-HTTP-Method-Override: PATCH\r\n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = s.echo.last().expect("forwarded");
    assert_eq!(
        got.method, "POST",
        "the upstream applies the override itself"
    );
    assert_eq!(got.header("x-http-method-override"), Some("PATCH"));
}

#[tokio::test]
async fn http2_authority_is_judged_like_the_http1_host() {
    let s = setup().await;
    let port = s.proxy.listen().rsplit(':').next().unwrap().to_owned();
    // :authority names strict.test (resolved to the proxy), as HTTP/1.1's Host would.
    let url = format!("http://strict.test:{port}/%61dmin/x");
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("strict.test", s.proxy.listen().parse().unwrap())
        .build()
        .expect("client");
    let resp = client
        .get(&url)
        .bearer_auth(s.token())
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 403, "judged as /admin/x on strict.test");

    let resp = client
        .get(format!("http://strict.test:{port}/v1/ok"))
        .bearer_auth(s.token())
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.status(), 200);
    let got = s.echo.last().expect("forwarded");
    assert_eq!(
        got.header("host"),
        Some(format!("strict.test:{port}").as_str())
    );

    // A Host header that disagrees with :authority is refused.
    let resp = client
        .get(format!("http://strict.test:{port}/v1/ok"))
        .header("host", "matrix.test")
        .bearer_auth(s.token())
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.status(), 400);
}
