//! Outbound calls: an access token from the Microsoft identity platform (OAuth 2.0 client
//! credentials, scope `https://api.botframework.com/.default`), cached until shortly before it
//! expires, and the Bot Connector REST API (`/v3/conversations/...`) of a conversation's
//! `serviceUrl`.
//!
//! Retries follow the Slack client's [`RetryPolicy`]: `429` waits for `Retry-After` (failing at
//! once when asked to wait longer than allowed), 5xx and network errors back off
//! exponentially, any other 4xx is final. A `401` from the Bot Connector drops the cached token
//! and tries once more with a fresh one. Neither the app password nor a token ever appears in
//! an error or a log line.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::chat::slack::RetryPolicy;
use crate::secret::Secret;

/// The scope of Bot Connector tokens.
pub const BOT_CONNECTOR_SCOPE: &str = "https://api.botframework.com/.default";
/// A token is renewed this long before it expires (at most half its lifetime).
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// Characters left as they are in a conversation id path segment: what JavaScript's
/// `encodeURIComponent` keeps (the Bot Framework SDKs encode ids with it).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// An outbound call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// No access token: the identity platform refused the credentials or was unreachable.
    #[error("teams token: {0}")]
    Token(String),
    /// Still rate limited (or asked to wait too long) after the allowed attempts.
    #[error("teams {op}: rate limited")]
    RateLimited {
        /// What was being done, e.g. `create activity`.
        op: &'static str,
    },
    /// An HTTP status without a usable answer (5xx after retries, or a 4xx).
    #[error("teams {op}: HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Http {
        /// What was being done.
        op: &'static str,
        /// HTTP status code.
        status: u16,
        /// The Bot Connector's `error.code`, when it sent one.
        code: Option<String>,
    },
    /// Could not reach the service or read its answer (after retries).
    #[error("teams {op}: {detail}")]
    Network {
        /// What was being done.
        op: &'static str,
        /// What failed (no URL query, no token).
        detail: String,
    },
}

impl ConnectorError {
    /// Whether the service answered 404 (no such conversation, activity or member).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConnectorError::Http { status: 404, .. })
    }
}

