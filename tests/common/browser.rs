//! A real headless Chromium (Debian's `/usr/bin/chromium`), driven through Debian's
//! `chromedriver` with the W3C WebDriver protocol (plain JSON over HTTP on loopback).
//!
//! Debian ships chromium and chromedriver from one source package, so their versions always
//! match; nothing is downloaded. The browser resolves no host name except loopback
//! (`--host-resolver-rules`), so a page that links an outside font or script cannot make it
//! reach the internet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::free_port;

/// The browser binary (Debian package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The driver binary (Debian package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to answer `/status`, and a new session to open.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one WebDriver command may take (page loads included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one Chromium session; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    log_path: PathBuf,
    _profile: tempfile::TempDir,
}

/// One element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session with
    /// a fresh profile. Panics with a clear message when chromium or chromedriver is missing
    /// (run `scripts/test-setup.sh`), and with the driver's log when the browser fails.
    pub async fn start(log_dir: &Path) -> Browser {
        Self::start_with(log_dir, true).await
    }

    /// Like [`Browser::start`]; with `javascript` false, pages run no scripts of their own
    /// (the WebDriver commands still work), to show a page works without JavaScript.
    pub async fn start_with(log_dir: &Path, javascript: bool) -> Browser {
        for (bin, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: this test needs a real headless Chromium. Install the Debian \
                 package `{package}` (scripts/test-setup.sh does it)."
            );
        }
        let port = free_port();
        let log_path = log_dir.join("chromedriver.log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .expect("webdriver client");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::Builder::new()
            .prefix("countersign-chromium-")
            .tempdir()
            .expect("chromium profile dir");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            log_path,
            _profile: profile,
        };
        browser.wait_driver().await;
        browser.session = browser.new_session(javascript).await;
        if !javascript {
            browser.assert_scripts_blocked().await;
        }
        browser
    }

    async fn wait_driver(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.driver.try_wait().expect("try_wait chromedriver") {
                panic!(
                    "chromedriver exited ({status}) at start; log:\n{}",
                    self.log()
                );
            }
            let ready = self
                .client
                .get(format!("{}/status", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok();
            if let Some(resp) = ready {
                let body: Value = resp.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {START_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn new_session(&self, javascript: bool) -> String {
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-crash-reporter".to_owned(),
            "--disable-breakpad".to_owned(),
            "--window-size=480,960".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"
                .to_owned(),
            format!("--user-data-dir={}", self._profile.path().display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": args,
                        // 1 = allow, 2 = block, for every site.
                        "prefs": {
                            "profile.managed_default_content_settings.javascript":
                                if javascript { 1 } else { 2 },
                        },
                    },
                    "timeouts": { "implicit": 15000, "pageLoad": 30000, "script": 30000 },
                }
            }
        });
        let value = self
            .command(reqwest::Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("cannot start Chromium: {e}"));
        value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"))
            .to_owned()
    }

    /// Proves the JavaScript switch took effect: a page script that would rename the page
    /// must not run.
    async fn assert_scripts_blocked(&self) {
        self.goto("data:text/html,<title>no-js</title><script>document.title='js-ran'</script>")
            .await;
        let title = self
            .session_command(reqwest::Method::GET, "/title", Value::Null)
            .await;
        assert_eq!(
            title, "no-js",
            "Chromium ran a page script although JavaScript was switched off"
        );
    }

    /// What chromedriver logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends one WebDriver command; returns its `value`, or the WebDriver error as text.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("{method} {path}: non-JSON answer: {e}"))?;
        if status.is_success() {
            Ok(body["value"].clone())
        } else {
            Err(format!("{method} {path}: {status}: {}", body["value"]))
        }
    }

    async fn session_command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = (method != reqwest::Method::GET).then_some(body);
        self.command(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.session_command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        self.session_command(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The current page's HTML.
    pub async fn source(&self) -> String {
        self.session_command(reqwest::Method::GET, "/source", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The visible text of the page's `<body>`. A page that navigates (a form post) can replace
    /// `<body>` between finding it and reading it ("stale element", or "Node ... does not
    /// belong to the document"): then the new one is read, for up to 5 s.
    pub async fn body_text(&self) -> String {
        let mut last = String::new();
        for _ in 0..50 {
            let body = self.find("body").await;
            let path = format!("/session/{}/element/{}/text", self.session, body.0);
            match self.command(reqwest::Method::GET, &path, None).await {
                Ok(text) => return text.as_str().unwrap_or_default().to_owned(),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("WebDriver: {last}")
    }

    /// The first element matching the CSS `selector`, waiting up to 15 s for it to appear.
    pub async fn find(&self, selector: &str) -> Element {
        let path = format!("/session/{}/element", self.session);
        let found = self
            .command(
                reqwest::Method::POST,
                &path,
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await;
        match found {
            Ok(v) => Element(
                v[ELEMENT_KEY]
                    .as_str()
                    .unwrap_or_else(|| panic!("no element reference in {v}"))
                    .to_owned(),
            ),
            Err(e) => panic!(
                "no element {selector:?} on {} ({e}); page:\n{}",
                self.url().await,
                self.source().await
            ),
        }
    }

    /// Types `text` into `element`.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// Clicks `element` (a submit button waits for the next page to load).
    pub async fn click(&self, element: &Element) {
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            json!({}),
        )
        .await;
    }

    /// Waits until the current URL starts with `prefix`; panics with the page after `timeout`.
    pub async fn wait_url_prefix(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.url().await;
            if url.starts_with(prefix) {
                return url;
            }
            if Instant::now() > deadline {
                panic!(
                    "browser is at {url}, not {prefix}..., after {timeout:?}; page:\n{}",
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self
            .session_command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Close the session so chromedriver stops Chromium, then stop the driver. Drop has no
        // async runtime of its own: a short blocking request on a helper thread.
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(client) = reqwest::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(10))
                        .build()
                    {
                        let _ = client.delete(url).send().await;
                    }
                });
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
