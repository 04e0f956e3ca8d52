//! Approver web sessions and CSRF tokens.
//!
//! Owns the `countersign_session` cookie: an HMAC-SHA256-signed, HttpOnly, SameSite=Lax cookie
//! that says who logged in through `[approver_login]`, when, and how (`acr`, `auth_time`). The
//! state lives entirely in the cookie, so any replica holding the same key accepts it. Also owns
//! the per-session, per-approval CSRF tokens of the decision forms, and the generic "sealed
//! value" helper the login flow uses for its own short-lived cookie.
//!
//! Must not decide who may approve what: it only says who the browser belongs to.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "countersign_session";

/// How long a session lasts unless told otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// How old a login may be and still count as "fresh" for an `approve_via = "login"` rule.
pub const FRESH_LOGIN_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Clock difference tolerated between the IdP (`auth_time`) and us.
const IDP_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Shortest key accepted: 256 bits, the HMAC-SHA256 output size.
const MIN_KEY_LEN: usize = 32;

/// Version tag in every sealed payload, so a format change invalidates old cookies cleanly.
const PAYLOAD_VERSION: u8 = 1;

/// The key that signs sessions, login-flow cookies and CSRF tokens.
#[derive(Clone)]
pub struct SessionKey(hmac::Key);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// A session key shorter than 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session key must be at least {MIN_KEY_LEN} bytes")]
pub struct ShortKey;

impl SessionKey {
    /// Uses `bytes` (at least 32 of them) as the HMAC key directly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShortKey> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(ShortKey);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// Derives a session key from other secret material (e.g. the approval signing key's PKCS#8
    /// bytes), so one configured secret can serve both without the two uses being related.
    pub fn derive_from(material: &[u8]) -> Result<Self, ShortKey> {
        if material.len() < MIN_KEY_LEN {
            return Err(ShortKey);
        }
        let label = hmac::Key::new(hmac::HMAC_SHA256, b"countersign approver session key v1");
        Self::from_bytes(hmac::sign(&label, material).as_ref())
    }

    /// A fresh random key (sessions then die with the process; fine for `countersign demo`).
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes)?;
        Self::from_bytes(&bytes).map_err(|ShortKey| ring::error::Unspecified)
    }
}

/// Everything the login callback learned about the person, from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginIdentity {
    /// `email` claim (verified or not asserted otherwise).
    pub email: String,
    /// ID token issuer.
    pub iss: String,
    /// ID token subject.
    pub sub: String,
    /// `acr` claim, if any.
    pub acr: Option<String>,
    /// `auth_time` claim, if any: when the IdP last actually authenticated the person.
    pub auth_time: Option<SystemTime>,
}

/// A logged-in approver, as read from a valid session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverSession {
    /// Who logged in, as the ID token said: the email is the identity approver lists are
    /// written in.
    pub who: LoginIdentity,
    /// When Countersign completed the login (our clock).
    pub login_at: SystemTime,
    /// When the session stops being accepted.
    pub expires_at: SystemTime,
    /// Random per-login id that CSRF tokens are bound to.
    sid: String,
}

impl ApproverSession {
    /// Whether this login is fresh enough for a decision on a request created at
    /// `requested_at` that demands a fresh login: the login finished after the request was
    /// created and at most `max_age` ago, and the IdP says it really authenticated the person
    /// (`auth_time`) within that window too (a login silently completed by an old IdP session
    /// does not count).
    pub fn is_fresh_for(
        &self,
        requested_at: SystemTime,
        max_age: Duration,
        now: SystemTime,
    ) -> bool {
        let Some(auth_time) = self.who.auth_time else {
            return false;
        };
        let login_recent = age(self.login_at, now) <= max_age;
        let auth_recent = age(auth_time, now) <= max_age + IDP_CLOCK_SKEW;
        let auth_after_request = auth_time + IDP_CLOCK_SKEW >= requested_at;
        self.login_at >= requested_at && login_recent && auth_recent && auth_after_request
    }

    /// Whether the login's `acr` is one of `allowed` (an empty list allows anything).
    pub fn meets_acr(&self, allowed: &[String]) -> bool {
        allowed.is_empty()
            || self
                .who
                .acr
                .as_ref()
                .is_some_and(|acr| allowed.iter().any(|a| a == acr))
    }
}

/// How long ago `then` was (zero when it is in the future).
fn age(then: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// Issues and checks session cookies and CSRF tokens. Cheap to clone.
///
/// Handlers get an [`ApproverSession`] by extraction; the router state must provide a
/// `Sessions` through [`FromRef`].
#[derive(Clone, Debug)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    key: SessionKey,
    secure: bool,
    ttl: Duration,
    clock: SharedClock,
}

