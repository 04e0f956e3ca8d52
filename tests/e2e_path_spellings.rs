//! The gate holds against other spellings of a protected request (SPEC 8, issue "The gate
//! holds, part 1"): a differential test through the real `countersign` binary in front of real
//! upstream routers.
//!
//! The config is the shipped `examples/countersign.toml` with the shipped `policies/` (only
//! addresses, the issuer and the audit log are swapped for local ones), so what is tested is
//! what a new user runs. Its `prod-deploy` rule holds `POST /v1/deployments/production` on
//! deploy.example.com for approval. Every line of `tests/fixtures/spellings/` is another
//! spelling of that request, sent as raw bytes over TCP. For each upstream router (Express,
//! Flask/Werkzeug, a servlet-style emulation; see `tests/upstreams/`), every spelling must be
//! held (202, an approval created) or refused (400, 403, 404), and the upstream handler that
//! deploys production must never run without an approval: the upstream records, per spelling,
//! which handler answered and what request target reached it. A failure lists every failing
//! spelling in one table.
//!
//! Needs `scripts/test-setup.sh` (node_modules of tests/upstreams/express, the Python venv with
//! Flask).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, http_client, json_body, repo_root, LocalIssuer, Proxy, TestDir};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The corpus file.
const CORPUS: &str = "tests/fixtures/spellings/deploy-production.txt";
/// Host of the protected request (the `prod-deploy` rule's `host`).
const HOST: &str = "deploy.example.com";
/// An approver of `prod-deploy` in the shipped config (`group:sre-leads`).
const APPROVER: &str = "alice";
/// How many spellings are in flight at once.
const CONCURRENCY: usize = 16;
/// How long one spelling may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Statuses that count as a refusal (by Countersign, or by an upstream where no handler ran).
const REFUSALS: [u16; 4] = [400, 403, 404, 405];

// ---------------------------------------------------------------------------------------------
// Upstream routers
// ---------------------------------------------------------------------------------------------

/// Which real router sits behind Countersign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Router {
    /// Express 5 with its default router options (case-insensitive, non-strict).
    Express,
    /// Flask 3 / Werkzeug 3 with default routing, served by Werkzeug's WSGI server.
    Flask,
    /// The Flask app behind an emulation of a servlet container's path handling (`;` cut from
    /// every segment, dot segments resolved).
    Servlet,
    /// [`Router::Servlet`] with `allow_semicolons = true` on every route, the SPEC 8 relaxation
    /// a Java upstream's operator turns on (`;jsessionid=` URLs).
    ServletAllowSemicolons,
}

impl Router {
    fn name(self) -> &'static str {
        match self {
            Router::Express => "express",
            Router::Flask => "flask",
            Router::Servlet => "servlet-emulation",
            Router::ServletAllowSemicolons => "servlet-emulation with allow_semicolons",
        }
    }

    /// Whether the router matches paths case-insensitively, so the operator sets
    /// `case_insensitive_paths` on its `[[upstream]]` (SPEC 8).
    fn case_insensitive(self) -> bool {
        self == Router::Express
    }
}

/// A real upstream server process on 127.0.0.1; killed on drop.
struct Upstream {
    port: u16,
    _child: tokio::process::Child,
}

/// What an upstream recorded: `GET /__hits`.
#[derive(Debug)]
struct Hits {
    protected: u64,
    log: Vec<Value>,
}

