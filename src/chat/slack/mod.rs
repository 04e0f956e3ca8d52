//! Slack (SPEC 3 `[slack]`, 4 `notify`/`approve_via`, 6 `POST /slack/interactions`).
//!
//! - [`SlackNotifier`] posts a Block Kit message per `slack:` target when an approval is
//!   requested and keeps every posted copy true afterwards (`chat.update`, a thread reply per
//!   event, the outcome DM'd to the requester).
//! - [`interactions`] serves Slack's button callbacks: signature first, ack at once, then the
//!   vote goes to [`Broker::decide`](crate::approval::Broker::decide) in a spawned task.
//! - [`SlackApp`] is the shared state both need: Web API client, user caches, and the record
//!   of posted messages.
//!
//! Owns talking to Slack. Must not decide anything itself: every vote goes through the broker,
//! which checks who may vote.
//!
//! The record of posted messages and the clicks already handled live in the
//! [`ChatState`](crate::approval::store::ChatState) given to [`SlackApp::with_state`]: the
//! shared Redis store when `[approvals] store` is Redis, so any replica updates every copy and
//! a replayed click is a no-op on every replica; this process's memory otherwise
//! ([`crate::chat::state`]). A click whose replay check cannot be made is not counted (and,
//! as a timed-out write may still land, may count as seen: its user clicks again).
//!
//! Setting up the Slack app: bot token scopes `chat:write` (post and update),
//! `chat:write.public` (post in public channels without inviting the bot; otherwise invite it),
//! `im:write` (`conversations.open` for DMs), `users:read` and `users:read.email` (map clicks to
//! emails and emails to DMs). Interactivity on, Request URL `{public_url}/slack/interactions`.
//!
//! Trust: a click counts only when Slack signed it and, with `[slack] team_id`, it comes from
//! that workspace. Ephemeral answers go to a payload's `response_url` only when it points at
//! Slack (`https://hooks.slack.com`) or at the configured `api_url`'s origin (tests use a local
//! fake), and never follow redirects, so a signed payload cannot make Countersign contact any
//! other host. Request-derived text (host, path, query, names, reasons) is escaped per Slack's
//! rules wherever it lands in `text` or mrkdwn ([`blocks::escape`]).
//!
//! Timing: a Web API call may take up to [`RetryPolicy`]'s attempts (4 by default, each up to
//! 5 s, plus backoff and `Retry-After` waits up to 5 s). The broker gives a notifier
//! `notify_timeout` (2 s by default) before it records `notify.failed` and drops the call, so
//! deployments with Slack should raise it (10-30 s) or a rate-limited post is abandoned early.
#![warn(missing_docs)]

pub mod api;
pub mod blocks;
mod interactions;
mod notifier;
pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use url::Url;

pub use api::{ApiError, Body, RetryPolicy, WebApi};
pub use interactions::{interactions, router};
pub use notifier::SlackNotifier;
pub use signature::SignatureError;

use crate::approval::store::ChatState;
use crate::approval::{Approval, ApprovalId, StoreError};
use crate::chat::state::ChatMemory;
use crate::clock::SharedClock;
use crate::secret::Secret;

/// How long a Slack user's email (and an email's user id) is trusted before asking again.
const USER_CACHE_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a click is remembered to recognise a replay (longer than the signature window).
const CLICK_MEMORY: Duration = Duration::from_secs(10 * 60);
/// The scope of Slack's entries in the chat state.
const SCOPE: &str = "slack";

/// One posted copy of an approval message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PostedMessage {
    /// Conversation id (channel or DM) as Slack returned it.
    pub channel: String,
    /// Message timestamp (Slack's message id within the conversation).
    pub ts: String,
}

/// The Slack app could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("slack: cannot build HTTP client: {0}")]
pub struct SlackSetupError(String);