/// What the session cookie carries.
#[derive(Serialize, Deserialize)]
struct SessionPayload {
    sid: String,
    email: String,
    iss: String,
    sub: String,
    acr: Option<String>,
    /// Seconds since the epoch (as the IdP said it).
    auth_time: Option<u64>,
    /// Milliseconds since the epoch: compared with request creation times.
    login_at_ms: u64,
    /// Milliseconds since the epoch.
    exp_ms: u64,
}

/// The signed envelope around any sealed value.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u8,
    purpose: String,
    body: T,
}

impl Sessions {
    /// Sessions signed with `key`; cookies get `Secure` when `secure` (public URL is https).
    pub fn new(key: SessionKey, secure: bool, clock: SharedClock) -> Self {
        Self::with_ttl(key, secure, DEFAULT_SESSION_TTL, clock)
    }

    /// Like [`Sessions::new`] with a session lifetime other than 8 hours.
    pub fn with_ttl(key: SessionKey, secure: bool, ttl: Duration, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                key,
                secure,
                ttl,
                clock,
            }),
        }
    }

    /// Sessions for a control plane reachable at `public_url` (`Secure` cookies when https).
    pub fn for_public_url(key: SessionKey, public_url: &url::Url, clock: SharedClock) -> Self {
        Self::new(key, public_url.scheme() == "https", clock)
    }

    /// Whether cookies are marked `Secure`.
    pub fn secure(&self) -> bool {
        self.inner.secure
    }

    /// The clock sessions are judged by.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Starts a session for `who`: returns it and the `Set-Cookie` value that carries it.
    pub fn start(
        &self,
        who: LoginIdentity,
    ) -> Result<(ApproverSession, HeaderValue), SessionError> {
        let now = self.inner.clock.now();
        let payload = SessionPayload {
            sid: random_token()?,
            email: who.email,
            iss: who.iss,
            sub: who.sub,
            acr: who.acr,
            auth_time: who.auth_time.map(unix_secs),
            login_at_ms: unix_millis(now),
            exp_ms: unix_millis(now + self.inner.ttl),
        };
        let value = self.seal("session", &payload)?;
        let cookie = self.cookie(SESSION_COOKIE, value, "/", self.inner.ttl);
        Ok((session_from(payload), cookie))
    }

    /// The valid, unexpired session in these request headers, if any.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<ApproverSession> {
        let now_ms = unix_millis(self.inner.clock.now());
        cookie_values(headers, SESSION_COOKIE)
            .filter_map(|v| self.open::<SessionPayload>("session", &v))
            .find(|p| p.exp_ms > now_ms)
            .map(session_from)
    }

    /// A `Set-Cookie` value that removes the session cookie (logout).
    pub fn clear_cookie(&self) -> HeaderValue {
        self.removal_cookie(SESSION_COOKIE, "/")
    }

    /// The CSRF token for `session` deciding `approval_id`: an HMAC over the session's random
    /// id and the approval id, so it is useless in another session or for another approval.
    pub fn csrf_token(&self, session: &ApproverSession, approval_id: &str) -> String {
        let tag = hmac::sign(&self.inner.key.0, &csrf_message(session, approval_id));
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `token` is the CSRF token for `session` and `approval_id` (constant time).
    pub fn verify_csrf(&self, session: &ApproverSession, approval_id: &str, token: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        hmac::verify(&self.inner.key.0, &csrf_message(session, approval_id), &tag).is_ok()
    }

    /// Signs `body` for `purpose`: `base64url(json).base64url(hmac)`. The purpose is inside the
    /// MAC, so a value sealed for one use (a login flow) is never accepted for another (a session).
    pub(crate) fn seal<T: Serialize>(
        &self,
        purpose: &str,
        body: &T,
    ) -> Result<String, SessionError> {
        let envelope = Envelope {
            v: PAYLOAD_VERSION,
            purpose: purpose.to_owned(),
            body,
        };
        let json = serde_json::to_vec(&envelope).map_err(|_| SessionError)?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.inner.key.0, payload.as_bytes());
        Ok(format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    /// The value sealed for `purpose`, if `sealed` is intact.
    pub(crate) fn open<T: DeserializeOwned>(&self, purpose: &str, sealed: &str) -> Option<T> {
        let (payload, tag) = sealed.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.inner.key.0, payload.as_bytes(), &tag).ok()?;
        let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let envelope: Envelope<T> = serde_json::from_slice(&json).ok()?;
        (envelope.v == PAYLOAD_VERSION && envelope.purpose == purpose).then_some(envelope.body)
    }

    /// A `Set-Cookie` value with this deployment's attributes.
    pub(crate) fn cookie(
        &self,
        name: &str,
        value: String,
        path: &str,
        ttl: Duration,
    ) -> HeaderValue {
        let max_age =
            cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let c = Cookie::build((name.to_owned(), value))
            .http_only(true)
            .secure(self.inner.secure)
            .same_site(SameSite::Lax)
            .path(path.to_owned())
            .max_age(max_age)
            .build();
        header_value(&c)
    }

    /// A `Set-Cookie` value that deletes cookie `name` at `path`.
    pub(crate) fn removal_cookie(&self, name: &str, path: &str) -> HeaderValue {
        self.cookie(name, String::new(), path, Duration::ZERO)
    }
}

