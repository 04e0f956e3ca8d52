//! A fake Slack Web API on 127.0.0.1, faithful where Countersign depends on it:
//!
//! - `POST /api/{method}` for `chat.postMessage`, `chat.update`, `chat.postEphemeral`,
//!   `users.info`, `users.lookupByEmail`, `conversations.open`; anything else answers
//!   `unknown_method`, like Slack.
//! - Bearer token checked (`not_authed` / `invalid_auth`), JSON and form bodies both accepted
//!   (a JSON body on a read method is accepted too, as the test cannot tell Slack's rules apart),
//!   `ok: false` errors with Slack's codes (`channel_not_found`, `message_not_found`,
//!   `users_not_found`, `user_not_found`, `no_text`, `invalid_blocks`), always HTTP 200.
//! - Programmable faults: a queue per method of 429 (with `Retry-After`), 5xx or `ok: false`
//!   answers, or a permanent fault.
//! - `POST /response/{key}`: a `response_url` that records ephemeral replies.
//! - Every call is recorded, and messages are kept per conversation (thread replies included)
//!   so tests can read what each copy says now.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

/// The bot token the fake accepts.
pub const BOT_TOKEN: &str = "xoxb-test-token";

/// One recorded Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Method name, e.g. `chat.postMessage`.
    pub method: String,
    /// The arguments (a form body is turned into a JSON object of strings).
    pub args: Value,
    /// `json` or `form`.
    pub encoding: &'static str,
    /// Whether the bearer token was right.
    pub authorized: bool,
}

/// A message as it stands now.
#[derive(Debug, Clone)]
pub struct Message {
    /// Conversation id.
    pub channel: String,
    /// Message id.
    pub ts: String,
    /// Parent message for thread replies.
    pub thread_ts: Option<String>,
    /// Fallback text.
    pub text: String,
    /// Block Kit blocks (`null` if none).
    pub blocks: Value,
    /// How many times `chat.update` changed it.
    pub updates: usize,
}

impl Message {
    /// Text and blocks as one string, for `contains` checks.
    pub fn rendered(&self) -> String {
        format!("{}\n{}", self.text, self.blocks)
    }

    /// The approval id its Approve button carries.
    pub fn approval_id(&self) -> String {
        self.buttons()
            .into_iter()
            .find(|b| b["action_id"] == "approve")
            .and_then(|b| b["value"].as_str().map(str::to_owned))
            .expect("an Approve button with the approval id")
    }

