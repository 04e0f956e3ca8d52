//! The bot's Adaptive Cards (schema 1.5, Universal Actions) and invoke responses.
//!
//! One approval has one *base card*, posted to every conversation and updated in place at each
//! vote and at the end: it shows the request and its status to everyone. While the approval is
//! pending, its `refresh` names the approvers who may still vote (`userIds`, at most 60): Teams
//! asks the bot for their own view (`adaptiveCard/action`, verb `refresh`), which adds the
//! reason input and the `Action.Execute` Approve / Deny buttons. Everyone else keeps the
//! status. A decided approval has no `refresh`, so no view can offer a button any more.
//!
//! User-controlled text goes through the same defusing as the webhook cards
//! ([`crate::chat::teams`]), so a requester cannot plant a link or a fake button.

use serde_json::{json, Value};

use crate::approval::{Approval, Execution, Status};
use crate::chat::adaptive::{
    body_preview, defuse, fact_set, open_url, replayed_headers, request_facts, rfc3339, title,
    votes, warning, CARD_CONTENT_TYPE, CARD_SCHEMA, FACT_MAX_CHARS,
};
use crate::chat::{status_word, Button};
use crate::policy::ApproveVia;

/// Universal Actions need schema 1.5 (Teams ignores `Action.Execute` and `refresh` below it).
pub const CARD_VERSION: &str = "1.5";
/// `Action.Execute` verb of the automatic refresh.
pub const VERB_REFRESH: &str = "refresh";
/// `data` field naming the approval.
pub const DATA_ID: &str = "approval_id";
/// Id of the optional reason input (merged into `data` by the client).
pub const REASON_INPUT: &str = "reason";
/// Longest reason an approver can type.
pub const REASON_MAX_CHARS: usize = 500;
/// Teams refreshes at most this many users' views automatically.
pub const MAX_REFRESH_USERS: usize = 60;
/// Invoke response body types.
const INVOKE_CARD: &str = "application/vnd.microsoft.card.adaptive";
const INVOKE_MESSAGE: &str = "application/vnd.microsoft.activity.message";
const INVOKE_ERROR: &str = "application/vnd.microsoft.error";

/// What one viewer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View<'a> {
    /// The base card: status for everyone.
    Status,
    /// An approver who may vote now. `approve` is false when they may only deny (their own
    /// request); `note` says why.
    Vote {
        /// Whether the Approve button is shown.
        approve: bool,
        /// A line for this viewer only.
        note: Option<&'a str>,
    },
    /// Status with a line for this viewer only (e.g. "You approved this request.").
    Note(&'a str),
}

/// The card for `a` as `view` shows it; `page` is its approval page, `user_ids` the members
/// whose view refreshes automatically while it is pending.
pub fn card(a: &Approval, page: &str, user_ids: &[String], view: View<'_>) -> Value {
    let pending = a.status == Status::Pending;
    let mut body = vec![headline(a), fact_set(&facts(a))];
    if a.self_approval {
        body.push(warning(
            "Break-glass rule: the requester may count as one of the approvers.",
        ));
    }
    body.extend(replayed_headers(a));
    body.extend(body_preview(a));
    let note = match view {
        View::Status => None,
        View::Vote { note, .. } => note,
        View::Note(note) => Some(note),
    };
    if let Some(note) = note {
        body.push(json!({
            "type": "TextBlock",
            "text": defuse(note, FACT_MAX_CHARS),
            "weight": "Bolder",
            "wrap": true,
        }));
    }
    let mut actions = Vec::new();
    if let (true, View::Vote { approve, .. }) = (pending, view) {
        if a.approve_via == ApproveVia::Login {
            body.push(warning(
                "This rule needs a fresh sign-in: approve or deny on the approval page.",
            ));
        } else {
            body.push(json!({
                "type": "Input.Text",
                "id": REASON_INPUT,
                "label": "Reason (optional)",
                "placeholder": "Why you approve or deny",
                "isMultiline": true,
                "maxLength": REASON_MAX_CHARS,
            }));
            match (approve, a.grant_offer) {
                (false, _) => {}
                (true, None) => actions.push(execute(
                    "Approve",
                    Button::Approve.name(),
                    a,
                    Some("positive"),
                )),
                (true, Some(g)) => {
                    actions.push(execute(
                        "Approve once",
                        Button::Approve.name(),
                        a,
                        Some("positive"),
                    ));
                    let label = format!(
                        "Approve for {}",
                        crate::approval::granting::ttl_label(g.ttl_ms)
                    );
                    actions.push(execute(&label, Button::ApproveGrant.name(), a, None));
                }
            }
            actions.push(execute("Deny", Button::Deny.name(), a, Some("destructive")));
        }
    }
    actions.push(open_url("Open", page, None));
    let mut card = json!({
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "body": body,
        "actions": actions,
    });
    if pending {
        let users: Vec<&String> = user_ids.iter().take(MAX_REFRESH_USERS).collect();
        card["refresh"] = json!({
            "action": {
                "type": "Action.Execute",
                "title": "Refresh",
                "verb": VERB_REFRESH,
                "data": { DATA_ID: a.id.as_str() },
            },
            "userIds": users,
        });
    }
    card
}

