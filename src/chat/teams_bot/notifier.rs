//! [`TeamsBotNotifier`]: the broker's [`Notifier`] for `notify = ["teams"]` in bot mode.

use async_trait::async_trait;
use url::Url;

use super::cards::{self, View};
use super::store::PostedCard;
use super::TeamsBot;
use crate::approval::{Approval, Notifier, NotifyError, NotifyEvent};

/// Posts the approval card to every configured conversation and keeps every copy true.
///
/// `notify` fails when any copy could not be posted or updated (after the Bot Connector
/// client's retries), so the broker audits `notify.failed`; the other copies are still tried.
/// Approvals without the `teams` target are ignored.
#[derive(Debug, Clone)]
pub struct TeamsBotNotifier {
    bot: TeamsBot,
}

impl TeamsBotNotifier {
    /// A notifier sharing `bot`'s client, caches and memory.
    pub fn new(bot: TeamsBot) -> Self {
        Self { bot }
    }
}

#[async_trait]
impl Notifier for TeamsBotNotifier {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        if !crate::chat::notifies_teams(approval) {
            return Ok(());
        }
        let approval = &crate::chat::with_outcome(approval, event);
        // One notification at a time per approval: a vote arriving while the request is still
        // being posted waits, then updates every copy.
        let mut turn = self.bot.memory().turn(approval).await;
        let failures = match event {
            NotifyEvent::Requested => {
                let (posted, mut failures) = self.post_everywhere(approval).await;
                // Another replica may have shown a newer state (a click on the first card)
                // while these were being posted.
                let memory = self.bot.memory();
                memory
                    .catch_up(approval, &mut turn, &mut failures, |newer| async move {
                        self.update_copies(&newer, &posted).await
                    })
                    .await;
                failures
            }
            // A reminder or the escalation is a new card in each conversation (remembered
            // like the first, so the decision updates it too).
            NotifyEvent::Reminder | NotifyEvent::Escalated => {
                self.post_everywhere(approval).await.1
            }
            _ if turn.current => {
                // Noted before the copies are read: a replica still posting cards of this
                // approval sees the note after it recorded them, or this reads them.
                let noted = self.bot.memory().note_shown(approval).await;
                let mut failures = self.update_everywhere(approval).await;
                if let Err(e) = noted {
                    failures.push(format!("cannot share the shown state: {e}"));
                }
                failures
            }
            // An older snapshot than the cards show: nothing to change.
            _ => Vec::new(),
        };
        turn.finish(failures, Some("teams"))
    }
}

impl TeamsBotNotifier {
    /// Posts the card to every configured conversation at once, remembering each copy as
    /// soon as it is posted so that a click handled meanwhile (on any replica) updates it;
    /// returns the copies and what failed.
    async fn post_everywhere(&self, a: &Approval) -> (Vec<PostedCard>, Vec<String>) {
        let conversations = &self.bot.inner.conversations;
        if conversations.is_empty() {
            return (
                Vec::new(),
                vec!["[teams] has no conversations to post to".to_owned()],
            );
        }
        let posts = conversations.iter().map(|c| async move {
            let activity_id = self
                .post(a, &c.service_url, &c.conversation_id)
                .await
                .map_err(|e| format!("{}: {e}", c.conversation_id))?;
            let copy = PostedCard {
                service_url: c.service_url.to_string(),
                conversation_id: c.conversation_id.clone(),
                activity_id,
            };
            if let Err(e) = self.bot.memory().add_copy(a, &copy).await {
                // Fails the notification (audited `notify.failed`): this copy is posted but no
                // replica will update it.
                tracing::error!(approval_id = %a.id, conversation = %c.conversation_id, error = %e, "teams card posted but not remembered");
                return Err(format!(
                    "{}: posted but not remembered: {e}",
                    c.conversation_id
                ));
            }
            Ok(copy)
        });
        let mut posted = Vec::new();
        let mut failures = Vec::new();
        for done in futures::future::join_all(posts).await {
            match done {
                Ok(copy) => posted.push(copy),
                Err(e) => failures.push(e),
            }
        }
        (posted, failures)
    }

    async fn post(
        &self,
        a: &Approval,
        service_url: &Url,
        conversation_id: &str,
    ) -> Result<String, super::ConnectorError> {
        let voters = self.bot.voters_in(service_url, conversation_id, a).await;
        let card = cards::card(a, &self.bot.page(&a.id), &voters, View::Status);
        let activity = cards::message_activity(a, card);
        self.bot
            .connector()
            .create_activity(service_url, conversation_id, &activity)
            .await
    }

    /// Replaces every posted copy with the current card, all at once; returns what failed.
    async fn update_everywhere(&self, a: &Approval) -> Vec<String> {
        match self.bot.memory().copies(&a.id).await {
            Ok(copies) => self.update_copies(a, &copies).await,
            Err(e) => vec![format!("cannot read the posted copies: {e}")],
        }
    }

    /// Replaces `copies` with the card of `a`, all at once; returns what failed.
    async fn update_copies(&self, a: &Approval, copies: &[PostedCard]) -> Vec<String> {
        let page = self.bot.page(&a.id);
        let updates = copies.iter().map(|copy| {
            let page = page.clone();
            async move {
                let service_url = Url::parse(&copy.service_url)
                    .map_err(|e| format!("{}: bad service URL: {e}", copy.conversation_id))?;
                let voters = self
                    .bot
                    .voters_in(&service_url, &copy.conversation_id, a)
                    .await;
                let card = cards::card(a, &page, &voters, View::Status);
                let activity = cards::message_activity(a, card);
                self.bot
                    .connector()
                    .update_activity(
                        &service_url,
                        &copy.conversation_id,
                        &copy.activity_id,
                        &activity,
                    )
                    .await
                    .map_err(|e| format!("update {}: {e}", copy.conversation_id))
            }
        });
        futures::future::join_all(updates)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }
}
