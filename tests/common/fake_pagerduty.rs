//! A fake PagerDuty REST API v2 on 127.0.0.1, faithful where Countersign depends on it:
//!
//! - `GET /oncalls?schedule_ids[]=ID[&limit=&offset=]`: `{"oncalls": [...], "limit", "offset",
//!   "more", "total": null}` with PagerDuty's entry shape (`user` and `schedule` references,
//!   `escalation_policy`, `escalation_level`, `start`, `end`). Without `schedule_ids[]` it
//!   answers 400 (a real account would list every on-call, which is never what is wanted).
//!   The first user of a schedule is also on call at escalation level 2, as happens when one
//!   person sits on two levels: a client must deduplicate.
//! - `GET /users/{id}`: `{"user": {"id", "type": "user", "name", "email", ...}}`, 404 with
//!   PagerDuty's error body for an unknown id.
//! - `Authorization: Token token=...` checked on every call: 401 with PagerDuty's error body
//!   (`{"error": {"message": "Authentication failed", "code": 2006}}`) otherwise.
//! - Programmable faults: answer every call with a status (e.g. 500), answer 200 with a body
//!   that is not PagerDuty's JSON, delay every answer, or cap the page size below the `limit`
//!   asked for (so a client must follow `more`).
//! - Counts calls per endpoint and remembers the `Accept` header last sent.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

/// The API token the fake accepts.
pub const PD_TOKEN: &str = "u+FakePagerDutyToken42";

/// A person who can be on call.
#[derive(Debug, Clone)]
pub struct Person {
    /// PagerDuty user id, e.g. `P123`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Login email.
    pub email: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// Schedule id -> who is on call now, in escalation order.
    schedules: Mutex<HashMap<String, Vec<Person>>>,
    /// Every call answers this status when set.
    fault: Mutex<Option<u16>>,
    /// Every answer waits this long first.
    latency: Mutex<Duration>,
    /// Every call answers 200 with a body that is not PagerDuty's JSON.
    garbage: std::sync::atomic::AtomicBool,
    /// Largest page `/oncalls` returns, whatever `limit` asks.
    page_cap: Mutex<Option<usize>>,
    oncalls_calls: AtomicUsize,
    users_calls: AtomicUsize,
    unauthorized: AtomicUsize,
    /// The `schedule_ids[]` values of every `/oncalls` call.
    asked: Mutex<Vec<Vec<String>>>,
    /// The `Accept` header of the last call.
    accept: Mutex<Option<String>>,
}

/// The running fake; stops on drop.
#[derive(Debug)]
pub struct FakePagerDuty {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePagerDuty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePagerDuty {
    /// Starts the fake with no schedules.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .route("/oncalls", axum::routing::get(oncalls))
            .route("/users/{id}", axum::routing::get(user))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, inner, task }
    }

    /// The `[pagerduty] api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Puts `people` (`(id, name, email)`) on call in `schedule`, replacing whoever was.
    pub fn set_on_call(&self, schedule: &str, people: &[(&str, &str, &str)]) {
        let people = people
            .iter()
            .map(|(id, name, email)| Person {
                id: (*id).into(),
                name: (*name).into(),
                email: (*email).into(),
            })
            .collect();
        self.inner
            .schedules
            .lock()
            .unwrap()
            .insert(schedule.into(), people);
    }

    /// Every call answers `status` (with PagerDuty's error body) until cleared with `None`.
    pub fn set_fault(&self, status: Option<u16>) {
        *self.inner.fault.lock().unwrap() = status;
    }

    /// Every call answers 200 with `<html>` instead of JSON while `on`.
    pub fn set_garbage(&self, on: bool) {
        self.inner.garbage.store(on, Ordering::SeqCst);
    }

    /// `/oncalls` returns at most `cap` entries a page.
    pub fn set_page_cap(&self, cap: Option<usize>) {
        *self.inner.page_cap.lock().unwrap() = cap;
    }

    /// Every answer waits `latency` first.
    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().unwrap() = latency;
    }

    /// `GET /oncalls` calls so far (authorized or not).
    pub fn oncalls_calls(&self) -> usize {
        self.inner.oncalls_calls.load(Ordering::SeqCst)
    }

    /// `GET /users/{id}` calls so far (authorized or not).
    pub fn users_calls(&self) -> usize {
        self.inner.users_calls.load(Ordering::SeqCst)
    }

    /// Calls refused with 401.
    pub fn unauthorized(&self) -> usize {
        self.inner.unauthorized.load(Ordering::SeqCst)
    }

    /// The `schedule_ids[]` of every `/oncalls` call, in order.
    pub fn asked(&self) -> Vec<Vec<String>> {
        self.inner.asked.lock().unwrap().clone()
    }

    /// The `Accept` header of the last call.
    pub fn last_accept(&self) -> Option<String> {
        self.inner.accept.lock().unwrap().clone()
    }
}

