//! PagerDuty's REST API v2 as an [`OnCallResolver`]: `GET {api_url}/oncalls?schedule_ids[]=ID`
//! gives `oncalls[].user.id`, then `GET {api_url}/users/{id}` gives `user.email`, both with
//! `Authorization: Token token=...` and `Accept: application/vnd.pagerduty+json;version=2`.
//!
//! One schedule's answer is cached for `[pagerduty] cache` (concurrent askers share one fetch;
//! failures are not cached). A whole resolution (every page and user) is bounded by
//! [`RESOLUTION_TIMEOUT`]; redirects are not followed and bodies are capped. Any failure fails
//! the whole entry: the broker then counts nobody for it. Error messages name the request and
//! the status, never the token. Must not audit, and must not know about approvals.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use url::Url;

use crate::approval::{OnCallError, OnCallResolver};
use crate::config::PagerDuty;

/// Longest one schedule's resolution (all its requests together) may take.
pub const RESOLUTION_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest response body read from PagerDuty.
const BODY_CAP: usize = 1024 * 1024;

/// `limit` asked for per `/oncalls` page (PagerDuty's maximum).
const PAGE_LIMIT: usize = 100;

/// Most `/oncalls` pages read for one schedule; more is refused rather than cut short.
const MAX_PAGES: usize = 10;

/// PagerDuty's versioned media type.
const ACCEPT_V2: &str = "application/vnd.pagerduty+json;version=2";

/// A PagerDuty REST API v2 client that answers who is on call in a schedule.
#[derive(Debug, Clone)]
pub struct PagerDutyClient {
    http: reqwest::Client,
    /// `api_url` without a trailing slash.
    base: String,
    /// `Token token=...`, marked sensitive.
    authorization: HeaderValue,
    /// Schedule id -> emails; `None` when `cache` is zero.
    cache: Option<moka::future::Cache<String, Arc<Vec<String>>>>,
    timeout: Duration,
}

impl PagerDutyClient {
    /// A client for `config`. Fails only if the token cannot be a header value or the HTTP
    /// client cannot be built.
    pub fn new(config: &PagerDuty) -> Result<Self, String> {
        let mut authorization =
            HeaderValue::from_str(&format!("Token token={}", config.api_token.expose()))
                .map_err(|_| "[pagerduty] api_token holds characters a header cannot carry")?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            // One bound for the whole resolution ([`Self::fetch`]), not one per request.
            .connect_timeout(RESOLUTION_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("PagerDuty HTTP client: {e}"))?;
        let cache = (!config.cache.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.cache)
                .build()
        });
        Ok(Self {
            http,
            base: config.api_url.as_str().trim_end_matches('/').to_owned(),
            authorization,
            cache,
            timeout: RESOLUTION_TIMEOUT,
        })
    }

    /// Resolves `schedule` without the cache, bounded by the resolution timeout.
    async fn fetch(&self, schedule: &str) -> Result<Vec<String>, OnCallError> {
        match tokio::time::timeout(self.timeout, self.fetch_unbounded(schedule)).await {
            Ok(r) => r,
            Err(_) => Err(OnCallError(format!(
                "PagerDuty did not answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn fetch_unbounded(&self, schedule: &str) -> Result<Vec<String>, OnCallError> {
        let users = self.on_call_users(schedule).await?;
        let emails = futures::future::join_all(users.iter().map(|u| self.email_of(u))).await;
        emails.into_iter().collect()
    }

    /// Distinct `oncalls[].user.id` of entries for `schedule`, every page read.
    async fn on_call_users(&self, schedule: &str) -> Result<Vec<String>, OnCallError> {
        let mut ids: Vec<String> = Vec::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let mut url = self.url("oncalls")?;
            url.query_pairs_mut()
                .append_pair("schedule_ids[]", schedule)
                .append_pair("limit", &PAGE_LIMIT.to_string())
                .append_pair("offset", &offset.to_string());
            let page: OnCalls = self.get_json(url, "GET /oncalls").await?;
            let read = page.oncalls.len();
            // Only entries of this schedule count (an entry without one is not from it).
            let users = page
                .oncalls
                .into_iter()
                .filter(|o| o.schedule.as_ref().is_some_and(|s| s.id == schedule))
                .filter_map(|o| o.user);
            for user in users {
                if !ids.contains(&user.id) {
                    ids.push(user.id);
                }
            }
            if !page.more || read == 0 {
                return Ok(ids);
            }
            offset += read;
        }
        Err(OnCallError(format!(
            "GET /oncalls: more than {} entries",
            MAX_PAGES * PAGE_LIMIT
        )))
    }

    /// `user.email` of user `id`.
    async fn email_of(&self, id: &str) -> Result<String, OnCallError> {
        let mut url = self.url("users")?;
        url.path_segments_mut()
            .map_err(|()| OnCallError("api_url cannot take a path".into()))?
            .push(id);
        let what = format!("GET /users/{id}");
        let found: UserEnvelope = self.get_json(url, &what).await?;
        match found.user.email {
            Some(e) if e.contains('@') && !e.trim().is_empty() => Ok(e.trim().to_lowercase()),
            _ => Err(OnCallError(format!("{what}: the user has no email"))),
        }
    }

    /// `{api_url}/{path}`.
    fn url(&self, path: &str) -> Result<Url, OnCallError> {
        Url::parse(&format!("{}/{path}", self.base))
            .map_err(|e| OnCallError(format!("api_url: {e}")))
    }

    /// GETs `url` with the token and reads a JSON body of at most [`BODY_CAP`] bytes.
    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: Url,
        what: &str,
    ) -> Result<T, OnCallError> {
        let fail = |why: String| OnCallError(format!("{what}: {why}"));
        let resp = self
            .http
            .get(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, ACCEPT_V2)
            .send()
            .await
            .map_err(|e| fail(describe(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(format!("PagerDuty answered {}", status.as_u16())));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(describe(&e)))? {
            if body.len() + chunk.len() > BODY_CAP {
                return Err(fail(format!("response larger than {BODY_CAP} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("unexpected JSON ({e})")))
    }
}

/// A transport error without its URL's query (the URL never holds the token either way).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[async_trait]
impl OnCallResolver for PagerDutyClient {
    async fn on_call(&self, schedule: &str) -> Result<Vec<String>, OnCallError> {
        let Some(cache) = &self.cache else {
            return self.fetch(schedule).await;
        };
        cache
            .try_get_with(schedule.to_owned(), async {
                self.fetch(schedule).await.map(Arc::new)
            })
            .await
            .map(|emails| emails.as_ref().clone())
            .map_err(|e| e.as_ref().clone())
    }
}

/// `GET /oncalls` (the fields used).
#[derive(Debug, Deserialize)]
struct OnCalls {
    oncalls: Vec<OnCall>,
    #[serde(default)]
    more: bool,
}

/// One on-call entry.
#[derive(Debug, Deserialize)]
struct OnCall {
    user: Option<Reference>,
    schedule: Option<Reference>,
}

/// `{"id": ..., "type": ...}`.
#[derive(Debug, Deserialize)]
struct Reference {
    id: String,
}

/// `GET /users/{id}`.
#[derive(Debug, Deserialize)]
struct UserEnvelope {
    user: User,
}

/// A user (the field used).
#[derive(Debug, Deserialize)]
struct User {
    email: Option<String>,
}
