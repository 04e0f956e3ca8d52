//! An upstream that records what the proxy forwarded and echoes it back as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::tls::TlsFixture;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path and query, e.g. `/v1/x?y=1`.
    pub uri: String,
    /// Every header, in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    status: AtomicU16,
    latency_ms: AtomicU64,
}

/// An HTTP/1.1 upstream on 127.0.0.1 (plain or TLS) that answers every request with a JSON echo
/// `{"method", "uri", "headers": {name: value}, "body"}` and records it.
///
/// Runs on the tokio runtime of the test that started it; stops on drop.
#[derive(Debug)]
pub struct EchoUpstream {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl EchoUpstream {
    /// Starts a plain-HTTP echo upstream answering 200.
    pub async fn start() -> Self {
        Self::spawn(None).await
    }

    /// Starts an HTTPS echo upstream whose certificate is `fixture`'s server certificate
    /// (issued by `fixture`'s CA for 127.0.0.1 and localhost).
    pub async fn start_tls(fixture: &TlsFixture) -> Self {
        Self::spawn(Some(fixture.acceptor())).await
    }

    async fn spawn(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo upstream");
        let addr = listener.local_addr().expect("echo addr");
        let shared = Arc::new(Shared {
            status: AtomicU16::new(200),
            ..Shared::default()
        });
        let is_tls = tls.is_some();
        let task = tokio::spawn(accept_loop(listener, tls, shared.clone()));
        Self {
            addr,
            tls: is_tls,
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` for the TLS variant (the
    /// certificate has an IP SAN for it; `localhost` could resolve to `::1`, where nothing
    /// listens).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://{}", self.addr)
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("echo lock").clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.shared.requests.lock().expect("echo lock").len()
    }

    /// How often approval `id` was executed: the calls carrying `Countersign-Approval-Id: id`,
    /// counted now (ask once the execution has finished: the held answer or the parked result
    /// arrived) and again after `quiet`, in which a stray second execution would land. The two
    /// counts must agree.
    pub async fn executions_of(&self, id: &str, quiet: std::time::Duration) -> usize {
        let count = || {
            self.requests()
                .iter()
                .filter(|r| r.header("countersign-approval-id") == Some(id))
                .count()
        };
        let now = count();
        tokio::time::sleep(quiet).await;
        let later = count();
        assert_eq!(
            now, later,
            "approval {id} executed again during the quiet window"
        );
        later
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .expect("echo lock")
            .last()
            .cloned()
    }

    /// Answer with `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Wait `latency` before answering, from now on.
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(ms, Ordering::SeqCst);
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, shared.clone()));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    // A failed handshake (e.g. the proxy rejecting our certificate) is the
                    // point of some tests; nothing to record.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.to_string());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": uri,
        "headers": headers
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "body": String::from_utf8_lossy(&body),
    });
    shared
        .requests
        .lock()
        .expect("echo lock")
        .push(RecordedRequest {
            method: parts.method.to_string(),
            uri,
            headers,
            body,
        });
    let latency = shared.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let status = shared.status.load(Ordering::SeqCst);
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo", "1")
        .body(Full::new(Bytes::from(echo.to_string())))
        .expect("valid echo response");
    Ok(resp)
}
