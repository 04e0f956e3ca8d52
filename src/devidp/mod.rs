//! A development OIDC issuer on loopback: discovery, JWKS and token minting, for
//! `countersign demo` and for tests. It signs with committed or freshly generated keys, so it is
//! never for production use.
//!
//! Besides well-behaved tokens it mints whatever a test needs to attack a verifier (exact
//! headers, keys absent from the JWKS, raw signatures), and it can fail on purpose (outage),
//! rotate and remove keys, set the JWKS `Cache-Control`, and count the fetches it served.
//!
//! Why it is in release builds: `countersign demo`, a subcommand of the shipped binary, starts
//! it as the demo's token issuer. Nothing else does: no config key, route or flag of `run`
//! reaches it, and it binds 127.0.0.1 only while the demo runs.

mod keys;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use crate::clock::{SharedClock, SystemClock};
pub use keys::KeyKind;
use keys::{b64, DevKey};

/// Lifetime of tokens minted by [`DevIdp::mint`] without an `exp`.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// A running development issuer. Cheap to clone; the server stops when the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct DevIdp {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

/// State shared with the HTTP handlers.
#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    clock: SharedClock,
    keys: Mutex<Keys>,
    outage: AtomicBool,
    cache_control: Mutex<Option<String>>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

#[derive(Debug, Default)]
struct Keys {
    all: Vec<DevKey>,
    default_kid: String,
    /// Keys made so far (numbers kids, picks the next committed RSA PEM).
    made: usize,
    rsa_made: usize,
}

/// Stops the server when dropped.
#[derive(Debug)]
struct StopOnDrop(Option<oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

impl DevIdp {
    /// Starts an issuer on `127.0.0.1` (ephemeral port) with one RSA-2048 default key, using the
    /// system clock for `iat`/`exp`.
    pub async fn start() -> std::io::Result<DevIdp> {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Like [`DevIdp::start`], with `iat`/`exp` taken from `clock`.
    pub async fn start_with_clock(clock: SharedClock) -> std::io::Result<DevIdp> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            addr,
            clock,
            keys: Mutex::new(Keys::default()),
            outage: AtomicBool::new(false),
            cache_control: Mutex::new(None),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks.json", get(jwks))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let stopped = async {
                let _ = stop_rx.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(%error, "development issuer stopped");
            }
        });
        let idp = DevIdp {
            shared,
            _stop: Arc::new(StopOnDrop(Some(stop_tx))),
        };
        let kid = idp
            .try_add_key(KeyKind::Rsa2048)
            .map_err(std::io::Error::other)?;
        lock(&idp.shared.keys).default_kid = kid;
        Ok(idp)
    }

    /// `http://127.0.0.1:PORT`: the `iss` of its tokens.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Where its JWKS is served.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.issuer())
    }

    /// The kid of the default (RS256) key.
    pub fn default_kid(&self) -> String {
        lock(&self.shared.keys).default_kid.clone()
    }

    /// Adds a key, published in the JWKS; returns its kid. An empty string if the key could not
    /// be made (never happens with the committed keys and a working RNG).
    pub fn add_key(&self, kind: KeyKind) -> String {
        self.try_add_key(kind).unwrap_or_else(|error| {
            tracing::error!(%error, "development issuer could not make a key");
            String::new()
        })
    }

    fn try_add_key(&self, kind: KeyKind) -> Result<String, String> {
        let mut keys = lock(&self.shared.keys);
        keys.made += 1;
        let label = match kind {
            KeyKind::Rsa2048 => "rsa",
            KeyKind::Rsa1024 => "rsa1024",
            KeyKind::P256 => "p256",
            KeyKind::Ed25519 => "ed25519",
        };
        let kid = format!("dev-{label}-{}", keys.made);
        let key = DevKey::new(kind, kid.clone(), keys.rsa_made)?;
        if kind == KeyKind::Rsa2048 {
            keys.rsa_made += 1;
        }
        keys.all.push(key);
        Ok(kid)
    }

    /// Takes a key out of the JWKS. It can still sign (tokens that must now be rejected).
    pub fn remove_key(&self, kid: &str) {
        let mut keys = lock(&self.shared.keys);
        for key in keys.all.iter_mut().filter(|k| k.kid == kid) {
            key.published = false;
        }
    }

    /// Mints a token with the default key (RS256): `claims` plus `iss`, `iat` and `exp`
    /// (now + 1 h) unless given.
    pub fn mint(&self, claims: Value) -> String {
        let mut claims = match claims {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let now = self.shared.clock.unix();
        claims.entry("iss").or_insert_with(|| json!(self.issuer()));
        claims.entry("iat").or_insert_with(|| json!(now));
        claims
            .entry("exp")
            .or_insert_with(|| json!(now + DEFAULT_TTL.as_secs()));
        let kid = self.default_kid();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        self.mint_with(&kid, header, Value::Object(claims))
    }

    /// Mints a token with exactly `header` and `claims`, signed by key `kid` (whether or not it
    /// is published) with the header's `alg` if the key supports it, else the key's own
    /// algorithm. Nothing is added or checked: this makes attack tokens.
    pub fn mint_with(&self, kid: &str, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let signature = self.sign_as(kid, Some(alg), input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }

    /// Signs raw bytes with key `kid` and its own algorithm (RS256, ES256 as 64-byte r||s, or
    /// EdDSA). Empty for an unknown kid.
    pub fn sign(&self, kid: &str, signing_input: &[u8]) -> Vec<u8> {
        self.sign_as(kid, None, signing_input)
    }

    fn sign_as(&self, kid: &str, alg: Option<&str>, input: &[u8]) -> Vec<u8> {
        self.with_key(kid, |key| {
            let alg = alg.filter(|a| key.supports(a)).unwrap_or(key.default_alg());
            key.sign(alg, input)
        })
        .unwrap_or_default()
    }

    /// The public key `kid` as an SPKI PEM (empty for an unknown kid).
    pub fn public_pem(&self, kid: &str) -> String {
        self.with_key(kid, |k| k.public_pem.clone())
            .unwrap_or_default()
    }

    /// The public JWK of key `kid` (`Null` for an unknown kid), e.g. to embed in a `jwk` header.
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.with_key(kid, |k| k.jwk.clone()).unwrap_or(Value::Null)
    }

    /// `f` of the key `kid`; `None` for an unknown kid.
    fn with_key<T>(&self, kid: &str, f: impl FnOnce(&DevKey) -> T) -> Option<T> {
        lock(&self.shared.keys)
            .all
            .iter()
            .find(|k| k.kid == kid)
            .map(f)
    }

    /// While `down`, discovery and JWKS answer 503.
    pub fn set_outage(&self, down: bool) {
        self.shared.outage.store(down, Ordering::SeqCst);
    }

    /// The `Cache-Control` header of JWKS responses (`None`: no header).
    pub fn set_cache_control(&self, value: Option<String>) {
        *lock(&self.shared.cache_control) = value;
    }

    /// JWKS requests served so far (including ones answered 503).
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Discovery requests served so far (including ones answered 503).
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }
}

