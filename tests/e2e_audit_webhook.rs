//! Evidence export (SPEC 10) through the real binary: `[audit] webhook` delivers every audit
//! line as a signed CloudEvent, in order, through receiver failures and a restart of
//! Countersign; `countersign audit export` prints the same events for backfill.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{countersign, http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const AUD: &str = "https://deploy.example.com";
const SECRET: &str = "webhook-secret-for-tests";

const POLICY: &str = r#"
[[rule]]
name = "deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "30s"
expires = "1m"
"#;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    content_type: String,
    signature: String,
    body: String,
}

#[derive(Default)]
struct ReceiverState {
    /// Accepted deliveries, in arrival order.
    accepted: Vec<Delivery>,
    /// Requests refused with 500 so far.
    refused: usize,
    /// Refuse this many more requests with 500.
    fail_next: usize,
}

/// A SIEM ingest endpoint on loopback that records what it accepts.
#[derive(Clone)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new()
            .route("/ingest", post(ingest))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ingest", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { state, url }
    }

    fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    fn accepted(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().accepted.clone()
    }

    fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Waits until at least `n` deliveries were accepted; returns them all.
    async fn wait_for(&self, n: usize, what: &str) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} deliveries after 30 s: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn ingest(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let mut s = state.lock().unwrap();
    if s.fail_next > 0 {
        s.fail_next -= 1;
        s.refused += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    s.accepted.push(Delivery {
        content_type: header("content-type"),
        signature: header("countersign-signature"),
        body,
    });
    StatusCode::ACCEPTED
}

/// Checks the signature as a receiver would, and returns the event.
fn verified(d: &Delivery) -> Value {
    assert_eq!(d.content_type, "application/cloudevents+json");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(d.body.as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(d.signature, expected, "signature of {}", d.body);
    serde_json::from_str(&d.body).expect("CloudEvent is JSON")
}

struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    _echo: EchoUpstream,
    config: String,
}

impl Env {
    async fn new(receiver: &Receiver) -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        dir.write("policies/deploy.toml", POLICY);
        dir.write("webhook-secret", format!("{SECRET}\n"));
        let config = format!(
            "{}\n[approvals]\naudit_log = \"audit.jsonl\"\n\n\
             [audit]\nwebhook = \"{}\"\nwebhook_secret = \"file:webhook-secret\"\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            receiver.url
        );
        Env {
            dir,
            issuer,
            _echo: echo,
            config,
        }
    }

    async fn start(&self) -> Proxy {
        let mut proxy = Proxy::start(&self.dir, &self.config).await;
        proxy.wait_ready().await;
        proxy
    }

    /// One approval, start to end: held (202), approved by alice, executed upstream.
    /// Returns its id.
    async fn approval(&self, proxy: &Proxy) -> String {
        let token = self.issuer.token(
            "svc-deployer",
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        );
        let resp = http_client()
            .post(format!("{}/deploy", proxy.data_url()))
            .bearer_auth(&token)
            .header("prefer", "respond-async")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        let id = body["approval_id"].as_str().unwrap().to_owned();
        let alice = self
            .issuer
            .token("alice", AUD, json!({ "email": "alice@example.com" }));
        let resp = http_client()
            .post(format!("{}/approvals/{id}/decision", proxy.control_url()))
            .bearer_auth(&alice)
            .json(&json!({ "decision": "approve", "reason": "ok" }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "vote: {}", resp.status());
        id
    }

    fn audit_lines(&self) -> Vec<String> {
        self.dir
            .read("audit.jsonl")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the audit log holds `request.forwarded` for `id`.
    async fn wait_forwarded(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .audit_lines()
            .iter()
            .any(|l| l.contains("\"request.forwarded\"") && l.contains(id))
        {
            assert!(Instant::now() < deadline, "{id} not forwarded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Events after the forward (the "executed" notice) are still being appended: wait
        // until the log stops growing, so the count compared below is the final one.
        let mut len = self.audit_lines().len();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.audit_lines().len();
            if now == len {
                break;
            }
            assert!(Instant::now() < deadline, "the audit log kept growing");
            len = now;
        }
    }
}

/// Every line of the audit log arrives exactly once, in file order, signed, as a CloudEvent
/// whose `data` is the line itself.
fn assert_delivered_exactly(lines: &[String], deliveries: &[Delivery]) {
    let events: Vec<Value> = deliveries.iter().map(verified).collect();
    let got: Vec<String> = events.iter().map(|e| e["data"].to_string()).collect();
    let want: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    assert_eq!(got, want, "deliveries are the audit lines, in order, once");
    for (event, line) in events.iter().zip(lines) {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], line["hash"]);
        assert_eq!(event["time"], line["ts"]);
        assert_eq!(
            event["type"],
            format!("dev.countersign.{}", line["event"].as_str().unwrap())
        );
        assert!(event["source"]
            .as_str()
            .unwrap()
            .starts_with("/countersign/"));
        if let Some(id) = line["approval_id"].as_str() {
            assert_eq!(event["subject"], id);
        }
    }
}

/// The lifecycle events of one approval, in the order delivered.
fn lifecycle(deliveries: &[Delivery], id: &str) -> Vec<String> {
    deliveries
        .iter()
        .map(verified)
        .filter(|e| e["subject"] == id)
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_delivers_signed_cloudevents_in_order_through_500s_and_a_restart() {
    let receiver = Receiver::start().await;
    let env = Env::new(&receiver).await;

    // The receiver is down (500) for the first attempts: nothing is lost or reordered, and the
    // approval is decided and executed meanwhile (delivery never blocks a decision).
    receiver.fail_next(3);
    let mut proxy = env.start().await;
    let first = env.approval(&proxy).await;
    env.wait_forwarded(&first).await;
    let n = env.audit_lines().len();
    let got = receiver.wait_for(n, "first approval").await;
    assert_eq!(receiver.refused(), 3, "the 500s were retried");
    assert_delivered_exactly(&env.audit_lines(), &got);
    let order = lifecycle(&got, &first);
    assert_eq!(
        order.first().map(String::as_str),
        Some("dev.countersign.approval.requested")
    );
    let pos = |t: &str| order.iter().position(|o| o == t).unwrap_or(usize::MAX);
    assert!(pos("dev.countersign.vote.cast") < pos("dev.countersign.approval.approved"));
    assert!(pos("dev.countersign.approval.approved") < pos("dev.countersign.request.forwarded"));
    assert!(
        pos("dev.countersign.request.forwarded") < usize::MAX,
        "{order:?}"
    );

    // Operators see the failed attempts and that delivery caught up.
    let metrics_url = format!("{}/metrics", proxy.control_url());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_client()
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The backlog gauge and the delivered counter move one after the other: wait for both.
        let caught_up = text.contains("countersign_audit_webhook_backlog_bytes 0")
            && text.contains(&format!(
                "countersign_audit_webhook_attempts_total{{result=\"delivered\"}} {n}"
            ));
        if caught_up {
            assert!(
                text.contains("countersign_audit_webhook_attempts_total{result=\"failed\"} 3"),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "backlog never reached 0: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The cursor sits next to the audit log.
    let cursor: Value =
        serde_json::from_str(&env.dir.read("audit.jsonl.webhook-cursor")).expect("cursor file");
    assert_eq!(
        cursor["offset"].as_u64().unwrap(),
        env.dir.read("audit.jsonl").len() as u64
    );

    // Countersign stops; while it is down the receiver also fails. After the restart, delivery
    // resumes where it stopped: new events only, none repeated, in order.
    proxy.send_signal("TERM");
    proxy.wait_exit(Duration::from_secs(20));
    drop(proxy);
    receiver.fail_next(2);
    let proxy = env.start().await;
    let second = env.approval(&proxy).await;
    env.wait_forwarded(&second).await;
    let n = env.audit_lines().len();
    let got = receiver.wait_for(n, "after restart").await;
    assert_eq!(receiver.refused(), 5);
    // Give a duplicate a chance to show up before checking there is none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_delivered_exactly(&env.audit_lines(), &receiver.accepted());
    assert!(lifecycle(&got, &second).contains(&"dev.countersign.request.forwarded".to_owned()));

    // Backfill: `audit export` prints the very same bodies, one per line.
    let path = env.dir.join("audit.jsonl");
    let out = countersign(&["audit", "export", path.to_str().unwrap(), "--since", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let bodies: Vec<String> = receiver.accepted().into_iter().map(|d| d.body).collect();
    assert_eq!(exported, bodies);
    // --since in the future: nothing; an RFC 3339 time in the past: everything.
    let out = countersign(&[
        "audit",
        "export",
        path.to_str().unwrap(),
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = countersign(&[
        "audit",
        "export",
        path.to_str().unwrap(),
        "--since",
        "2000-01-01T00:00:00Z",
    ]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        bodies.len()
    );
    let out = countersign(&[
        "audit",
        "export",
        path.to_str().unwrap(),
        "--since",
        "last tuesday",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn webhook_config_is_checked() {
    let dir = TestDir::new();
    let base = common::basic_config("http://127.0.0.1:9", "https://idp.example.com", &[AUD]);
    let check = |extra: &str| {
        let text = format!("{base}\n{extra}")
            .replace("{{listen}}", "127.0.0.1:18080")
            .replace("{{control_listen}}", "127.0.0.1:19090")
            .replace("{{public_url}}", "http://127.0.0.1:19090");
        let path = dir.write("countersign.toml", text);
        let out = countersign(&["check", "--config", path.to_str().unwrap()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    dir.write("secret", "s3cret\n");
    let (code, out) = check("[audit]\nwebhook = \"https://siem.example.com/ingest\"\nwebhook_secret = \"file:secret\"\n");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check("[audit]\nwebhook = \"https://siem.example.com/ingest\"\n");
    assert_eq!(code, Some(1));
    assert!(
        out.contains("missing required key \"webhook_secret\" in [audit]"),
        "{out}"
    );
    let (code, out) = check(
        "[audit]\nwebhook = \"http://siem.example.com/ingest\"\nwebhook_secret = \"file:secret\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("\"webhook\" must use https://"), "{out}");
    let (code, out) = check(
        "[audit]\nwebhook = \"https://siem.example.com/ingest\"\nwebhook_secret = \"inline\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("never inline"), "{out}");
    let (code, out) = check("[audit]\nwebhok = \"https://siem.example.com/ingest\"\n");
    assert_eq!(code, Some(1));
    assert!(
        out.contains("unknown key \"webhok\" in [audit]; did you mean \"webhook\"?"),
        "{out}"
    );
    let (code, out) =
        check("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"cs\"\n");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check("[telemetry]\notlp_endpont = \"http://127.0.0.1:4318\"\n");
    assert_eq!(code, Some(1));
    assert!(
        out.contains(
            "unknown key \"otlp_endpont\" in [telemetry]; did you mean \"otlp_endpoint\"?"
        ),
        "{out}"
    );
    assert!(
        out.contains("missing required key \"otlp_endpoint\""),
        "{out}"
    );
}