/// Shared Slack state. Cheap to clone; clones share caches and the posted-message record.
#[derive(Debug, Clone)]
pub struct SlackApp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: WebApi,
    http: reqwest::Client,
    signing_secret: Secret,
    /// `[slack] team_id`: the only workspace whose clicks count.
    team_id: Option<String>,
    /// Origin of `api_url`: the one host besides Slack's that a `response_url` may name.
    api_origin: url::Origin,
    public_url: Url,
    clock: SharedClock,
    email_by_user: moka::future::Cache<String, String>,
    user_by_email: moka::future::Cache<String, String>,
    /// Posted copies, clicks already handled, the newest state shown.
    memory: ChatMemory<PostedMessage>,
}

impl SlackApp {
    /// The app for `[slack]`, linking to approval pages under `public_url`, calling Slack
    /// with `retry`, with posted copies and clicks remembered in `state` (the shared store:
    /// every replica updates every copy and refuses every replay; a
    /// [`MemoryChatState`](crate::approval::store::MemoryChatState) for one
    /// process). `clock` judges signature timestamps.
    pub fn with_state(
        config: &crate::config::Slack,
        public_url: Url,
        clock: SharedClock,
        retry: RetryPolicy,
        state: Arc<dyn ChatState>,
    ) -> Result<Self, SlackSetupError> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            // Neither Slack's Web API nor a response_url redirects; following one could carry a
            // POST to a host we never checked.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SlackSetupError(e.to_string()))?;
        let api = WebApi::new(
            http.clone(),
            config.api_url.clone(),
            config.bot_token.clone(),
            retry,
        );
        let user_cache = || {
            moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(USER_CACHE_TTL)
                .build()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                api,
                http,
                signing_secret: config.signing_secret.clone(),
                team_id: config.team_id.clone(),
                api_origin: config.api_url.origin(),
                public_url,
                memory: ChatMemory::new(state, SCOPE, clock.clone(), CLICK_MEMORY),
                clock,
                email_by_user: user_cache(),
                user_by_email: user_cache(),
            }),
        })
    }

    /// The Web API client.
    pub fn api(&self) -> &WebApi {
        &self.inner.api
    }

    /// Base URL of the approval pages.
    pub fn public_url(&self) -> &Url {
        &self.inner.public_url
    }

    /// Every message posted for `id` so far (channel copies and DMs, by any replica sharing
    /// the store), in posting order.
    pub async fn posted(&self, id: &ApprovalId) -> Result<Vec<PostedMessage>, StoreError> {
        self.inner.memory.copies(id).await
    }

    async fn remember_post(&self, a: &Approval, message: &PostedMessage) -> Result<(), StoreError> {
        self.inner.memory.add_copy(a, message).await
    }

    /// Posted copies, clicks handled and states shown, shared with every replica.
    fn memory(&self) -> &ChatMemory<PostedMessage> {
        &self.inner.memory
    }

    /// Checks Slack's signature headers over the raw `body` (now per the injected clock).
    pub fn verify(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        signature::verify_headers(
            self.inner.signing_secret.expose().as_bytes(),
            headers,
            body,
            self.inner.clock.unix(),
        )
    }

    /// Whether a click from workspace `team` (the payload's `team.id`), by a user of
    /// `user_team` (`user.team_id`, when Slack sends it), may count: always without
    /// `[slack] team_id`; otherwise both must name that workspace (a missing `team.id` fails).
    fn click_team_allowed(&self, team: Option<&str>, user_team: Option<&str>) -> bool {
        same_workspace(self.inner.team_id.as_deref(), team, user_team)
    }

    /// Whether `url` (a payload's `response_url`) may be contacted: Slack's own
    /// `https://hooks.slack.com`, or the origin of the configured `api_url`. No credentials in
    /// the URL either way.
    fn response_url_allowed(&self, url: &Url) -> bool {
        response_url_allowed(url, &self.inner.api_origin)
    }

    /// Records a click; `false` when the same click was seen before, on any replica sharing
    /// the store (a replay or a retry). An error: it could not be checked, so it must not count.
    async fn first_click(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.memory.first_seen(key).await
    }

    /// The email of Slack user `user_id` (`users.info`, cached); `None` when Slack shows none
    /// (a bot, or the app lacks the `users:read.email` scope).
    pub async fn email_of(&self, user_id: &str) -> Result<Option<String>, ApiError> {
        remembered(&self.inner.email_by_user, user_id.to_owned(), async {
            let answer = self
                .api()
                .call(
                    "users.info",
                    Body::Form(vec![("user".into(), user_id.into())]),
                )
                .await?;
            Ok(answer["user"]["profile"]["email"]
                .as_str()
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty()))
        })
        .await
    }

    /// The Slack user with `email` (`users.lookupByEmail`, cached); `None` if there is none.
    pub async fn user_for(&self, email: &str) -> Result<Option<String>, ApiError> {
        let email = email.trim().to_lowercase();
        remembered(&self.inner.user_by_email, email.clone(), async {
            let answer = self
                .api()
                .call(
                    "users.lookupByEmail",
                    Body::Form(vec![("email".into(), email)]),
                )
                .await;
            let answer = match answer {
                Err(e) if e.slack_code() == Some("users_not_found") => return Ok(None),
                other => other?,
            };
            Ok(answer["user"]["id"].as_str().map(str::to_owned))
        })
        .await
    }

    /// Opens (or finds) the DM with `user_id` and returns its conversation id.
    pub async fn open_dm(&self, user_id: &str) -> Result<String, ApiError> {
        let answer = self
            .api()
            .call(
                "conversations.open",
                Body::Json(json!({ "users": user_id })),
            )
            .await?;
        answer["channel"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Slack {
                method: "conversations.open".into(),
                code: "no_channel_in_answer".into(),
            })
    }

    /// Tells only the clicking user `text` through the payload's `response_url`, leaving the
    /// message as it is. Failures are logged: the click already changed nothing.
    async fn ephemeral(&self, response_url: Option<&str>, text: &str) {
        let Some(url) = response_url else {
            tracing::warn!("slack click without response_url; cannot answer it");
            return;
        };
        let url = match Url::parse(url) {
            Ok(u) if self.response_url_allowed(&u) => u,
            Ok(u) => {
                // Only the host is logged: the path of a real response_url is a capability.
                tracing::warn!(
                    host = u.host_str().unwrap_or(""),
                    "slack response_url is neither Slack's nor api_url's host; not contacted"
                );
                return;
            }
            Err(_) => {
                tracing::warn!("slack response_url is not a URL; not contacted");
                return;
            }
        };
        let body = json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": text,
        });
        let sent = self
            .inner
            .http
            .post(url)
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                "slack response_url refused the reply"
            ),
            Err(e) => tracing::warn!(error = %e.without_url(), "slack response_url unreachable"),
        }
    }
}

