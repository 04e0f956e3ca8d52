//! The approval lifecycle end to end, through the real `countersign` binary and HTTP only
//! (SPEC 4-7): a caller's request is held or answered 202, approvers decide through the
//! control-plane API with bearer tokens from a local issuer, and the echo upstream shows what
//! (and how often) was forwarded.

mod common;

use std::time::{Duration, Instant};

use common::{
    countersign, http_client, json_body, verified_claims, EchoUpstream, LocalIssuer, Proxy, Reply,
    TestDir,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Audience of every token (data plane and control plane validate tokens alike).
const AUD: &str = "https://deploy.example.com";
/// Subject of the caller whose requests are held.
const REQUESTER: &str = "svc-deployer";

/// The policy every test runs with: one approval rule per path, so each test picks its
/// behaviour by path.
const POLICY: &str = r#"
[[rule]]
name = "deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
hold = "30s"
expires = "1m"

[[rule]]
name = "quick-expiry"
path_prefix = "/expire"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "2s"
expires = "2s"

[[rule]]
name = "two-keys"
path_prefix = "/quorum"
action = "approve"
[rule.approval]
approvers = ["group:keyholders", "dave@example.com"]
quorum = 2
hold = "30s"
expires = "1m"

[[rule]]
name = "race"
path_prefix = "/race"
action = "approve"
[rule.approval]
approvers = [
  "a0@example.com", "a1@example.com", "a2@example.com", "a3@example.com", "a4@example.com",
  "a5@example.com", "a6@example.com", "a7@example.com", "a8@example.com", "a9@example.com",
]
hold = "30s"
expires = "1m"

[[rule]]
name = "web-only"
path_prefix = "/login-only"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
approve_via = "login"
hold = "30s"
expires = "1m"

[[rule]]
name = "explain-yourself"
path_prefix = "/reason"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
reason_required = true
hold = "30s"
expires = "1m"
"#;

/// One proxy in front of an echo upstream, with a local issuer and an audit log.
struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
    /// The caller's token (no email claim: a service), one value for the whole test so a
    /// leak check looks for the exact string that was sent.
    requester: String,
}

impl Env {
    async fn start() -> Env {
        Self::start_with_upstream(None).await
    }