/// A conversation member as the Bot Connector describes it (`TeamsChannelAccount`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member's id in this bot's conversations (`29:...`): what `refresh.userIds` and an
    /// activity's `from.id` hold.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Microsoft Entra object id of the user.
    #[serde(default)]
    pub aad_object_id: Option<String>,
    /// Primary email address (Entra `mail`), when the user has one.
    #[serde(default)]
    pub email: Option<String>,
    /// User principal name (the sign-in name).
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// The member's tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl Member {
    /// The member's addresses an approver list may name, lowercased: UPN first, then email.
    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in [&self.user_principal_name, &self.email]
            .into_iter()
            .flatten()
        {
            let a = a.trim().to_lowercase();
            if !a.is_empty() && !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

/// A cached access token.
#[derive(Debug)]
struct Cached {
    token: Secret,
    renew_at: Instant,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// What one attempt produced.
enum Attempt {
    Done(Value),
    /// Try again after exactly this long (`Retry-After`), or `None` for backoff.
    Retry(Option<Duration>, ConnectorError),
    /// The token was refused: renew it and try again (once).
    Unauthorized(ConnectorError),
    Fail(ConnectorError),
}

/// The client, with its token cache (shared behind the bot's `Arc`).
#[derive(Debug)]
pub struct Connector {
    http: reqwest::Client,
    token_url: Url,
    app_id: String,
    app_password: Secret,
    retry: RetryPolicy,
    token: tokio::sync::Mutex<Option<Cached>>,
}

impl Connector {
    /// A client for the app `app_id` with `app_password`, getting tokens from `token_url`.
    pub fn new(
        http: reqwest::Client,
        token_url: Url,
        app_id: String,
        app_password: Secret,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            token_url,
            app_id,
            app_password,
            retry,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// Posts `activity` to the conversation; returns the new activity's id.
    pub async fn create_activity(
        &self,
        service_url: &Url,
        conversation_id: &str,
        activity: &Value,
    ) -> Result<String, ConnectorError> {
        const OP: &str = "create activity";
        let url = conversation_url(service_url, conversation_id, "activities");
        let answer = self
            .call(OP, reqwest::Method::POST, &url, Some(activity))
            .await?;
        answer["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or(ConnectorError::Network {
                op: OP,
                detail: "answer without an activity id".into(),
            })
    }

    /// Replaces activity `activity_id` in the conversation with `activity`.
    pub async fn update_activity(
        &self,
        service_url: &Url,
        conversation_id: &str,
        activity_id: &str,
        activity: &Value,
    ) -> Result<(), ConnectorError> {
        let path = format!("activities/{}", utf8_percent_encode(activity_id, SEGMENT));
        let url = conversation_url(service_url, conversation_id, &path);
        let mut activity = activity.clone();
        activity["id"] = Value::String(activity_id.to_owned());
        self.call(
            "update activity",
            reqwest::Method::PUT,
            &url,
            Some(&activity),
        )
        .await
        .map(drop)
    }

    /// One member of a conversation (or of the team a channel belongs to); `None` if the
    /// service does not know them there.
    pub async fn member(
        &self,
        service_url: &Url,
        conversation_id: &str,
        member_id: &str,
    ) -> Result<Option<Member>, ConnectorError> {
        const OP: &str = "get member";
        let path = format!("members/{}", utf8_percent_encode(member_id, SEGMENT));
        let url = conversation_url(service_url, conversation_id, &path);
        match self.call(OP, reqwest::Method::GET, &url, None).await {
            Ok(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|_| ConnectorError::Network {
                    op: OP,
                    detail: "unreadable member".into(),
                }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every member of a conversation (the team's members for a channel).
    pub async fn members(
        &self,
        service_url: &Url,
        conversation_id: &str,
    ) -> Result<Vec<Member>, ConnectorError> {
        const OP: &str = "get members";
        let url = conversation_url(service_url, conversation_id, "members");
        let answer = self.call(OP, reqwest::Method::GET, &url, None).await?;
        // Skip entries that are not users (bots have no UPN but parse; junk does not).
        Ok(answer
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|m| serde_json::from_value::<Member>(m.clone()).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sends one Bot Connector request with retries and returns the JSON answer (`Null` for
    /// an empty body).
    async fn call(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, ConnectorError> {
        let attempts = self.retry.max_attempts.max(1);
        let mut renewed = false;
        let mut last = ConnectorError::Network {
            op,
            detail: "not attempted".into(),
        };
        let mut attempt = 0;
        while attempt < attempts {
            let token = self.token().await?;
            let outcome = self.attempt(op, method.clone(), url, body, &token).await;
            let wait = match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Unauthorized(e) if !renewed => {
                    // A token revoked or rotated early: fetch a new one, once, without counting.
                    renewed = true;
                    self.forget_token(&token).await;
                    last = e;
                    continue;
                }
                Attempt::Unauthorized(e) => return Err(e),
                Attempt::Retry(wait, e) => {
                    let wait = wait.unwrap_or_else(|| backoff(&self.retry, attempt));
                    tracing::debug!(op, attempt, error = %e, wait_ms = wait.as_millis() as u64,
                        "teams call will be retried");
                    last = e;
                    wait
                }
            };
            attempt += 1;
            if attempt < attempts {
                tokio::time::sleep(wait).await;
            }
        }
        Err(last)
    }

    async fn attempt(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        token: &Secret,
    ) -> Attempt {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token.expose())
            .timeout(self.retry.attempt_timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(None, network(op, e)),
        };
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let e = ConnectorError::RateLimited { op };
            return match retry_after(response.headers()) {
                Some(w) if w > self.retry.max_retry_after => Attempt::Fail(e),
                wait => Attempt::Retry(wait, e),
            };
        }
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(None, network(op, e)),
        };
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Attempt::Done(value);
        }
        let e = ConnectorError::Http {
            op,
            status: status.as_u16(),
            code: value["error"]["code"].as_str().map(str::to_owned),
        };
        if status == reqwest::StatusCode::UNAUTHORIZED {
            Attempt::Unauthorized(e)
        } else if status.is_server_error() {
            Attempt::Retry(None, e)
        } else {
            Attempt::Fail(e)
        }
    }

    /// The cached token, or a new one (one fetch at a time; callers wait for it).
    async fn token(&self) -> Result<Secret, ConnectorError> {
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.token.clone());
            }
        }
        let (token, lifetime) = self.fetch_token().await?;
        let early = RENEW_BEFORE.min(lifetime / 2);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(early),
        });
        Ok(token)
    }

    /// Drops the cached token if it is still `used` (another task may have renewed it).
    async fn forget_token(&self, used: &Secret) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == used) {
            *cached = None;
        }
    }

    /// Client-credentials grant, with the same retry rules as API calls.
    async fn fetch_token(&self) -> Result<(Secret, Duration), ConnectorError> {
        let attempts = self.retry.max_attempts.max(1);
        let mut last = String::from("not attempted");
        for attempt in 0..attempts {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", self.app_id.as_str()),
                ("client_secret", self.app_password.expose()),
                ("scope", BOT_CONNECTOR_SCOPE),
            ];
            let sent = self
                .http
                .post(self.token_url.clone())
                .timeout(self.retry.attempt_timeout)
                .form(&form)
                .send()
                .await;
            let wait = match sent {
                Err(e) => {
                    last = crate::chat::teams::error_chain(&e.without_url());
                    None
                }
                Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    last = "rate limited".into();
                    match retry_after(r.headers()) {
                        Some(w) if w > self.retry.max_retry_after => {
                            return Err(ConnectorError::Token(last))
                        }
                        w => w,
                    }
                }
                Ok(r) if r.status().is_server_error() => {
                    last = format!("HTTP {}", r.status().as_u16());
                    None
                }
                Ok(r) if r.status().is_success() => {
                    let answer: TokenAnswer = r
                        .json()
                        .await
                        .map_err(|_| ConnectorError::Token("unreadable token answer".into()))?;
                    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600).max(60));
                    return Ok((Secret::new(answer.access_token), lifetime));
                }
                Ok(r) => {
                    // invalid_client, unauthorized_client, ...: wrong app id, password or
                    // tenant. Only the error code is kept (the description may echo input).
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let code = body["error"].as_str().unwrap_or("no error code");
                    return Err(ConnectorError::Token(format!(
                        "the identity platform refused the app credentials: HTTP {status} ({code})"
                    )));
                }
            };
            if attempt + 1 < attempts {
                tokio::time::sleep(wait.unwrap_or_else(|| backoff(&self.retry, attempt))).await;
            }
        }
        Err(ConnectorError::Token(format!(
            "{last} (gave up after {attempts} tries)"
        )))
    }
}

/// `{serviceUrl}/v3/conversations/{id}/{rest}` with the id encoded as one path segment.
pub fn conversation_url(service_url: &Url, conversation_id: &str, rest: &str) -> String {
    format!(
        "{}/v3/conversations/{}/{rest}",
        service_url.as_str().trim_end_matches('/'),
        utf8_percent_encode(conversation_id, SEGMENT)
    )
}

/// `base * 2^attempt`, capped.
fn backoff(retry: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    retry
        .base_backoff
        .saturating_mul(factor)
        .min(retry.max_backoff)
}

fn network(op: &'static str, e: reqwest::Error) -> ConnectorError {
    // `without_url`: a service URL may carry a path an operator considers private.
    ConnectorError::Network {
        op,
        detail: crate::chat::teams::error_chain(&e.without_url()),
    }
}

/// `Retry-After` in delta-seconds; an HTTP-date falls back to backoff.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
