//! Microsoft Teams bot mode (`[teams] app_id`, SPEC 3 `[teams]`, 6 `POST /teams/messages`):
//! approvers approve or deny inside Teams, and the card updates for everyone.
//!
//! - [`TeamsBotNotifier`] posts one Adaptive Card per approval to every configured
//!   conversation (proactive `POST {serviceUrl}/v3/conversations/{id}/activities`), remembers
//!   each copy ([`PostedCard`], in the shared chat state) and updates every copy in place at
//!   each vote and at the end, from whichever replica handled the event.
//! - [`router`] serves `POST /teams/messages`, the bot's messaging endpoint: the Bot Framework
//!   token is checked first ([`auth`]), replays are dropped, and an `Action.Execute` click
//!   (`adaptiveCard/action` invoke) becomes a vote through
//!   [`Broker::decide`](crate::approval::Broker::decide); the invoke response refreshes the
//!   clicking user's card at once.
//! - [`TeamsBot`] is the state both share: the Bot Connector client with its token cache
//!   ([`connector`]), the inbound verifier, member caches, and the bot's memory
//!   ([`crate::chat::state::ChatMemory`]: the Redis store with a Redis `[approvals] store`).
//!
//! Owns talking to the Bot Framework. Must not decide anything itself: every vote goes through
//! the broker, which checks who may vote (approver, own request, already voted, login-only
//! rules), exactly as for Slack.
//!
//! Who clicked: the activity's `from.id` is looked up in the conversation's roster through the
//! Bot Connector (`GET .../members/{id}`, the same call as the SDKs' `TeamsInfo.getMember`);
//! the answer's Entra object id must equal `from.aadObjectId` and its tenant the configured
//! `tenant_id`, and its UPN (or, failing that, its email) is the approver identity. No Graph
//! permission is needed.
//!
//! Timing: an invoke must be answered within a few seconds, so a vote gets
//! [`INVOKE_BUDGET`]; when recording it takes longer (a slow audit log, a rate-limited Bot
//! Connector while the other copies are updated), the clicking user gets the state as it
//! stands and the update that follows brings the rest.
#![warn(missing_docs)]

pub mod auth;
pub mod cards;
pub mod connector;
mod messages;
mod notifier;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use auth::{AuthError, BotAuth};
pub use connector::{Connector, ConnectorError, Member};
pub use messages::{messages, router};
pub use notifier::TeamsBotNotifier;
pub use store::PostedCard;

use crate::approval::store::ChatState;
use crate::approval::{Approval, ApprovalId};
use crate::chat::slack::RetryPolicy;
use crate::chat::state::ChatMemory;
use crate::clock::SharedClock;
use crate::config::TeamsConversation;

/// How long a vote may take before the clicking user is answered with the current state.
pub const INVOKE_BUDGET: Duration = Duration::from_secs(4);
/// How long a conversation's roster (for `refresh.userIds`) is reused.
const ROSTER_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a clicking user's identity (member lookup) is reused.
const MEMBER_TTL: Duration = Duration::from_secs(15 * 60);
/// How long an activity id is remembered to recognise a replay (longer than a token lives).
const ACTIVITY_MEMORY: Duration = Duration::from_secs(2 * 3600);
/// The scope of the bot's entries in the chat state.
const SCOPE: &str = "teams";

/// The bot could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("teams: cannot build HTTP client: {0}")]
pub struct TeamsBotSetupError(String);

/// Shared bot state. Cheap to clone; clones share caches and memory.
#[derive(Debug, Clone)]
pub struct TeamsBot {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tenant_id: String,
    conversations: Vec<TeamsConversation>,
    public_url: String,
    auth: BotAuth,
    connector: Connector,
    memory: ChatMemory<PostedCard>,
    rosters: moka::future::Cache<(String, String), Arc<Vec<Member>>>,
    members: moka::future::Cache<(String, String), Member>,
}

impl TeamsBot {
    /// The bot for `[teams]` in bot mode, linking to approval pages under `public_url`,
    /// calling the Bot Connector with `retry`, with its memory in `state` (the shared store lets
    /// every replica update every copy and refuse every replay; a
    /// [`MemoryChatState`](crate::approval::store::MemoryChatState) for one
    /// process). `clock` judges token times.
    pub fn with_state(
        config: &crate::config::TeamsBot,
        public_url: &Url,
        clock: SharedClock,
        retry: RetryPolicy,
        state: Arc<dyn ChatState>,
    ) -> Result<Self, TeamsBotSetupError> {
        let memory = ChatMemory::new(state, SCOPE, clock.clone(), ACTIVITY_MEMORY);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TeamsBotSetupError(e.to_string()))?;
        let connector = Connector::new(
            http.clone(),
            config.token_url.clone(),
            config.app_id.clone(),
            config.app_password.clone(),
            retry,
        );
        let auth = BotAuth::new(
            http,
            config.openid_metadata_url.clone(),
            config.app_id.clone(),
            clock,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                tenant_id: config.tenant_id.clone(),
                conversations: config.conversations.clone(),
                public_url: public_url.as_str().trim_end_matches('/').to_owned(),
                auth,
                connector,
                memory,
                rosters: moka::future::Cache::builder()
                    .max_capacity(1_000)
                    .time_to_live(ROSTER_TTL)
                    .build(),
                members: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(MEMBER_TTL)
                    .build(),
            }),
        })
    }

    /// The Bot Connector client.
    pub fn connector(&self) -> &Connector {
        &self.inner.connector
    }

    /// The bot's memory (posted copies, seen activities).
    pub fn memory(&self) -> &ChatMemory<PostedCard> {
        &self.inner.memory
    }

    /// The approval page of `id`.
    pub fn page(&self, id: &ApprovalId) -> String {
        format!("{}/approvals/{id}", self.inner.public_url)
    }

    /// The member ids (`29:...`) in conversation `conversation_id` of the approvers of `a`
    /// who may still vote: `refresh.userIds`. Empty when the roster cannot be read (the card
    /// then offers "Refresh card" in its menu instead of refreshing by itself).
    async fn voters_in(
        &self,
        service_url: &Url,
        conversation_id: &str,
        a: &Approval,
    ) -> Vec<String> {
        let key = (service_url.to_string(), conversation_id.to_owned());
        let roster = self
            .inner
            .rosters
            .try_get_with(key, async {
                self.connector()
                    .members(service_url, conversation_id)
                    .await
                    .map(Arc::new)
            })
            .await;
        let roster = match roster {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "teams: cannot read the conversation roster; approvers must refresh the card by hand");
                return Vec::new();
            }
        };
        roster
            .iter()
            .filter(|m| {
                m.addresses()
                    .iter()
                    .any(|addr| a.approvers.contains(addr) && !a.has_voted(addr))
            })
            .map(|m| m.id.clone())
            .collect()
    }

    /// Who `member_id` is, per the Bot Connector roster of `conversation_id` (cached).
    async fn member(
        &self,
        service_url: &Url,
        conversation_id: &str,
        member_id: &str,
    ) -> Result<Option<Member>, ConnectorError> {
        let key = (service_url.to_string(), member_id.to_owned());
        if let Some(m) = self.inner.members.get(&key).await {
            return Ok(Some(m));
        }
        let found = self
            .connector()
            .member(service_url, conversation_id, member_id)
            .await?;
        if let Some(m) = &found {
            self.inner.members.insert(key, m.clone()).await;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests;
