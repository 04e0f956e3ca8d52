//! What the bot remembers between requests: the posted copies of each approval card
//! ([`PostedCard`]: conversation reference + activity id, so every copy can be updated) and the
//! activities already handled (replay protection).
//!
//! Both live in the chat state shared by Slack and Teams ([`crate::chat::state`], scope
//! `"teams"`): with `[approvals] store` on Redis, every replica updates every copy of a card
//! and refuses an activity any replica already handled; with the memory store, this process
//! remembers them. Owns only the record of a copy; must not talk to the Bot Connector.

use serde::{Deserialize, Serialize};

/// One posted copy of an approval card: where it is and which activity it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedCard {
    /// The conversation's Bot Connector endpoint.
    pub service_url: String,
    /// Channel or chat id.
    pub conversation_id: String,
    /// Activity id the Bot Connector returned.
    pub activity_id: String,
}