    /// Like [`Env::start`], routing to `upstream` instead of the echo upstream when given.
    async fn start_with_upstream(upstream: Option<String>) -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        let upstream = upstream.unwrap_or_else(|| echo.url());
        dir.write("policies/approvals.toml", POLICY);
        let config = format!(
            "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n\
             [approvers.groups]\nkeyholders = [\"bob@example.com\", \"carol@example.com\"]\n\n\
             [approver_login]\nissuer = \"{}\"\nclient_id = \"countersign\"\n\
             client_secret = \"file:login-secret\"\n",
            common::basic_config(&upstream, &issuer.issuer(), &[AUD]),
            issuer.issuer()
        );
        // Only `approve_via = "login"` needs a login client; nobody logs in here.
        dir.write("login-secret", "unused-secret\n");
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        let requester = issuer.token(
            REQUESTER,
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        );
        Env {
            dir,
            issuer,
            echo,
            proxy,
            requester,
        }
    }

    fn requester_token(&self) -> String {
        self.requester.clone()
    }

    /// A token for a person `name` with email `name@example.com`.
    fn person(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    fn data(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.data_url())
    }

    fn control(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.control_url())
    }

    /// Starts a data-plane request as the requester in the background (it may be held).
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> tokio::task::JoinHandle<Reply> {
        self.send_as(&self.requester, method, path, headers, body)
    }

    /// Like [`Env::send`] with the caller's bearer `token`.
    fn send_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> tokio::task::JoinHandle<Reply> {
        let mut req = http_client()
            .request(method, self.data(path))
            .timeout(Duration::from_secs(45))
            .bearer_auth(token)
            .body(body.to_owned());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        tokio::spawn(async move {
            let resp = req.send().await.expect("data-plane request");
            Reply::read(resp).await
        })
    }

    /// Waits until exactly one approval visible to `approver` is pending; returns its id.
    async fn pending_id(&self, approver: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let resp = http_client()
                .get(self.control("/approvals"))
                .bearer_auth(self.person(approver))
                .header("accept", "application/json")
                .send()
                .await
                .expect("GET /approvals");
            assert_eq!(resp.status(), 200, "GET /approvals as {approver}");
            let list = json_body(resp).await;
            let pending: Vec<&Value> = list["approvals"]
                .as_array()
                .expect("approvals array")
                .iter()
                .filter(|a| a["status"] == "pending")
                .collect();
            if let [one] = pending.as_slice() {
                return one["approval_id"].as_str().expect("approval_id").to_owned();
            }
            assert!(pending.len() <= 1, "more than one pending approval: {list}");
            assert!(
                Instant::now() < deadline,
                "no pending approval for {approver} after 10 s; proxy stderr:\n{}",
                self.proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /approvals/{id}/decision` with `token`.
    async fn decide(&self, id: &str, token: &str, decision: &str, reason: &str) -> Reply {
        let resp = http_client()
            .post(self.control(&format!("/approvals/{id}/decision")))
            .bearer_auth(token)
            .json(&json!({ "decision": decision, "reason": reason }))
            .send()
            .await
            .expect("POST decision");
        Reply::read(resp).await
    }

    /// `GET url` (a status or result URL) with `token`.
    async fn get(&self, url: &str, token: &str) -> Reply {
        let resp = http_client()
            .get(url)
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET control plane");
        Reply::read(resp).await
    }

    /// Polls `{status_url}/result` as the requester until it is no longer 202.
    async fn wait_result(&self, status_url: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .get(&format!("{status_url}/result"), &self.requester_token())
                .await;
            if r.status != 202 {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "result still 202 after 10 s: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the JSON view (as `viewer`, a person) until `status` is `want`.
    async fn wait_status(&self, id: &str, viewer: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .get(
                    &self.control(&format!("/approvals/{id}")),
                    &self.person(viewer),
                )
                .await;
            assert_eq!(r.status, 200, "view of {id} as {viewer}: {}", r.text);
            let v = r.json();
            if v["status"] == want {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "approval {id} not {want} after 10 s: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/metrics` until sample `name` (labels included, as exposed) equals `want`; the
    /// gauges are refreshed right after the step they count, not before it is answered.
    async fn wait_metric(&self, name: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = http_client()
                .get(self.control("/metrics"))
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics text");
            let got = sample(&text, name);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {got:?}, not {want}, after 5 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Upstream calls after giving any stray background execution a moment to happen.
    async fn settled_upstream_count(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.echo.count()
    }
}

async fn joined(task: tokio::task::JoinHandle<Reply>) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("held request did not finish within 30 s")
        .expect("request task")
}

#[tokio::test]
async fn approved_while_held_forwards_the_exact_request_once_with_signed_evidence() {
    let env = Env::start().await;
    let held = env.send(
        reqwest::Method::PUT,
        "/deploy/prod?version=42",
        &[
            ("content-type", "application/json"),
            // A client cannot bring its own evidence: this must never reach upstream.
            ("countersign-approval", "forged.by.caller"),
        ],
        r#"{"image":"api:42"}"#,
    );
    let id = env.pending_id("alice").await;
    assert_eq!(env.echo.count(), 0, "nothing reaches upstream while held");

    // Both the approver and the requester can read the JSON view; it shows the held request.
    let view = env
        .get(
            &env.control(&format!("/approvals/{id}")),
            &env.requester_token(),
        )
        .await;
    assert_eq!(view.status, 200, "requester's view: {}", view.text);
    let view = view.json();
    assert_eq!(view["status"], "pending");
    assert_eq!(view["method"], "PUT");
    assert_eq!(view["path"], "/deploy/prod?version=42");
    assert_eq!(view["rule"], "deploy");
    assert_eq!(view["requester"]["sub"], REQUESTER);

    let vote = env
        .decide(&id, &env.person("alice"), "approve", "ship it")
        .await;
    assert_eq!(vote.status, 200, "approve: {}", vote.text);
    assert_eq!(vote.json()["status"], "approved");

    let reply = joined(held).await;
    assert_eq!(reply.status, 200, "held caller: {}", reply.text);
    assert_eq!(reply.header("countersign-approval-id"), Some(id.as_str()));
    assert_eq!(
        reply.header("x-echo"),
        Some("1"),
        "the upstream's own response"
    );

    assert_eq!(
        env.settled_upstream_count().await,
        1,
        "forwarded exactly once"
    );
    let got = env.echo.last().expect("upstream request");
    assert_eq!(got.method, "PUT");
    assert_eq!(got.uri, "/deploy/prod?version=42");
    assert_eq!(&got.body[..], br#"{"image":"api:42"}"#);
    assert_eq!(got.header("countersign-approval-id"), Some(id.as_str()));
    assert_eq!(got.header("countersign-subject"), Some(REQUESTER));
    assert_eq!(
        got.header("countersign-issuer"),
        Some(env.issuer.issuer().as_str())
    );
    let evidence = got.header_all("countersign-approval");
    assert_eq!(evidence.len(), 1, "one approval token: {evidence:?}");
    assert_ne!(evidence[0], "forged.by.caller");
    let claims = verified_claims(&env.proxy.control_url(), evidence[0]).await;
    assert_eq!(claims["approval_id"], id.as_str());
    assert_eq!(claims["rule"], "deploy");
    assert_eq!(claims["requester"]["sub"], REQUESTER);
    assert_eq!(claims["approvers"], json!(["alice@example.com"]));
    assert_eq!(claims["request_hash"], view["request_hash"]);
}

#[tokio::test]
async fn denied_while_held_answers_403_naming_who_and_why() {
    let env = Env::start().await;
    let held = env.send(reqwest::Method::POST, "/deploy/prod", &[], "{}");
    let id = env.pending_id("bob").await;
    let vote = env
        .decide(&id, &env.person("bob"), "deny", "freeze until Monday")
        .await;
    assert_eq!(vote.status, 200, "deny: {}", vote.text);
    assert_eq!(vote.json()["status"], "denied");

    let reply = joined(held).await;
    let description = reply.assert_error(403, "approval_denied");
    assert!(
        description.contains("bob@example.com") && description.contains("freeze until Monday"),
        "description names who and why: {description}"
    );
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn expiry_while_held_answers_403_approval_expired() {
    let env = Env::start().await;
    let started = Instant::now();
    let reply = joined(env.send(reqwest::Method::POST, "/expire/now", &[], "{}")).await;
    reply.assert_error(403, "approval_expired");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "answered before the 2 s expiry: {:?}",
        started.elapsed()
    );
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn respond_async_gives_202_then_the_parked_result_for_the_requester_only() {
    let env = Env::start().await;
    let started = Instant::now();
    let accepted = joined(env.send(
        reqwest::Method::POST,
        "/deploy/staging",
        &[("prefer", "respond-async")],
        "hello async",
    ))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "respond-async must not hold"
    );
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let body = accepted.json();
    let id = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    let status_url = format!("{}/approvals/{id}", env.proxy.control_url());
    assert_eq!(body["status"], "pending");
    assert_eq!(body["status_url"], status_url.as_str());
    assert_eq!(body["result_url"], format!("{status_url}/result").as_str());
    assert!(body["expires_at"].is_string(), "expires_at in {body}");
    assert!(body["request_id"].is_string(), "request_id in {body}");
    assert_eq!(accepted.header("location"), Some(status_url.as_str()));
    assert!(
        accepted
            .header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "Retry-After seconds: {:?}",
        accepted.headers
    );

    let pending = env
        .get(&format!("{status_url}/result"), &env.requester_token())
        .await;
    assert_eq!(
        pending.status, 202,
        "result while pending: {}",
        pending.text
    );
    // Someone else (even an approver) never sees the requester's result.
    let other = env
        .get(&format!("{status_url}/result"), &env.person("alice"))
        .await;
    other.assert_error(404, "not_found");

    // A slow upstream: while Countersign executes the approved request, the result is not
    // there yet, and the requester is told to keep polling (202), not that it is gone.
    env.echo.set_latency(Duration::from_millis(2500));
    let vote = env.decide(&id, &env.person("alice"), "approve", "").await;
    assert_eq!(vote.status, 200, "approve: {}", vote.text);
    let executing = env
        .get(&format!("{status_url}/result"), &env.requester_token())
        .await;
    assert_eq!(
        executing.status, 202,
        "result while the upstream is still answering: {}",
        executing.text
    );
    assert!(executing.header("retry-after").is_some());
    let result = env.wait_result(&status_url).await;
    assert_eq!(result.status, 200, "parked result: {}", result.text);
    assert_eq!(result.header("countersign-approval-id"), Some(id.as_str()));
    let echoed = result.json();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["uri"], "/deploy/staging");
    assert_eq!(echoed["body"], "hello async");
    let other = env
        .get(&format!("{status_url}/result"), &env.person("alice"))
        .await;
    other.assert_error(404, "not_found");
    // Fetching again never executes the request again.
    let again = env
        .get(&format!("{status_url}/result"), &env.requester_token())
        .await;
    assert_ne!(again.status, 202, "{}", again.text);
    assert_eq!(
        env.settled_upstream_count().await,
        1,
        "executed exactly once"
    );
}

#[tokio::test]
async fn prefer_wait_shortens_the_hold_to_a_202() {
    let env = Env::start().await;
    let started = Instant::now();
    let reply = joined(env.send(
        reqwest::Method::POST,
        "/deploy/prod",
        &[("prefer", "wait=1")],
        "{}",
    ))
    .await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 202, "{}", reply.text);
    let status_url = reply.json()["status_url"]
        .as_str()
        .expect("status_url")
        .to_owned();
    assert_eq!(reply.header("location"), Some(status_url.as_str()));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "held {waited:?}, expected about 1 s (rule hold is 30 s)"
    );
    assert_eq!(reply.json()["status"], "pending");
}

