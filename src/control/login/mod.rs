//! Approver login: OpenID Connect authorization-code flow with PKCE (S256), `state` and
//! `nonce`, against the `[approver_login]` issuer.
//!
//! `GET /login?next=/approvals/ID[&fresh=1][&acr_values=...]` sends the browser to the IdP;
//! `GET /oidc/callback` checks the answer, verifies the ID token (signature against the IdP's
//! JWKS, `iss`, `aud`, `nonce`, `exp`) and starts a session (see `session`). The flow's secrets
//! (state, nonce, PKCE verifier, where to go next) travel in a short-lived signed cookie, not in
//! server memory, so whichever replica receives the callback can finish the login.
//!
//! Owns identity only: whether that person may approve something is decided elsewhere.
//!
//! Wiring: `Sessions::for_public_url(SessionKey::derive_from(..)?, &public_url, clock)`, then
//! `Arc::new(Login::new(&approver_login, &public_url, sessions.clone())?)`, merge
//! [`router`] into the control-plane router, and let the router state hand out the `Sessions`
//! (`impl FromRef<State> for Sessions`) so handlers can take an `ApproverSession` argument.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreIdTokenClaims,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthenticationContextClass, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use url::Url;

use crate::config::ApproverLogin;
mod failure;

use self::failure::{retry_link, Failure};
use crate::control::html::error_page;
use crate::control::session::{cookies, unix_millis, LoginIdentity, Sessions};
pub use crate::control::urls::login_url;

/// Path of the callback on the control plane; the redirect URI is `{public_url}` + this.
pub const CALLBACK_PATH: &str = "/oidc/callback";

/// Where a login goes when it was not told (or told something unsafe is refused, see
/// [`safe_next`]).
pub const DEFAULT_NEXT: &str = "/approvals";

/// Prefix of the per-flow cookie; the rest of the name is the start of the flow's `state`, so
/// logins in two tabs do not overwrite each other.
const FLOW_COOKIE_PREFIX: &str = "countersign_login_";

/// How long a started login may take before the callback is refused.
const FLOW_TTL: Duration = Duration::from_secs(10 * 60);

/// Longest `next` accepted.
const MAX_NEXT_LEN: usize = 2048;

/// Provider metadata and keys are refetched at least this often.
const PROVIDER_MAX_AGE: Duration = Duration::from_secs(3600);

/// An ID token that fails signature checks triggers a key refetch, at most this often.
const PROVIDER_MIN_REFETCH: Duration = Duration::from_secs(5);

/// Timeout for discovery and the token request.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);

/// The client as configured from discovery: authorization endpoint known, token endpoint
/// known if the IdP published one.
type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// `[approver_login]` could not be turned into a login client.
#[derive(Debug, thiserror::Error)]
pub enum LoginSetupError {
    /// The issuer is not a URL.
    #[error("approver_login.issuer is not a valid URL: {0}")]
    Issuer(String),
    /// `{public_url}/oidc/callback` is not a URL.
    #[error("server.public_url does not give a valid redirect URI: {0}")]
    RedirectUri(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for approver login: {0}")]
    Http(String),
}

/// The approver login client. Share it as `Arc<Login>` and mount [`router`].
pub struct Login {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect_uri: RedirectUrl,
    sessions: Sessions,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .field("redirect_uri", &self.redirect_uri.as_str())
            .finish_non_exhaustive()
    }
}

/// Discovery result, kept until it is old or its keys stop verifying tokens.
struct Provider {
    client: OidcClient,
    fetched: Instant,
}

/// What the login cookie carries between `/login` and the callback.
#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    pkce_verifier: String,
    next: String,
    fresh: bool,
    acr: Vec<String>,
    started_ms: u64,
}