/// A `message` activity carrying `card` (what the Bot Connector is sent).
pub fn message_activity(a: &Approval, card: Value) -> Value {
    json!({
        "type": "message",
        "summary": defuse(&summary(a), FACT_MAX_CHARS),
        "attachments": [{ "contentType": CARD_CONTENT_TYPE, "content": card }],
    })
}

/// The invoke response that replaces the clicking user's card with `card`.
pub fn invoke_card(card: Value) -> Value {
    json!({ "statusCode": 200, "type": INVOKE_CARD, "value": card })
}

/// The invoke response that shows `text` to the clicking user only; the card stays as it is.
pub fn invoke_message(text: &str) -> Value {
    json!({ "statusCode": 200, "type": INVOKE_MESSAGE, "value": text })
}

/// The invoke response for an action the bot cannot handle.
pub fn invoke_error(status: u16, code: &str, message: &str) -> Value {
    json!({
        "statusCode": status,
        "type": INVOKE_ERROR,
        "value": { "code": code, "message": message },
    })
}

/// `Approval needed: rule` / `Approved: rule` ..., colored by outcome.
fn headline(a: &Approval) -> Value {
    let undelivered = matches!(a.execution, Execution::Failed { .. });
    let (word, color) = match a.status {
        Status::Approved if undelivered => ("Approved, not delivered", "Attention"),
        Status::Pending => (status_word(a.status), "Default"),
        Status::Approved | Status::Acknowledged => (status_word(a.status), "Good"),
        Status::Denied | Status::Review => (status_word(a.status), "Attention"),
        Status::Expired | Status::Cancelled => (status_word(a.status), "Warning"),
    };
    title(&format!("{word}: {}", a.rule), color)
}

/// The request, then where it stands.
fn facts(a: &Approval) -> Vec<(&'static str, String)> {
    let mut facts = request_facts(a);
    facts.push(("Votes", votes(a)));
    let by = || a.decided_by.clone().unwrap_or_else(|| "unknown".into());
    let why = || {
        a.decision_reason
            .clone()
            .unwrap_or_else(|| "(none given)".into())
    };
    match a.status {
        Status::Pending => facts.push(("Expires", rfc3339(a.expires_at))),
        Status::Approved => {
            facts.push(("Approved by", a.approved_by().join(", ")));
            facts.push(("Outcome", execution(&a.execution)));
        }
        Status::Denied => {
            facts.push(("Denied by", by()));
            facts.push(("Deny reason", why()));
        }
        Status::Expired => facts.push((
            "Outcome",
            "Nobody decided in time; the request was not sent".into(),
        )),
        Status::Cancelled => {
            facts.push(("Cancelled by", by()));
            facts.push(("Outcome", "The request was not sent".into()));
        }
        Status::Review | Status::Acknowledged => {
            facts.push(("Break-glass by", by()));
            facts.push(("Break-glass reason", why()));
            facts.push(("Outcome", execution(&a.execution)));
            let ack = a
                .break_glass
                .as_ref()
                .and_then(|b| b.acknowledged_by.clone());
            facts.push((
                "Acknowledged by",
                ack.unwrap_or_else(|| "nobody yet".into()),
            ));
        }
    }
    facts
}

/// How the approved request went upstream.
fn execution(e: &Execution) -> String {
    match e {
        Execution::NotStarted | Execution::Claimed { .. } => "Being sent upstream".into(),
        Execution::Done { status } => format!("Sent; upstream answered {status}"),
        Execution::Failed { .. } => {
            "The upstream could not be reached; the request was not retried".into()
        }
    }
}

/// An `Action.Execute` button for approval `a`, sending the card's inputs along.
fn execute(label: &str, verb: &str, a: &Approval, style: Option<&str>) -> Value {
    let mut action = json!({
        "type": "Action.Execute",
        "title": label,
        "verb": verb,
        "data": { DATA_ID: a.id.as_str() },
        "associatedInputs": "auto",
    });
    if let Some(style) = style {
        action["style"] = json!(style);
    }
    action
}

/// One line for notifications and the activity feed.
fn summary(a: &Approval) -> String {
    let status = status_word(a.status);
    format!("{status}: {} {} {}", a.rule, a.method, a.host)
}
