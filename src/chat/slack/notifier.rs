//! [`SlackNotifier`]: the broker's [`Notifier`] for `slack:` targets.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::api::{ApiError, Body};
use super::blocks;
use super::{PostedMessage, SlackApp};
use crate::approval::{Approval, Notifier, NotifyError, NotifyEvent};
use crate::notify::NotifyTarget;

/// Posts approval requests to Slack and keeps every copy up to date.
///
/// `notify` returns an error when any copy could not be posted or updated (after the Web API
/// client's retries), so the broker audits `notify.failed`; the other copies are still tried.
/// Approvals without a `slack:` target are ignored.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    app: SlackApp,
}

impl SlackNotifier {
    /// A notifier sharing `app`'s client, caches and posted-message record.
    pub fn new(app: SlackApp) -> Self {
        Self { app }
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        let targets = slack_targets(&approval.notify);
        // An escalation's targets got copies too once it happened ([`Self::escalate`]).
        let escalation = approval.nudges.escalation.as_ref().filter(|e| e.done);
        let escalation_targets = escalation.map_or_else(Vec::new, |e| slack_targets(&e.notify));
        if targets.is_empty() && escalation_targets.is_empty() {
            return Ok(());
        }
        let approval = &crate::chat::with_outcome(approval, event);
        let mut turn = self.app.memory().turn(approval).await;
        let failures = match event {
            NotifyEvent::Requested => {
                let (posted, mut failures) = self.post_everywhere(approval, &targets).await;
                self.app
                    .memory()
                    .catch_up(approval, &mut turn, &mut failures, |newer| {
                        self.update_copies(newer, posted)
                    })
                    .await;
                failures
            }
            _ => {
                // Noted before the copies are read: a replica still posting copies of this
                // approval sees the note after it recorded them, or this reads them.
                let noted = self.app.memory().note_shown(approval).await;
                // A reminder changes nothing shown: only its thread reply is posted. A
                // snapshot older than what Slack already shows only adds its thread reply.
                let update = turn.current && *event != NotifyEvent::Reminder;
                let mut failures = self.follow_up(approval, event, update).await;
                if let Err(e) = noted {
                    failures.push(format!("cannot share the shown state: {e}"));
                }
                if *event == NotifyEvent::Escalated {
                    failures.extend(self.escalate(approval, event, &escalation_targets).await);
                }
                failures
            }
        };
        turn.finish(failures, None)
    }
}

impl SlackNotifier {
    /// Posts the request to every target at once (a slow or rate-limited target does not
    /// delay the others), remembering each copy as soon as it is posted so that a click
    /// handled meanwhile (on any replica) updates it; returns the copies and what failed.
    async fn post_everywhere(
        &self,
        a: &Approval,
        targets: &[&NotifyTarget],
    ) -> (Vec<PostedMessage>, Vec<String>) {
        let posts = targets.iter().map(|target| async move {
            let posted = match target {
                NotifyTarget::SlackChannel(name) => self.post_request(a, &channel_ref(name)).await,
                NotifyTarget::SlackUser(email) => self.post_dm_request(a, email).await,
                NotifyTarget::Teams => return None,
            };
            let message = match posted {
                Ok(message) => message,
                Err(e) => return Some(Err(format!("{}: {e}", describe(target)))),
            };
            if let Err(e) = self.app.remember_post(a, &message).await {
                // Fails the notification (audited `notify.failed`): this copy is posted but
                // no replica will update it.
                tracing::error!(approval_id = %a.id, channel = %message.channel, error = %e, "slack message posted but not remembered");
                return Some(Err(format!(
                    "{}: posted but not remembered: {e}",
                    describe(target)
                )));
            }
            Some(Ok(message))
        });
        let mut posted = Vec::new();
        let mut failures = Vec::new();
        for done in futures::future::join_all(posts).await.into_iter().flatten() {
            match done {
                Ok(message) => posted.push(message),
                Err(e) => failures.push(e),
            }
        }
        (posted, failures)
    }

    /// Calls `method` for every copy at once, with the body `body` makes of it; one failure
    /// line (`what`, the copy's channel, the error) per call that failed.
    async fn call_for_each(
        &self,
        copies: &[PostedMessage],
        method: &str,
        what: &str,
        body: impl Fn(&PostedMessage) -> Value,
    ) -> Vec<String> {
        let calls = copies.iter().map(|copy| {
            let body = body(copy);
            async move {
                let result = self.app.api().call(method, Body::Json(body)).await;
                result.map_err(|e| format!("{what} {}: {e}", copy.channel))
            }
        });
        let results = futures::future::join_all(calls).await;
        results.into_iter().filter_map(Result::err).collect()
    }

    /// Posts the request, as a new message, to the escalation's `targets` (so the added
    /// approvers can vote there; each copy is remembered and kept up to date like the others)
    /// and says in its thread why it was posted.
    async fn escalate(
        &self,
        a: &Approval,
        event: &NotifyEvent,
        targets: &[&NotifyTarget],
    ) -> Vec<String> {
        let (posted, mut failures) = self.post_everywhere(a, targets).await;
        let reply = blocks::event_text(a, event);
        let replied = self.call_for_each(&posted, "chat.postMessage", "thread reply", |copy| {
            reply_body(copy, &reply)
        });
        failures.extend(replied.await);
        failures
    }