impl Login {
    /// A login client for `cfg`, with the redirect URI `{public_url}/oidc/callback`. Does not
    /// contact the IdP: discovery happens on the first login (and is retried on failure), so an
    /// IdP that is down at start-up does not stop the proxy.
    pub fn new(
        cfg: &ApproverLogin,
        public_url: &Url,
        sessions: Sessions,
    ) -> Result<Self, LoginSetupError> {
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| LoginSetupError::Issuer(e.to_string()))?;
        let redirect = format!(
            "{}{CALLBACK_PATH}",
            public_url.as_str().trim_end_matches('/')
        );
        let redirect_uri =
            RedirectUrl::new(redirect).map_err(|e| LoginSetupError::RedirectUri(e.to_string()))?;
        let http = reqwest::Client::builder()
            // Following redirects from an IdP endpoint would be an SSRF vector (oauth2 advice).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(IDP_TIMEOUT)
            .build()
            .map_err(|e| LoginSetupError::Http(e.to_string()))?;
        Ok(Self {
            issuer,
            client_id: ClientId::new(cfg.client_id.clone()),
            client_secret: cfg
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
            redirect_uri,
            sessions,
            http,
            provider: tokio::sync::Mutex::new(None),
        })
    }

    /// The sessions this login starts.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The redirect URI registered with the IdP.
    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    /// The login-flow cookie is only sent to the callback, as the browser sees its path (which
    /// includes any prefix in `public_url`).
    fn flow_cookie_path(&self) -> &str {
        self.redirect_uri.url().path()
    }

    /// The discovered client; refetched when older than `max_age`. A failed refetch keeps the
    /// last good metadata (the IdP being briefly down must not break logins in progress).
    async fn provider(&self, max_age: Duration) -> Result<Arc<Provider>, Failure> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = cached.as_ref() {
            if p.fetched.elapsed() < max_age {
                return Ok(p.clone());
            }
        }
        match self.discover().await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *cached = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => cached.clone().ok_or(e),
        }
    }

    async fn discover(&self) -> Result<Provider, Failure> {
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(issuer = %self.issuer.as_str(), error = %e, "approver login discovery failed");
                Failure::IdpUnavailable
            })?;
        let auth_type = client_auth_type(metadata.token_endpoint_auth_methods_supported());
        let client = CoreClient::from_provider_metadata(
            metadata,
            self.client_id.clone(),
            self.client_secret.clone(),
        )
        .set_auth_type(auth_type)
        .set_redirect_uri(self.redirect_uri.clone());
        Ok(Provider {
            client,
            fetched: Instant::now(),
        })
    }

    /// `GET /login`: remember the flow in a signed cookie and send the browser to the IdP.
    async fn begin(&self, q: LoginQuery) -> Result<Response, Failure> {
        let next = match q.next.as_deref() {
            None | Some("") => DEFAULT_NEXT,
            Some(raw) => safe_next(raw).ok_or(Failure::UnsafeNext)?,
        };
        let fresh = matches!(q.fresh.as_deref(), Some("1" | "true"));
        let acr: Vec<String> = q
            .acr_values
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let provider = self.provider(PROVIDER_MAX_AGE).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut auth = provider
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".to_owned()))
            .set_pkce_challenge(challenge);
        if fresh {
            // Both: some IdPs honour only one of them.
            auth = auth
                .set_max_age(Duration::ZERO)
                .add_prompt(CoreAuthPrompt::Login);
        }
        for value in &acr {
            auth = auth.add_auth_context_value(AuthenticationContextClass::new(value.clone()));
        }
        let (url, state, nonce) = auth.url();
        let flow = Flow {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            next: next.to_owned(),
            fresh,
            acr,
            started_ms: unix_millis(self.sessions.clock().now()),
        };
        let sealed = self
            .sessions
            .seal("login-flow", &flow)
            .map_err(|_| Failure::Internal)?;
        let cookie = self.sessions.cookie(
            &flow_cookie_name(&flow.state),
            sealed,
            self.flow_cookie_path(),
            FLOW_TTL,
        );
        let mut resp = Redirect::to(url.as_str()).into_response();
        resp.headers_mut().append(header::SET_COOKIE, cookie);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// `GET /oidc/callback`: finish the flow and start the session.
    async fn finish(&self, q: CallbackQuery, headers: &HeaderMap) -> Result<Response, Failure> {
        let state = q.state.as_deref().ok_or(Failure::BadCallback)?;
        let flow = self.flow_for(state, headers)?;
        if let Some(error) = q.error.as_deref() {
            tracing::info!(error, description = ?q.error_description, "IdP refused approver login");
            return Err(Failure::IdpRefused {
                retry: retry_link(&flow),
            });
        }
        let code = q.code.ok_or(Failure::BadCallback)?;
        let provider = self.provider(PROVIDER_MAX_AGE).await?;
        let response = provider
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| Failure::IdpMisconfigured)?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| token_failure(&e, &flow))?;
        let id_token = response.id_token().ok_or(Failure::IdpMisconfigured)?;
        let identity = self
            .verify(&provider, id_token, &flow, response.access_token())
            .await?;
        tracing::info!(email = %identity.email, iss = %identity.iss, acr = ?identity.acr, fresh = flow.fresh, "approver logged in");
        let (_, session_cookie) = self
            .sessions
            .start(identity)
            .map_err(|_| Failure::Internal)?;
        let mut resp = Redirect::to(&flow.next).into_response();
        let h = resp.headers_mut();
        h.append(header::SET_COOKIE, session_cookie);
        h.append(
            header::SET_COOKIE,
            self.sessions
                .removal_cookie(&flow_cookie_name(&flow.state), self.flow_cookie_path()),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// The flow this callback belongs to: the signed cookie named after `state`, unexpired, for
    /// exactly this `state` (compared in constant time).
    fn flow_for(&self, state: &str, headers: &HeaderMap) -> Result<Flow, Failure> {
        let name = flow_cookie_name(state);
        let now_ms = unix_millis(self.sessions.clock().now());
        let ttl_ms = u64::try_from(FLOW_TTL.as_millis()).unwrap_or(u64::MAX);
        cookies(headers)
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| self.sessions.open::<Flow>("login-flow", &v))
            .find(|f| {
                bool::from(f.state.as_bytes().ct_eq(state.as_bytes()))
                    && now_ms < f.started_ms.saturating_add(ttl_ms)
            })
            .ok_or(Failure::NoFlow)
    }

    /// Verifies the ID token for this flow and extracts who logged in. A signature failure
    /// refetches the IdP's keys once (they may have rotated) before giving up.
    async fn verify(
        &self,
        provider: &Arc<Provider>,
        id_token: &openidconnect::core::CoreIdToken,
        flow: &Flow,
        access_token: &openidconnect::AccessToken,
    ) -> Result<LoginIdentity, Failure> {
        let nonce = Nonce::new(flow.nonce.clone());
        let claims = match verified_claims(&provider.client, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                let refreshed = self.provider(PROVIDER_MIN_REFETCH).await?;
                verified_claims(&refreshed.client, id_token, &nonce).cloned()
            }
            other => other.cloned(),
        }
        .map_err(|e| {
            tracing::warn!(error = %e, "approver login ID token rejected");
            Failure::BadIdToken {
                retry: retry_link(flow),
            }
        })?;
        // OIDC Core 5.4: claims asked for with scopes may be returned only by the UserInfo
        // endpoint (oidc-provider does so by default; so do some enterprise IdPs).
        let fallback = match claims.email() {
            Some(_) => None,
            None => {
                self.userinfo_email(&provider.client, access_token, claims.subject())
                    .await
            }
        };
        identity_from(&claims, flow, fallback)
    }

    /// `email` and `email_verified` from the UserInfo endpoint, for the subject of the ID token.
    async fn userinfo_email(
        &self,
        client: &OidcClient,
        access_token: &openidconnect::AccessToken,
        subject: &openidconnect::SubjectIdentifier,
    ) -> Option<(String, Option<bool>)> {
        let request = client
            .user_info(access_token.clone(), Some(subject.clone()))
            .ok()?;
        let info: openidconnect::core::CoreUserInfoClaims =
            match request.request_async(&self.http).await {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(error = %e, "approver login: UserInfo request failed");
                    return None;
                }
            };
        let email = info.email()?.as_str().to_owned();
        Some((email, info.email_verified()))
    }
}