/// Cookie names and values we produce are plain ASCII (base64url and fixed names), so this never
/// falls back in practice; the fallback keeps the request path panic-free regardless.
fn header_value(c: &Cookie<'_>) -> HeaderValue {
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A session or CSRF value could not be produced (no randomness, serialisation failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("could not create a session")]
pub struct SessionError;

/// 128 random bits, base64url.
pub(crate) fn random_token() -> Result<String, SessionError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SessionError)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn csrf_message(session: &ApproverSession, approval_id: &str) -> Vec<u8> {
    // Length-prefixed fields: no two (sid, id) pairs produce the same message.
    let mut m = b"csrf\0".to_vec();
    for part in [session.sid.as_str(), approval_id] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part.as_bytes());
    }
    m
}

fn session_from(p: SessionPayload) -> ApproverSession {
    ApproverSession {
        who: LoginIdentity {
            email: p.email,
            iss: p.iss,
            sub: p.sub,
            acr: p.acr,
            auth_time: p.auth_time.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        },
        login_at: UNIX_EPOCH + Duration::from_millis(p.login_at_ms),
        expires_at: UNIX_EPOCH + Duration::from_millis(p.exp_ms),
        sid: p.sid,
    }
}

pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Every value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = String> + 'a {
    cookies(headers)
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v)
}

/// Every (name, value) pair in the request's `Cookie` headers.
pub(crate) fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| Cookie::split_parse(h.to_owned()))
        .filter_map(Result::ok)
        .map(|c| (c.name().to_owned(), c.value().to_owned()))
}

/// The request has no valid session: a page visit is sent to the login, anything else gets 401.
#[derive(Debug)]
pub struct LoginRequired {
    /// Where to come back to after logging in (a path on this host), for page visits.
    next: Option<String>,
}

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        match self.next {
            Some(next) => {
                Redirect::to(&crate::control::urls::login_url(&next, false, &[])).into_response()
            }
            None => crate::control::html::refusal_page(crate::respond::PageRefusal::SignInRequired),
        }
    }
}

impl<S> FromRequestParts<S> for ApproverSession
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = LoginRequired;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let sessions = Sessions::from_ref(state);
        if let Some(session) = sessions.from_headers(&parts.headers) {
            return Ok(session);
        }
        let is_page_visit = parts.method == Method::GET || parts.method == Method::HEAD;
        Err(LoginRequired {
            next: is_page_visit.then(|| original_path(parts)),
        })
    }
}

impl<S> OptionalFromRequestParts<S> for ApproverSession
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(Sessions::from_ref(state).from_headers(&parts.headers))
    }
}

