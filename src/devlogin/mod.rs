//! A tiny OpenID Provider for `countersign demo` and tests: zero setup, no network, loopback
//! only, no passwords ("sign in as alice@example.com").
//!
//! Serves discovery, a JWKS with an ES256 key generated at start, `/authorize` (a form: pick
//! who you are, then back to the client with a code) and `/token` (authorization_code with a
//! mandatory PKCE S256 check, client auth by `client_secret_basic` or `client_secret_post`),
//! issuing ID tokens with `sub`, `email`, `email_verified`, `auth_time`, `acr`, `nonce`, `aud`,
//! `iss`, `exp`. It never remembers a login, so every authorization shows the form: that is how
//! it honours `max_age=0` and `prompt=login`.
//!
//! Runs on its own thread and runtime so it can be started from sync or async code alike.
//! Never use it for anything but development: anyone who can reach it can be anyone.
//!
//! Why it is in release builds: `countersign demo`, a subcommand of the shipped binary, starts
//! it as the demo's approver login. Nothing else does: no config key, route or flag of `run`
//! reaches it, and it binds loopback only while the demo runs.

mod keys;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use askama::Template;
use axum::extract::{Form, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::secret::Secret;
use keys::Signer;

/// The people offered on the sign-in form.
pub const DEMO_USERS: &[&str] = &["alice@example.com", "bob@example.com", "carol@example.com"];

/// The `acr` every ID token carries.
pub const DEMO_ACR: &str = "urn:countersign:demo";

/// How long an authorization code can be redeemed.
const CODE_TTL: Duration = Duration::from_secs(60);

/// How long ID and access tokens last.
const TOKEN_TTL: Duration = Duration::from_secs(300);

/// A running development login issuer. Stops when dropped.
#[derive(Debug)]
pub struct DevLogin {
    issuer: String,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DevLogin {
    /// Starts an issuer on `127.0.0.1` (a free port) for one client.
    pub fn start(
        client_id: &str,
        client_secret: Option<Secret>,
        redirect_uri: &str,
    ) -> io::Result<DevLogin> {
        Self::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            client_id,
            client_secret,
            redirect_uri,
        )
    }

    /// Starts an issuer on `addr` (must be a loopback address) for one client.
    pub fn start_on(
        addr: SocketAddr,
        client_id: &str,
        client_secret: Option<Secret>,
        redirect_uri: &str,
    ) -> io::Result<DevLogin> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the development login only listens on loopback",
            ));
        }
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let state = Arc::new(Provider {
            issuer: issuer.clone(),
            client_id: client_id.to_owned(),
            client_secret,
            redirect_uri: redirect_uri.to_owned(),
            signer: Signer::generate()?,
            codes: Mutex::new(HashMap::new()),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("devlogin".into())
            .spawn(move || runtime.block_on(serve(listener, state, rx)))?;
        Ok(DevLogin {
            issuer,
            addr,
            shutdown: Some(tx),
        })
    }

    /// The issuer URL (`http://127.0.0.1:PORT`, no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DevLogin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Provider>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "development login cannot listen");
            return;
        }
    };
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize_form).post(authorize_submit))
        .route("/token", axum::routing::post(token))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "development login stopped");
    }
}

/// The issuer's state.
struct Provider {
    issuer: String,
    client_id: String,
    client_secret: Option<Secret>,
    redirect_uri: String,
    signer: Signer,
    codes: Mutex<HashMap<String, Grant>>,
}

/// What a code stands for until redeemed (once).
struct Grant {
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    email: String,
    auth_time: u64,
    issued: Instant,
}

async fn discovery(State(p): State<Arc<Provider>>) -> Response {
    let i = &p.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "email"],
        "grant_types_supported": ["authorization_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": [DEMO_ACR],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "email", "email_verified"],
    }))
    .into_response()
}

async fn jwks(State(p): State<Arc<Provider>>) -> Response {
    Json(json!({"keys": [p.signer.jwk()]})).into_response()
}

/// The parameters of an authorization request (OIDC Core 3.1.2.1).
#[derive(Debug, Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    max_age: Option<String>,
    prompt: Option<String>,
}

/// An authorization request that cannot go ahead.
enum AuthorizeError {
    /// Unknown client or redirect URI: never redirect, show a page (OIDC Core 3.1.2.6).
    Page(&'static str),
    /// Anything else: back to the client with `error`.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
    },
}

