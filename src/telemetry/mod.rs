//! OpenTelemetry traces (SPEC 10): `[telemetry] otlp_endpoint` exports spans over OTLP/HTTP
//! (protobuf) with the `opentelemetry` crates.
//!
//! Owns: the tracer provider and its batch exporter, the per-request server span (started from
//! the incoming W3C `traceparent` when there is one, injected into the upstream request), and
//! the approval lifecycle spans, which are built from the audit events the broker records and
//! *linked* to the request span that created the approval (an approval outlives its request,
//! so it is its own trace). Must not touch: routing, policy, approval state.
//!
//! What a span carries is listed here and nowhere else, and never includes a header value, a
//! token, a body or a person's identity: request span `countersign.request_id`,
//! `http.request.method`, `url.path`, `countersign.route`, `countersign.rule`,
//! `countersign.decision`, `countersign.upstream`, `countersign.upstream.status_code`,
//! `http.response.status_code`, `countersign.approval_id`; approval span
//! `countersign.approval_id`, `countersign.rule`, `countersign.request_id`,
//! `countersign.decision`, one event per audit event of the approval.
//!
//! When `[telemetry]` is absent, [`Telemetry`] is disabled: every call returns at once and the
//! incoming `traceparent` is forwarded upstream untouched.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::config;

/// How long exported spans wait in the batch at most.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// Held requests remembered for linking their approval span; older ones are forgotten.
const MAX_REMEMBERED: u64 = 10_000;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("[telemetry]: {0}")]
pub struct TelemetryError(String);

/// The tracing side of Countersign: cheap to clone; disabled when `[telemetry]` is absent.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// Owns the batch exporter thread; kept for as long as spans are made.
    _provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    /// Route labels, by route index.
    routes: Vec<String>,
    /// request id -> span context of a request being held (for the approval span's link).
    held: moka::sync::Cache<String, SpanContext>,
    /// approval id -> its open span (ended on the approval's last event, or when evicted).
    approvals: moka::sync::Cache<String, Arc<Mutex<opentelemetry_sdk::trace::Span>>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

/// The server span of one data-plane request (empty when telemetry is disabled).
#[derive(Default)]
pub struct RequestTrace {
    span: Option<opentelemetry_sdk::trace::Span>,
    method: String,
    upstream_status: Option<u16>,
}

impl fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.span.as_ref().map(|s| s.span_context().span_id());
        f.debug_struct("RequestTrace")
            .field("span_id", &id)
            .finish()
    }
}

/// What is known about a request when it is done.
#[derive(Debug)]
pub struct Finished<'a> {
    /// Index of the matched `[[route]]`.
    pub route: Option<usize>,
    /// The rule that decided, or `none`.
    pub rule: &'a str,
    /// What happened (`forwarded`, `denied`, `approved`, `accepted`, ...).
    pub decision: &'a str,
    /// Status sent to the client (0 when nothing was sent).
    pub status: u16,
    /// Name of the upstream the route points at.
    pub upstream: Option<&'a str>,
    /// The approval that held the request.
    pub approval_id: Option<&'a str>,
}

impl Telemetry {
    /// Telemetry that records nothing.
    pub fn disabled() -> Telemetry {
        Telemetry::default()
    }

