//! Upstream peers, built once at start: addresses resolved, TLS settings and pinned CAs loaded.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use crate::config::Upstream;

/// A ready-to-clone peer for one `[[upstream]]`.
#[derive(Debug, Clone)]
pub struct UpstreamPeer {
    /// The upstream's name (metrics label).
    pub name: Arc<str>,
    peer: HttpPeer,
}

/// Why an upstream could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The host name did not resolve.
    #[error("upstream {name}: cannot resolve {host}: {reason}")]
    Resolve {
        /// Upstream name.
        name: String,
        /// Host that failed.
        host: String,
        /// Resolver error.
        reason: String,
    },
    /// The pinned CA file could not be read or holds no certificate.
    #[error("upstream {name}: CA file {path}: {reason}")]
    Ca {
        /// Upstream name.
        name: String,
        /// CA path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl UpstreamPeer {
    /// Resolves and prepares `u`.
    pub fn new(u: &Upstream) -> Result<Self, UpstreamError> {
        let host = u.url.host_str().unwrap_or_default().to_owned();
        let tls = u.url.scheme() == "https";
        let port = u
            .url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        // Bracketed IPv6 literals come back from `url` with brackets; strip them for SNI.
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = resolve(&bare_host, port).map_err(|reason| UpstreamError::Resolve {
            name: u.name.clone(),
            host: host.clone(),
            reason,
        })?;
        let mut peer = HttpPeer::new(addr, tls, bare_host);
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(10));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if tls {
            peer.options.alpn = ALPN::H2H1;
            if let Some(ca) = &u.ca {
                peer.options.ca = Some(load_ca(&u.name, ca)?);
            }
        }
        Ok(Self {
            name: Arc::from(u.name.as_str()),
            peer,
        })
    }

    /// A fresh peer for one request.
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.peer.clone())
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_owned())
}

fn load_ca(
    name: &str,
    path: &std::path::Path,
) -> Result<Arc<pingora::protocols::tls::CaType>, UpstreamError> {
    let err = |reason: String| UpstreamError::Ca {
        name: name.to_owned(),
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut certs = Vec::new();
    for item in rustls_pemfile_certs(&pem).map_err(err)? {
        certs.push(WrappedX509::new(item, |raw| {
            pingora::utils::tls::parse_x509(raw)
        }));
    }
    if certs.is_empty() {
        return Err(err("no certificate in file".to_owned()));
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}

/// DER certificates from a PEM bundle.
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| e.to_string()))
        .collect()
}
