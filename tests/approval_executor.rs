//! The executor against real local upstreams: plain HTTP, HTTPS with a pinned CA, a CA that
//! does not match, and body caps.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use countersign::approval::{ApprovalId, Evidence, Executor, ExecutorError, StoredRequest};

/// A fixed response body (axum's body type implements hyper's `Body`).
fn full(b: &'static str) -> axum::body::Body {
    axum::body::Body::from(b)
}

struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

/// An HTTPS server on 127.0.0.1 answering 200 "tls ok" with the request's Host echoed.
async fn start_tls_upstream(p: &Pki) -> u16 {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(p.leaf_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.leaf_key_der.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let resp = http::Response::builder()
                            .status(200)
                            .header("x-host-seen", host)
                            .body(full("tls ok"))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// A stored request for the upstream named `up`.
fn stored() -> StoredRequest {
    StoredRequest::new(
        &http::Method::POST,
        "deploy.example.com",
        "/v1/x",
        None,
        &http::HeaderMap::new(),
        b"{}".to_vec(),
        "up",
        "user-1",
    )
}

fn evidence(id: &ApprovalId) -> Evidence<'_> {
    Evidence {
        approval_id: id,
        token: "header.claims.sig",
    }
}

#[tokio::test]
async fn https_upstream_with_pinned_ca_is_trusted() {
    let p = pki();
    let port = start_tls_upstream(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &p.ca_pem).unwrap();
    let id = ApprovalId::generate();
    let resp = Executor::new(Duration::from_secs(5))
        .with_upstream("up", &format!("https://localhost:{port}"), Some(ca_path))
        .send(&stored(), &evidence(&id), 1024)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"tls ok");
    assert_eq!(resp.headers["x-host-seen"], "deploy.example.com");
}

#[tokio::test]
async fn https_upstream_signed_by_another_ca_is_refused() {
    let served = pki();
    let other = pki();
    let port = start_tls_upstream(&served).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("other.pem");
    std::fs::write(&ca_path, &other.ca_pem).unwrap();
    let id = ApprovalId::generate();
    let err = Executor::new(Duration::from_secs(5))
        .with_upstream("up", &format!("https://localhost:{port}"), Some(ca_path))
        .send(&stored(), &evidence(&id), 1024)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("empty.pem");
    std::fs::write(&ca_path, "not a certificate").unwrap();
    let id = ApprovalId::generate();
    let err = Executor::default()
        .with_upstream("up", "https://localhost:1", Some(ca_path))
        .send(&stored(), &evidence(&id), 1024)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::Ca { .. }), "{err}");
}

#[tokio::test]
async fn long_bodies_are_cut_at_the_cap_and_flagged() {
    let app = axum::Router::new().fallback(|| async { "x".repeat(10_000) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let id = ApprovalId::generate();
    let exec = Executor::default().with_upstream("up", &format!("http://{addr}/"), None);
    let cut = exec.send(&stored(), &evidence(&id), 100).await.unwrap();
    assert_eq!(cut.body.len(), 100);
    assert!(cut.truncated);
    let whole = exec.send(&stored(), &evidence(&id), 10_000).await.unwrap();
    assert_eq!(whole.body.len(), 10_000);
    assert!(!whole.truncated);
    assert!(whole.headers.get("content-length").is_none());
}

#[tokio::test]
async fn an_upstream_name_this_replica_does_not_configure_is_refused() {
    // A stored request names its upstream; only the local config says where that is (SPEC 8).
    let id = ApprovalId::generate();
    let err = Executor::default()
        .with_upstream("other", "http://127.0.0.1:1", None)
        .send(&stored(), &evidence(&id), 1024)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecutorError::UnknownUpstream(name) if name == "up"),
        "{err}"
    );
}