impl Upstream {
    async fn start(router: Router) -> Upstream {
        let port = free_port();
        let root = repo_root();
        let mut cmd = match router {
            Router::Express => {
                let dir = root.join("tests/upstreams/express");
                assert!(
                    dir.join("node_modules/express").is_dir(),
                    "{}/node_modules is missing: run scripts/test-setup.sh",
                    dir.display()
                );
                let mut c = tokio::process::Command::new("node");
                c.arg(dir.join("server.mjs")).arg(port.to_string());
                c
            }
            Router::Flask | Router::Servlet | Router::ServletAllowSemicolons => {
                let python = upstream_python();
                let mut c = tokio::process::Command::new(&python);
                c.arg(root.join("tests/upstreams/flask/app.py"))
                    .arg(if router == Router::Flask {
                        "flask"
                    } else {
                        "servlet"
                    })
                    .arg(port.to_string());
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {} upstream: {e}", router.name()));
        let stdout = child.stdout.take().expect("upstream stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{} upstream not ready within 20 s", router.name()))
            .expect("read upstream stdout");
        assert_eq!(
            ready.as_deref(),
            Some(format!("ready {port}").as_str()),
            "{} upstream did not start",
            router.name()
        );
        Upstream {
            port,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Asked directly, never through the proxy.
    async fn hits(&self) -> Hits {
        let resp = http_client()
            .get(format!("{}/__hits", self.url()))
            .send()
            .await
            .expect("GET /__hits");
        let v = json_body(resp).await;
        Hits {
            protected: v["protected"].as_u64().expect("protected count"),
            log: v["log"].as_array().expect("log array").clone(),
        }
    }
}

/// The Python of the venv `scripts/test-setup.sh` makes (`COUNTERSIGN_UPSTREAMS_PYTHON`
/// overrides it).
fn upstream_python() -> PathBuf {
    if let Some(p) = std::env::var_os("COUNTERSIGN_UPSTREAMS_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let python = Path::new(&home).join(".cache/countersign-upstreams-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-setup.sh",
        python.display()
    );
    python
}

// ---------------------------------------------------------------------------------------------
// The shipped config, pointed at local parts
// ---------------------------------------------------------------------------------------------

/// `examples/countersign.toml` as shipped, with its listeners, upstream URLs, issuer, policy
/// paths and audit log replaced by local ones (placeholders for [`Proxy::start`]); for a
/// case-insensitive router, `case_insensitive_paths = true` on its upstream, as SPEC 8 tells an
/// operator to set (and `allow_semicolons = true` on every route for
/// [`Router::ServletAllowSemicolons`]); `router_keys = false` leaves those out (the example
/// exactly as a new user runs it). Returns the config text and the audience tokens must carry.
fn shipped_config(
    router: Router,
    upstream_url: &str,
    issuer: &str,
    router_keys: bool,
) -> (String, String) {
    let examples = repo_root().join("examples");
    let text = std::fs::read_to_string(examples.join("countersign.toml"))
        .expect("read examples/countersign.toml");
    let mut doc: toml::Table = text.parse().expect("examples/countersign.toml is TOML");

    let server = table(&mut doc, "server");
    server.insert("listen".into(), "{{listen}}".into());
    server.insert("control_listen".into(), "{{control_listen}}".into());
    server.insert("public_url".into(), "{{public_url}}".into());

    for upstream in array_of_tables(&mut doc, "upstream") {
        upstream.insert("url".into(), upstream_url.into());
        if router_keys && router.case_insensitive() {
            upstream.insert("case_insensitive_paths".into(), true.into());
        }
    }

    if router_keys && router == Router::ServletAllowSemicolons {
        for route in array_of_tables(&mut doc, "route") {
            route.insert("allow_semicolons".into(), true.into());
        }
    }

    let issuers = doc
        .get_mut("issuer")
        .and_then(|v| v.as_array_mut())
        .expect("the example has [[issuer]]");
    issuers.truncate(1);
    let first = issuers
        .first_mut()
        .and_then(|i| i.as_table_mut())
        .expect("the example has an [[issuer]] table");
    let audience = first
        .get("audiences")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str())
        .expect("the example's issuer has audiences")
        .to_owned();
    first.insert("issuer".into(), issuer.into());
    // The positive control approves through the JSON API with this issuer's tokens.
    first.insert("approvers".into(), true.into());
    first.remove("jwks_uri");

    let policy = table(&mut doc, "policy");
    if let Some(files) = policy.get_mut("files").and_then(|f| f.as_array_mut()) {
        for f in files.iter_mut() {
            let rel = f.as_str().expect("policy file glob").to_owned();
            *f = absolute_glob(&examples, &rel).into();
        }
    }

    let approvals = table(&mut doc, "approvals");
    approvals.insert("audit_log".into(), "{{dir}}/audit.jsonl".into());
    if let Some(key) = approvals.get("signing_key").and_then(|k| k.as_str()) {
        if let Some(rel) = key.strip_prefix("file:").filter(|p| !p.starts_with('/')) {
            let abs = format!("file:{}", examples.join(rel).display());
            approvals.insert("signing_key".into(), abs.into());
        }
    }

    (
        toml::to_string(&doc).expect("serialize the config"),
        audience,
    )
}

fn table<'a>(doc: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    doc.entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{key}] is a table"))
}

fn array_of_tables<'a>(doc: &'a mut toml::Table, key: &str) -> Vec<&'a mut toml::Table> {
    doc.get_mut(key)
        .and_then(|v| v.as_array_mut())
        .unwrap_or_else(|| panic!("the example has [[{key}]]"))
        .iter_mut()
        .map(|t| {
            t.as_table_mut()
                .unwrap_or_else(|| panic!("[[{key}]] is a table"))
        })
        .collect()
}