/// How to send the client secret: `client_secret_basic` (the OAuth default when the IdP does
/// not say) unless the IdP lists only `client_secret_post`.
fn client_auth_type(supported: Option<&Vec<CoreClientAuthMethod>>) -> AuthType {
    let post_only = supported.is_some_and(|m| {
        m.contains(&CoreClientAuthMethod::ClientSecretPost)
            && !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
    });
    if post_only {
        AuthType::RequestBody
    } else {
        AuthType::BasicAuth
    }
}

/// Checks signature (asymmetric algorithms only: the IdP's keys, never the client secret),
/// `iss`, `aud`, `exp` and `nonce`.
fn verified_claims<'a>(
    client: &OidcClient,
    id_token: &'a openidconnect::core::CoreIdToken,
    nonce: &Nonce,
) -> Result<&'a CoreIdTokenClaims, ClaimsVerificationError> {
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(asymmetric_algs());
    id_token.claims(&verifier, nonce)
}

/// Every asymmetric JWS algorithm: never `none`, never HMAC (which would make the client
/// secret a signing key).
fn asymmetric_algs() -> Vec<openidconnect::core::CoreJwsSigningAlgorithm> {
    use openidconnect::core::CoreJwsSigningAlgorithm as Alg;
    let asymmetric = [
        Alg::RsaSsaPkcs1V15Sha256,
        Alg::RsaSsaPkcs1V15Sha384,
        Alg::RsaSsaPkcs1V15Sha512,
        Alg::RsaSsaPssSha256,
        Alg::RsaSsaPssSha384,
        Alg::RsaSsaPssSha512,
        Alg::EcdsaP256Sha256,
        Alg::EcdsaP384Sha384,
        Alg::EcdsaP521Sha512,
        Alg::EdDsa,
    ];
    asymmetric.to_vec()
}

