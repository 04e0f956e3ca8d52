//! The control-plane listener (separate port from the data plane): `/healthz`, `/readyz`,
//! `/metrics`. Approval pages, chat callbacks and the approval API join it later.
//!
//! Runs as a pingora background service on its own runtime, together with the other
//! background work (JWKS refresh, policy reload).

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::approval::Broker;
use crate::metrics::Metrics;
use crate::oidc::Verifier;

pub mod api;
pub mod grants;
pub mod html;
pub mod login;
pub mod pages;
pub mod session;
pub mod urls;
pub mod web;

/// What the control plane needs.
#[derive(Debug, Clone)]
pub struct ControlState {
    /// Token verification (readiness = every issuer has keys).
    pub verifier: Verifier,
    /// Metrics to render.
    pub metrics: Metrics,
    /// The approval lifecycle.
    pub broker: Broker,
    /// `[server] public_url` without a trailing slash.
    pub public_url: String,
    /// Approver sessions, when `[approver_login]` is configured.
    pub sessions: Option<session::Sessions>,
    /// The approver login flow, when `[approver_login]` is configured.
    pub login: Option<Arc<login::Login>>,
    /// The data-plane listen address (readiness waits until it accepts connections).
    pub data_addr: std::net::SocketAddr,
    /// Set once the data plane accepted a connection.
    pub data_up: Arc<std::sync::atomic::AtomicBool>,
    /// Slack, when `[slack]` is configured (serves `POST /slack/interactions`).
    pub slack: Option<crate::chat::slack::SlackApp>,
    /// The Teams bot, when `[teams]` is in bot mode (serves `POST /teams/messages`).
    pub teams_bot: Option<crate::chat::teams_bot::TeamsBot>,
}

impl ControlState {
    /// Whether the data-plane listener accepts connections (checked once, then remembered).
    async fn data_listening(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.data_up.load(Ordering::Relaxed) {
            return true;
        }
        let mut addr = self.data_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let up = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if up {
            self.data_up.store(true, Ordering::Relaxed);
        }
        up
    }
}

/// An axum handler for a `/{id}` endpoint written as `f(&state, &headers, &id)`, or as
/// `f(&state, &headers, &id, &body)` when given `body`: the extractors are spelled here once
/// instead of in a wrapper per endpoint.
macro_rules! by_id {
    ($f:path) => {
        |State(s): State<Arc<ControlState>>, Path(id): Path<String>, headers: HeaderMap| async move {
            $f(&s, &headers, &id).await
        }
    };
    ($f:path, body) => {
        |State(s): State<Arc<ControlState>>,
         Path(id): Path<String>,
         headers: HeaderMap,
         body: axum::body::Bytes| async move { $f(&s, &headers, &id, &body).await }
    };
}

/// The control-plane router.
pub fn router(state: ControlState) -> Router {
    let login = state.login.clone();
    let slack = state
        .slack
        .clone()
        .map(|app| crate::chat::slack::router(app, state.broker.clone()));
    let teams_bot = state
        .teams_bot
        .clone()
        .map(|bot| crate::chat::teams_bot::router(bot, state.broker.clone()));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(api::jwks))
        .route("/approvals", get(approvals_list))
        .route(
            "/approvals/{id}",
            get(by_id!(approval_get)).delete(by_id!(api::cancel)),
        )
        .route(
            "/approvals/{id}/decision",
            axum::routing::post(by_id!(decision, body)),
        )
        .route("/approvals/{id}/result", get(by_id!(api::result)))
        .route("/grants", get(grants_list))
        .route(
            "/grants/{id}",
            axum::routing::delete(by_id!(grants::revoke)),
        )
        .route(
            "/grants/{id}/revoke",
            axum::routing::post(by_id!(grants::revoke_form, body)),
        )
        .fallback(not_found)
        .with_state(Arc::new(state));
    let router = match login {
        Some(l) => router.merge(login::router(l)),
        None => router,
    };
    let router = match slack {
        Some(s) => router.merge(s),
        None => router,
    };
    match teams_bot {
        Some(t) => router.merge(t),
        None => router,
    }
}

async fn approvals_list(
    State(s): State<Arc<ControlState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    if api::wants_json(&headers) {
        api::list(&s, &headers, query.as_deref()).await
    } else {
        web::list(&s, &headers).await
    }
}

async fn approval_get(s: &ControlState, headers: &HeaderMap, id: &str) -> Response {
    if api::wants_json(headers) {
        api::get_one(s, headers, id).await
    } else {
        web::detail(s, headers, id).await
    }
}

async fn decision(s: &ControlState, headers: &HeaderMap, id: &str, body: &[u8]) -> Response {
    if web::is_form(headers) {
        web::decide(s, headers, id, body).await
    } else {
        api::decide_api(s, headers, id, body).await
    }
}

async fn grants_list(State(s): State<Arc<ControlState>>, headers: HeaderMap) -> Response {
    if api::wants_json(&headers) {
        grants::list(&s, &headers).await
    } else {
        grants::page(&s, &headers).await
    }
}

async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

async fn readyz(State(s): State<Arc<ControlState>>) -> Response {
    if !s.data_listening().await {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": "data plane not listening yet"}),
        );
    }
    // A read of an id that cannot exist: cheap, and proves the store answers.
    if s.broker
        .get(&crate::approval::ApprovalId::generate())
        .await
        .is_err()
    {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": "approval store unreachable"}),
        );
    }
    if s.verifier.ready() {
        json(StatusCode::OK, serde_json::json!({"status": "ready"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": "issuer keys not loaded"}),
        )
    }
}

async fn metrics(State(s): State<Arc<ControlState>>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    api::refuse(crate::respond::Refusal::NoEndpoint)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Serves the control plane and runs background work until shutdown.
pub struct ControlService {
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    state: ControlState,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlService").finish_non_exhaustive()
    }
}

impl ControlService {
    /// `listener` is bound already (so a busy port fails at start, not later).
    pub fn new(listener: std::net::TcpListener, state: ControlState) -> Self {
        Self {
            listener: std::sync::Mutex::new(Some(listener)),
            state,
        }
    }
}

#[async_trait]
impl BackgroundService for ControlService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let std_listener = match self.listener.lock() {
            Ok(mut l) => l.take(),
            Err(_) => None,
        };
        let Some(std_listener) = std_listener else {
            tracing::error!("control listener already taken");
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "control listener unusable");
                return;
            }
        };
        let app = router(self.state.clone());
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "control plane stopped");
        }
    }
}