/// PagerDuty's error envelope.
fn error(status: u16, message: &str, code: u32) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        axum::Json(json!({ "error": { "message": message, "code": code } })),
    )
        .into_response()
}

/// Latency, fault and token checks shared by every endpoint; `Some` answers at once.
async fn preamble(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let latency = *inner.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    *inner.accept.lock().unwrap() = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(format!("Token token={PD_TOKEN}").as_str()) {
        inner.unauthorized.fetch_add(1, Ordering::SeqCst);
        return Some(error(401, "Authentication failed", 2006));
    }
    if let Some(status) = *inner.fault.lock().unwrap() {
        return Some(error(status, "Internal Server Error", 2001));
    }
    if inner.garbage.load(Ordering::SeqCst) {
        return Some((StatusCode::OK, "<html>maintenance</html>").into_response());
    }
    None
}

fn reference(kind: &str, id: &str, summary: &str) -> Value {
    json!({
        "id": id,
        "type": format!("{kind}_reference"),
        "summary": summary,
        "self": format!("https://api.pagerduty.com/{kind}s/{id}"),
        "html_url": format!("https://example.pagerduty.com/{kind}s/{id}"),
    })
}

async fn oncalls(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    inner.oncalls_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = preamble(&inner, &headers).await {
        return r;
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let ids: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "schedule_ids[]")
        .map(|(_, v)| v.clone())
        .collect();
    inner.asked.lock().unwrap().push(ids.clone());
    if ids.is_empty() {
        return error(400, "Invalid Input Provided: schedule_ids[] expected", 2001);
    }
    let limit: usize = get("limit").and_then(|l| l.parse().ok()).unwrap_or(25);
    let limit = inner
        .page_cap
        .lock()
        .unwrap()
        .map_or(limit, |cap| limit.min(cap));
    let offset: usize = get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let mut entries = Vec::new();
    let schedules = inner.schedules.lock().unwrap().clone();
    for id in &ids {
        for (i, p) in schedules.get(id).into_iter().flatten().enumerate() {
            let levels: &[u32] = if i == 0 { &[1, 2] } else { &[1] };
            for level in levels {
                entries.push(json!({
                    "escalation_policy": reference("escalation_policy", "PEP0001", "Prod"),
                    "escalation_level": level,
                    "schedule": reference("schedule", id, &format!("Schedule {id}")),
                    "user": reference("user", &p.id, &p.name),
                    "start": "2026-12-05T00:00:00Z",
                    "end": "2026-12-12T00:00:00Z",
                }));
            }
        }
    }
    let total = entries.len();
    let page: Vec<Value> = entries.into_iter().skip(offset).take(limit).collect();
    let more = offset + page.len() < total;
    axum::Json(json!({
        "oncalls": page,
        "limit": limit,
        "offset": offset,
        "more": more,
        "total": null,
    }))
    .into_response()
}

async fn user(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    inner.users_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = preamble(&inner, &headers).await {
        return r;
    }
    let schedules = inner.schedules.lock().unwrap().clone();
    let Some(p) = schedules.values().flatten().find(|p| p.id == id) else {
        return error(404, "Not Found", 2100);
    };
    axum::Json(json!({
        "user": {
            "id": p.id,
            "type": "user",
            "summary": p.name,
            "name": p.name,
            "email": p.email,
            "time_zone": "Europe/Berlin",
            "role": "user",
            "self": format!("https://api.pagerduty.com/users/{}", p.id),
            "html_url": format!("https://example.pagerduty.com/users/{}", p.id),
        }
    }))
    .into_response()
}
