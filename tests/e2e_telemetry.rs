//! OpenTelemetry traces (SPEC 10) through the real binary, against a small OTLP/HTTP receiver
//! that decodes the real protobuf `ExportTraceServiceRequest` bodies: one server span per
//! request with route, rule, decision and upstream status, never a token; the incoming W3C
//! `traceparent` is continued and propagated upstream; the approval lifecycle is a span linked
//! to the request that created it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

const POLICY: &str = r#"
[[rule]]
name = "reads"
methods = ["GET"]
path_prefix = "/items"
action = "allow"

[[rule]]
name = "deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "30s"
expires = "1m"
"#;

#[derive(Default)]
struct Collected {
    /// Raw request bodies (to search for leaks byte by byte).
    bodies: Vec<Vec<u8>>,
    /// Decoded requests.
    requests: Vec<ExportTraceServiceRequest>,
    /// Content types seen.
    content_types: Vec<String>,
}

/// An OTLP/HTTP trace receiver on loopback.
#[derive(Clone)]
struct Collector {
    state: Arc<Mutex<Collected>>,
    base: String,
}

impl Collector {
    async fn start() -> Collector {
        let state = Arc::new(Mutex::new(Collected::default()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Collector { state, base }
    }

    fn spans(&self) -> Vec<Span> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    /// Waits for a span matching `pred`.
    async fn wait_span(&self, what: &str, pred: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| pred(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no span {what} within 20 s; have: {:#?}",
                self.spans()
                    .iter()
                    .map(|s| (s.name.clone(), attrs(s)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn export(
    State(state): State<Arc<Mutex<Collected>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut s = state.lock().unwrap();
    s.content_types.push(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    );
    s.bodies.push(body.to_vec());
    s.requests.push(req);
    StatusCode::OK
}

/// A span's attributes as `key -> text` (ints printed).
fn attrs(span: &Span) -> Vec<(String, String)> {
    kv_text(&span.attributes)
}

fn kv_text(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    attrs(span)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_and_continue_the_callers_trace() {
    let collector = Collector::start().await;
    let dir = TestDir::new();
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    dir.write("policies/p.toml", POLICY);
    let config = format!(
        "{}\n[approvals]\naudit_log = \"audit.jsonl\"\n\n\
         [telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"countersign-e2e\"\n",
        common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        collector.base
    );
    let mut proxy = Proxy::start(&dir, &config).await;
    proxy.wait_ready().await;
    let token = issuer.token(
        "svc-reader",
        AUD,
        json!({ "scope": "items:read", "email": "svc-reader@example.com" }),
    );

    // 1. An allowed call inside the caller's trace.
    let resp = http_client()
        .get(format!("{}/items/7", proxy.data_url()))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["countersign-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // The upstream got a traceparent in the same trace, whose parent is Countersign's span.
    let upstream_tp = echo
        .last()
        .unwrap()
        .header("traceparent")
        .expect("traceparent sent upstream")
        .to_owned();
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream_tp}");
    assert_eq!(parts[1], TRACE_ID, "upstream continues the caller's trace");
    assert_ne!(
        parts[2], PARENT_ID,
        "upstream's parent is Countersign's span"
    );

    let span = collector
        .wait_span("for the allowed call", |s| {
            attr(s, "countersign.request_id").as_deref() == Some(request_id.as_str())
        })
        .await;
    assert_eq!(hex::encode(&span.trace_id), TRACE_ID);
    assert_eq!(hex::encode(&span.parent_span_id), PARENT_ID);
    assert_eq!(hex::encode(&span.span_id), parts[2]);
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.name, "GET */");
    assert_eq!(attr(&span, "countersign.route").as_deref(), Some("*/"));
    assert_eq!(attr(&span, "countersign.rule").as_deref(), Some("reads"));
    assert_eq!(
        attr(&span, "countersign.decision").as_deref(),
        Some("forwarded")
    );
    assert_eq!(attr(&span, "countersign.upstream").as_deref(), Some("echo"));
    assert_eq!(
        attr(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(&span, "countersign.upstream.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(&span, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(&span, "url.path").as_deref(), Some("/items/7"));

    // 2. Without a traceparent a new trace starts; a refused call is a span too.
    let resp = http_client()
        .get(format!("{}/items/8", proxy.data_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let refused_id = resp.headers()["countersign-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let refused = collector
        .wait_span("for the refused call", |s| {
            attr(s, "countersign.request_id").as_deref() == Some(refused_id.as_str())
        })
        .await;
    assert_ne!(hex::encode(&refused.trace_id), TRACE_ID);
    assert!(refused.parent_span_id.is_empty());
    assert_eq!(
        attr(&refused, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(attr(&refused, "countersign.upstream.status_code"), None);

    // 3. The approval lifecycle: its own span, linked to the request that was held.
    let resp = http_client()
        .post(format!("{}/deploy", proxy.data_url()))
        .bearer_auth(&token)
        .header("prefer", "respond-async")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let held_request_id = resp.headers()["countersign-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    let approval_id = body["approval_id"].as_str().unwrap().to_owned();
    let alice = issuer.token("alice", AUD, json!({ "email": "alice@example.com" }));
    let resp = http_client()
        .post(format!(
            "{}/approvals/{approval_id}/decision",
            proxy.control_url()
        ))
        .bearer_auth(&alice)
        .json(&json!({ "decision": "approve" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "vote: {}", resp.status());

    let held = collector
        .wait_span("for the held call", |s| {
            attr(s, "countersign.request_id").as_deref() == Some(held_request_id.as_str())
                && s.kind == 2
        })
        .await;
    assert_eq!(
        attr(&held, "countersign.decision").as_deref(),
        Some("accepted")
    );
    assert_eq!(attr(&held, "countersign.rule").as_deref(), Some("deploy"));
    assert_eq!(
        attr(&held, "http.response.status_code").as_deref(),
        Some("202")
    );
    let approval = collector
        .wait_span("for the approval", |s| {
            s.name == "approval"
                && attr(s, "countersign.approval_id").as_deref() == Some(approval_id.as_str())
        })
        .await;
    assert_eq!(approval.links.len(), 1, "linked to the held request");
    assert_eq!(approval.links[0].trace_id, held.trace_id);
    assert_eq!(approval.links[0].span_id, held.span_id);
    assert_ne!(approval.trace_id, held.trace_id, "its own trace");
    assert_eq!(
        attr(&approval, "countersign.rule").as_deref(),
        Some("deploy")
    );
    assert_eq!(
        attr(&approval, "countersign.request_id").as_deref(),
        Some(held_request_id.as_str())
    );
    assert_eq!(
        attr(&approval, "countersign.decision").as_deref(),
        Some("approved")
    );
    // Notification events (notify.sent, ...) may interleave; the decision path is in order.
    let path = [
        "approval.requested",
        "vote.cast",
        "approval.approved",
        "request.forwarded",
    ];
    let events: Vec<&str> = approval
        .events
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| path.contains(n))
        .collect();
    assert_eq!(events, path, "lifecycle events in order");

    // The request Countersign executed after the approval stays in the caller's trace: the
    // stored request replays the caller's traceparent.
    let executed = echo
        .requests()
        .into_iter()
        .find(|r| r.uri == "/deploy")
        .expect("the approved request reached the upstream");
    let tp = executed
        .header("traceparent")
        .expect("traceparent replayed");
    assert_eq!(tp.split('-').nth(1), Some(TRACE_ID), "{tp}");

    // The resource names the service; the exporter spoke protobuf.
    {
        let state = collector.state.lock().unwrap();
        assert!(state
            .content_types
            .iter()
            .all(|c| c == "application/x-protobuf"));
        let service = state
            .requests
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .filter_map(|rs| rs.resource.as_ref())
            .flat_map(|r| kv_text(&r.attributes))
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v);
        assert_eq!(service.as_deref(), Some("countersign-e2e"));

        // Never a token: not in any attribute, event or anywhere in what was exported.
        for secret in [token.as_str(), alice.as_str()] {
            let needle = secret.as_bytes();
            let middle = &needle[needle.len() / 2..needle.len() / 2 + 40];
            for body in &state.bodies {
                assert!(
                    !body.windows(middle.len()).any(|w| w == middle),
                    "a token reached the trace export"
                );
            }
        }
        for body in &state.bodies {
            assert!(!body.windows(6).any(|w| w == b"Bearer"));
        }
    }
}