/// `base.join(rel)` with the folder part made absolute (the glob part kept).
fn absolute_glob(base: &Path, rel: &str) -> String {
    let joined = base.join(rel);
    let parent = joined.parent().expect("glob has a folder");
    let parent = parent
        .canonicalize()
        .unwrap_or_else(|e| panic!("policy folder {}: {e}", parent.display()));
    let name = joined.file_name().expect("glob has a file part");
    parent.join(name).display().to_string()
}

// ---------------------------------------------------------------------------------------------
// A stack: issuer + upstream + the real proxy
// ---------------------------------------------------------------------------------------------

struct Stack {
    router: Router,
    _dir: TestDir,
    issuer: LocalIssuer,
    upstream: Upstream,
    proxy: Proxy,
    audience: String,
}

impl Stack {
    /// The shipped config with the keys an operator sets for `router` (see [`shipped_config`]).
    async fn start(router: Router) -> Stack {
        Self::start_with(router, true).await
    }

    /// The shipped config exactly as a new user runs it, whatever the router.
    async fn start_verbatim(router: Router) -> Stack {
        Self::start_with(router, false).await
    }

    async fn start_with(router: Router, router_keys: bool) -> Stack {
        let dir = TestDir::new();
        let (issuer, upstream) = tokio::join!(LocalIssuer::start(), Upstream::start(router));
        let (config, audience) =
            shipped_config(router, &upstream.url(), &issuer.issuer(), router_keys);
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        Stack {
            router,
            _dir: dir,
            issuer,
            upstream,
            proxy,
            audience,
        }
    }

    /// A requester's token that satisfies every requirement of the shipped deploy rules
    /// (scopes, acr, a fresh auth_time). One subject per spelling, so no per-requester limit on
    /// pending approvals interferes.
    fn requester_token(&self, n: usize) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let sub = format!("deploy-bot-{n}");
        self.issuer.token(
            &sub,
            &self.audience,
            json!({
                "scope": "deploy:read deploy:write",
                "acr": "phr",
                "auth_time": now,
                "email": format!("{sub}@clients.example.com"),
                "email_verified": true,
            }),
        )
    }

    /// An approver's token (`name@example.com`).
    fn person_token(&self, name: &str) -> String {
        self.issuer.token(
            name,
            &self.audience,
            json!({ "email": format!("{name}@example.com"), "email_verified": true }),
        )
    }

    fn data_port(&self) -> &str {
        self.proxy.listen().rsplit(':').next().expect("port")
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// One line of the corpus.
#[derive(Debug, Clone)]
struct Spelling {
    /// 1-based, in file order; sent as `X-Spelling`.
    id: usize,
    group: String,
    /// The line as written in the file.
    text: String,
    /// `METHOD SP TARGET` as raw bytes.
    request: Vec<u8>,
    /// The line's own headers, raw (`Name: value`).
    headers: Vec<Vec<u8>>,
    /// ` => fwd` / ` => fwd-cs`: SPEC 8 keeps this a different path, so it may be forwarded
    /// (to any upstream / to case-sensitive ones).
    may_forward: Forward,
}

/// Whether a spelling may be forwarded (see the corpus header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forward {
    Never,
    Always,
    CaseSensitiveOnly,
}