    /// The `action_id`s of the buttons in its actions blocks.
    pub fn buttons(&self) -> Vec<Value> {
        self.blocks
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "actions")
                    .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A fault to answer instead of the real thing.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// This HTTP status with an HTML body (like a load balancer).
    Http(u16),
    /// HTTP 200 `{"ok": false, "error": code}`.
    Error(&'static str),
}

#[derive(Debug, Default)]
struct Inner {
    users: Mutex<Vec<(String, String)>>,
    channels: Mutex<HashMap<String, String>>,
    calls: Mutex<Vec<Call>>,
    messages: Mutex<Vec<Message>>,
    next_ts: AtomicU64,
    queued: Mutex<HashMap<String, VecDeque<Fault>>>,
    permanent: Mutex<HashMap<String, Fault>>,
    /// Percent of calls (any method) answered 429 or 500 at random, after queued faults.
    flaky_percent: AtomicU64,
    ephemeral: Mutex<Vec<(String, Value)>>,
}

/// The running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeSlack {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSlack {
    /// Starts the fake with no users and no channels.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            next_ts: AtomicU64::new(1_700_000_000_000_100),
            ..Inner::default()
        });
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::post(api))
            .route("/response/{key}", axum::routing::post(response_url))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, inner, task }
    }

    /// The Web API base URL (`api_url` in `[slack]`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// A `response_url` for one click; replies to it are recorded under `key`.
    pub fn response_url(&self, key: &str) -> String {
        format!("http://{}/response/{key}", self.addr)
    }

    /// Adds a workspace member.
    pub fn add_user(&self, id: &str, email: &str) {
        self.inner
            .users
            .lock()
            .unwrap()
            .push((id.to_owned(), email.to_owned()));
    }

    /// Adds a public channel `#name` with conversation id `id`.
    pub fn add_channel(&self, name: &str, id: &str) {
        self.inner
            .channels
            .lock()
            .unwrap()
            .insert(name.to_owned(), id.to_owned());
    }

    /// The next calls of `method` answer these faults, in order.
    pub fn queue_faults(&self, method: &str, faults: impl IntoIterator<Item = Fault>) {
        self.inner
            .queued
            .lock()
            .unwrap()
            .entry(method.to_owned())
            .or_default()
            .extend(faults);
    }

    /// Every call of `method` answers `fault` from now on (`"*"`: every method).
    pub fn fail_always(&self, method: &str, fault: Fault) {
        self.inner
            .permanent
            .lock()
            .unwrap()
            .insert(method.to_owned(), fault);
    }

    /// From now on, `percent` of all calls answer 429 (`Retry-After: 1`) or 500 at random,
    /// as Slack does under load (the fault soak).
    pub fn flaky(&self, percent: u64) {
        self.inner
            .flaky_percent
            .store(percent.min(100), Ordering::SeqCst);
    }

    /// Every recorded call.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Recorded calls of `method`.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Top-level messages (not thread replies) in `channel`, oldest first.
    pub fn messages_in(&self, channel: &str) -> Vec<Message> {
        self.inner
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.channel == channel && m.thread_ts.is_none())
            .cloned()
            .collect()
    }

    /// Replies in the thread of `channel`/`ts`, oldest first.
    pub fn thread(&self, channel: &str, ts: &str) -> Vec<Message> {
        self.inner
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(ts))
            .cloned()
            .collect()
    }

    /// The message `channel`/`ts` as it stands now.
    pub fn message(&self, channel: &str, ts: &str) -> Option<Message> {
        self.inner
            .messages
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.channel == channel && m.ts == ts)
            .cloned()
    }

    /// Ephemeral replies posted to the `response_url` of `key`.
    pub fn ephemeral_replies(&self, key: &str) -> Vec<Value> {
        self.inner
            .ephemeral
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every ephemeral reply, any key.
    pub fn all_ephemeral_replies(&self) -> Vec<(String, Value)> {
        self.inner.ephemeral.lock().unwrap().clone()
    }

    /// The DM conversation id `conversations.open` gives for `user`.
    pub fn dm_of(user: &str) -> String {
        format!("D{user}")
    }
}

async fn response_url(
    State(s): State<Arc<Inner>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = content_type(&headers).starts_with("application/json");
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if is_json => {
            s.ephemeral.lock().unwrap().push((key, v));
            (StatusCode::OK, "ok").into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "invalid_payload").into_response(),
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn ok(mut fields: Value) -> Response {
    fields["ok"] = json!(true);
    axum::Json(fields).into_response()
}

fn err(code: &str) -> Response {
    axum::Json(json!({"ok": false, "error": code})).into_response()
}

async fn api(
    State(s): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = content_type(&headers);
    let (args, encoding) = if ct.starts_with("application/json") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => (v, "json"),
            _ => return err("invalid_json"),
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let map: Map<String, Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        (Value::Object(map), "form")
    } else {
        return err("invalid_form_data");
    };
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = token == Some(BOT_TOKEN);
    s.calls.lock().unwrap().push(Call {
        method: method.clone(),
        args: args.clone(),
        encoding,
        authorized,
    });
    match token {
        None => return err("not_authed"),
        Some(_) if !authorized => return err("invalid_auth"),
        Some(_) => {}
    }
    if let Some(fault) = next_fault(&s, &method) {
        return fault_response(fault);
    }
    match method.as_str() {
        "chat.postMessage" => post_message(&s, &args),
        "chat.update" => update(&s, &args),
        "chat.postEphemeral" => post_ephemeral(&s, &args),
        "users.info" => users_info(&s, &args),
        "users.lookupByEmail" => lookup_by_email(&s, &args),
        "conversations.open" => open(&s, &args),
        _ => err("unknown_method"),
    }
}

fn next_fault(s: &Inner, method: &str) -> Option<Fault> {
    if let Some(f) = s
        .queued
        .lock()
        .unwrap()
        .get_mut(method)
        .and_then(VecDeque::pop_front)
    {
        return Some(f);
    }
    let percent = s.flaky_percent.load(Ordering::SeqCst);
    if percent > 0 && rand::random::<u64>() % 100 < percent {
        return Some(if rand::random::<bool>() {
            Fault::RateLimited(1)
        } else {
            Fault::Http(500)
        });
    }
    let permanent = s.permanent.lock().unwrap();
    permanent
        .get(method)
        .or_else(|| permanent.get("*"))
        .cloned()
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(http::header::RETRY_AFTER, secs.to_string())],
            "",
        )
            .into_response(),
        Fault::Http(status) => (
            StatusCode::from_u16(status).unwrap(),
            [(http::header::CONTENT_TYPE, "text/html")],
            "<html>upstream trouble</html>",
        )
            .into_response(),
        Fault::Error(code) => err(code),
    }
}