/// `cache[key]`, else what `fetch` finds, remembered only when it found something (a user
/// missing now may exist, or get an email, a minute later).
async fn remembered(
    cache: &moka::future::Cache<String, String>,
    key: String,
    fetch: impl std::future::Future<Output = Result<Option<String>, ApiError>>,
) -> Result<Option<String>, ApiError> {
    if let Some(value) = cache.get(&key).await {
        return Ok(Some(value));
    }
    let found = fetch.await?;
    if let Some(value) = &found {
        cache.insert(key, value.clone()).await;
    }
    Ok(found)
}

/// Slack's host for `response_url`s.
const RESPONSE_URL_HOST: &str = "hooks.slack.com";

/// See [`SlackApp::click_team_allowed`].
pub(crate) fn same_workspace(
    expected: Option<&str>,
    team: Option<&str>,
    user_team: Option<&str>,
) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    team == Some(expected) && user_team.is_none_or(|t| t == expected)
}

/// See [`SlackApp::response_url_allowed`].
pub(crate) fn response_url_allowed(url: &Url, api_origin: &url::Origin) -> bool {
    let slack = url.scheme() == "https"
        && url.host_str() == Some(RESPONSE_URL_HOST)
        && url.port_or_known_default() == Some(443);
    let api = api_origin.is_tuple() && url.origin() == *api_origin;
    (slack || api) && url.username().is_empty() && url.password().is_none()
}

#[cfg(test)]
mod tests;
