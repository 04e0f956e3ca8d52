//! A minimal token issuer of our own: discovery + JWKS on loopback, keys generated per test.
//!
//! For tests that need control the real provider does not give: rotating or removing keys,
//! an outage, counting fetches, or signing arbitrary (also hostile) claims and headers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Kind of signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256, `alg` ES256.
    Es256,
    /// Ed25519, `alg` EdDSA.
    EdDsa,
}

#[derive(Debug, Clone)]
struct Key {
    kid: String,
    kind: KeyKind,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    published: bool,
}

impl Key {
    fn generate(kind: KeyKind, kid: String) -> Self {
        let rng = SystemRandom::new();
        let (pkcs8, public) = match kind {
            KeyKind::Es256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("generate P-256 key");
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                        .expect("parse P-256 key");
                (doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
            KeyKind::EdDsa => {
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate Ed25519 key");
                let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("parse Ed25519 key");
                (doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
        };
        Key {
            kid,
            kind,
            pkcs8,
            public,
            published: true,
        }
    }

    fn jwk(&self) -> Value {
        match self.kind {
            // Uncompressed point: 0x04 || x (32) || y (32).
            KeyKind::Es256 => json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&self.public[33..65]),
            }),
            KeyKind::EdDsa => json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(&self.public),
            }),
        }
    }

    fn algorithm(&self) -> jsonwebtoken::Algorithm {
        match self.kind {
            KeyKind::Es256 => jsonwebtoken::Algorithm::ES256,
            KeyKind::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        match self.kind {
            KeyKind::Es256 => jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
            KeyKind::EdDsa => jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    issuer: String,
    keys: Mutex<Vec<Key>>,
    down: AtomicBool,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    cache_control: Mutex<Option<String>>,
}

/// Discovery at `{issuer}/.well-known/openid-configuration`, JWKS at `{issuer}/jwks`.
///
/// Runs on the tokio runtime of the test that started it; stops on drop.
#[derive(Debug)]
pub struct LocalIssuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl LocalIssuer {
    /// Starts an issuer with one published ES256 key (kid `k1`).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind issuer");
        let addr = listener.local_addr().expect("issuer addr");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            keys: Mutex::new(vec![Key::generate(KeyKind::Es256, "k1".to_owned())]),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The issuer URL, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.shared.issuer)
    }

    /// Generates and publishes a new key; returns its kid.
    pub fn add_key(&self, kind: KeyKind, kid: &str) -> String {
        let mut keys = self.shared.keys.lock().expect("issuer lock");
        keys.retain(|k| k.kid != kid);
        keys.push(Key::generate(kind, kid.to_owned()));
        kid.to_owned()
    }

    /// Stops publishing `kid` (it can still sign, to test removed keys).
    pub fn unpublish(&self, kid: &str) {
        let mut keys = self.shared.keys.lock().expect("issuer lock");
        for k in keys.iter_mut().filter(|k| k.kid == kid) {
            k.published = false;
        }
    }

    /// Publishes `kid` again.
    pub fn publish(&self, kid: &str) {
        let mut keys = self.shared.keys.lock().expect("issuer lock");
        for k in keys.iter_mut().filter(|k| k.kid == kid) {
            k.published = true;
        }
    }

    /// While `down`, every endpoint answers 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// `Cache-Control` header to send with the JWKS (`None` = no header).
    pub fn set_jwks_cache_control(&self, value: Option<&str>) {
        *self.shared.cache_control.lock().expect("issuer lock") = value.map(str::to_owned);
    }

    /// Discovery documents served so far (not counting answers while down).
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// JWKS documents served so far (not counting answers while down).
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Claims for a valid token: `iss`, `sub`, `aud`, `iat` = now, `exp` = now + 5 min.
    pub fn claims(&self, sub: &str, aud: &str) -> Value {
        let now = now();
        json!({
            "iss": self.shared.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + 300,
        })
    }

    /// Signs `claims` with key `kid`, header `{alg, typ: "JWT", kid}`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let key = self.key(kid);
        let mut header = jsonwebtoken::Header::new(key.algorithm());
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding_key()).expect("sign token")
    }

    /// Signs `claims` with key `kid` under a custom `header` (its `alg` must fit the key).
    pub fn sign_with_header(
        &self,
        kid: &str,
        header: &jsonwebtoken::Header,
        claims: &Value,
    ) -> String {
        let key = self.key(kid);
        jsonwebtoken::encode(header, claims, &key.encoding_key()).expect("sign token")
    }

    /// A valid token from key `k1` for `sub` and `aud`, plus `extra` claims merged in.
    pub fn token(&self, sub: &str, aud: &str, extra: Value) -> String {
        let mut claims = self.claims(sub, aud);
        if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            c.extend(extra);
        }
        self.sign("k1", &claims)
    }

    fn key(&self, kid: &str) -> Key {
        self.shared
            .keys
            .lock()
            .expect("issuer lock")
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .unwrap_or_else(|| panic!("LocalIssuer has no key {kid}"))
    }
}

impl Drop for LocalIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "issuer": shared.issuer,
        "jwks_uri": format!("{}/jwks", shared.issuer),
        "token_endpoint": format!("{}/token", shared.issuer),
        "authorization_endpoint": format!("{}/auth", shared.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = shared
        .keys
        .lock()
        .expect("issuer lock")
        .iter()
        .filter(|k| k.published)
        .map(Key::jwk)
        .collect();
    let mut resp = Json(json!({ "keys": keys })).into_response();
    if let Some(cc) = shared.cache_control.lock().expect("issuer lock").clone() {
        if let Ok(v) = cc.parse() {
            resp.headers_mut().insert(header::CACHE_CONTROL, v);
        }
    }
    resp
}