impl Provider {
    fn check(&self, q: &AuthorizeParams) -> Result<(), AuthorizeError> {
        if q.client_id.as_deref() != Some(self.client_id.as_str()) {
            return Err(AuthorizeError::Page("Unknown client_id."));
        }
        if q.redirect_uri.as_deref() != Some(self.redirect_uri.as_str()) {
            return Err(AuthorizeError::Page(
                "redirect_uri is not the one registered.",
            ));
        }
        let fail = |error| AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            state: q.state.clone(),
            error,
        };
        if q.response_type.as_deref() != Some("code") {
            return Err(fail("unsupported_response_type"));
        }
        let scopes = q.scope.as_deref().unwrap_or("");
        if !scopes.split(' ').any(|s| s == "openid") {
            return Err(fail("invalid_scope"));
        }
        let pkce_ok = q.code_challenge.as_deref().is_some_and(|c| !c.is_empty())
            && q.code_challenge_method.as_deref() == Some("S256");
        if !pkce_ok {
            return Err(fail("invalid_request"));
        }
        Ok(())
    }
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            Self::Page(message) => page(
                StatusCode::BAD_REQUEST,
                crate::control::html::error_page(
                    StatusCode::BAD_REQUEST,
                    "Bad sign-in request",
                    message,
                ),
            ),
            Self::Redirect {
                redirect_uri,
                state,
                error,
            } => {
                let mut pairs = vec![("error", error.to_owned())];
                pairs.extend(state.map(|s| ("state", s)));
                back_to_client(&redirect_uri, &pairs)
            }
        }
    }
}

#[derive(Template)]
#[template(path = "devlogin_authorize.html")]
struct AuthorizePage<'a> {
    viewer: Option<&'a str>,
    users: &'a [&'a str],
    query: &'a str,
    fresh: bool,
}

async fn authorize_form(
    State(p): State<Arc<Provider>>,
    Query(q): Query<AuthorizeParams>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = p.check(&q) {
        return e.into_response();
    }
    // This issuer never remembers anyone, so every request re-authenticates; say so when the
    // client asked for it explicitly.
    let fresh = q.max_age.as_deref() == Some("0")
        || q.prompt
            .as_deref()
            .is_some_and(|p| p.split(' ').any(|v| v == "login"));
    let rendered = AuthorizePage {
        viewer: None,
        users: DEMO_USERS,
        query: raw.as_deref().unwrap_or(""),
        fresh,
    }
    .render();
    page(
        StatusCode::OK,
        crate::control::html::html(StatusCode::OK, rendered),
    )
}

/// The sign-in form's body.
#[derive(Debug, Deserialize)]
struct SignIn {
    email: String,
}

async fn authorize_submit(
    State(p): State<Arc<Provider>>,
    Query(q): Query<AuthorizeParams>,
    Form(form): Form<SignIn>,
) -> Response {
    if let Err(e) = p.check(&q) {
        return e.into_response();
    }
    let email = form.email.trim().to_ascii_lowercase();
    if !plausible_email(&email) {
        let bad = crate::control::html::error_page(
            StatusCode::BAD_REQUEST,
            "Not an email address",
            "Go back and enter an email address like alice@example.com.",
        );
        return page(StatusCode::BAD_REQUEST, bad);
    }
    let Ok(code) = random_code() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let grant = Grant {
        redirect_uri: p.redirect_uri.clone(),
        code_challenge: q.code_challenge.clone().unwrap_or_default(),
        nonce: q.nonce.clone(),
        email,
        auth_time: unix_now(),
        issued: Instant::now(),
    };
    if let Ok(mut codes) = p.codes.lock() {
        codes.retain(|_, g| g.issued.elapsed() < CODE_TTL);
        codes.insert(code.clone(), grant);
    }
    let mut pairs = vec![("code", code)];
    pairs.extend(q.state.clone().map(|s| ("state", s)));
    back_to_client(&p.redirect_uri, &pairs)
}

/// 303 to the client's redirect URI with `pairs` added to its query.
fn back_to_client(redirect_uri: &str, pairs: &[(&str, String)]) -> Response {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            Redirect::to(url.as_str()).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The development pages post back to themselves and then redirect to the client, so the
/// approval pages' `form-action 'self'` policy would block them: replace it.
fn page(status: StatusCode, mut resp: Response) -> Response {
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    resp
}

fn plausible_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && e.len() <= 254
        && e.chars()
            .all(|c| c.is_ascii_graphic() && !"<>\"'\\".contains(c))
}

