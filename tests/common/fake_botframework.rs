//! A fake Microsoft Bot Framework on 127.0.0.1, faithful where Countersign depends on it, and
//! the Teams client side that clicks cards:
//!
//! - Bot Framework OpenID metadata (`GET /v1/.well-known/openidconfiguration`, issuer
//!   `https://api.botframework.com`) and its JWKS (`GET /v1/.well-known/keys`): RS256 keys with
//!   `endorsements`, signing the tokens sent to the bot ([`FakeBotFramework::channel_token`]).
//! - The Microsoft identity platform token endpoint (`POST /{tenant}/oauth2/v2.0/token`,
//!   client credentials for scope `https://api.botframework.com/.default`): checks client id,
//!   secret, tenant and scope (`invalid_client`, `invalid_scope`, `invalid_request` as Entra
//!   answers them) and issues tokens with `expires_in`.
//! - The Bot Connector conversations API under a service URL with a region path
//!   (`{service_url}v3/conversations/...`): create activity (201 `{id}`), update activity,
//!   get members, get one member, with Bearer tokens checked (401), unknown conversations,
//!   activities and members answered 404 with the service's error codes, and the message size
//!   limit (413 `MessageSizeTooBig`).
//! - Programmable faults per operation: 429 with `Retry-After`, or an HTTP status.
//! - Teams' client behaviour: a user opening a card gets their own view when the card's
//!   `refresh.userIds` names them (an `adaptiveCard/action` invoke with verb `refresh`), and a
//!   click on an `Action.Execute` button sends the button's `data` merged with the card's input
//!   values. Cards the bot returns in invoke responses are what the clicking user sees next.
#![allow(dead_code)]
// Handlers return ready responses as their error; size does not matter in a test fake.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

/// The bot's Microsoft App ID.
pub const APP_ID: &str = "5b2e7c1a-3f4d-4e8a-9b6c-0d1e2f3a4b5c";
/// The bot's client secret.
pub const APP_PASSWORD: &str = "fake-app-password~0123456789";
/// The tenant of the bot and of every user.
pub const TENANT: &str = "7a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// Another tenant.
pub const OTHER_TENANT: &str = "0f0f0f0f-1111-4222-8333-444455556666";
/// Bot Framework issuer.
pub const ISSUER: &str = "https://api.botframework.com";
/// The scope the token endpoint accepts.
pub const SCOPE: &str = "https://api.botframework.com/.default";
/// The region path of the service URL (real ones look like `/amer/`, `/emea/`).
pub const REGION: &str = "amer";

/// The key the Bot Framework signs with, and one an attacker signs with.
const BF_KEY: &str = include_str!("../../certs/dev/rsa2048-3.pem");
const ATTACKER_KEY: &str = include_str!("../../certs/dev/rsa2048-4.pem");
/// `kid` of the Bot Framework key.
pub const KID: &str = "bf-key-2026";

/// A member of a team or chat.
#[derive(Debug, Clone)]
pub struct User {
    /// `29:...` id in the bot's conversations.
    pub id: String,
    /// Entra object id.
    pub aad: String,
    /// Sign-in name.
    pub upn: String,
    /// Primary email.
    pub email: String,
    /// Tenant.
    pub tenant: String,
    /// Display name.
    pub name: String,
}

impl User {
    /// A user of [`TENANT`] whose UPN and email are `email`.
    pub fn new(short: &str, email: &str) -> Self {
        Self {
            id: format!("29:1{short}-teams-id"),
            aad: format!("{:0>8}-0000-4000-8000-{:0>12}", short.len(), hexish(short)),
            upn: email.to_owned(),
            email: email.to_owned(),
            tenant: TENANT.to_owned(),
            name: short.to_owned(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "aadObjectId": self.aad,
            "email": self.email, "userPrincipalName": self.upn, "tenantId": self.tenant,
            "userRole": "user", "givenName": self.name, "surname": "Test",
        })
    }
}

fn hexish(s: &str) -> String {
    s.bytes().map(|b| format!("{:x}", b % 16)).collect()
}

/// A posted activity as it stands now.
#[derive(Debug, Clone)]
pub struct Posted {
    /// Conversation id it was posted to.
    pub conversation: String,
    /// Activity id.
    pub id: String,
    /// The activity as last sent.
    pub activity: Value,
    /// How many updates replaced it.
    pub updates: usize,
}

impl Posted {
    /// The Adaptive Card in the activity.
    pub fn card(&self) -> Value {
        self.activity["attachments"][0]["content"].clone()
    }
}