#[tokio::test]
async fn async_request_expires_and_its_result_says_so() {
    let env = Env::start().await;
    let accepted = joined(env.send(
        reqwest::Method::POST,
        "/expire/async",
        &[("prefer", "respond-async")],
        "{}",
    ))
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let status_url = accepted.json()["status_url"]
        .as_str()
        .expect("status_url")
        .to_owned();
    let result = env.wait_result(&status_url).await;
    result.assert_error(403, "approval_expired");
    let id = accepted.json()["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let late = env.decide(&id, &env.person("alice"), "approve", "").await;
    assert!(
        late.status == 409,
        "a vote after expiry is refused: {} {}",
        late.status,
        late.text
    );
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn requester_cancels_a_pending_request() {
    let env = Env::start().await;
    let accepted = joined(env.send(
        reqwest::Method::POST,
        "/deploy/prod",
        &[("prefer", "respond-async")],
        "{}",
    ))
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let body = accepted.json();
    let id = body["approval_id"].as_str().expect("id").to_owned();
    let status_url = body["status_url"].as_str().expect("status_url").to_owned();

    // Only the requester may withdraw it.
    let by_other = http_client()
        .delete(&status_url)
        .bearer_auth(env.person("alice"))
        .send()
        .await
        .expect("DELETE");
    Reply::read(by_other).await.assert_error(404, "not_found");

    let by_requester = http_client()
        .delete(&status_url)
        .bearer_auth(env.requester_token())
        .send()
        .await
        .expect("DELETE");
    assert_eq!(by_requester.status(), 200);
    assert_eq!(json_body(by_requester).await["status"], "cancelled");

    env.decide(&id, &env.person("alice"), "approve", "")
        .await
        .assert_error(409, "already_decided");
    let result = env
        .get(&format!("{status_url}/result"), &env.requester_token())
        .await;
    result.assert_error(403, "approval_cancelled");
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn caller_hanging_up_cancels_and_a_later_approval_never_reaches_upstream() {
    let env = Env::start().await;
    let mut stream = tokio::net::TcpStream::connect(env.proxy.listen())
        .await
        .expect("connect data plane");
    let request = format!(
        "POST /deploy/prod HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}",
        env.proxy.listen(),
        env.requester_token()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let id = env.pending_id("alice").await;
    drop(stream);

    env.wait_status(&id, "alice", "cancelled").await;
    env.decide(&id, &env.person("alice"), "approve", "")
        .await
        .assert_error(409, "already_decided");
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn body_over_one_mebibyte_is_refused_with_413() {
    let env = Env::start().await;
    let big = "x".repeat(1024 * 1024 + 1);
    let reply = joined(env.send(reqwest::Method::POST, "/deploy/prod", &[], &big)).await;
    reply.assert_error(413, "payload_too_large");

    // Exactly 1 MiB is still accepted for approval.
    let exact = "y".repeat(1024 * 1024);
    let reply = joined(env.send(
        reqwest::Method::POST,
        "/deploy/prod",
        &[("prefer", "respond-async")],
        &exact,
    ))
    .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let list = env
        .get(&env.control("/approvals"), &env.person("alice"))
        .await
        .json();
    assert_eq!(
        list["approvals"].as_array().map(Vec::len),
        Some(1),
        "only the 1 MiB request created an approval: {list}"
    );
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn chunked_body_over_one_mebibyte_is_refused_with_413() {
    let env = Env::start().await;
    let mut stream = tokio::net::TcpStream::connect(env.proxy.listen())
        .await
        .expect("connect data plane");
    let head = format!(
        "POST /deploy/prod HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         transfer-encoding: chunked\r\n\r\n",
        env.proxy.listen(),
        env.requester_token()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    // No Content-Length: the limit must hold while streaming. 17 chunks of 64 KiB = 1 MiB +
    // 64 KiB. The proxy may answer and close before the last chunk: stop writing then.
    let chunk = format!("10000\r\n{}\r\n", "z".repeat(0x10000));
    for _ in 0..17 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    // Read until the error code shows up or the proxy closes (head and body may come apart).
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&answer).contains("payload_too_large")
        && Instant::now() < deadline
    {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "expected 413, got: {answer}"
    );
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn reason_required_needs_the_countersign_reason_header_and_shows_it() {
    let env = Env::start().await;
    let missing = joined(env.send(reqwest::Method::POST, "/reason/x", &[], "{}")).await;
    missing.assert_error(400, "reason_required");

    let given = joined(env.send(
        reqwest::Method::POST,
        "/reason/x",
        &[
            ("prefer", "respond-async"),
            ("countersign-reason", "hotfix for INC-42"),
        ],
        "{}",
    ))
    .await;
    assert_eq!(given.status, 202, "{}", given.text);
    let id = given.json()["approval_id"].as_str().expect("id").to_owned();
    let view = env
        .get(
            &env.control(&format!("/approvals/{id}")),
            &env.person("alice"),
        )
        .await;
    assert_eq!(view.status, 200, "{}", view.text);
    assert_eq!(view.json()["reason"], "hotfix for INC-42");
    assert_eq!(env.echo.count(), 0);
}

#[tokio::test]
async fn who_may_vote_and_see() {
    let env = Env::start().await;
    let accepted = joined(env.send(
        reqwest::Method::POST,
        "/deploy/prod",
        &[("prefer", "respond-async")],
        "{}",
    ))
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.json()["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let status_url = env.control(&format!("/approvals/{id}"));

    // Not on the list.
    env.decide(&id, &env.person("mallory"), "approve", "")
        .await
        .assert_error(403, "not_an_approver");
    // A token without an email claim identifies nobody.
    let no_email = env.issuer.token("robot", AUD, json!({}));
    env.decide(&id, &no_email, "approve", "")
        .await
        .assert_error(403, "not_an_approver");
    // The requester, even with an approver's email, cannot approve their own request.
    let own = env
        .issuer
        .token(REQUESTER, AUD, json!({ "email": "alice@example.com" }));
    env.decide(&id, &own, "approve", "")
        .await
        .assert_error(403, "own_request");
    // No token at all.
    let anonymous = http_client()
        .post(format!("{status_url}/decision"))
        .json(&json!({ "decision": "approve" }))
        .send()
        .await
        .expect("POST decision");
    assert_eq!(anonymous.status(), 401);

    // Strangers do not see the request; approvers and the requester do.
    env.get(&status_url, &env.person("mallory"))
        .await
        .assert_error(404, "not_found");
    for token in [env.person("bob"), env.requester_token()] {
        let view = env.get(&status_url, &token).await;
        assert_eq!(view.status, 200, "{}", view.text);
        assert_eq!(view.json()["status"], "pending");
    }

    // Once decided, further votes conflict.
    let vote = env.decide(&id, &env.person("bob"), "deny", "no").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    let description = env
        .get(&format!("{status_url}/result"), &env.requester_token())
        .await
        .assert_error(403, "approval_denied");
    assert!(description.contains("bob@example.com"), "{description}");
    env.decide(&id, &env.person("alice"), "approve", "")
        .await
        .assert_error(409, "already_decided");
    assert_eq!(env.settled_upstream_count().await, 0);
}

#[tokio::test]
async fn an_approver_cannot_approve_their_own_request_from_another_login() {
    let env = Env::start().await;
    // Alice calls the API as herself (her own subject, her email)...
    let alice_as_caller =
        env.issuer
            .token("alice-laptop", AUD, json!({ "email": "alice@example.com" }));
    let accepted = joined(env.send_as(
        &alice_as_caller,
        reqwest::Method::POST,
        "/deploy/prod",
        &[("prefer", "respond-async")],
        "{}",
    ))
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.json()["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // ...and cannot approve it from another login with the same email.
    env.decide(&id, &env.person("alice"), "approve", "")
        .await
        .assert_error(403, "own_request");
    // Bob, the other approver, can.
    let vote = env.decide(&id, &env.person("bob"), "approve", "").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    assert_eq!(vote.json()["status"], "approved");
}

#[tokio::test]
async fn quorum_of_two_needs_two_distinct_approvers() {
    let env = Env::start().await;
    let held = env.send(reqwest::Method::POST, "/quorum/prod", &[], "two keys");
    let id = env.pending_id("bob").await;

    let first = env.decide(&id, &env.person("bob"), "approve", "").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let after_first = first.json();
    assert_eq!(after_first["status"], "pending", "{after_first}");
    assert_eq!(after_first["approvals"], json!(["bob@example.com"]));

    env.decide(&id, &env.person("bob"), "approve", "again")
        .await
        .assert_error(409, "already_voted");
    let view = env.wait_status(&id, "bob", "pending").await;
    assert_eq!(view["approvals"], json!(["bob@example.com"]), "{view}");
    assert_eq!(env.echo.count(), 0, "one approval of two forwards nothing");
    assert!(!held.is_finished(), "the caller is still held");

    let second = env.decide(&id, &env.person("carol"), "approve", "").await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json()["status"], "approved");
    let reply = joined(held).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["body"], "two keys");
    assert_eq!(env.settled_upstream_count().await, 1);
}

#[tokio::test]
async fn ten_racing_approvals_call_upstream_exactly_once() {
    let env = Env::start().await;
    let held = env.send(reqwest::Method::POST, "/race/prod", &[], "{}");
    let id = env.pending_id("a0").await;

    let votes = (0..10).map(|i| {
        let url = env.control(&format!("/approvals/{id}/decision"));
        let token = env.person(&format!("a{i}"));
        tokio::spawn(async move {
            let resp = http_client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "decision": "approve" }))
                .send()
                .await
                .expect("POST decision");
            Reply::read(resp).await
        })
    });
    let votes: Vec<Reply> = futures::future::join_all(votes)
        .await
        .into_iter()
        .map(|r| r.expect("vote task"))
        .collect();
    let accepted = votes.iter().filter(|v| v.status == 200).count();
    assert!(accepted >= 1, "some vote counted: {votes:?}");
    for v in votes.iter().filter(|v| v.status != 200) {
        v.assert_error(409, "already_decided");
    }

    let reply = joined(held).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        env.settled_upstream_count().await,
        1,
        "ten approvals, one upstream call"
    );
}

#[tokio::test]
async fn sigterm_answers_held_callers_503_shutting_down() {
    let mut env = Env::start().await;
    let held = env.send(reqwest::Method::POST, "/deploy/prod", &[], "{}");
    env.pending_id("alice").await;
    env.proxy.send_signal("TERM");
    let reply = joined(held).await;
    reply.assert_error(503, "shutting_down");
    env.proxy.wait_exit(Duration::from_secs(20));
    assert_eq!(env.echo.count(), 0);
}

#[tokio::test]
async fn audit_log_records_the_flow_in_a_valid_chain_without_tokens() {
    let env = Env::start().await;
    let held = env.send(reqwest::Method::POST, "/deploy/prod", &[], "{}");
    let id = env.pending_id("alice").await;
    let approver = env.person("alice");
    let vote = env.decide(&id, &approver, "approve", "ok").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    assert_eq!(joined(held).await.status, 200);
    let forwarded = env.echo.last().expect("forwarded");
    let evidence = forwarded
        .header("countersign-approval")
        .expect("approval token")
        .to_owned();

    let path = env.dir.join("audit.jsonl");
    let out = countersign(&["audit", "verify", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "audit verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = env.dir.read("audit.jsonl");
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e.to_string().contains(&id))
        .filter_map(|e| e["event"].as_str())
        .collect();
    for want in [
        "approval.requested",
        "vote.cast",
        "approval.approved",
        "request.forwarded",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for secret in [env.requester_token(), approver, evidence] {
        let signature = secret.rsplit('.').next().expect("JWT signature part");
        assert!(
            !log.contains(signature),
            "a token leaked into the audit log"
        );
    }
}

#[tokio::test]
async fn approve_via_login_refuses_api_votes() {
    let env = Env::start().await;
    let accepted = joined(env.send(
        reqwest::Method::POST,
        "/login-only/x",
        &[("prefer", "respond-async")],
        "{}",
    ))
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.json()["approval_id"]
        .as_str()
        .expect("id")
        .to_owned();
    env.decide(&id, &env.person("alice"), "approve", "")
        .await
        .assert_error(403, "login_required");
    let view = env.wait_status(&id, "alice", "pending").await;
    assert_eq!(
        view["votes"],
        json!([]),
        "the refused vote was not recorded"
    );
}

/// The value of the sample `name` (with its labels, exactly as exposed) in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_pending_approvals_and_decisions() {
    let env = Env::start().await;

    let held = env.send(reqwest::Method::POST, "/deploy/prod", &[], "{}");
    let id = env.pending_id("alice").await;
    env.wait_metric("countersign_approvals_pending", 1.0).await;
    let vote = env.decide(&id, &env.person("alice"), "approve", "").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    assert_eq!(joined(held).await.status, 200);

    let held = env.send(reqwest::Method::POST, "/deploy/prod", &[], "{}");
    let id = env.pending_id("alice").await;
    let vote = env.decide(&id, &env.person("alice"), "deny", "no").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    assert_eq!(joined(held).await.status, 403);

    env.wait_metric("countersign_approvals_pending", 0.0).await;
    for outcome in ["approved", "denied"] {
        let name = format!("countersign_approval_decisions_total{{outcome=\"{outcome}\"}}");
        env.wait_metric(&name, 1.0).await;
    }
}

#[tokio::test]
async fn an_approved_request_the_upstream_refuses_says_so_to_held_and_async_callers() {
    // Nothing listens on this port: every execution fails to connect.
    let dead = format!("http://{}", common::DEAD_ADDR);
    let env = Env::start_with_upstream(Some(dead)).await;

    let held = env.send(reqwest::Method::POST, "/deploy/held", &[], "{}");
    let id = env.pending_id("alice").await;
    let vote = env.decide(&id, &env.person("alice"), "approve", "").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    joined(held).await.assert_error(502, "upstream_unavailable");

    let accepted = joined(env.send(
        reqwest::Method::POST,
        "/deploy/async",
        &[("prefer", "respond-async")],
        "{}",
    ))
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let body = accepted.json();
    let id = body["approval_id"].as_str().expect("id").to_owned();
    let status_url = body["status_url"].as_str().expect("status_url").to_owned();
    let vote = env.decide(&id, &env.person("alice"), "approve", "").await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    // The requester learns that the approved request failed upstream (not that it is gone).
    env.wait_result(&status_url)
        .await
        .assert_error(502, "upstream_unavailable");
}

/// `GET /approvals` pages (issue 13 item 3): following `next_cursor` with `limit=2` returns
/// each of the caller's five approvals exactly once, over three pages; bad paging parameters
/// are refused with 400.
#[tokio::test]
async fn approvals_listing_pages_through_every_approval_exactly_once() {
    let env = Env::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let accepted = joined(env.send(
            reqwest::Method::POST,
            "/deploy/staging",
            &[("prefer", "respond-async")],
            &format!("page {i}"),
        ))
        .await;
        assert_eq!(accepted.status, 202, "{}", accepted.text);
        ids.push(accepted.json()["approval_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            None => env.control("/approvals?limit=2"),
            Some(c) => env.control(&format!("/approvals?limit=2&cursor={c}")),
        };
        let page = env.get(&url, &env.requester).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let body = page.json();
        let items = body["approvals"].as_array().expect("approvals array");
        assert!(items.len() <= 2, "limit=2 answered {}", items.len());
        seen.extend(
            items
                .iter()
                .map(|a| a["approval_id"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        assert!(pages <= 10, "paging does not end: {body}");
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(
        sorted_seen, sorted_ids,
        "every approval exactly once: {seen:?}"
    );
    assert_eq!(pages, 3, "five approvals at two per page");
    for bad in ["limit=0", "limit=501", "cursor=nope", "status=maybe"] {
        env.get(&env.control(&format!("/approvals?{bad}")), &env.requester)
            .await
            .assert_error(400, "bad_request");
    }
}
