//! Shared integration-test harness: every `tests/*.rs` file does `mod common;`.
//!
//! What is here, all on 127.0.0.1 with ephemeral ports, all cleaned up on drop:
//! - [`TestDir`], [`free_port`]: scratch folders and ports.
//! - [`EchoUpstream`]: an HTTP/1.1 (or HTTPS) upstream that records every request and echoes it
//!   back as JSON; status and latency can be changed while it runs.
//! - [`Proxy`]: the real `countersign run --config FILE` binary, with stderr captured to a file.
//! - [`OidcProvider`]: the npm `oidc-provider` (a certified OpenID Provider) under Node.
//! - [`LocalIssuer`]: a minimal issuer of our own (discovery + JWKS with ES256 / EdDSA keys
//!   generated per test) that can rotate keys, go down, and count fetches.
//! - [`TlsFixture`]: a CA and a server certificate for `127.0.0.1`/`localhost` (rcgen).
//! - `fake_botframework`: the Bot Framework (OpenID keys, token endpoint, Bot Connector) and
//!   the Teams client that clicks cards.
//! - [`RedisServer`]: a throwaway `redis-server` for the shared approval store.
//! - [`Browser`]: a real headless Chromium driven through `chromedriver` (WebDriver).
//! - [`RecordingAudit`]: an in-memory audit sink for broker-level tests.
//! - [`Reply`], [`verified_claims`]: an answer read whole; `Countersign-Approval` checked
//!   against the published JWKS.
//! - `fake_pagerduty`: PagerDuty's REST API v2 (`/oncalls`, `/users/{id}`) for on-call approvers.
//!
//! Not every test file uses every helper.
#![allow(dead_code, unused_imports)]

pub mod approval_fixture;
pub mod audit;
mod browser;
mod echo;
pub mod fake_botframework;
pub mod fake_pagerduty;
pub mod fake_slack;
pub mod fake_teams;
mod issuer;
mod oidc_provider;
mod proxy;
mod redis;
pub mod redis_ha;
pub mod replicas;
pub mod reply;
mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

pub use audit::RecordingAudit;
pub use browser::{Browser, Element};
pub use echo::{EchoUpstream, RecordedRequest};
pub use issuer::{KeyKind, LocalIssuer};
pub use oidc_provider::OidcProvider;
pub use proxy::{basic_config, Proxy};
pub use redis::RedisServer;
pub use reply::{verified_claims, Reply};
pub use tls::TlsFixture;

/// A fresh P-256 PKCS#8 PEM: an `[approvals] signing_key` (replicas of one cluster share it).
pub fn signing_key_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("P-256 key")
        .serialize_pem()
}

/// A loopback address that refuses every connection: port 1 is privileged, so no test server
/// binds it and the kernel never hands it out as an ephemeral port (a port that was merely free
/// a moment ago can be taken by a server another test starts meanwhile).
pub const DEAD_ADDR: &str = "127.0.0.1:1";

/// A port that was free a moment ago on 127.0.0.1 (the OS picks it; we release it at once).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A temporary folder removed on drop, with helpers to write files into it.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A fresh empty folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("countersign-test-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `contents` to `rel` (creating parent folders) and returns the full path.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent folders");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Reads `rel` as UTF-8 (empty string if it does not exist).
    pub fn read(&self, rel: impl AsRef<Path>) -> String {
        std::fs::read_to_string(self.join(rel)).unwrap_or_default()
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

/// The repository root (where `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A reqwest client for plain-http test traffic: no proxy from the environment, short timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

/// Parses a response body as JSON, panicking with the body text if it is not JSON.
pub async fn json_body(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let text = resp.text().await.expect("read body");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("body of a {status} response is not JSON ({e}): {text:?}"))
}

/// Asserts a SPEC error body: JSON with string `error` = `code`, a string `error_description`
/// and a non-empty string `request_id`. Returns the body for further checks.
pub async fn assert_error_body(resp: reqwest::Response, code: &str) -> serde_json::Value {
    let body = json_body(resp).await;
    assert_eq!(body["error"], code, "error code in {body}");
    assert!(
        body["error_description"].is_string(),
        "error_description missing in {body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "request_id missing in {body}"
    );
    body
}

/// Runs the `countersign` binary with `args` (e.g. `["check", "--config", path]`) to
/// completion, stdin closed, and returns its output.
pub fn countersign(args: &[&str]) -> std::process::Output {
    std::process::Command::new(countersign_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run countersign")
}

/// The `countersign` binary under test: the one cargo built for this test run, or the file
/// named by `COUNTERSIGN_BIN` (to test a release build, or a private copy when several
/// checkouts share one target folder and rebuild its binary under each other's feet).
pub fn countersign_bin() -> PathBuf {
    std::env::var_os("COUNTERSIGN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_countersign")))
}