    /// Starts the OTLP/HTTP exporter of `config` (spans go to `{otlp_endpoint}/v1/traces`).
    /// `routes` are the labels of `[[route]]` tables, by index.
    pub fn start(
        config: &config::Telemetry,
        routes: Vec<String>,
    ) -> Result<Telemetry, TelemetryError> {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url(&config.otlp_endpoint))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("countersign");
        Ok(Telemetry {
            inner: Some(Arc::new(Inner {
                _provider: provider,
                tracer,
                propagator: TraceContextPropagator::new(),
                routes,
                held: moka::sync::Cache::builder()
                    .max_capacity(MAX_REMEMBERED)
                    .time_to_live(Duration::from_secs(600))
                    .build(),
                approvals: moka::sync::Cache::builder()
                    .max_capacity(MAX_REMEMBERED)
                    .time_to_live(Duration::from_secs(24 * 3600))
                    .build(),
            })),
        })
    }

    /// Whether spans are recorded.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts the server span of a request, continuing the trace of a valid incoming
    /// `traceparent` (and `tracestate`).
    pub fn start_request(
        &self,
        request_id: &str,
        method: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> RequestTrace {
        let Some(inner) = &self.inner else {
            return RequestTrace::default();
        };
        let parent = inner.propagator.extract(&HeaderExtractor(headers));
        let span = inner
            .tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("countersign.request_id", request_id.to_owned()),
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("url.path", path.to_owned()),
            ])
            .start_with_context(&inner.tracer, &parent);
        RequestTrace {
            span: Some(span),
            method: method.to_owned(),
            upstream_status: None,
        }
    }

    /// The `traceparent` (and `tracestate`) headers that carry this request's span upstream;
    /// empty when telemetry is disabled (the client's own headers then pass through).
    pub fn upstream_headers(&self, trace: &RequestTrace) -> Vec<(&'static str, String)> {
        let (Some(inner), Some(span)) = (&self.inner, &trace.span) else {
            return Vec::new();
        };
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        let mut out = HeaderCollector(Vec::new());
        inner.propagator.inject_context(&cx, &mut out);
        out.0
    }

    /// Remembers a request that is being held, so its approval span can link to it.
    pub fn held(&self, trace: &RequestTrace, request_id: &str) {
        if let (Some(inner), Some(span)) = (&self.inner, &trace.span) {
            inner
                .held
                .insert(request_id.to_owned(), span.span_context().clone());
        }
    }

    /// Ends the request span with what happened.
    pub fn finish_request(&self, trace: &mut RequestTrace, done: Finished<'_>) {
        let (Some(inner), Some(mut span)) = (&self.inner, trace.span.take()) else {
            return;
        };
        let route = done
            .route
            .and_then(|i| inner.routes.get(i))
            .map_or("none", String::as_str);
        span.update_name(format!("{} {route}", trace.method));
        let mut attrs = vec![
            KeyValue::new("countersign.route", route.to_owned()),
            KeyValue::new("countersign.rule", done.rule.to_owned()),
            KeyValue::new("countersign.decision", done.decision.to_owned()),
        ];
        if done.status != 0 {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(done.status),
            ));
        }
        if let Some(up) = done.upstream {
            attrs.push(KeyValue::new("countersign.upstream", up.to_owned()));
        }
        // A held request's answer is the upstream's answer (or nothing reached upstream).
        let upstream_status = trace
            .upstream_status
            .or((done.decision == "approved").then_some(done.status));
        if let Some(s) = upstream_status {
            attrs.push(KeyValue::new(
                "countersign.upstream.status_code",
                i64::from(s),
            ));
        }
        if let Some(id) = done.approval_id {
            attrs.push(KeyValue::new("countersign.approval_id", id.to_owned()));
        }
        span.set_attributes(attrs);
        if done.status >= 500 {
            span.set_status(Status::error(format!("HTTP {}", done.status)));
        }
        span.end();
    }

    /// Records the upstream's status on the request span.
    pub fn upstream_status(&self, trace: &mut RequestTrace, status: u16) {
        if trace.span.is_some() {
            trace.upstream_status = Some(status);
        }
    }

    /// Follows the approval lifecycle from the audit events the broker records (after they
    /// are written): `approval.requested` opens the approval span, linked to the held
    /// request's span; every later event of the approval is a span event; the decision
    /// (`denied`, `expired`, `cancelled`) or the execution (`request.forwarded`,
    /// `request.failed`) ends it.
    pub fn audit_event(&self, event: &str, fields: &serde_json::Value) {
        let Some(inner) = &self.inner else { return };
        let Some(approval_id) = fields.get("approval_id").and_then(|v| v.as_str()) else {
            return;
        };
        let text = |key: &str| fields.get(key).and_then(|v| v.as_str());
        if event == "approval.requested" {
            let mut attrs = vec![KeyValue::new(
                "countersign.approval_id",
                approval_id.to_owned(),
            )];
            if let Some(rule) = text("rule") {
                attrs.push(KeyValue::new("countersign.rule", rule.to_owned()));
            }
            let mut links = Vec::new();
            if let Some(request_id) = text("request_id") {
                attrs.push(KeyValue::new(
                    "countersign.request_id",
                    request_id.to_owned(),
                ));
                if let Some(cx) = inner.held.remove(request_id) {
                    links.push(Link::with_context(cx));
                }
            }
            let mut span = inner
                .tracer
                .span_builder("approval")
                .with_kind(SpanKind::Internal)
                .with_attributes(attrs)
                .with_links(links)
                .start_with_context(&inner.tracer, &Context::new());
            span.add_event("approval.requested", Vec::new());
            inner
                .approvals
                .insert(approval_id.to_owned(), Arc::new(Mutex::new(span)));
            return;
        }
        let Some(span) = inner.approvals.get(approval_id) else {
            return;
        };
        let ends = matches!(
            event,
            "approval.denied"
                | "approval.expired"
                | "approval.cancelled"
                | "request.forwarded"
                | "request.failed"
        );
        if let Ok(mut span) = span.lock() {
            // Only closed vocabularies go into the event, never free text or identities.
            let attrs = ["decision", "mode", "status", "upstream_status"]
                .iter()
                .filter_map(|k| {
                    let v = fields.get(*k)?;
                    let v = match v {
                        serde_json::Value::String(s) if s.len() <= 32 => {
                            opentelemetry::Value::from(s.clone())
                        }
                        serde_json::Value::Number(n) => opentelemetry::Value::from(n.as_i64()?),
                        serde_json::Value::Bool(b) => opentelemetry::Value::from(*b),
                        _ => return None,
                    };
                    Some(KeyValue::new(format!("countersign.{k}"), v))
                })
                .collect();
            span.add_event(event.to_owned(), attrs);
            if let Some(decision) = event.strip_prefix("approval.") {
                span.set_attribute(KeyValue::new("countersign.decision", decision.to_owned()));
            }
            if event == "request.failed" {
                span.set_status(Status::error("request.failed"));
            }
            if ends {
                span.end();
            }
        }
        if ends {
            inner.approvals.invalidate(approval_id);
        }
    }
}

/// `{endpoint}/v1/traces`, unless the endpoint already names that path.
fn traces_url(endpoint: &url::Url) -> String {
    let base = endpoint.as_str().trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// A label for a `[[route]]`: `host/prefix`, `*` for any host.
pub fn route_label(route: &config::Route) -> String {
    let host = route
        .host
        .as_ref()
        .map_or_else(|| "*".to_owned(), |h| h.to_string());
    format!("{host}{}", route.path_prefix)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderCollector(Vec<(&'static str, String)>);

impl Injector for HeaderCollector {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            traces_url(&u("http://collector:4318")),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url(&u("http://collector:4318/v1/traces")),
            "http://collector:4318/v1/traces"
        );
    }

    #[test]
    fn disabled_telemetry_adds_no_headers() {
        let t = Telemetry::disabled();
        let trace = t.start_request("r", "GET", "/", &http::HeaderMap::new());
        assert!(t.upstream_headers(&trace).is_empty());
        assert!(!t.enabled());
    }
}
