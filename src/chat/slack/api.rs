//! A small Slack Web API client: bearer bot token, JSON or form bodies, and the retry rules
//! Slack asks for (honour `429 Retry-After`; retry 5xx and network errors with backoff).
//!
//! Every answer is checked for `{"ok": true}`; `{"ok": false, "error": ...}` becomes
//! [`ApiError::Slack`] and is not retried, except `ratelimited`.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::secret::Secret;

/// How hard to try before giving up on one Web API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub base_backoff: Duration,
    /// Longest single backoff.
    pub max_backoff: Duration,
    /// Longest `Retry-After` we are willing to sleep; longer asks fail the call at once, so
    /// the broker's notify timeout (and the held caller) are not spent waiting.
    pub max_retry_after: Duration,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// A Web API call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Slack answered `{"ok": false, "error": code}`.
    #[error("slack {method}: {code}")]
    Slack {
        /// Web API method, e.g. `chat.postMessage`.
        method: String,
        /// Slack's error code, e.g. `channel_not_found`.
        code: String,
    },
    /// Still rate limited (or asked to wait too long) after the allowed attempts.
    #[error("slack {method}: rate limited")]
    RateLimited {
        /// Web API method.
        method: String,
    },
    /// HTTP status without a usable answer (5xx after retries, or an unexpected 4xx).
    #[error("slack {method}: HTTP {status}")]
    Http {
        /// Web API method.
        method: String,
        /// HTTP status code.
        status: u16,
    },
    /// Could not reach Slack or read its answer (after retries).
    #[error("slack {method}: {detail}")]
    Network {
        /// Web API method.
        method: String,
        /// What failed (no token in it).
        detail: String,
    },
}

impl ApiError {
    /// Slack's error code, if Slack answered `ok: false`.
    pub fn slack_code(&self) -> Option<&str> {
        match self {
            ApiError::Slack { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The body of one call.
#[derive(Debug, Clone)]
pub enum Body {
    /// `application/json; charset=utf-8` (write methods such as `chat.postMessage`).
    Json(Value),
    /// `application/x-www-form-urlencoded` (read methods such as `users.info`, which do not
    /// accept JSON bodies).
    Form(Vec<(String, String)>),
}

/// What one attempt produced.
enum Attempt {
    Done(Value),
    /// Try again: after exactly this long (`Retry-After`), or `None` for exponential backoff.
    Retry(Option<Duration>, ApiError),
    Fail(ApiError),
}

/// The client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebApi {
    http: reqwest::Client,
    base: Url,
    token: Secret,
    retry: RetryPolicy,
}

impl WebApi {
    /// A client for `base` (e.g. `https://slack.com/api`) using `token`.
    pub fn new(http: reqwest::Client, base: Url, token: Secret, retry: RetryPolicy) -> Self {
        Self {
            http,
            base,
            token,
            retry,
        }
    }

    /// The retry rules in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Calls `method` and returns Slack's JSON answer (with `ok: true`).
    pub async fn call(&self, method: &str, body: Body) -> Result<Value, ApiError> {
        let url = format!("{}/{method}", self.base.as_str().trim_end_matches('/'));
        let attempts = self.retry.max_attempts.max(1);
        let mut last = ApiError::Network {
            method: method.to_owned(),
            detail: "not attempted".to_owned(),
        };
        for attempt in 0..attempts {
            match self.attempt(&url, method, &body).await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(wait, e) => {
                    let wait = wait.unwrap_or_else(|| self.backoff(attempt));
                    tracing::debug!(method, attempt, error = %e, wait_ms = wait.as_millis() as u64,
                        "slack call will be retried");
                    last = e;
                    if attempt + 1 < attempts {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        Err(last)
    }

    async fn attempt(&self, url: &str, method: &str, body: &Body) -> Attempt {
        let request = self
            .http
            .post(url)
            .bearer_auth(self.token.expose())
            .timeout(self.retry.attempt_timeout);
        let request = match body {
            Body::Json(v) => request
                .header(
                    http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(v.to_string()),
            Body::Form(pairs) => request.form(pairs),
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(None, network(method, e)),
        };
        let status = response.status();
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            return self.rate_limited(method, retry_after(response.headers()));
        }
        if status.is_server_error() {
            let e = ApiError::Http {
                method: method.to_owned(),
                status: status.as_u16(),
            };
            return Attempt::Retry(None, e);
        }
        let headers = response.headers().clone();
        let value: Value = match response.json().await {
            Ok(v) => v,
            Err(e) if status.is_success() => return Attempt::Retry(None, network(method, e)),
            Err(_) => {
                return Attempt::Fail(ApiError::Http {
                    method: method.to_owned(),
                    status: status.as_u16(),
                })
            }
        };
        if value["ok"] == Value::Bool(true) {
            return Attempt::Done(value);
        }
        let code = value["error"]
            .as_str()
            .unwrap_or("unknown_error")
            .to_owned();
        if code == "ratelimited" {
            return self.rate_limited(method, retry_after(&headers));
        }
        Attempt::Fail(ApiError::Slack {
            method: method.to_owned(),
            code,
        })
    }

    fn rate_limited(&self, method: &str, wait: Option<Duration>) -> Attempt {
        let e = ApiError::RateLimited {
            method: method.to_owned(),
        };
        match wait {
            Some(w) if w > self.retry.max_retry_after => Attempt::Fail(e),
            Some(w) => Attempt::Retry(Some(w), e),
            None => Attempt::Retry(None, e),
        }
    }

    /// `base * 2^attempt`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.retry
            .base_backoff
            .saturating_mul(factor)
            .min(self.retry.max_backoff)
    }
}

fn network(method: &str, e: reqwest::Error) -> ApiError {
    // reqwest's Display never includes request headers, so the token cannot leak here.
    ApiError::Network {
        method: method.to_owned(),
        detail: e.without_url().to_string(),
    }
}

/// `Retry-After` in seconds (Slack never sends the HTTP-date form).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