/// Where a posted card is: the activity in a channel of a team, or in a chat.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// The team of a channel (`None` for a chat).
    pub team: Option<&'a str>,
    /// Channel or chat id.
    pub conversation: &'a str,
    /// The card's activity id.
    pub activity_id: &'a str,
}

/// A fault to answer instead of the real thing.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// This HTTP status.
    Http(u16),
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    /// Operation: `token`, `create`, `update`, `members`, `member`, `metadata`, `keys`.
    pub op: &'static str,
    /// Status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    addr: Mutex<Option<SocketAddr>>,
    /// Conversation id -> member user ids; a channel id maps to its team's roster.
    rosters: Mutex<HashMap<String, Vec<String>>>,
    channel_team: Mutex<HashMap<String, String>>,
    users: Mutex<HashMap<String, User>>,
    posted: Mutex<Vec<Posted>>,
    next_id: AtomicU64,
    tokens: Mutex<HashMap<String, u64>>,
    token_lifetime: Mutex<u64>,
    faults: Mutex<HashMap<&'static str, VecDeque<Fault>>>,
    calls: Mutex<Vec<Call>>,
}

/// The running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeBotFramework {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Drop for FakeBotFramework {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBotFramework {
    /// Starts the fake with no teams, chats or users.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            next_id: AtomicU64::new(1_764_000_000_001),
            token_lifetime: Mutex::new(3599),
            ..Inner::default()
        });
        let app = axum::Router::new()
            .route(
                "/v1/.well-known/openidconfiguration",
                axum::routing::get(metadata),
            )
            .route("/v1/.well-known/keys", axum::routing::get(keys))
            .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
            .route(
                "/{region}/v3/conversations/{conv}/activities",
                axum::routing::post(create_activity),
            )
            .route(
                "/{region}/v3/conversations/{conv}/activities/{id}",
                axum::routing::put(update_activity),
            )
            .route(
                "/{region}/v3/conversations/{conv}/members",
                axum::routing::get(members),
            )
            .route(
                "/{region}/v3/conversations/{conv}/members/{id}",
                axum::routing::get(member),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *inner.addr.lock().unwrap() = Some(addr);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            inner,
            task,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// `openid_metadata_url` for `[teams]`.
    pub fn metadata_url(&self) -> String {
        format!("http://{}/v1/.well-known/openidconfiguration", self.addr)
    }

    /// `token_url` for `[teams]`.
    pub fn token_url(&self) -> String {
        format!("http://{}/{TENANT}/oauth2/v2.0/token", self.addr)
    }

    /// The service URL of the region (with its trailing slash, as Teams sends it).
    pub fn service_url(&self) -> String {
        format!("http://{}/{REGION}/", self.addr)
    }

    /// Adds a team with a channel and members (the roster of both ids).
    pub fn add_team(&self, team: &str, channel: &str, members: &[&User]) {
        self.add_chat(team, members);
        self.inner
            .channel_team
            .lock()
            .unwrap()
            .insert(channel.to_owned(), team.to_owned());
    }

    /// Adds a chat (or a team without channels) with members.
    pub fn add_chat(&self, id: &str, members: &[&User]) {
        let mut users = self.inner.users.lock().unwrap();
        for m in members {
            users.insert(m.id.clone(), (*m).clone());
        }
        self.inner.rosters.lock().unwrap().insert(
            id.to_owned(),
            members.iter().map(|m| m.id.clone()).collect(),
        );
    }

    /// Tokens issued from now on live `secs` seconds.
    pub fn set_token_lifetime(&self, secs: u64) {
        *self.inner.token_lifetime.lock().unwrap() = secs;
    }

    /// Every token issued so far stops being accepted (as after a key rollover).
    pub fn revoke_tokens(&self) {
        self.inner.tokens.lock().unwrap().clear();
    }

    /// The next calls of `op` (`token`, `create`, `update`, `members`, `member`) answer these.
    pub fn queue_faults(&self, op: &'static str, faults: impl IntoIterator<Item = Fault>) {
        self.inner
            .faults
            .lock()
            .unwrap()
            .entry(op)
            .or_default()
            .extend(faults);
    }

    /// Every call received.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Calls of `op`.
    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.op == op).collect()
    }

    /// Activities in `conversation`, oldest first, as they stand now.
    pub fn posted_in(&self, conversation: &str) -> Vec<Posted> {
        self.inner
            .posted
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.conversation == conversation)
            .cloned()
            .collect()
    }

    /// Activity `id` in `conversation` as it stands now.
    pub fn posted(&self, conversation: &str, id: &str) -> Option<Posted> {
        self.posted_in(conversation)
            .into_iter()
            .find(|p| p.id == id)
    }

    // ----- tokens the Bot Framework sends to bots ---------------------------------------

    /// Claims of a valid channel token for an activity from `service_url`.
    pub fn claims(&self, service_url: &str) -> Value {
        let now = now();
        json!({
            "serviceUrl": service_url,
            "nbf": now - 60,
            "exp": now + 3600,
            "iss": ISSUER,
            "aud": APP_ID,
        })
    }

    /// A token signed with the Bot Framework key.
    pub fn sign(&self, claims: &Value) -> String {
        sign_rs256(BF_KEY, KID, claims)
    }

    /// A token with the same `kid` but signed with another key (a forgery).
    pub fn forge(&self, claims: &Value) -> String {
        sign_rs256(ATTACKER_KEY, KID, claims)
    }

    /// A valid channel token for activities of this fake's service URL.
    pub fn channel_token(&self) -> String {
        self.sign(&self.claims(&self.service_url()))
    }

    // ----- the Teams client -------------------------------------------------------------

    /// An `adaptiveCard/action` invoke by `user` on the card `at`.
    pub fn invoke(&self, user: &User, at: At<'_>, verb: &str, data: Value, trigger: &str) -> Value {
        let At {
            team,
            conversation,
            activity_id,
        } = at;
        let n = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        let mut channel_data =
            json!({"tenant": {"id": user.tenant}, "source": {"name": "message"}});
        let conversation_id = match team {
            Some(team) => {
                channel_data["team"] = json!({"id": team});
                channel_data["channel"] = json!({"id": conversation});
                format!("{conversation};messageid={activity_id}")
            }
            None => conversation.to_owned(),
        };
        json!({
            "type": "invoke",
            "name": "adaptiveCard/action",
            "id": format!("f:{n}"),
            "timestamp": "2026-12-04T16:00:00.000Z",
            "localTimestamp": "2026-12-04T17:00:00.000+01:00",
            "channelId": "msteams",
            "serviceUrl": self.service_url(),
            "from": {"id": user.id, "name": user.name, "aadObjectId": user.aad},
            "conversation": {
                "isGroup": true,
                "conversationType": if team.is_some() { "channel" } else { "groupChat" },
                "tenantId": user.tenant,
                "id": conversation_id,
            },
            "recipient": {"id": format!("28:{APP_ID}"), "name": "Countersign"},
            "replyToId": activity_id,
            "entities": [{"type": "clientInfo", "locale": "en-US", "platform": "Web"}],
            "channelData": channel_data,
            "value": {
                "action": {"type": "Action.Execute", "id": "", "verb": verb, "data": data},
                "trigger": trigger,
            },
            "locale": "en-US",
        })
    }

    /// POSTs `activity` to the bot at `endpoint` with `Authorization: Bearer token`.
    pub async fn send(
        &self,
        endpoint: &str,
        activity: &Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.http.post(endpoint).json(activity);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("send activity to the bot")
    }

    /// What `user` sees of the card `at`: the base card, or, when its
    /// `refresh.userIds` names them, the card the bot answers to an automatic refresh.
    pub async fn view(&self, endpoint: &str, user: &User, at: At<'_>) -> Value {
        let base = self
            .posted(at.conversation, at.activity_id)
            .expect("posted card")
            .card();
        let named = base["refresh"]["userIds"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i == &json!(user.id)));
        if !named {
            return base;
        }
        let refresh = &base["refresh"]["action"];
        let invoke = self.invoke(
            user,
            at,
            refresh["verb"].as_str().unwrap(),
            refresh["data"].clone(),
            "automatic",
        );
        let answer = self
            .send(endpoint, &invoke, Some(&self.channel_token()))
            .await;
        assert_eq!(answer.status(), 200, "refresh invoke");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["statusCode"], 200, "{body}");
        assert_eq!(
            body["type"], "application/vnd.microsoft.card.adaptive",
            "{body}"
        );
        body["value"].clone()
    }

    /// `user` fills `inputs` (input id -> value) and clicks the `Action.Execute` button with
    /// `verb` on `card` (what they see of `at`). Panics if the card has no such
    /// button. Returns the bot's HTTP answer.
    pub async fn click(
        &self,
        endpoint: &str,
        user: &User,
        at: At<'_>,
        card: &Value,
        verb: &str,
        inputs: &[(&str, &str)],
    ) -> reqwest::Response {
        let button = execute_buttons(card)
            .into_iter()
            .find(|b| b["verb"] == verb)
            .unwrap_or_else(|| panic!("no {verb} button on {card}"));
        let mut data = button["data"].clone();
        if data.is_null() {
            data = json!({});
        }
        for (id, value) in inputs {
            assert!(
                input_ids(card).iter().any(|i| i == id),
                "no input {id} on {card}"
            );
            data[*id] = json!(value);
        }
        let invoke = self.invoke(user, at, verb, data, "manual");
        self.send(endpoint, &invoke, Some(&self.channel_token()))
            .await
    }
}

