//! pingora glue: the data plane. Request phases call into `policy` and `oidc`; the ONE table
//! that turns failures into HTTP responses lives in [`error`].
//!
//! Phases: `early_request_filter` strips client `Countersign-*` headers; `request_filter`
//! routes, authenticates and applies policy (answering itself on any failure);
//! `upstream_peer` picks the prepared peer; `upstream_request_filter` adds what upstream may
//! trust; `fail_to_proxy` maps upstream failures through the same table; `logging` records.

pub mod break_glass;
pub mod error;
pub mod hold;
pub mod plane;
pub mod shadow;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::clock::SharedClock;
use crate::identity::Principal;
use crate::metrics::Metrics;
use crate::oidc::{self, TokenError, Verifier};
use crate::policy::canonical::is_reserved_header;
use crate::policy::UnidentifiedRequester;
use crate::policy::{
    Action, CanonicalRequest, Evaluation, PolicySet, RawRequest, RouteTable, Unroutable,
};
use crate::respond::Refusal;

use error::ChallengeContext;
use plane::HoldResult;
pub use upstream::UpstreamPeer;

/// Shared, read-mostly state of the data plane.
#[derive(Debug)]
pub struct DataPlane {
    /// Active policy; swapped on reload.
    pub policy: Arc<ArcSwap<PolicySet>>,
    /// Compiled `[[route]]` table.
    pub routes: RouteTable,
    /// Prepared upstream peers.
    pub upstreams: Vec<UpstreamPeer>,
    /// Token verification.
    pub verifier: Verifier,
    /// Metrics.
    pub metrics: Metrics,
    /// Time.
    pub clock: SharedClock,
    /// Configured issuers, for RFC 9728 metadata.
    pub issuers: Vec<String>,
    /// Whether the listener is TLS (scheme of the resource identifier).
    pub tls: bool,
    /// Approvals (holding, deciding, executing once).
    pub approvals: Arc<plane::ApprovalPlane>,
    /// OpenTelemetry spans (disabled without `[telemetry]`).
    pub telemetry: crate::telemetry::Telemetry,
    /// Where matches of `mode = "shadow"` rules are recorded.
    pub shadow: shadow::ShadowRecorder,
}

/// What `admit` decided.
#[derive(Debug)]
enum Admission {
    /// Forward through pingora.
    Forward,
    /// Hold for approval under `policy.rules[rule]`.
    Hold {
        policy: Arc<PolicySet>,
        rule: usize,
        principal: Arc<Principal>,
        upstream: usize,
    },
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    request_id: String,
    started: Instant,
    upstream: Option<usize>,
    principal: Option<Arc<Principal>>,
    rule: Arc<str>,
    outcome: &'static str,
    upstream_started: Option<Instant>,
    span: tracing::Span,
    /// `Countersign-Reason` as the client sent it (read before client `Countersign-*`
    /// headers are stripped; it is the one the client may set).
    reason: Option<String>,
    /// `Countersign-Break-Glass` as the client sent it, trimmed (empty when empty or not
    /// UTF-8); used only on `break_glass = true` rules, stripped like every `Countersign-*`.
    break_glass: Option<String>,
    approval_id: Option<String>,
    /// The canonical request (SPEC 8), once routing resolved it: what policy judged and what
    /// the upstream receives.
    canonical: Option<CanonicalRequest>,
    /// The OpenTelemetry server span (empty when telemetry is off).
    trace: crate::telemetry::RequestTrace,
}

impl RequestCtx {
    fn new() -> Self {
        Self {
            request_id: new_request_id(),
            started: Instant::now(),
            upstream: None,
            principal: None,
            rule: Arc::from("none"),
            outcome: "pending",
            upstream_started: None,
            span: tracing::Span::none(),
            reason: None,
            break_glass: None,
            approval_id: None,
            canonical: None,
            trace: crate::telemetry::RequestTrace::default(),
        }
    }
}

/// 128 random bits, hex: unique enough to correlate logs, responses and audit.
fn new_request_id() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

/// The pingora `ProxyHttp` implementation.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: Arc<DataPlane>,
}

