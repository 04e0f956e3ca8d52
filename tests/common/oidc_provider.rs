//! The npm `oidc-provider` (a certified OpenID Provider) under Node, from `tests/idp/`.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{free_port, http_client, repo_root};

/// How long Node may take to print `READY`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `node tests/idp/server.mjs` on a free loopback port; killed on drop (and it exits
/// by itself when its stdin, held here, closes).
///
/// Clients: `svc-client` / `svc-secret` (client credentials, JWT access tokens for any
/// `resource`), and `countersign` / `countersign-secret` (authorization code + PKCE, with the
/// redirect URIs given to [`OidcProvider::start_with`]; log in with any name, the `email`
/// claim equals it).
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    // Held so the provider lives exactly as long as this value.
    _stdin: ChildStdin,
    issuer: String,
    stderr: tempfile::NamedTempFile,
}

impl OidcProvider {
    /// Starts the provider with RS256 access tokens and no login client.
    pub fn start() -> Self {
        Self::start_with(&[], "RS256")
    }

    /// Starts the provider with the `countersign` login client allowed to redirect to
    /// `redirect_uris`, signing access tokens with `access_token_alg` (`RS256` or `ES256`).
    pub fn start_with(redirect_uris: &[&str], access_token_alg: &str) -> Self {
        Self::start_with_env(redirect_uris, access_token_alg, &[])
    }

    /// Like [`OidcProvider::start_with`] with extra environment variables for `server.mjs`,
    /// e.g. `("ID_TOKEN_CLAIMS", "1")` to put the `email` claim into ID tokens too (by default
    /// it is served by the UserInfo endpoint only, as OIDC Core 5.4 says).
    pub fn start_with_env(
        redirect_uris: &[&str],
        access_token_alg: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let idp_dir = repo_root().join("tests/idp");
        if !idp_dir.join("node_modules/oidc-provider").is_dir() {
            panic!(
                "tests/idp/node_modules is missing: the real OpenID Provider used by this test is \
                 not installed. Run `scripts/test-setup.sh` (or `npm ci` in tests/idp) first."
            );
        }
        let mut last_error = String::new();
        // A free port can be taken between our probe and Node's bind: retry a few times.
        for _ in 0..3 {
            match Self::try_start(&idp_dir, redirect_uris, access_token_alg, env) {
                Ok(provider) => return provider,
                Err(e) => last_error = e,
            }
        }
        panic!("oidc-provider did not start: {last_error}");
    }

    fn try_start(
        idp_dir: &std::path::Path,
        redirect_uris: &[&str],
        access_token_alg: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let port = free_port();
        let stderr = tempfile::NamedTempFile::new().expect("stderr temp file");
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(idp_dir)
            .env("PORT", port.to_string())
            .env("REDIRECT_URIS", redirect_uris.join(","))
            .env("ACCESS_TOKEN_ALG", access_token_alg)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen stderr file"))
            .spawn()
            .map_err(|e| format!("cannot run `node` ({e}); run scripts/test-setup.sh"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(issuer) = line.strip_prefix("READY ") {
                    let _ = tx.send(issuer.trim().to_owned());
                }
                // Keep draining so Node never blocks on a full pipe.
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(issuer) => Ok(Self {
                child,
                _stdin: stdin,
                issuer,
                stderr,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(stderr.path()).unwrap_or_default();
                Err(format!(
                    "no READY line within {START_TIMEOUT:?}; stderr:\n{log}"
                ))
            }
        }
    }

    /// The issuer, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// What the provider wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// The provider's discovery document.
    pub async fn discovery(&self) -> serde_json::Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        http_client()
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .expect("discovery JSON")
    }

    /// A JWT access token for `svc-client` from the client-credentials grant, with audience
    /// `resource` (RFC 8707) and `scope` (space separated, from `read write deploy:read
    /// deploy:write admin`).
    pub async fn client_credentials_token(&self, resource: &str, scope: &str) -> String {
        let discovery = self.discovery().await;
        let token_endpoint = discovery["token_endpoint"]
            .as_str()
            .expect("token_endpoint in discovery");
        let resp = http_client()
            .post(token_endpoint)
            .basic_auth("svc-client", Some("svc-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {token_endpoint}: {e}"));
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("token response JSON");
        assert_eq!(status, 200, "token endpoint refused: {body}");
        let token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_owned();
        assert_eq!(
            token.split('.').count(),
            3,
            "access token is not a JWT (resource indicator not applied?): {token}"
        );
        token
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
