//! Sends an approved [`StoredRequest`] upstream, once, with the approval evidence attached.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::record::{ApprovalId, StoredHeader, StoredRequest};

/// Response headers that belong to the upstream connection, not to the caller.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// What the upstream answered.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// Status code.
    pub status: http::StatusCode,
    /// End-to-end headers (hop-by-hop and `Content-Length` removed; the body may be cut).
    pub headers: http::HeaderMap,
    /// Body, at most the cap given to [`Executor::send`].
    pub body: Bytes,
    /// Whether the body was longer than the cap and was cut.
    pub truncated: bool,
}

impl UpstreamResponse {
    /// Headers as stored records (for parking).
    pub fn stored_headers(&self) -> Vec<StoredHeader> {
        self.headers
            .iter()
            .map(|(n, v)| StoredHeader {
                name: n.as_str().to_owned(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    }
}

/// Why the upstream call failed. The proxy answers 502 for all of them.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The stored request cannot be turned into an HTTP request (bad URL, method or header).
    #[error("stored request is not sendable: {0}")]
    Invalid(String),
    /// The pinned CA file could not be read or parsed.
    #[error("upstream CA {path}: {reason}")]
    Ca {
        /// CA file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The stored request names an upstream this replica's config does not have.
    #[error("upstream {0:?} is not configured here")]
    UnknownUpstream(String),
    /// Connect, TLS, timeout or reading the response failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
}

/// What Countersign adds to a replayed request.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// The approval id (`Countersign-Approval-Id`).
    pub approval_id: &'a ApprovalId,
    /// The signed approval token (`Countersign-Approval`).
    pub token: &'a str,
}

/// Where a named upstream is, from this replica's config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// Origin without a trailing slash.
    url: String,
    /// CA bundle pinned for an `https://` upstream.
    ca: Option<PathBuf>,
}

/// Sends stored requests upstream with `reqwest` (rustls), one client per pinned CA.
///
/// Upstreams are known by name from the local config ([`Executor::with_upstream`]); a stored
/// request names one and never carries a URL, so a shared store cannot redirect a replay.
#[derive(Debug)]
pub struct Executor {
    clients: Mutex<HashMap<Option<PathBuf>, reqwest::Client>>,
    upstreams: HashMap<String, Target>,
    timeout: Duration,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl Executor {
    /// An executor whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            upstreams: HashMap::new(),
            timeout,
        }
    }

    /// Adds the upstream `name` at origin `url`, with `ca` pinned for `https://`.
    pub fn with_upstream(mut self, name: &str, url: &str, ca: Option<PathBuf>) -> Self {
        let target = Target {
            url: url.trim_end_matches('/').to_owned(),
            ca,
        };
        self.upstreams.insert(name.to_owned(), target);
        self
    }

    fn client(&self, ca: Option<&PathBuf>) -> Result<reqwest::Client, ExecutorError> {
        let mut clients = match self.clients.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = ca.cloned();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = build_client(ca, self.timeout)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Sends `req` to its upstream with `Countersign-Subject`, `Countersign-Approval` and
    /// `Countersign-Approval-Id`, reading at most `body_cap` bytes of the answer.
    pub async fn send(
        &self,
        req: &StoredRequest,
        evidence: &Evidence<'_>,
        body_cap: usize,
    ) -> Result<UpstreamResponse, ExecutorError> {
        let target = self
            .upstreams
            .get(&req.upstream)
            .ok_or_else(|| ExecutorError::UnknownUpstream(req.upstream.clone()))?;
        let client = self.client(target.ca.as_ref())?;
        let url = format!("{}{}", target.url, req.path_and_query());
        let url = reqwest::Url::parse(&url).map_err(|e| ExecutorError::Invalid(e.to_string()))?;
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| ExecutorError::Invalid(e.to_string()))?;
        let headers = request_headers(req, evidence)?;
        let mut resp = client
            .request(method, url)
            .headers(headers)
            .body(req.body.clone())
            .send()
            .await
            // Without the URL: its query may carry secrets, and this text reaches the audit log.
            .map_err(|e| ExecutorError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let mut headers = resp.headers().clone();
        for h in HOP_BY_HOP {
            headers.remove(*h);
        }
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ExecutorError::Unreachable(e.without_url().to_string()))?
        {
            let room = body_cap.saturating_sub(body.len());
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body: Bytes::from(body),
            truncated,
        })
    }
}

fn request_headers(
    req: &StoredRequest,
    evidence: &Evidence<'_>,
) -> Result<http::HeaderMap, ExecutorError> {
    let invalid = |e: String| ExecutorError::Invalid(e);
    let mut map = http::HeaderMap::new();
    for h in &req.headers {
        let name =
            http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let value = http::HeaderValue::from_bytes(&h.value).map_err(|e| invalid(e.to_string()))?;
        map.append(name, value);
    }
    let mut set = |name: &'static str, value: &str| -> Result<(), ExecutorError> {
        let v = http::HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
        map.insert(http::HeaderName::from_static(name), v);
        Ok(())
    };
    // Upstream sees the host the caller asked for, as with proxied requests.
    set("host", &req.host)?;
    set("countersign-subject", &req.subject)?;
    if !req.issuer.is_empty() {
        set("countersign-issuer", &req.issuer)?;
    }
    set("countersign-approval", evidence.token)?;
    set("countersign-approval-id", evidence.approval_id.as_str())?;
    if let Some(request_id) = &req.request_id {
        set("countersign-request-id", request_id)?;
    }
    Ok(map)
}

fn build_client(ca: Option<&PathBuf>, timeout: Duration) -> Result<reqwest::Client, ExecutorError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5));
    if let Some(path) = ca {
        let ca_err = |reason: String| ExecutorError::Ca {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no certificate in file".to_owned()));
        }
        // Pinned: only this CA, not the built-in roots.
        builder = builder.tls_built_in_root_certs(false);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| ExecutorError::Invalid(e.to_string()))
}
