//! The control-plane listener (separate port from the data plane): `/healthz`, `/readyz`,
//! `/metrics`. Approval pages, chat callbacks and the approval API join it later.
//!
//! Runs as a pingora background service on its own runtime, together with the other
//! background work (JWKS refresh, policy reload).

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::oidc::Verifier;

/// What the control plane needs.
#[derive(Debug, Clone)]
pub struct ControlState {
    /// Token verification (readiness = every issuer has keys).
    pub verifier: Verifier,
    /// Metrics to render.
    pub metrics: Metrics,
}

/// The control-plane router.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Arc::new(state))
}

async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

async fn readyz(State(s): State<Arc<ControlState>>) -> Response {
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
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not_found", "error_description": "no such endpoint"}),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Serves the control plane and runs background work until shutdown.
pub struct ControlService {
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    state: ControlState,
    tasks: Vec<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlService").finish_non_exhaustive()
    }
}

impl ControlService {
    /// `listener` is bound already (so a busy port fails at start, not later). `tasks` are
    /// started on the service's runtime before serving (JWKS refresh, policy reload, ...).
    pub fn new(
        listener: std::net::TcpListener,
        state: ControlState,
        tasks: Vec<Box<dyn Fn() + Send + Sync>>,
    ) -> Self {
        Self {
            listener: std::sync::Mutex::new(Some(listener)),
            state,
            tasks,
        }
    }
}

#[async_trait]
impl BackgroundService for ControlService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        for task in &self.tasks {
            task();
        }
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