fn arg<'a>(args: &'a Value, name: &str) -> Option<&'a str> {
    args[name].as_str().filter(|s| !s.is_empty())
}

/// A conversation id from an id or `#name`; `None` if there is no such conversation.
fn resolve_channel(s: &Inner, channel: &str) -> Option<String> {
    let channels = s.channels.lock().unwrap();
    if let Some(name) = channel.strip_prefix('#') {
        return channels.get(name).cloned();
    }
    let users = s.users.lock().unwrap();
    let known_dm = users.iter().any(|(id, _)| FakeSlack::dm_of(id) == channel);
    (channels.values().any(|id| id == channel) || known_dm).then(|| channel.to_owned())
}

/// Slack's limits that a message from Countersign could plausibly break.
fn blocks_valid(blocks: &Value) -> bool {
    let Some(list) = blocks.as_array() else {
        return false;
    };
    if list.is_empty() || list.len() > 50 {
        return false;
    }
    list.iter().all(|b| {
        let typed = b["type"].is_string();
        let header_ok = b["type"] != "header"
            || b["text"]["text"]
                .as_str()
                .is_some_and(|t| t.chars().count() <= 150);
        let section_ok = b["type"] != "section"
            || b["text"]["text"]
                .as_str()
                .is_some_and(|t| t.chars().count() <= 3000)
            || b["fields"].as_array().is_some_and(|f| f.len() <= 10);
        let buttons_ok = b["type"] != "actions"
            || b["elements"].as_array().is_some_and(|els| {
                els.len() <= 25
                    && els.iter().all(|e| {
                        e["action_id"].is_string()
                            && e["text"]["text"]
                                .as_str()
                                .is_some_and(|t| t.chars().count() <= 75)
                            && e["value"].as_str().is_none_or(|v| v.len() <= 2000)
                    })
            });
        typed && header_ok && section_ok && buttons_ok
    })
}

fn post_message(s: &Inner, args: &Value) -> Response {
    let Some(channel) = arg(args, "channel") else {
        return err("channel_not_found");
    };
    let Some(channel) = resolve_channel(s, channel) else {
        return err("channel_not_found");
    };
    let blocks = args.get("blocks").cloned().unwrap_or(Value::Null);
    if arg(args, "text").is_none() && blocks.is_null() {
        return err("no_text");
    }
    if !blocks.is_null() && !blocks_valid(&blocks) {
        return err("invalid_blocks");
    }
    let thread_ts = arg(args, "thread_ts").map(str::to_owned);
    if let Some(parent) = &thread_ts {
        let exists = s
            .messages
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.channel == channel && &m.ts == parent);
        if !exists {
            return err("thread_not_found");
        }
    }
    let n = s.next_ts.fetch_add(1, Ordering::SeqCst);
    let ts = format!("{}.{:06}", n / 1_000_000, n % 1_000_000);
    let message = Message {
        channel: channel.clone(),
        ts: ts.clone(),
        thread_ts,
        text: arg(args, "text").unwrap_or("").to_owned(),
        blocks,
        updates: 0,
    };
    s.messages.lock().unwrap().push(message);
    ok(json!({"channel": channel, "ts": ts, "message": {"text": args["text"]}}))
}

fn update(s: &Inner, args: &Value) -> Response {
    let (Some(channel), Some(ts)) = (arg(args, "channel"), arg(args, "ts")) else {
        return err("message_not_found");
    };
    if channel.starts_with('#') {
        // chat.update needs the conversation id, not a name.
        return err("channel_not_found");
    }
    let blocks = args.get("blocks").cloned().unwrap_or(Value::Null);
    if !blocks.is_null() && !blocks_valid(&blocks) {
        return err("invalid_blocks");
    }
    let mut messages = s.messages.lock().unwrap();
    let Some(m) = messages
        .iter_mut()
        .find(|m| m.channel == channel && m.ts == ts)
    else {
        return err("message_not_found");
    };
    if let Some(text) = arg(args, "text") {
        m.text = text.to_owned();
    }
    if !blocks.is_null() {
        m.blocks = blocks;
    }
    m.updates += 1;
    ok(json!({"channel": channel, "ts": ts, "text": m.text}))
}