/// The path and query the browser asked for (before any router nesting stripped a prefix).
fn original_path(parts: &Parts) -> String {
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map(|o| &o.0)
        .unwrap_or(&parts.uri);
    uri.path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn setup() -> (Sessions, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let key = SessionKey::from_bytes(&[7u8; 32]).unwrap();
        (Sessions::new(key, true, clock.clone()), clock)
    }

    fn alice(auth_time: Option<SystemTime>) -> LoginIdentity {
        LoginIdentity {
            email: "alice@example.com".into(),
            iss: "https://idp.example.com".into(),
            sub: "alice-sub".into(),
            acr: Some("urn:mfa".into()),
            auth_time,
        }
    }

    /// The `Cookie` request header a browser would send back for a `Set-Cookie` value.
    fn as_request(set_cookie: &HeaderValue) -> HeaderMap {
        let c = Cookie::parse(set_cookie.to_str().unwrap().to_owned()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{}={}", c.name(), c.value())).unwrap(),
        );
        h
    }

    #[test]
    fn session_round_trips_with_cookie_attributes() {
        let (sessions, _) = setup();
        let (s, set) = sessions.start(alice(None)).unwrap();
        let text = set.to_str().unwrap();
        assert!(text.starts_with("countersign_session="));
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=28800",
        ] {
            assert!(text.contains(attr), "{attr} missing in {text}");
        }
        let back = sessions.from_headers(&as_request(&set)).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.who.email, "alice@example.com");
    }

    #[test]
    fn not_secure_on_plain_http() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH));
        let url = url::Url::parse("http://127.0.0.1:9090").unwrap();
        let sessions = Sessions::for_public_url(SessionKey::random().unwrap(), &url, clock);
        let (_, set) = sessions.start(alice(None)).unwrap();
        assert!(!set.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn tampered_cookie_is_rejected() {
        let (sessions, _) = setup();
        let (_, set) = sessions.start(alice(None)).unwrap();
        let c = Cookie::parse(set.to_str().unwrap().to_owned()).unwrap();
        let (payload, tag) = c.value().split_once('.').unwrap();
        // Swap the email inside the payload, keep the tag.
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(json.replace("alice@", "mallory@"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={forged}.{tag}")).unwrap(),
        );
        assert!(sessions.from_headers(&h).is_none());
        // A cookie signed with another key is no better.
        let other = Sessions::new(
            SessionKey::from_bytes(&[8u8; 32]).unwrap(),
            true,
            sessions.clock().clone(),
        );
        let (_, other_set) = other.start(alice(None)).unwrap();
        assert!(sessions.from_headers(&as_request(&other_set)).is_none());
    }

    #[test]
    fn expired_cookie_is_rejected() {
        let (sessions, clock) = setup();
        let (_, set) = sessions.start(alice(None)).unwrap();
        clock.advance(DEFAULT_SESSION_TTL - Duration::from_secs(1));
        assert!(sessions.from_headers(&as_request(&set)).is_some());
        clock.advance(Duration::from_secs(2));
        assert!(sessions.from_headers(&as_request(&set)).is_none());
    }

    #[test]
    fn value_sealed_for_another_purpose_is_not_a_session() {
        let (sessions, _) = setup();
        let sealed = sessions
            .seal("login-flow", &serde_json::json!({"email": "x"}))
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={sealed}")).unwrap(),
        );
        assert!(sessions.from_headers(&h).is_none());
    }

    #[test]
    fn csrf_is_bound_to_session_and_approval() {
        let (sessions, _) = setup();
        let (s1, _) = sessions.start(alice(None)).unwrap();
        let (s2, _) = sessions.start(alice(None)).unwrap();
        let t = sessions.csrf_token(&s1, "apr_1");
        assert!(sessions.verify_csrf(&s1, "apr_1", &t));
        assert!(!sessions.verify_csrf(&s1, "apr_2", &t), "other approval");
        assert!(
            !sessions.verify_csrf(&s2, "apr_1", &t),
            "other session of the same person"
        );
        assert!(!sessions.verify_csrf(&s1, "apr_1", ""));
        assert!(!sessions.verify_csrf(&s1, "apr_1", "not base64 !"));
    }

    #[test]
    fn freshness_needs_a_recent_login_after_the_request() {
        let (sessions, clock) = setup();
        let requested_at = clock.now();
        let max = FRESH_LOGIN_MAX_AGE;
        // Logged in before the request was created: not fresh for it.
        let (old, _) = sessions.start(alice(Some(clock.now()))).unwrap();
        clock.advance(Duration::from_secs(5));
        assert!(!old.is_fresh_for(requested_at + Duration::from_millis(1), max, clock.now()));
        // Logged in after: fresh, until max_age passes.
        let (s, _) = sessions.start(alice(Some(clock.now()))).unwrap();
        assert!(s.is_fresh_for(requested_at, max, clock.now()));
        clock.advance(max + Duration::from_secs(1));
        assert!(!s.is_fresh_for(requested_at, max, clock.now()));
        // No auth_time from the IdP: cannot prove a fresh authentication.
        let (no_auth_time, _) = sessions.start(alice(None)).unwrap();
        assert!(!no_auth_time.is_fresh_for(requested_at, max, clock.now()));
        // The IdP's auth_time is old (silent SSO): not fresh even though our login is new.
        let stale = requested_at - Duration::from_secs(3600);
        let (sso, _) = sessions.start(alice(Some(stale))).unwrap();
        assert!(!sso.is_fresh_for(requested_at, max, clock.now()));
    }

    #[test]
    fn acr_requirement() {
        let (sessions, _) = setup();
        let (s, _) = sessions.start(alice(None)).unwrap();
        assert!(s.meets_acr(&[]));
        assert!(s.meets_acr(&["phr".into(), "urn:mfa".into()]));
        assert!(!s.meets_acr(&["phr".into()]));
    }

    #[test]
    fn short_keys_are_refused_and_key_debug_redacts() {
        assert_eq!(SessionKey::from_bytes(&[1u8; 31]).unwrap_err(), ShortKey);
        let k = SessionKey::derive_from(&[1u8; 64]).unwrap();
        assert_eq!(format!("{k:?}"), "SessionKey(<redacted>)");
    }
}