/// The `Action.Execute` buttons of a card.
pub fn execute_buttons(card: &Value) -> Vec<Value> {
    card["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|b| b["type"] == "Action.Execute")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of a card's inputs (top-level body).
pub fn input_ids(card: &Value) -> Vec<String> {
    card["body"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("Input.")))
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn sign_rs256(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".to_owned());
    header.x5t = Some(kid.to_owned());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn jwk(pem: &str, kid: &str) -> Value {
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&pem_der(pem)).unwrap();
    let parts = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    json!({
        "kty": "RSA", "use": "sig", "kid": kid, "x5t": kid,
        "n": URL_SAFE_NO_PAD.encode(&parts.n), "e": URL_SAFE_NO_PAD.encode(&parts.e),
        "endorsements": ["msteams", "webchat", "directline"],
    })
}

fn record(s: &Inner, op: &'static str, status: u16) {
    s.calls.lock().unwrap().push(Call { op, status });
}

/// The queued fault for `op`, recorded, as a response.
fn fault(s: &Inner, op: &'static str) -> Option<Response> {
    let f = s.faults.lock().unwrap().get_mut(op)?.pop_front()?;
    Some(match f {
        Fault::RateLimited(secs) => {
            record(s, op, 429);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(http::header::RETRY_AFTER, secs.to_string())],
                Json(json!({"error": {"code": "TooManyRequests", "message": "Too many requests"}})),
            )
                .into_response()
        }
        Fault::Http(status) => {
            record(s, op, status);
            (
                StatusCode::from_u16(status).unwrap(),
                "<html>service trouble</html>",
            )
                .into_response()
        }
    })
}