impl Proxy {
    /// A proxy over `state`.
    pub fn new(state: Arc<DataPlane>) -> Self {
        Self { state }
    }

    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rejection: Refusal,
    ) -> Result<bool> {
        self.send_rejection(session, ctx, rejection).await?;
        Ok(true)
    }

    /// Writes the error response for `rejection`; returns its status.
    async fn send_rejection(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rejection: Refusal,
    ) -> Result<u16> {
        ctx.outcome = error::outcome(&rejection);
        let metadata_url = self.resource_metadata_url(session.req_header());
        let resp = error::render(
            &rejection,
            ChallengeContext {
                resource_metadata: &metadata_url,
            },
        );
        tracing::debug!(
            parent: &ctx.span,
            status = resp.answer.status,
            code = resp.answer.code,
            "rejected"
        );
        let body = resp.body(&ctx.request_id);
        let header = resp.header(body.len(), &ctx.request_id)?;
        write_full(session, header, body).await?;
        Ok(resp.answer.status)
    }

    /// `{scheme}://{host}/.well-known/oauth-protected-resource` for the request's host.
    fn resource_metadata_url(&self, req: &RequestHeader) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource",
            self.resource_id(req)
        )
    }

    /// The RFC 9728 resource identifier: `{scheme}://{host}` as the client addressed us.
    fn resource_id(&self, req: &RequestHeader) -> String {
        let scheme = if self.state.tls { "https" } else { "http" };
        let host = authority(req).unwrap_or("localhost");
        format!("{scheme}://{host}")
    }

    async fn serve_resource_metadata(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let policy = self.state.policy.load_full();
        let mut scopes: Vec<&str> = policy
            .rules
            .iter()
            .flat_map(|r| r.require.scopes.iter().map(String::as_str))
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        let body = serde_json::json!({
            "resource": self.resource_id(session.req_header()),
            "authorization_servers": self.state.issuers,
            "bearer_methods_supported": ["header"],
            "scopes_supported": scopes,
            "resource_name": "Countersign-protected API",
        });
        let body = Bytes::from(body.to_string());
        let mut header = ResponseHeader::build(200, Some(3))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        header.insert_header(http::header::CACHE_CONTROL, "max-age=300")?;
        ctx.outcome = "metadata";
        write_full(session, header, body).await?;
        Ok(true)
    }

    /// Routing, authentication and policy. `Err(rejection)` means answer with it.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Admission, Refusal> {
        let req = session.req_header();
        let canonical = self
            .state
            .routes
            .resolve(&RawRequest {
                method: &req.method,
                target_authority: req.uri.authority().map(|a| a.as_str()),
                path: req.uri.path(),
                query: req.uri.query(),
                headers: &req.headers,
                default_port: if self.state.tls { 443 } else { 80 },
            })
            .map_err(|e| match e {
                Unroutable::Invalid(why) => Refusal::BadRequest(why.description().into()),
                Unroutable::NoRoute => Refusal::NoRoute,
            })?;
        ctx.upstream = Some(canonical.upstream);
        let admission = self.judge(req, ctx, &canonical).await;
        ctx.canonical = Some(canonical);
        admission
    }

    /// Authentication and policy for the canonical request.
    async fn judge(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        canonical: &CanonicalRequest,
    ) -> Result<Admission, Refusal> {
        let upstream = canonical.upstream;
        let facts = canonical.facts();
        let policy = self.state.policy.load();
        if let Evaluation::Decided(d) = policy.evaluate(&facts, None) {
            if d.action == Action::Public {
                self.state
                    .shadow
                    .record(&d, &ctx.request_id, canonical, None);
                ctx.rule = Arc::from(d.rule_name());
                ctx.outcome = "public";
                return Ok(Admission::Forward);
            }
        }

        let token = oidc::bearer_token(
            req.headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes()),
        )
        .and_then(|t| t.ok_or(TokenError::Missing))
        .map_err(|e| {
            // `verify` counts its own rejections; these happen before it.
            self.state.verifier.record_rejection(&e);
            Refusal::Token(e)
        })?;
        let principal = self
            .state
            .verifier
            .verify(token)
            .await
            .map_err(Refusal::Token)?;

        let decision = match policy.evaluate(&facts, Some(&principal)) {
            Evaluation::Decided(d) => d,
            // With a principal the policy always decides; treat anything else as a bug and
            // fail closed.
            Evaluation::NeedsToken => return Err(Refusal::Internal),
        };
        let who = Some(&*principal);
        self.state
            .shadow
            .record(&decision, &ctx.request_id, canonical, who);
        ctx.rule = Arc::from(decision.rule_name());
        ctx.span.record("rule", decision.rule_name());
        ctx.span.record("sub", principal.subject.as_str());
        match decision.action {
            Action::Deny => return Err(Refusal::Denied),
            Action::Public | Action::Allow | Action::Approve => {}
        }
        if let Some(rule) = decision.rule {
            rule.require
                .check(&principal, self.state.clock.unix())
                .map_err(Refusal::StepUp)?;
        }
        ctx.principal = Some(principal.clone());
        if decision.action == Action::Approve {
            let unidentified_ok = decision
                .rule
                .and_then(|r| r.approval.as_ref())
                .is_some_and(|a| a.unidentified_requester == UnidentifiedRequester::Hold);
            if principal.email.is_none() && !unidentified_ok {
                return Err(Refusal::IdentityRequired);
            }
            let rule = decision
                .rule
                .and_then(|r| policy.rules.iter().position(|p| std::ptr::eq(p, r)))
                .ok_or(Refusal::Internal)?;
            return Ok(Admission::Hold {
                policy: policy.clone(),
                rule,
                principal,
                upstream,
            });
        }
        ctx.outcome = "forwarded";
        Ok(Admission::Forward)
    }
}