    /// Brings the `posted` copies up to `newer`, a state another replica showed while they
    /// were being posted (see [`crate::chat::state::ChatMemory::catch_up`]).
    async fn update_copies(&self, newer: Approval, posted: Vec<PostedMessage>) -> Vec<String> {
        let text = blocks::fallback_text(&newer);
        let message = blocks::message_blocks(&newer, self.app.public_url());
        self.call_for_each(&posted, "chat.update", "update", |copy| {
            update_body(copy, &text, &message)
        })
        .await
    }

    async fn post_dm_request(&self, a: &Approval, email: &str) -> Result<PostedMessage, ApiError> {
        let user = self
            .app
            .user_for(email)
            .await?
            .ok_or_else(|| ApiError::Slack {
                method: "users.lookupByEmail".into(),
                code: "users_not_found".into(),
            })?;
        let dm = self.app.open_dm(&user).await?;
        self.post_request(a, &dm).await
    }

    async fn post_request(&self, a: &Approval, channel: &str) -> Result<PostedMessage, ApiError> {
        let body = json!({
            "channel": channel,
            "text": blocks::fallback_text(a),
            "blocks": blocks::message_blocks(a, self.app.public_url()),
            "unfurl_links": false,
        });
        let answer = self
            .app
            .api()
            .call("chat.postMessage", Body::Json(body))
            .await?;
        // chat.update needs the conversation id Slack resolved the name to, and the ts.
        let channel = answer["channel"].as_str().unwrap_or(channel).to_owned();
        let ts = answer["ts"].as_str().ok_or_else(|| ApiError::Slack {
            method: "chat.postMessage".into(),
            code: "no_ts_in_answer".into(),
        })?;
        Ok(PostedMessage {
            channel,
            ts: ts.to_owned(),
        })
    }

    /// Updates every copy and replies in its thread (all copies at once), then DMs the
    /// requester a decision. `current` is false for a snapshot older than what Slack shows.
    async fn follow_up(&self, a: &Approval, event: &NotifyEvent, current: bool) -> Vec<String> {
        let text = blocks::fallback_text(a);
        let message = blocks::message_blocks(a, self.app.public_url());
        let reply = blocks::event_text(a, event);
        let mut failures = Vec::new();
        let copies = self.app.posted(&a.id).await.unwrap_or_else(|e| {
            failures.push(format!("cannot read the posted copies, none updated: {e}"));
            Vec::new()
        });
        let updates = copies.iter().map(|copy| {
            let update = update_body(copy, &text, &message);
            let thread = reply_body(copy, &reply);
            async move {
                let mut failed = Vec::new();
                if current {
                    if let Err(e) = self.app.api().call("chat.update", Body::Json(update)).await {
                        failed.push(format!("update {}: {e}", copy.channel));
                    }
                }
                let replied = self
                    .app
                    .api()
                    .call("chat.postMessage", Body::Json(thread))
                    .await;
                if let Err(e) = replied {
                    failed.push(format!("thread reply {}: {e}", copy.channel));
                }
                failed
            }
        });
        failures.extend(
            futures::future::join_all(updates)
                .await
                .into_iter()
                .flatten(),
        );
        if let Err(e) = self.tell_requester(a, event).await {
            failures.push(format!("requester DM: {e}"));
        }
        failures
    }

    /// DMs the outcome to the requester when it is a decision and their email is a Slack user.
    async fn tell_requester(&self, a: &Approval, event: &NotifyEvent) -> Result<(), ApiError> {
        let Some(text) = blocks::requester_outcome(a, event, self.app.public_url()) else {
            return Ok(());
        };
        let Some(email) = a.requester.email.as_deref() else {
            return Ok(());
        };
        let Some(user) = self.app.user_for(email).await? else {
            return Ok(());
        };
        let dm = self.app.open_dm(&user).await?;
        let body = json!({ "channel": dm, "text": text });
        self.app
            .api()
            .call("chat.postMessage", Body::Json(body))
            .await?;
        Ok(())
    }
}

/// The `chat.update` body that makes `copy` show `text` and the `message` blocks.
fn update_body(copy: &PostedMessage, text: &str, message: &Value) -> Value {
    json!({
        "channel": copy.channel,
        "ts": copy.ts,
        "text": text,
        "blocks": message,
    })
}

/// The `chat.postMessage` body of a reply `text` in `copy`'s thread.
fn reply_body(copy: &PostedMessage, text: &str) -> Value {
    json!({
        "channel": copy.channel,
        "thread_ts": copy.ts,
        "text": text,
    })
}

/// The `slack:` targets among `targets`.
fn slack_targets(targets: &[NotifyTarget]) -> Vec<&NotifyTarget> {
    targets
        .iter()
        .filter(|t| {
            matches!(
                t,
                NotifyTarget::SlackChannel(_) | NotifyTarget::SlackUser(_)
            )
        })
        .collect()
}

/// `chat.postMessage` takes a conversation id as is, or a channel name with `#`.
fn channel_ref(name: &str) -> String {
    let is_id = name.len() >= 9
        && name.starts_with(['C', 'G', 'D'])
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if is_id || name.starts_with('#') {
        name.to_owned()
    } else {
        format!("#{name}")
    }
}

fn describe(target: &NotifyTarget) -> String {
    match target {
        NotifyTarget::SlackChannel(c) => format!("slack:#{c}"),
        NotifyTarget::SlackUser(u) => format!("slack:@{u}"),
        NotifyTarget::Teams => "teams".to_owned(),
    }
}