use axum::Json;

fn error(s: &Inner, op: &'static str, status: StatusCode, code: &str, message: &str) -> Response {
    record(s, op, status.as_u16());
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn metadata(State(s): State<Arc<Inner>>) -> Response {
    record(&s, "metadata", 200);
    let addr = s.addr.lock().unwrap().unwrap();
    Json(json!({
        "issuer": ISSUER,
        "authorization_endpoint": "https://invalid.botframework.com",
        "jwks_uri": format!("http://{addr}/v1/.well-known/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    }))
    .into_response()
}

async fn keys(State(s): State<Arc<Inner>>) -> Response {
    record(&s, "keys", 200);
    Json(json!({"keys": [jwk(BF_KEY, KID)]})).into_response()
}

async fn token(
    State(s): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = fault(&s, "token") {
        return r;
    }
    let form_ok = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let aad_error = |status: StatusCode, code: &str| {
        record(&s, "token", status.as_u16());
        (
            status,
            Json(json!({"error": code, "error_description": format!("AADSTS: {code}")})),
        )
            .into_response()
    };
    if !form_ok || form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    if tenant != TENANT {
        return aad_error(StatusCode::BAD_REQUEST, "invalid_tenant");
    }
    if form.get("client_id").map(String::as_str) != Some(APP_ID)
        || form.get("client_secret").map(String::as_str) != Some(APP_PASSWORD)
    {
        return aad_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("scope").map(String::as_str) != Some(SCOPE) {
        return aad_error(StatusCode::BAD_REQUEST, "invalid_scope");
    }
    let n = s.next_id.fetch_add(1, Ordering::SeqCst);
    let token = format!("eyFakeBotConnectorToken.{n}");
    let lifetime = *s.token_lifetime.lock().unwrap();
    s.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), now() + lifetime);
    record(&s, "token", 200);
    Json(json!({
        "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
        "access_token": token,
    }))
    .into_response()
}

/// Checks the Bearer token of a Bot Connector call.
fn authorized(s: &Inner, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    s.tokens
        .lock()
        .unwrap()
        .get(token)
        .is_some_and(|&exp| now() < exp)
}

/// A conversation the service knows (a channel's id, a team's or a chat's).
fn known(s: &Inner, conversation: &str) -> bool {
    s.rosters.lock().unwrap().contains_key(conversation)
        || s.channel_team.lock().unwrap().contains_key(conversation)
}

fn roster(s: &Inner, conversation: &str) -> Option<Vec<String>> {
    let team = s
        .channel_team
        .lock()
        .unwrap()
        .get(conversation)
        .cloned()
        .unwrap_or_else(|| conversation.to_owned());
    s.rosters.lock().unwrap().get(&team).cloned()
}

/// Common checks; `Err` is the answer.
fn gate(
    s: &Inner,
    op: &'static str,
    region: &str,
    conversation: &str,
    headers: &HeaderMap,
) -> Result<(), Response> {
    if !authorized(s, headers) {
        return Err(error(
            s,
            op,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Authorization has been denied for this request.",
        ));
    }
    if let Some(r) = fault(s, op) {
        return Err(r);
    }
    if region != REGION || !known(s, conversation) {
        return Err(error(
            s,
            op,
            StatusCode::NOT_FOUND,
            "ConversationNotFound",
            "Conversation not found.",
        ));
    }
    Ok(())
}

/// A message activity with one Adaptive Card attachment, within the size limit.
fn check_activity(s: &Inner, op: &'static str, body: &Bytes) -> Result<Value, Response> {
    if body.len() > 28 * 1024 {
        return Err(error(
            s,
            op,
            StatusCode::PAYLOAD_TOO_LARGE,
            "MessageSizeTooBig",
            "Message size too big",
        ));
    }
    let Ok(activity) = serde_json::from_slice::<Value>(body) else {
        return Err(error(
            s,
            op,
            StatusCode::BAD_REQUEST,
            "BadSyntax",
            "Bad JSON",
        ));
    };
    let card = &activity["attachments"][0];
    let ok = activity["type"] == "message"
        && card["contentType"] == "application/vnd.microsoft.card.adaptive"
        && card["content"]["type"] == "AdaptiveCard";
    if !ok {
        return Err(error(
            s,
            op,
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Unknown attachment type",
        ));
    }
    Ok(activity)
}

async fn create_activity(
    State(s): State<Arc<Inner>>,
    Path((region, conversation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const OP: &str = "create";
    if let Err(r) = gate(&s, OP, &region, &conversation, &headers) {
        return r;
    }
    let activity = match check_activity(&s, OP, &body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = s.next_id.fetch_add(1, Ordering::SeqCst).to_string();
    s.posted.lock().unwrap().push(Posted {
        conversation: conversation.clone(),
        id: id.clone(),
        activity,
        updates: 0,
    });
    record(&s, OP, 201);
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

async fn update_activity(
    State(s): State<Arc<Inner>>,
    Path((region, conversation, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const OP: &str = "update";
    if let Err(r) = gate(&s, OP, &region, &conversation, &headers) {
        return r;
    }
    let activity = match check_activity(&s, OP, &body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut posted = s.posted.lock().unwrap();
    let Some(p) = posted
        .iter_mut()
        .find(|p| p.conversation == conversation && p.id == id)
    else {
        drop(posted);
        return error(
            &s,
            OP,
            StatusCode::NOT_FOUND,
            "ActivityNotFoundInConversation",
            "Activity not found",
        );
    };
    p.activity = activity;
    p.updates += 1;
    drop(posted);
    record(&s, OP, 200);
    Json(json!({"id": id})).into_response()
}

async fn members(
    State(s): State<Arc<Inner>>,
    Path((region, conversation)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    const OP: &str = "members";
    if let Err(r) = gate(&s, OP, &region, &conversation, &headers) {
        return r;
    }
    let ids = roster(&s, &conversation).unwrap_or_default();
    let users = s.users.lock().unwrap();
    let list: Vec<Value> = ids
        .iter()
        .filter_map(|id| users.get(id))
        .map(User::json)
        .collect();
    drop(users);
    record(&s, OP, 200);
    Json(Value::Array(list)).into_response()
}

async fn member(
    State(s): State<Arc<Inner>>,
    Path((region, conversation, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    const OP: &str = "member";
    if let Err(r) = gate(&s, OP, &region, &conversation, &headers) {
        return r;
    }
    let in_roster = roster(&s, &conversation).is_some_and(|r| r.contains(&id));
    let user = s.users.lock().unwrap().get(&id).cloned();
    match user.filter(|_| in_roster) {
        Some(u) => {
            record(&s, OP, 200);
            Json(u.json()).into_response()
        }
        None => error(
            &s,
            OP,
            StatusCode::NOT_FOUND,
            "MemberNotFoundInConversation",
            "The member could not be found in the conversation",
        ),
    }
}

/// How long tests wait for something the proxy does in the background.
pub const WAIT: Duration = Duration::from_secs(20);
