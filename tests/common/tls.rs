//! Test certificates: a CA and a server certificate it issued for 127.0.0.1 and localhost.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh CA and a server certificate (SANs `127.0.0.1`, `localhost`) written as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFixture {
    /// CA certificate PEM file (what a client or `ca = ...` pins).
    pub ca_pem: PathBuf,
    /// Server certificate chain PEM file (leaf then CA).
    pub cert_pem: PathBuf,
    /// Server private key PEM file (PKCS#8).
    pub key_pem: PathBuf,
    ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TlsFixture {
    /// Generates a CA named `name` and a server certificate, writing
    /// `{name}-ca.pem`, `{name}-cert.pem` and `{name}-key.pem` into `dir`.
    pub fn generate(dir: &Path, name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("Countersign test CA {name}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("sign server certificate");

        std::fs::create_dir_all(dir).expect("create cert folder");
        let ca_pem = dir.join(format!("{name}-ca.pem"));
        let cert_pem = dir.join(format!("{name}-cert.pem"));
        let key_pem = dir.join(format!("{name}-key.pem"));
        std::fs::write(&ca_pem, ca_cert.pem()).expect("write CA");
        std::fs::write(&cert_pem, format!("{}{}", cert.pem(), ca_cert.pem())).expect("write cert");
        std::fs::write(&key_pem, key.serialize_pem()).expect("write key");
        Self {
            ca_pem,
            cert_pem,
            key_pem,
            ca_der: ca_cert.der().to_vec(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// The CA as a reqwest root certificate.
    pub fn reqwest_ca(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_der(&self.ca_der).expect("CA DER for reqwest")
    }

    /// A reqwest client that trusts this CA (besides the built-in roots, which never match a
    /// loopback certificate).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(self.reqwest_ca())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("TLS reqwest client")
    }

    /// Like [`TlsFixture::client`] but speaking only HTTP/2 (ALPN `h2`).
    pub fn h2_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(self.reqwest_ca())
            .http2_prior_knowledge()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("TLS h2 reqwest client")
    }

    /// A rustls acceptor serving the server certificate (HTTP/1.1 ALPN).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![
            CertificateDer::from(self.cert_der.clone()),
            CertificateDer::from(self.ca_der.clone()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