fn load_corpus() -> Vec<Spelling> {
    let path = repo_root().join(CORPUS);
    let text = std::fs::read_to_string(&path).expect("read the spelling corpus");
    parse_corpus(&text)
}

fn parse_corpus(text: &str) -> Vec<Spelling> {
    let mut group = String::from("ungrouped");
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed.trim().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = name.to_owned();
            continue;
        }
        let (spelling, may_forward) = match trimmed.rsplit_once(" => ") {
            Some((s, "fwd")) => (s, Forward::Always),
            Some((s, "fwd-cs")) => (s, Forward::CaseSensitiveOnly),
            Some((_, other)) => panic!("unknown expectation {other:?} in corpus line {line:?}"),
            None => (trimmed, Forward::Never),
        };
        let mut parts = split_parts(spelling).into_iter();
        let request = parts.next().expect("a request part");
        out.push(Spelling {
            id: out.len() + 1,
            group: group.clone(),
            text: trimmed.to_owned(),
            request,
            headers: parts.collect(),
            may_forward,
        });
    }
    out
}

/// Splits a line on ` | ` and unescapes each part (`\xHH`, `\\`, `\|`).
fn split_parts(line: &str) -> Vec<Vec<u8>> {
    let bytes = line.as_bytes();
    let mut parts = vec![Vec::new()];
    let mut i = 0;
    while i < bytes.len() {
        let cur = parts.last_mut().expect("a part");
        match bytes[i] {
            b'\\' => match bytes.get(i + 1) {
                Some(b'x') => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("hex escape");
                    cur.push(u8::from_str_radix(hex, 16).expect("\\xHH escape"));
                    i += 4;
                }
                Some(&c @ (b'\\' | b'|')) => {
                    cur.push(c);
                    i += 2;
                }
                other => panic!("unknown escape \\{other:?} in corpus line {line:?}"),
            },
            b' ' if bytes[i..].starts_with(b" | ") => {
                parts.push(Vec::new());
                i += 3;
            }
            b => {
                cur.push(b);
                i += 1;
            }
        }
    }
    parts
}

const BODY: &str = r#"{"version":"42"}"#;

/// The raw request for `s`, with the test's headers.
fn raw_request(s: &Spelling, token: &str, port: &str) -> Vec<u8> {
    let fill = |b: &[u8]| -> Vec<u8> { replace_bytes(b, b"{port}", port.as_bytes()) };
    let mut out = fill(&s.request);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has_host = s
        .headers
        .iter()
        .any(|h| h.len() >= 5 && h[..5].eq_ignore_ascii_case(b"host:"));
    if !has_host {
        out.extend_from_slice(format!("Host: {HOST}\r\n").as_bytes());
    }
    for h in &s.headers {
        if h.eq_ignore_ascii_case(b"host: (none)") {
            continue;
        }
        out.extend_from_slice(&fill(h));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "Authorization: Bearer {token}\r\nX-Spelling: {id}\r\nPrefer: respond-async\r\n\
             Countersign-Reason: differential spelling test {id}\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n\
             {BODY}",
            id = s.id,
            len = BODY.len()
        )
        .as_bytes(),
    );
    out
}