impl Proxy {
    /// Ends the request's OpenTelemetry span (only called when telemetry is on).
    fn finish_trace(&self, ctx: &mut RequestCtx, status: u16) {
        let route = ctx.canonical.as_ref().map(|c| c.route);
        let upstream = ctx
            .upstream
            .and_then(|i| self.state.upstreams.get(i))
            .map(|u| &*u.name);
        self.state.telemetry.finish_request(
            &mut ctx.trace,
            crate::telemetry::Finished {
                route,
                rule: &ctx.rule,
                decision: ctx.outcome,
                status,
                upstream,
                approval_id: ctx.approval_id.as_deref(),
            },
        );
    }
}

/// Host as the client sent it: the URI authority (HTTP/2, absolute-form) or `Host`.
fn authority(req: &RequestHeader) -> Option<&str> {
    req.uri.authority().map(|a| a.as_str()).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

async fn write_full(session: &mut Session, header: ResponseHeader, body: Bytes) -> Result<()> {
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new()
    }

    /// Removes every client-sent `Countersign-*` header (any case, `_` read as `-`) before
    /// anything looks at the request.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let req = session.req_header_mut();
        ctx.reason = req
            .headers
            .get("countersign-reason")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().chars().take(1000).collect());
        ctx.break_glass = break_glass::header(&req.headers);
        let reserved: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|name| is_reserved_header(name.as_str()))
            .cloned()
            .collect();
        for name in reserved {
            req.remove_header(&name);
        }
        // The span shares the access log's target: disabled (and free) unless access logging is
        // on. Warnings carry the request id themselves.
        ctx.span = tracing::info_span!(
            target: "countersign::access",
            "request",
            id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            rule = tracing::field::Empty,
            sub = tracing::field::Empty,
        );
        ctx.trace = self.state.telemetry.start_request(
            &ctx.request_id,
            req.method.as_str(),
            req.uri.path(),
            &req.headers,
        );
        Ok(())
    }

    /// Routes, authenticates and applies policy; answers itself (returns `true`) on failure.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if session.req_header().uri.path() == "/.well-known/oauth-protected-resource" {
            return self.serve_resource_metadata(session, ctx).await;
        }
        match self.admit(session, ctx).await {
            Ok(Admission::Forward) => Ok(false),
            Ok(Admission::Hold {
                policy,
                rule,
                principal,
                upstream,
            }) => {
                self.state.telemetry.held(&ctx.trace, &ctx.request_id);
                let plane = self.state.approvals.clone();
                let rule = &policy.rules[rule];
                match hold::hold(&plane, session, ctx, rule, &principal, upstream).await {
                    Ok(HoldResult::Forward {
                        id,
                        response,
                        grant_id,
                    }) => {
                        // A break-glass or grant forward already named its outcome.
                        if ctx.outcome == "pending" {
                            ctx.outcome = "approved";
                        }
                        let grant_id = grant_id.as_deref();
                        hold::write_forward(session, &ctx.request_id, &id, grant_id, response)
                            .await?;
                        Ok(true)
                    }
                    Ok(HoldResult::Accepted { id, expires_at }) => {
                        ctx.outcome = "accepted";
                        hold::write_accepted(
                            session,
                            &plane.public_url,
                            &ctx.request_id,
                            &id,
                            expires_at,
                        )
                        .await?;
                        Ok(true)
                    }
                    Err(rejection) => self.reject(session, ctx, rejection).await,
                }
            }
            Err(rejection) => self.reject(session, ctx, rejection).await,
        }
    }

    /// The prepared peer of the matched route's upstream.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let idx = ctx
            .upstream
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream selected"))?;
        let up = self
            .state
            .upstreams
            .get(idx)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "bad upstream index"))?;
        ctx.upstream_started = Some(Instant::now());
        Ok(up.peer())
    }

    /// Sends the canonical request (origin-form target, canonical path and `Host`) and adds
    /// `Countersign-Subject` / `Countersign-Issuer` (the verified `sub` and `iss`) and the
    /// request id.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let canonical = ctx
            .canonical
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no canonical request"))?;
        // Most requests arrive already canonical: rebuild the target (and Host) only when the
        // client's spelling differs, so the common case allocates nothing here.
        let uri = &upstream_request.uri;
        if uri.authority().is_some() || uri.path() != canonical.path {
            let target = http::Uri::try_from(canonical.path_and_query()).map_err(|_| {
                Error::explain(ErrorType::InternalError, "canonical target is not a URI")
            })?;
            upstream_request.set_uri(target);
        }
        let host = upstream_request.headers.get(http::header::HOST);
        if host.is_none_or(|h| h.as_bytes() != canonical.authority.as_bytes()) {
            upstream_request.insert_header(http::header::HOST, canonical.authority.as_str())?;
        }
        if let Some(p) = &ctx.principal {
            upstream_request.insert_header("countersign-subject", p.subject.as_str())?;
            upstream_request.insert_header("countersign-issuer", p.issuer.as_str())?;
        }
        upstream_request.insert_header("countersign-request-id", ctx.request_id.as_str())?;
        for (name, value) in self.state.telemetry.upstream_headers(&ctx.trace) {
            upstream_request.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(start), Some(idx)) = (ctx.upstream_started.take(), ctx.upstream) {
            if let Some(up) = self.state.upstreams.get(idx) {
                self.state
                    .metrics
                    .upstream_latency
                    .with_label_values(&[&up.name])
                    .observe(start.elapsed().as_secs_f64());
            }
        }
        upstream_response.insert_header("countersign-request-id", ctx.request_id.as_str())?;
        let status = upstream_response.status.as_u16();
        self.state.telemetry.upstream_status(&mut ctx.trace, status);
        Ok(())
    }

    /// Upstream failures go through the same error table: 502 `upstream_unavailable`.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let rejection = match e.esource() {
            ErrorSource::Upstream => Refusal::UpstreamUnavailable,
            ErrorSource::Downstream => {
                ctx.outcome = "client_error";
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            ErrorSource::Internal | ErrorSource::Unset => Refusal::Internal,
        };
        tracing::warn!(request_id = %ctx.request_id, error = %e, "request failed");
        // Nothing can be sent if the response already started; the connection just closes.
        let code = if session.response_written().is_none() {
            self.send_rejection(session, ctx, rejection)
                .await
                .unwrap_or(0)
        } else {
            ctx.outcome = error::outcome(&rejection);
            0
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client that hangs up mid-request is routine (load generators do it by the thousand):
    /// not an error worth a log line. Upstream and internal failures are still logged.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        matches!(error.esource(), ErrorSource::Downstream)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        self.state
            .metrics
            .requests
            .with_label_values(&[&ctx.rule, ctx.outcome])
            .inc();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        tracing::info!(
            target: "countersign::access",
            parent: &ctx.span,
            status,
            outcome = ctx.outcome,
            elapsed_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            "done"
        );
        if self.state.telemetry.enabled() {
            self.finish_trace(ctx, status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