/// Who logged in, once the claims are verified; enforces `email`, `email_verified`, and what
/// the flow asked for (`acr`, a fresh authentication).
fn identity_from(
    claims: &CoreIdTokenClaims,
    flow: &Flow,
    userinfo: Option<(String, Option<bool>)>,
) -> Result<LoginIdentity, Failure> {
    let (email, verified) = match claims.email() {
        Some(e) => (e.as_str().to_owned(), claims.email_verified()),
        None => userinfo.ok_or(Failure::NoEmail)?,
    };
    if verified == Some(false) {
        return Err(Failure::EmailUnverified);
    }
    let acr = claims.auth_context_ref().map(|a| a.as_str().to_owned());
    if !flow.acr.is_empty() && !acr.as_ref().is_some_and(|a| flow.acr.contains(a)) {
        return Err(Failure::AcrNotMet {
            retry: retry_link(flow),
        });
    }
    let auth_time = claims.auth_time().and_then(|t| {
        u64::try_from(t.timestamp())
            .ok()
            .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
    });
    if flow.fresh && !authenticated_during_flow(auth_time, flow.started_ms) {
        return Err(Failure::NotFresh {
            retry: retry_link(flow),
        });
    }
    Ok(LoginIdentity {
        email,
        iss: claims.issuer().as_str().to_owned(),
        sub: claims.subject().as_str().to_owned(),
        acr,
        auth_time,
    })
}

/// `max_age=0` means the IdP must authenticate the person again, so `auth_time` must be present
/// and not before this login started (60 s of clock difference allowed).
fn authenticated_during_flow(auth_time: Option<std::time::SystemTime>, started_ms: u64) -> bool {
    auth_time.is_some_and(|t| unix_millis(t) + 60_000 >= started_ms)
}

fn token_failure<E: std::error::Error>(
    e: &RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
    flow: &Flow,
) -> Failure {
    match e {
        // The IdP said no (reused or expired code, PKCE mismatch): the person can retry.
        RequestTokenError::ServerResponse(r) => {
            tracing::info!(error = %r, "IdP rejected the approver login code");
            Failure::CodeRejected {
                retry: retry_link(flow),
            }
        }
        RequestTokenError::Request(e) => {
            tracing::warn!(error = %e, "approver login token request failed");
            Failure::IdpUnavailable
        }
        // An answer that is not a token response (or an ID token that does not even parse).
        RequestTokenError::Parse(..) | RequestTokenError::Other(..) => {
            tracing::warn!(error = %e, "approver login token response unusable");
            Failure::IdpMisconfigured
        }
    }
}

fn flow_cookie_name(state: &str) -> String {
    // `state` is base64url from CsrfToken::new_random; anything else is filtered to cookie-name
    // characters so a hostile `state` cannot produce a malformed name.
    let tail: String = state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(16)
        .collect();
    format!("{FLOW_COOKIE_PREFIX}{tail}")
}

/// `next` if it is a safe place to send the browser after login: a path on this host
/// (`/...`), not `//host` or `/\host` (which browsers treat as another host), only printable
/// ASCII, and not too long. Anything else is refused rather than rewritten, so a bad link is
/// noticed.
pub fn safe_next(raw: &str) -> Option<&str> {
    let b = raw.as_bytes();
    let relative_path = b.first() == Some(&b'/') && !matches!(b.get(1), Some(b'/' | b'\\'));
    let clean = raw.bytes().all(|c| c.is_ascii_graphic() && c != b'\\');
    (relative_path && clean && raw.len() <= MAX_NEXT_LEN).then_some(raw)
}

/// Query of `GET /login`.
#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    fresh: Option<String>,
    acr_values: Option<String>,
}

/// Query of `GET /oidc/callback` (success or error response, RFC 6749 4.1.2).
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The login routes (`GET /login`, `GET /oidc/callback`, `POST /logout`), mountable in any
/// router.
pub fn router<S>(login: Arc<Login>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/login", get(login_handler))
        .route(CALLBACK_PATH, get(callback_handler))
        .route("/logout", axum::routing::post(logout_handler))
        .with_state(login)
}

async fn login_handler(State(login): State<Arc<Login>>, Query(q): Query<LoginQuery>) -> Response {
    login
        .begin(q)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Drops the session cookie. POST only, so a link or image elsewhere cannot sign anyone out.
async fn logout_handler(State(login): State<Arc<Login>>) -> Response {
    let mut resp = error_page(
        StatusCode::OK,
        "Signed out",
        "You are signed out of Countersign.",
    );
    resp.headers_mut()
        .append(header::SET_COOKIE, login.sessions.clear_cookie());
    resp
}

async fn callback_handler(
    State(login): State<Arc<Login>>,
    headers: HeaderMap,
    q: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return Failure::BadCallback.into_response();
    };
    login
        .finish(q, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests;