/// The token request (RFC 6749 4.1.3 + RFC 7636 4.5).
#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn token(
    State(p): State<Arc<Provider>>,
    headers: HeaderMap,
    Form(req): Form<TokenRequest>,
) -> Response {
    match p.redeem(&headers, req) {
        Ok(body) => no_store(StatusCode::OK, body),
        Err(TokenError::InvalidClient) => {
            let mut resp = no_store(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"countersign-devlogin\""),
            );
            resp
        }
        Err(TokenError::Grant(error, description)) => no_store(
            StatusCode::BAD_REQUEST,
            json!({"error": error, "error_description": description}),
        ),
    }
}

enum TokenError {
    InvalidClient,
    Grant(&'static str, &'static str),
}

impl Provider {
    fn redeem(
        &self,
        headers: &HeaderMap,
        req: TokenRequest,
    ) -> Result<serde_json::Value, TokenError> {
        self.authenticate_client(headers, &req)?;
        if req.grant_type.as_deref() != Some("authorization_code") {
            return Err(TokenError::Grant(
                "unsupported_grant_type",
                "only authorization_code",
            ));
        }
        let code = req.code.as_deref().unwrap_or("");
        // Removed before any check: a code is good for one attempt, right or wrong.
        let grant = self
            .codes
            .lock()
            .ok()
            .and_then(|mut codes| codes.remove(code))
            .filter(|g| g.issued.elapsed() < CODE_TTL)
            .ok_or(TokenError::Grant(
                "invalid_grant",
                "unknown, used or expired code",
            ))?;
        if req.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
            return Err(TokenError::Grant("invalid_grant", "redirect_uri mismatch"));
        }
        if !pkce_matches(
            req.code_verifier.as_deref().unwrap_or(""),
            &grant.code_challenge,
        ) {
            return Err(TokenError::Grant(
                "invalid_grant",
                "PKCE verification failed",
            ));
        }
        self.tokens_for(&grant)
    }

    /// `client_secret_basic` (RFC 6749 2.3.1: id and secret form-encoded, then Basic) or
    /// `client_secret_post`; a client registered without a secret just names itself.
    fn authenticate_client(
        &self,
        headers: &HeaderMap,
        req: &TokenRequest,
    ) -> Result<(), TokenError> {
        let (id, secret) = match basic_credentials(headers) {
            Some((id, secret)) => (Some(id), Some(secret)),
            None => (req.client_id.clone(), req.client_secret.clone()),
        };
        if id.as_deref() != Some(self.client_id.as_str()) {
            return Err(TokenError::InvalidClient);
        }
        let secret_ok = match &self.client_secret {
            Some(expected) => {
                secret.is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected.expose().as_bytes())))
            }
            None => true,
        };
        secret_ok.then_some(()).ok_or(TokenError::InvalidClient)
    }

    fn tokens_for(&self, grant: &Grant) -> Result<serde_json::Value, TokenError> {
        let now = unix_now();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": subject_for(&grant.email),
            "aud": self.client_id,
            "iat": now,
            "exp": now + TOKEN_TTL.as_secs(),
            "auth_time": grant.auth_time,
            "acr": DEMO_ACR,
            "email": grant.email,
            "email_verified": true,
        });
        if let Some(nonce) = &grant.nonce {
            claims["nonce"] = json!(nonce);
        }
        let internal = TokenError::Grant("server_error", "cannot sign");
        let id_token = self.signer.sign(&claims).map_err(|_| internal)?;
        let access_token =
            random_code().map_err(|_| TokenError::Grant("server_error", "no randomness"))?;
        Ok(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL.as_secs(),
            "id_token": id_token,
            "scope": "openid email",
        }))
    }
}

/// A stable, opaque subject per email.
fn subject_for(email: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, email.as_bytes());
    format!("dev-{}", hex::encode(&digest.as_ref()[..10]))
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// RFC 7636 4.6: `BASE64URL(SHA256(verifier)) == challenge`, with a well-formed verifier.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~".contains(&c));
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    let computed = URL_SAFE_NO_PAD.encode(digest.as_ref());
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn random_code() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_reference_vector() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn basic_auth_is_form_decoded() {
        let mut h = HeaderMap::new();
        let creds = STANDARD.encode("my%20client:p%3Ass");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {creds}").parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("my client".into(), "p:ss".into()))
        );
    }

    #[test]
    fn only_plausible_emails() {
        assert!(plausible_email("alice@example.com"));
        for bad in [
            "alice",
            "@example.com",
            "a@b",
            "a b@example.com",
            "<a>@example.com",
        ] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }

    #[test]
    fn refuses_non_loopback() {
        let err =
            DevLogin::start_on("0.0.0.0:0".parse().unwrap(), "c", None, "http://x/cb").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