/// Locks, ignoring poisoning (the data stays consistent: every critical section is tiny).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if shared.outage.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let issuer = format!("http://{}", shared.addr);
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks.json"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if shared.outage.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = lock(&shared.keys)
        .all
        .iter()
        .filter(|k| k.published)
        .map(|k| k.jwk.clone())
        .collect();
    let mut response = Json(json!({ "keys": keys })).into_response();
    let cache_control = lock(&shared.cache_control).clone();
    if let Some(value) = cache_control.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde_json::Value;

    use super::{DevIdp, KeyKind};

    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).expect("base64 PEM body")
    }

    #[tokio::test]
    async fn serves_discovery_jwks_and_outages() {
        let idp = DevIdp::start().await.expect("starts");
        let ec = idp.add_key(KeyKind::P256);
        let ed = idp.add_key(KeyKind::Ed25519);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("{}/.well-known/openid-configuration", idp.issuer());
        let doc: Value = http
            .get(&url)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(doc["issuer"], idp.issuer());
        assert_eq!(doc["jwks_uri"], idp.jwks_uri());

        idp.set_cache_control(Some("max-age=7".to_owned()));
        idp.remove_key(&ed);
        let response = http.get(idp.jwks_uri()).send().await.expect("get");
        assert_eq!(response.headers()["cache-control"], "max-age=7");
        let jwks: Value = response.json().await.expect("json");
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, [idp.default_kid().as_str(), ec.as_str()]);

        idp.set_outage(true);
        let status = http.get(idp.jwks_uri()).send().await.expect("get").status();
        assert_eq!(status, 503);
        assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 2));
    }

    #[tokio::test]
    async fn public_pems_are_spki_of_the_published_keys() {
        let idp = DevIdp::start().await.expect("starts");
        let ec = idp.add_key(KeyKind::P256);
        let ed = idp.add_key(KeyKind::Ed25519);
        let rsa = idp.default_kid();
        assert_eq!(
            idp.public_pem(&rsa),
            include_str!("../../certs/dev/rsa2048-1.pub.pem")
        );
        let jwk = idp.public_jwk(&ec);
        let der = pem_der(&idp.public_pem(&ec));
        assert_eq!(der.len(), 91);
        let x = super::b64(&der[27..59]);
        assert_eq!(jwk["x"], x);
        let der = pem_der(&idp.public_pem(&ed));
        assert_eq!(idp.public_jwk(&ed)["x"], super::b64(&der[12..]));
        assert_eq!(idp.public_pem("nope"), "");
        assert!(idp.sign("nope", b"x").is_empty());
    }
}
