//! TLS on both sides: HTTPS (HTTP/1.1 and HTTP/2) on the data-plane listener, and HTTPS
//! upstreams with a pinned CA.

mod common;

use common::{assert_error_body, EchoUpstream, LocalIssuer, Proxy, TestDir, TlsFixture};

const API: &str = "https://api.example.test";

/// Proxy with TLS on the listener (certificate from `listener`), routes `/good/` -> an HTTPS
/// upstream pinned to its own CA, `/bad/` -> the same upstream pinned to an unrelated CA.
struct Setup {
    issuer: LocalIssuer,
    listener: TlsFixture,
    upstream: EchoUpstream,
    proxy: Proxy,
    _dir: TestDir,
}

async fn setup() -> Setup {
    let dir = TestDir::new();
    let listener = TlsFixture::generate(&dir.join("certs"), "listener");
    let upstream_tls = TlsFixture::generate(&dir.join("certs"), "upstream");
    let unrelated = TlsFixture::generate(&dir.join("certs"), "unrelated");
    let issuer = LocalIssuer::start().await;
    let upstream = EchoUpstream::start_tls(&upstream_tls).await;
    // Relative paths: they resolve against the config file's folder (SPEC 3).
    let config = format!(
        r#"[server]
listen = "{{{{listen}}}}"
control_listen = "{{{{control_listen}}}}"
public_url = "{{{{public_url}}}}"
threads = 1
tls = {{ cert = "certs/listener-cert.pem", key = "certs/listener-key.pem" }}

[[upstream]]
name = "good"
url = "{url}"
ca = "certs/upstream-ca.pem"

[[upstream]]
name = "bad"
url = "{url}"
ca = "{unrelated_ca}"

[[route]]
path_prefix = "/good/"
upstream = "good"

[[route]]
path_prefix = "/bad/"
upstream = "bad"

[[issuer]]
issuer = "{iss}"
audiences = ["{API}"]

[policy]
files = []
default = "allow"
"#,
        url = upstream.url(),
        unrelated_ca = unrelated.ca_pem.display(),
        iss = issuer.issuer(),
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    Setup {
        issuer,
        listener,
        upstream,
        proxy,
        _dir: dir,
    }
}

impl Setup {
    fn token(&self) -> String {
        self.issuer.token("svc", API, serde_json::json!({}))
    }

    fn http1_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(self.listener.reqwest_ca())
            .http1_only()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("HTTP/1.1 TLS client")
    }
}

#[tokio::test]
async fn https_listener_serves_http1_and_http2() {
    let s = setup().await;
    assert!(s.proxy.data_url().starts_with("https://localhost:"));

    let resp = s
        .http1_client()
        .get(format!("{}/good/h1?q=1", s.proxy.data_url()))
        .bearer_auth(s.token())
        .send()
        .await
        .expect("HTTP/1.1 over TLS");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200, "stderr:\n{}", s.proxy.stderr());

    let resp = s
        .listener
        .h2_client()
        .post(format!("{}/good/h2", s.proxy.data_url()))
        .bearer_auth(s.token())
        .body("over h2")
        .send()
        .await
        .expect("HTTP/2 over TLS (ALPN h2)");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200, "stderr:\n{}", s.proxy.stderr());

    let got = s.upstream.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].uri, "/good/h1?q=1");
    assert_eq!(got[1].method, "POST");
    assert_eq!(got[1].uri, "/good/h2");
    assert_eq!(&got[1].body[..], b"over h2");
    assert_eq!(got[1].header("countersign-subject"), Some("svc"));
}

#[tokio::test]
async fn errors_over_http2_carry_the_same_json() {
    let s = setup().await;
    let resp = s
        .listener
        .h2_client()
        .get(format!("{}/good/x", s.proxy.data_url()))
        .send()
        .await
        .expect("HTTP/2 request without token");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn plain_http_to_the_tls_listener_never_reaches_upstream() {
    let s = setup().await;
    let url = s.proxy.data_url().replacen("https://", "http://", 1);
    let result = common::http_client()
        .get(format!("{url}/good/x"))
        .bearer_auth(s.token())
        .send()
        .await;
    if let Ok(resp) = result {
        assert_ne!(resp.status(), 200);
    }
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn https_upstream_with_pinned_ca_works_and_a_wrong_ca_is_502() {
    let s = setup().await;
    let client = s.http1_client();
    let resp = client
        .get(format!("{}/good/pinned", s.proxy.data_url()))
        .bearer_auth(s.token())
        .send()
        .await
        .expect("request to pinned upstream");
    assert_eq!(resp.status(), 200, "stderr:\n{}", s.proxy.stderr());
    assert_eq!(s.upstream.count(), 1);

    let resp = client
        .get(format!("{}/bad/pinned", s.proxy.data_url()))
        .bearer_auth(s.token())
        .send()
        .await
        .expect("request to wrongly pinned upstream");
    assert_eq!(resp.status(), 502, "stderr:\n{}", s.proxy.stderr());
    assert_error_body(resp, "upstream_unavailable").await;
    assert_eq!(
        s.upstream.count(),
        1,
        "the upstream with an untrusted certificate received the request"
    );
}