fn post_ephemeral(s: &Inner, args: &Value) -> Response {
    let (Some(channel), Some(user)) = (arg(args, "channel"), arg(args, "user")) else {
        return err("channel_not_found");
    };
    if resolve_channel(s, channel).is_none() {
        return err("channel_not_found");
    }
    if !s.users.lock().unwrap().iter().any(|(id, _)| id == user) {
        return err("user_not_in_channel");
    }
    let n = s.next_ts.fetch_add(1, Ordering::SeqCst);
    ok(json!({"message_ts": format!("{}.{:06}", n / 1_000_000, n % 1_000_000)}))
}

fn user_json(id: &str, email: &str) -> Value {
    json!({"id": id, "team_id": "T0TEST", "name": email.split('@').next().unwrap_or(""),
           "profile": {"email": email, "real_name": email}})
}

fn users_info(s: &Inner, args: &Value) -> Response {
    let Some(user) = arg(args, "user") else {
        return err("user_not_found");
    };
    let users = s.users.lock().unwrap();
    match users.iter().find(|(id, _)| id == user) {
        Some((id, email)) => ok(json!({"user": user_json(id, email)})),
        None => err("user_not_found"),
    }
}

fn lookup_by_email(s: &Inner, args: &Value) -> Response {
    let Some(email) = arg(args, "email") else {
        return err("users_not_found");
    };
    let users = s.users.lock().unwrap();
    match users.iter().find(|(_, e)| e.eq_ignore_ascii_case(email)) {
        Some((id, email)) => ok(json!({"user": user_json(id, email)})),
        None => err("users_not_found"),
    }
}

fn open(s: &Inner, args: &Value) -> Response {
    let Some(user) = arg(args, "users") else {
        return err("users_list_not_supplied");
    };
    if !s.users.lock().unwrap().iter().any(|(id, _)| id == user) {
        return err("user_not_found");
    }
    ok(json!({"channel": {"id": FakeSlack::dm_of(user)}}))
}

/// A click on an Approve or Deny button, as Slack describes it in a `block_actions` payload.
#[derive(Debug, Clone, Copy)]
pub struct Click<'a> {
    /// The clicking user's id.
    pub user: &'a str,
    /// `approve` or `deny`.
    pub action: &'a str,
    /// The approval id (the button's value).
    pub approval: &'a str,
    /// The message clicked: conversation id and ts.
    pub channel: &'a str,
    /// The message's ts.
    pub ts: &'a str,
    /// Slack's `trigger_id`: unique per click.
    pub trigger: &'a str,
    /// Where ephemeral answers go.
    pub response_url: &'a str,
}

/// A click signed as Slack signs it: the form body and its signature headers, so the very
/// same request can be delivered again (a replay) to any replica.
#[derive(Debug, Clone)]
pub struct SignedClick {
    /// `payload=...` form body.
    pub body: String,
    /// `X-Slack-Request-Timestamp`.
    pub timestamp: String,
    /// `X-Slack-Signature`.
    pub signature: String,
}

impl Click<'_> {
    /// The request Slack would send now, signed with `secret`.
    pub fn signed(&self, secret: &str) -> SignedClick {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string();
        let payload = json!({
            "type": "block_actions",
            "user": {"id": self.user, "username": self.user.to_lowercase()},
            "trigger_id": self.trigger,
            "response_url": self.response_url,
            "container": {"type": "message", "channel_id": self.channel, "message_ts": self.ts},
            "actions": [{"type": "button", "action_id": self.action, "block_id": "decision",
                         "value": self.approval, "action_ts": format!("{now}.000100")}],
            "state": {"values": {}},
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form");
        let signature =
            countersign::chat::slack::signature::sign(secret.as_bytes(), &now, body.as_bytes());
        SignedClick {
            body,
            timestamp: now,
            signature,
        }
    }
}

impl SignedClick {
    /// POSTs it to the control plane at `control_url`; returns the HTTP status.
    pub async fn deliver(&self, control_url: &str) -> u16 {
        super::http_client()
            .post(format!("{control_url}/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", &self.timestamp)
            .header("x-slack-signature", &self.signature)
            .body(self.body.clone())
            .send()
            .await
            .expect("deliver the click")
            .status()
            .as_u16()
    }
}
