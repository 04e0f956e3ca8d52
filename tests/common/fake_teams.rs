//! A fake Microsoft Teams Workflows webhook: records every POSTed JSON body and answers what the
//! test scripted (default `202 Accepted`, as the real Workflows trigger does).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

/// One POST the fake received.
#[derive(Debug, Clone)]
pub struct TeamsPost {
    /// Path and query as requested.
    pub uri: String,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// The body parsed as JSON (`Null` when it was not JSON).
    pub json: serde_json::Value,
    /// The status the fake answered.
    pub answered: u16,
}

/// A scripted answer.
#[derive(Debug, Clone, Copy)]
struct Scripted {
    status: u16,
    retry_after: Option<u64>,
}

#[derive(Debug, Default)]
struct Shared {
    posts: Mutex<Vec<TeamsPost>>,
    script: Mutex<VecDeque<Scripted>>,
    always: Mutex<Option<Scripted>>,
}

/// The fake endpoint on 127.0.0.1 (ephemeral port); stopped on drop.
#[derive(Debug)]
pub struct FakeTeams {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// The path of a real Workflows trigger has this shape; its `sig` is the secret capability.
const WEBHOOK_PATH: &str =
    "/workflows/7f3c0d2ab1e94c55a6e0c0ffee1234ab/triggers/manual/paths/invoke";

impl FakeTeams {
    /// Starts the fake (answers 202 to everything until told otherwise).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake teams");
        let addr = listener.local_addr().expect("fake teams addr");
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// A webhook URL shaped like a real one, with `sig` = `secret` in the query.
    pub fn webhook_url(&self, secret: &str) -> String {
        format!(
            "http://{}{WEBHOOK_PATH}?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={secret}",
            self.addr
        )
    }

    /// The next `n` requests are answered `status` (with `Retry-After: secs` if given).
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let mut script = self.shared.script.lock().expect("script lock");
        for _ in 0..n {
            script.push_back(Scripted {
                status,
                retry_after,
            });
        }
    }

    /// Every request from now on is answered `status` (after any scripted ones).
    pub fn fail_always(&self, status: u16) {
        *self.shared.always.lock().expect("always lock") = Some(Scripted {
            status,
            retry_after: None,
        });
    }

    /// Everything received so far, failed tries included.
    pub fn posts(&self) -> Vec<TeamsPost> {
        self.shared.posts.lock().expect("posts lock").clone()
    }

    /// The bodies that were answered with a 2xx (what a Teams channel would show).
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.posts()
            .into_iter()
            .filter(|p| (200..300).contains(&p.answered))
            .map(|p| p.json)
            .collect()
    }
}

impl Drop for FakeTeams {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let next = shared.script.lock().expect("script lock").pop_front();
    let answer = next
        .or(*shared.always.lock().expect("always lock"))
        .unwrap_or(Scripted {
            status: 202,
            retry_after: None,
        });
    shared.posts.lock().expect("posts lock").push(TeamsPost {
        uri: uri.to_string(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        answered: answer.status,
    });
    let status = StatusCode::from_u16(answer.status).expect("scripted status");
    let mut response = (status, "").into_response();
    if let Some(secs) = answer.retry_after {
        response.headers_mut().insert(
            "retry-after",
            secs.to_string().parse().expect("header value"),
        );
    }
    response
}
