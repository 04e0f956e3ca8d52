//! The real `countersign` binary, started on ephemeral loopback ports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_client, TestDir};

/// How long `countersign run` may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `countersign run --config FILE`; killed on drop.
///
/// The config text given to [`Proxy::start`] may use these placeholders:
/// - `{{listen}}`: `127.0.0.1:PORT` for the data plane (a free port),
/// - `{{control_listen}}`: `127.0.0.1:PORT` for the control plane (another free port),
/// - `{{public_url}}`: `http://{{control_listen}}`,
/// - `{{dir}}`: the test folder (where the config file is written).
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    listen: String,
    control_listen: String,
    config_path: PathBuf,
    stderr_path: PathBuf,
    scheme: &'static str,
}

impl Proxy {
    /// Writes `config` (placeholders filled) to `dir/countersign.toml`, starts the proxy and
    /// waits until `/healthz` answers 200. Panics with the proxy's stderr if it exits or does
    /// not become healthy within 15 s.
    pub async fn start(dir: &TestDir, config: &str) -> Proxy {
        Self::start_named(dir, "countersign.toml", config).await
    }

    /// Like [`Proxy::start`] with the config written to `dir/file_name` (several proxies can
    /// share one folder).
    pub async fn start_named(dir: &TestDir, file_name: &str, config: &str) -> Proxy {
        let control_listen = format!("127.0.0.1:{}", free_port());
        Self::start_with_control(dir, file_name, config, &control_listen).await
    }

    /// Like [`Proxy::start_named`] with the control plane on `control_listen`
    /// (`127.0.0.1:PORT`), for tests that must tell another party the public URL before the
    /// proxy starts (e.g. an IdP's allowed redirect URI `{public_url}/oidc/callback`).
    pub async fn start_with_control(
        dir: &TestDir,
        file_name: &str,
        config: &str,
        control_listen: &str,
    ) -> Proxy {
        // `free_port` releases the port before the proxy binds it, so a concurrent test can take
        // it in between: start again on a fresh data port when that race was lost.
        let mut races_lost = 0;
        loop {
            // The control port was free, so the OS may hand it out again: never reuse it.
            let listen = std::iter::repeat_with(|| format!("127.0.0.1:{}", free_port()))
                .find(|l| l != control_listen)
                .expect("a free port");
            let control_listen = control_listen.to_owned();
            let text = config
                .replace("{{listen}}", &listen)
                .replace("{{control_listen}}", &control_listen)
                .replace("{{public_url}}", &format!("http://{control_listen}"))
                .replace("{{dir}}", &dir.path().display().to_string());
            let config_path = dir.write(file_name, &text);
            let stderr_path = dir.join(format!("{file_name}.stderr.log"));
            let child = spawn(&config_path, &stderr_path);
            let scheme = if text.contains("tls") && tls_on_listener(&text) {
                "https"
            } else {
                "http"
            };
            let mut proxy = Proxy {
                child,
                listen,
                control_listen,
                config_path,
                stderr_path,
                scheme,
            };
            if races_lost < 3 && proxy.lost_data_port_race().await {
                races_lost += 1;
                continue;
            }
            proxy.wait_healthy().await;
            return proxy;
        }
    }

    /// Whether the proxy exited at start because its data port was taken meanwhile. Returns
    /// `false` as soon as `/healthz` answers (or after the start timeout).
    async fn lost_data_port_race(&mut self) -> bool {
        let client = http_client();
        let url = format!("{}/healthz", self.control_url());
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("try_wait").is_some() {
                let err = self.stderr();
                return err.contains("data-plane listener")
                    && err.contains("Address already in use");
            }
            if let Ok(resp) = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if resp.status() == 200 {
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Data-plane base URL, e.g. `http://127.0.0.1:PORT` (`https://localhost:PORT` when the
    /// listener has `tls`, so certificate names are checked).
    pub fn data_url(&self) -> String {
        if self.scheme == "https" {
            let port = self.listen.rsplit(':').next().unwrap_or_default();
            format!("https://localhost:{port}")
        } else {
            format!("http://{}", self.listen)
        }
    }

    /// Control-plane base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_listen)
    }

    /// The data-plane `host:port`.
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// The config file the proxy was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`"HUP"`, `"TERM"`, ...) with `kill(1)`.
    pub fn send_signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {} failed",
            self.child.id()
        );
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code (`None` if killed
    /// by a signal), or panics if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "countersign did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/readyz` answers 200 (every issuer's keys loaded); panics with stderr after
    /// 15 s.
    pub async fn wait_ready(&mut self) {
        self.wait_for("/readyz", START_TIMEOUT).await;
    }

    /// Like [`Proxy::wait_ready`] with a custom timeout.
    pub async fn wait_ready_within(&mut self, timeout: Duration) {
        self.wait_for("/readyz", timeout).await;
    }

    async fn wait_healthy(&mut self) {
        self.wait_for("/healthz", START_TIMEOUT).await;
        self.wait_data_plane().await;
    }

    /// Waits until the data plane accepts TCP connections: pingora starts it after the control
    /// plane, so `/healthz` (and even `/readyz`) can answer while the data port still refuses.
    async fn wait_data_plane(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(&self.listen).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "countersign exited ({status}) before its data plane listened; stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "countersign: data plane {} not listening within {START_TIMEOUT:?}; stderr:\n{}",
                    self.listen,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for(&mut self, path: &str, timeout: Duration) {
        let client = http_client();
        let url = format!("{}{path}", self.control_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "countersign exited ({status}) before {path} answered 200; config:\n{}\nstderr:\n{}",
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.stderr()
                );
            }
            if let Ok(resp) = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if resp.status() == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "countersign: {path} did not answer 200 within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config_path: &Path, stderr_path: &Path) -> Child {
    let stderr = File::create(stderr_path).expect("create stderr log");
    Command::new(super::countersign_bin())
        .arg("run")
        .arg("--config")
        .arg(config_path)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn countersign")
}

/// Whether the `[server]` table of `text` configures TLS on the listener.
fn tls_on_listener(text: &str) -> bool {
    let Ok(value) = text.parse::<toml::Table>() else {
        return false;
    };
    value.get("server").and_then(|s| s.get("tls")).is_some()
}

/// A minimal valid config: one upstream `echo` at `upstream_url`, one catch-all route, one
/// issuer (discovery unless `jwks_uri` is appended by the caller) with `audiences`, and no
/// `[policy]` table: the default glob `policies/*.toml` finds nothing in a test folder, so
/// every valid token is allowed. Uses the placeholders [`Proxy::start`] fills.
/// The issuer sets `approvers = true`: the approval tests cast API votes with its tokens.
pub fn basic_config(upstream_url: &str, issuer: &str, audiences: &[&str]) -> String {
    let audiences = audiences
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[server]
listen = "{{{{listen}}}}"
control_listen = "{{{{control_listen}}}}"
public_url = "{{{{public_url}}}}"
threads = 1

[[upstream]]
name = "echo"
url = "{upstream_url}"

[[route]]
path_prefix = "/"
upstream = "echo"

[[issuer]]
issuer = "{issuer}"
audiences = [{audiences}]
approvers = true
"#
    )
}