/// `hay` with every `from` replaced by `to` (bytes, which need not be UTF-8).
fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    while let Some(i) = find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// What came back on the socket.
#[derive(Debug, Clone)]
struct RawReply {
    /// `None`: the connection closed (or timed out) before a status line.
    status: Option<u16>,
    head: String,
    body: String,
}

impl RawReply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

async fn send_raw(addr: &str, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    // A proxy may refuse and close before reading everything; that is an answer too.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut chunk = [0u8; 8192];
    loop {
        if reply_complete(&buf) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse_reply(&buf)
}

/// Whether `buf` holds a whole response (headers and a body by Content-Length or chunked).
fn reply_complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    if head.starts_with("http/1.1 1") {
        return false;
    }
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

fn parse_reply(buf: &[u8]) -> RawReply {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return RawReply {
            status: None,
            head: String::from_utf8_lossy(buf).into_owned(),
            body: String::new(),
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    let raw_body = &buf[end + 4..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawReply {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(b, b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------------------------

/// One spelling's outcome.
#[derive(Debug)]
struct Outcome {
    router: Router,
    spelling: Spelling,
    reply: RawReply,
    /// What the upstream recorded for this spelling (by `X-Spelling`).
    upstream: Vec<Value>,
}

impl Outcome {
    /// Whether an upstream handler that deploys production ran: the protected route, or the
    /// generic route with `env` decoded to exactly `production`.
    fn reached_production(&self) -> bool {
        self.upstream.iter().any(reaches_production)
    }

    fn held(&self) -> bool {
        self.reply.status == Some(202)
            && self.upstream.is_empty()
            && self.reply.body.contains("\"approval_id\"")
    }

    /// The verdict: `None` passes, `Some(why)` fails.
    fn failure(&self) -> Option<&'static str> {
        if self.reached_production() {
            return Some("REACHED PRODUCTION WITHOUT APPROVAL");
        }
        if self.held() {
            return None;
        }
        let may_forward = match self.spelling.may_forward {
            Forward::Never => false,
            Forward::Always => true,
            Forward::CaseSensitiveOnly => !self.router.case_insensitive(),
        };
        match self.reply.status {
            Some(s) if REFUSALS.contains(&s) => None,
            // Closed without an answer and nothing went upstream: refused at the socket.
            None if self.upstream.is_empty() => None,
            _ if may_forward && !self.upstream.is_empty() => None,
            Some(202) => Some("202 without an approval"),
            _ if !self.upstream.is_empty() => Some("forwarded, not held or refused"),
            _ => Some("neither held nor refused"),
        }
    }

    fn answer(&self) -> String {
        match self.reply.status {
            None if self.reply.head.is_empty() => "closed, no answer".to_owned(),
            None => format!("no status line: {:?}", self.reply.head),
            Some(202) if self.held() => "202 held".to_owned(),
            Some(s) => {
                let who = if self.upstream.is_empty() {
                    match serde_json::from_str::<Value>(&self.reply.body) {
                        Ok(v) if v["error"].is_string() => format!(" {}", v["error"]),
                        _ => String::new(),
                    }
                } else {
                    " from upstream".to_owned()
                };
                format!("{s}{who}")
            }
        }
    }

    fn upstream_summary(&self) -> String {
        if self.upstream.is_empty() {
            return "-".to_owned();
        }
        self.upstream
            .iter()
            .map(describe_hit)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn reaches_production(entry: &Value) -> bool {
    entry["handler"] == "protected"
        || (entry["handler"] == "generic" && entry["env"] == "production")
}

fn describe_hit(entry: &Value) -> String {
    let handler = entry["handler"].as_str().unwrap_or("?");
    let env = match entry["env"].as_str() {
        Some(e) if handler == "generic" => format!("[env={e:?}]"),
        _ => String::new(),
    };
    let method = match (entry["method"].as_str(), entry["wire_method"].as_str()) {
        (Some(m), Some(w)) if m != w => format!("{w}->{m} "),
        (Some(m), _) => format!("{m} "),
        _ => String::new(),
    };
    format!(
        "{handler}{env} {} ({method}{})",
        entry["status"],
        entry["target"].as_str().unwrap_or("?")
    )
}

/// Sends every spelling (bounded concurrency) and collects outcomes, attributing upstream
/// records by `X-Spelling`.
async fn run_corpus(stack: &Stack, corpus: &[Spelling]) -> (Vec<Outcome>, Hits) {
    let addr = Arc::new(stack.proxy.listen().to_owned());
    let port = stack.data_port().to_owned();
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::new();
    for s in corpus {
        let request = raw_request(s, &stack.requester_token(s.id), &port);
        let addr = addr.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            send_raw(&addr, &request).await
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("spelling task"));
    }
    // Let the last upstream records land (they are written when a response finishes).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = stack.upstream.hits().await;
    let outcomes = corpus
        .iter()
        .cloned()
        .zip(replies)
        .map(|(spelling, reply)| {
            let id = spelling.id.to_string();
            let upstream = hits
                .log
                .iter()
                .filter(|e| e["spelling"].as_str() == Some(id.as_str()))
                .cloned()
                .collect();
            Outcome {
                router: stack.router,
                spelling,
                reply,
                upstream,
            }
        })
        .collect();
    (outcomes, hits)
}

/// The failure table (empty when everything passed).
fn failure_report(router: Router, outcomes: &[Outcome], hits: &Hits) -> String {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure().is_some()).collect();
    let attributed = outcomes
        .iter()
        .flat_map(|o| o.upstream.iter())
        .filter(|e| e["handler"] == "protected")
        .count() as u64;
    // Upstream records of requests that did not carry a known X-Spelling.
    let stray: Vec<&Value> = hits
        .log
        .iter()
        .filter(|e| {
            e["spelling"]
                .as_str()
                .and_then(|s| s.parse::<usize>().ok())
                .is_none_or(|n| n == 0 || n > outcomes.len())
        })
        .collect();
    if failed.is_empty() && hits.protected == attributed && stray.is_empty() {
        return String::new();
    }
    let mut by_group: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let e = by_group.entry(o.spelling.group.as_str()).or_default();
        e.1 += 1;
        if o.failure().is_some() {
            e.0 += 1;
        }
    }
    let reached = failed.iter().filter(|o| o.reached_production()).count();
    let mut out = format!(
        "{} of {} spellings of POST /v1/deployments/production failed through {} \
         ({reached} reached production without an approval)\n\nfailed per group: {}\n\n\
         | # | group | spelling | countersign answered | upstream handler (status, target it saw) | why |\n\
         |---|---|---|---|---|---|\n",
        failed.len(),
        outcomes.len(),
        router.name(),
        by_group
            .iter()
            .filter(|(_, (f, _))| *f > 0)
            .map(|(g, (f, t))| format!("{g} {f}/{t}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for o in &failed {
        out.push_str(&format!(
            "| {} | {} | `{}` | {} | {} | {} |\n",
            o.spelling.id,
            o.spelling.group,
            o.spelling.text,
            o.answer(),
            o.upstream_summary(),
            o.failure().unwrap_or_default(),
        ));
    }
    if hits.protected != attributed {
        out.push_str(&format!(
            "\nthe protected handler counted {} hits, {attributed} of them attributed to a spelling\n",
            hits.protected
        ));
    }
    for e in stray {
        out.push_str(&format!(
            "\nupstream request not attributable to a spelling: {}\n",
            describe_hit(e)
        ));
    }
    out
}

/// Approves the held approval in `reply` through the JSON API and waits until the protected
/// handler has run; then checks it ran exactly once, for `spelling`, with approval evidence.
async fn approve_and_expect_one_protected_hit(
    stack: &Stack,
    reply: &RawReply,
    spelling: usize,
) -> Result<(), String> {
    if reply.status != Some(202) {
        return Err(format!(
            "the canonical spelling was not held: {:?} {}",
            reply.status, reply.body
        ));
    }
    let body = reply.json();
    let id = body["approval_id"]
        .as_str()
        .ok_or("202 without approval_id")?;
    let before = stack.upstream.hits().await.protected;
    let resp = http_client()
        .post(format!(
            "{}/approvals/{id}/decision",
            stack.proxy.control_url()
        ))
        .bearer_auth(stack.person_token(APPROVER))
        .json(&json!({ "decision": "approve", "reason": "differential test positive control" }))
        .send()
        .await
        .map_err(|e| format!("POST decision: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("approving {id} as {APPROVER}: {status} {text}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.upstream.hits().await.protected == before {
        if Instant::now() > deadline {
            return Err(format!(
                "approved {id}, but the protected handler did not run within 10 s; proxy stderr:\n{}",
                stack.proxy.stderr()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Any second execution would land now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hits = stack.upstream.hits().await;
    let want = spelling.to_string();
    let ours: Vec<&Value> = hits
        .log
        .iter()
        .filter(|e| e["handler"] == "protected" && e["spelling"].as_str() == Some(want.as_str()))
        .collect();
    match ours.as_slice() {
        [one]
            if hits.protected == before + 1
                && one["approval"] == true
                && one["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("/v1/deployments/production")) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "after approving {id} the protected handler must run exactly once, for spelling \
             {spelling}, with Countersign-Approval; it counted {} (before: {before}), log: {ours:?}",
            hits.protected
        )),
    }
}

/// Runs the whole corpus through `router`, then approves the first canonical spelling as a
/// positive control; fails with the table of every failing spelling.
async fn corpus_holds(router: Router) {
    let started = Instant::now();
    let corpus = load_corpus();
    assert!(
        corpus.len() >= 200,
        "the corpus has {} spellings",
        corpus.len()
    );
    let stack = Stack::start(router).await;
    let (outcomes, hits) = run_corpus(&stack, &corpus).await;
    let report = failure_report(router, &outcomes, &hits);

    let canonical = outcomes
        .iter()
        .find(|o| o.spelling.group == "canonical")
        .expect("the corpus has a canonical spelling");
    let control =
        approve_and_expect_one_protected_hit(&stack, &canonical.reply, canonical.spelling.id).await;

    eprintln!(
        "{}: {} spellings in {:.1?}, {} failed",
        router.name(),
        outcomes.len(),
        started.elapsed(),
        outcomes.iter().filter(|o| o.failure().is_some()).count()
    );
    let control = match control {
        Ok(()) => {
            "positive control passed: the approved canonical request ran exactly once".to_owned()
        }
        Err(e) => format!("POSITIVE CONTROL FAILED: {e}"),
    };
    assert!(
        report.is_empty() && control.starts_with("positive control passed"),
        "{report}\n{control}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_express_is_held_or_refused_and_never_reaches_production() {
    corpus_holds(Router::Express).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_flask_is_held_or_refused_and_never_reaches_production() {
    corpus_holds(Router::Flask).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_servlet_emulation_is_held_or_refused_and_never_reaches_production() {
    corpus_holds(Router::Servlet).await;
}

/// SPEC 8 lets a route accept `;` (`allow_semicolons = true`) but does not say what the policy
/// then matches. A servlet container routes `/production;x` and `/staging/..;/production` to
/// `/production`, so with the relaxation on, matching must ignore `;parameters` per segment
/// (and see `..;x` as `..`) or `prod-deploy` is skipped. This pins that decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_servlet_emulation_with_allow_semicolons_still_never_reaches_production() {
    corpus_holds(Router::ServletAllowSemicolons).await;
}

// ---------------------------------------------------------------------------------------------
// The issue's table, one named test per row
// ---------------------------------------------------------------------------------------------

/// Sends one corpus-syntax `line` through `router`, behind the shipped config exactly as the
/// issue tried it, and asserts it is held or refused and that nothing deploying production ran.
async fn row_is_held_or_refused(router: Router, line: &str) -> Outcome {
    let stack = Stack::start_verbatim(router).await;
    let spelling = parse_corpus(&format!("[row]\n{line}\n"))
        .pop()
        .expect("one spelling");
    let (mut outcomes, hits) = run_corpus(&stack, std::slice::from_ref(&spelling)).await;
    let report = failure_report(router, &outcomes, &hits);
    assert!(report.is_empty(), "{report}");
    outcomes.pop().expect("one outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_table_canonical_production_deploy_is_held() {
    let stack = Stack::start(Router::Flask).await;
    let spelling = parse_corpus("[row]\nPOST /v1/deployments/production\n")
        .pop()
        .expect("one spelling");
    let (outcomes, hits) = run_corpus(&stack, std::slice::from_ref(&spelling)).await;
    let o = &outcomes[0];
    assert!(
        o.held(),
        "POST https://deploy.example.com/v1/deployments/production must be held (202 with an \
         approval): {} {}; upstream: {}",
        o.answer(),
        o.reply.body,
        o.upstream_summary()
    );
    assert_eq!(hits.protected, 0, "nothing runs before the approval");
    approve_and_expect_one_protected_hit(&stack, &o.reply, spelling.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_table_trailing_slash_is_held_or_refused() {
    // Express (strict: false) routes `/production/` to the protected handler.
    row_is_held_or_refused(Router::Express, "POST /v1/deployments/production/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_table_semicolon_path_parameter_is_held_or_refused() {
    // Tomcat and Jetty read `/production;x` as `/production`.
    row_is_held_or_refused(Router::Servlet, "POST /v1/deployments/production;x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_table_encoded_slash_is_held_or_refused() {
    // WSGI servers decode `%2F` into PATH_INFO: Flask routes it to the protected handler.
    row_is_held_or_refused(Router::Flask, "POST /v1/deployments%2Fproduction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_table_other_host_is_held_or_refused() {
    // The shipped config also routes any other Host to the same upstream.
    row_is_held_or_refused(
        Router::Flask,
        "POST /v1/deployments/production | Host: 127.0.0.1",
    )
    .await;
}

#[test]
fn corpus_parses_with_escapes_and_headers() {
    let corpus =
        parse_corpus("# c\n[g1]\nPOST /a\\\\b\\x00c\n[g2]\nGET /x | Host: h:{port} | X-A: 1\\|2\n");
    assert_eq!(corpus.len(), 2);
    assert_eq!(corpus[0].group, "g1");
    assert_eq!(corpus[0].request, b"POST /a\\b\x00c");
    assert_eq!(corpus[1].group, "g2");
    assert_eq!(
        corpus[1].headers,
        vec![b"Host: h:{port}".to_vec(), b"X-A: 1|2".to_vec()]
    );
    let raw = raw_request(&corpus[1], "t", "8080");
    let raw = String::from_utf8(raw).expect("ascii");
    assert!(
        raw.starts_with("GET /x HTTP/1.1\r\nHost: h:8080\r\nX-A: 1|2\r\n"),
        "{raw}"
    );
    assert!(!raw.contains("deploy.example.com"), "{raw}");
    assert!(load_corpus().len() >= 200);
    let tagged = parse_corpus("[g]\nPOST /a => fwd\nPOST /b => fwd-cs\nPOST /c\n");
    let tags: Vec<Forward> = tagged.iter().map(|s| s.may_forward).collect();
    assert_eq!(
        tags,
        [Forward::Always, Forward::CaseSensitiveOnly, Forward::Never]
    );
    assert_eq!(tagged[0].request, b"POST /a");
}
