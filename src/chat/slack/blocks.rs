//! Block Kit rendering of an approval: the message approvers see (always rendered from the
//! current [`Approval`], so every update tells the whole truth), thread replies per event and
//! the requester's outcome DM. Pure functions, no I/O.

use serde_json::{json, Value};
use url::Url;

use crate::approval::{Approval, Decision, Execution, NotifyEvent, Status};
use crate::chat::{status_word, Button};
use crate::notify::ApproveVia;

/// `action_id` of link buttons (Open, and Approve/Deny under `approve_via = "login"`): Slack
/// reports their clicks too, and they must change nothing.
pub const ACTION_OPEN: &str = "open";
/// `block_id` and `action_id` of the optional reason input.
pub const REASON_INPUT: &str = "reason";

/// Longest body preview shown (a section's text may hold 3000 characters).
const PREVIEW_CHARS: usize = 2700;
/// Longest free text (path, reason, names) in one field; a field may hold 2000 characters.
const FIELD_CHARS: usize = 1000;
/// Longest text of the Deny confirmation dialog (Slack's limit is 300).
const CONFIRM_CHARS: usize = 300;
/// Longest fallback text kept (Slack truncates `text` beyond 40,000 characters).
const FALLBACK_CHARS: usize = 4000;
/// Longest header text Slack accepts.
const HEADER_CHARS: usize = 150;

/// Link to the approval page: `{public_url}/approvals/{id}`.
pub fn approval_url(public_url: &Url, approval: &Approval) -> String {
    format!(
        "{}/approvals/{}",
        public_url.as_str().trim_end_matches('/'),
        approval.id
    )
}

/// The notification text (shown in push notifications and by clients without blocks). Slack
/// parses it like mrkdwn, so everything taken from the request or a token is escaped: a path
/// such as `/<!channel>` or a query `?<https://evil|click>` shows as typed and links nowhere.
pub fn fallback_text(a: &Approval) -> String {
    cut(
        &format!(
            "{}: {} {} {} (rule {}, requested by {})",
            status_word(a.status),
            escape(&a.method),
            escape(&a.host),
            escape(&a.path_and_query()),
            escape(&a.rule),
            escape(&requester_name(a))
        ),
        FALLBACK_CHARS,
    )
}

/// The whole message for the current state of `a`.
pub fn message_blocks(a: &Approval, public_url: &Url) -> Value {
    let url = approval_url(public_url, a);
    let mut blocks = vec![
        json!({"type": "header", "text": plain(&cut(&format!("{}: {}", status_word(a.status), a.rule), HEADER_CHARS))}),
        json!({"type": "section", "fields": detail_fields(a)}),
    ];
    if !a.headers.is_empty() {
        let lines: Vec<String> = a
            .headers
            .iter()
            .map(|h| format!("{}: {}", h.name, h.value))
            .collect();
        blocks.push(json!({"type": "section", "text": mrkdwn(&format!(
            "*Headers sent* (credentials masked)\n```{}```",
            cut(&code_safe(&escape(&lines.join("\n"))), PREVIEW_CHARS)
        ))}));
    }
    if !a.body_preview.is_empty() {
        let shown = code_safe(&escape(&a.body_preview));
        let label = if a.body_preview_cut || shown.chars().count() > PREVIEW_CHARS {
            format!(
                "*Body* (preview cut: {} bytes in all, SHA-256 `{}`)",
                a.body_len, a.body_sha256
            )
        } else {
            format!("*Body* ({} bytes)", a.body_len)
        };
        blocks.push(json!({"type": "section", "text": mrkdwn(&format!(
            "{label}\n```{}```",
            cut(&shown, PREVIEW_CHARS)
        ))}));
    }
    if a.votes.iter().any(|v| v.self_approval) {
        blocks.push(json!({"type": "section", "text": mrkdwn(
            ":rotating_light: *SELF-APPROVAL*: the requester approved their own request (break-glass rule)"
        )}));
    }
    blocks.push(json!({"type": "section", "text": mrkdwn(&outcome_line(a))}));
    if a.status == Status::Pending {
        blocks.extend(pending_controls(a, &url));
    } else if a.status == Status::Review {
        blocks.push(
            json!({"type": "actions", "block_id": "decision", "elements": [
                {"type": "button", "action_id": Button::Acknowledge.name(), "style": "primary",
                 "text": plain("Acknowledge"), "value": a.id.as_str()},
                {"type": "button", "action_id": ACTION_OPEN, "text": plain("Open"), "url": url}
            ]}),
        );
    } else {
        blocks.push(json!({"type": "context", "elements": [mrkdwn(&format!("<{url}|Open in Countersign>"))]}));
    }
    Value::Array(blocks)
}

fn detail_fields(a: &Approval) -> Value {
    let mut fields = vec![
        mrkdwn(&format!(
            "*Requester*\n{}",
            cut(&escape(&requester_name(a)), FIELD_CHARS)
        )),
        mrkdwn(&format!(
            "*Request*\n`{} {}{}`",
            escape(&a.method),
            escape(&a.host),
            cut(&code_safe(&escape(&a.path_and_query())), FIELD_CHARS)
        )),
        mrkdwn(&format!(
            "*Reason*\n{}",
            a.reason
                .as_deref()
                .map(|r| cut(&escape(r), FIELD_CHARS))
                .unwrap_or_else(|| "_none given_".to_owned())
        )),
        mrkdwn(&format!("*Expires*\n{}", slack_date(a.expires_at))),
    ];
    fields.push(mrkdwn(&format!("*Votes*\n{}", votes_line(a))));
    Value::Array(fields)
}

fn requester_name(a: &Approval) -> String {
    a.requester
        .email
        .clone()
        .unwrap_or_else(|| a.requester.sub.clone())
}

fn votes_line(a: &Approval) -> String {
    let approved = a.approved_by();
    let mut line = match a.quorum_summary() {
        Some(progress) => escape(&progress),
        None => format!("{} of {} approvals", approved.len(), a.quorum),
    };
    if !approved.is_empty() {
        line.push_str(": ");
        line.push_str(&cut(&escape(&approved.join(", ")), FIELD_CHARS));
    }
    line
}

/// What happened so far, in one line (the "true" part of the message).
fn outcome_line(a: &Approval) -> String {
    let by = a
        .decided_by
        .as_deref()
        .map(escape)
        .unwrap_or_else(|| "someone".to_owned());
    let why = a
        .decision_reason
        .as_deref()
        .map(|r| format!(": {}", cut(&escape(r), FIELD_CHARS)))
        .unwrap_or_default();
    let mut line = match a.status {
        Status::Pending => format!("Waiting for {} more approval(s).", a.approvals_missing()),
        Status::Approved => format!(
            ":white_check_mark: *Approved by {}*",
            cut(&escape(&a.approved_by().join(", ")), FIELD_CHARS)
        ),
        Status::Denied => format!(":no_entry: *Denied by {by}*{why}"),
        Status::Expired => ":hourglass: *Expired* before anyone decided.".to_owned(),
        Status::Cancelled => format!(":heavy_multiplication_x: *Cancelled by {by}*{why}"),
        Status::Review => format!(
            ":rotating_light: *Break-glass by {by}*{why}\nForwarded without approval; an approver must acknowledge it."
        ),
        Status::Acknowledged => format!(
            ":rotating_light: *Break-glass by {by}*{why}\n:white_check_mark: Acknowledged by {}",
            escape(&acknowledged_by(a))
        ),
    };
    match &a.execution {
        Execution::Done { status } => line.push_str(&format!("\nUpstream answered *{status}*.")),
        Execution::Failed { .. } => line.push_str("\nThe request could not be delivered upstream."),
        Execution::Claimed { .. } => line.push_str("\nSending upstream..."),
        Execution::NotStarted => {}
    }
    line
}

/// "Approve", or on a rule with `grant` "Approve once" and "Approve for 15 min" (SPEC 9).
fn approve_buttons(a: &Approval) -> Vec<Value> {
    let id = a.id.as_str();
    match a.grant_offer {
        None => vec![
            json!({"type": "button", "action_id": Button::Approve.name(), "style": "primary",
                            "text": plain("Approve"), "value": id}),
        ],
        Some(g) => vec![
            json!({"type": "button", "action_id": Button::Approve.name(), "style": "primary",
                   "text": plain("Approve once"), "value": id}),
            json!({"type": "button", "action_id": Button::ApproveGrant.name(),
                   "text": plain(&format!("Approve for {}", crate::approval::granting::ttl_label(g.ttl_ms))),
                   "value": id}),
        ],
    }
}

fn pending_controls(a: &Approval, url: &str) -> Vec<Value> {
    let open =
        json!({"type": "button", "action_id": ACTION_OPEN, "text": plain("Open"), "url": url});
    match a.approve_via {
        ApproveVia::Button => vec![
            json!({
                "type": "input",
                "block_id": REASON_INPUT,
                "optional": true,
                "label": plain("Reason (optional; shown to the requester)"),
                "element": {"type": "plain_text_input", "action_id": REASON_INPUT}
            }),
            json!({"type": "actions", "block_id": "decision", "elements": approve_buttons(a).into_iter().chain([
                json!({"type": "button", "action_id": Button::Deny.name(), "style": "danger",
                 "text": plain("Deny"), "value": a.id.as_str(),
                 "confirm": {
                     "title": plain("Deny this request?"),
                     "text": plain(&cut(&format!("{} {} {} will be refused.", a.method, a.host, a.path), CONFIRM_CHARS)),
                     "confirm": plain("Deny"),
                     "deny": plain("Cancel"),
                     "style": "danger"
                 }}),
                open
            ]).collect::<Vec<_>>()}),
        ],
        ApproveVia::Login => vec![
            json!({"type": "context", "elements": [mrkdwn("This rule needs a fresh login: decide on the approval page.")]}),
            json!({"type": "actions", "block_id": "decision", "elements": [
                {"type": "button", "action_id": format!("{ACTION_OPEN}_approve"), "style": "primary",
                 "text": plain("Approve"), "url": url},
                {"type": "button", "action_id": format!("{ACTION_OPEN}_deny"), "style": "danger",
                 "text": plain("Deny"), "url": url},
                open
            ]}),
        ],
    }
}

/// Who acknowledged a break-glass request ("nobody yet" before anyone did).
fn acknowledged_by(a: &Approval) -> String {
    let by = a
        .break_glass
        .as_ref()
        .and_then(|b| b.acknowledged_by.clone());
    by.unwrap_or_else(|| "nobody yet".to_owned())
}

/// The thread reply for `event` (one per event, under every posted copy).
pub fn event_text(a: &Approval, event: &NotifyEvent) -> String {
    let last_vote = a.votes.last();
    let by = a.decided_by.clone().unwrap_or_else(|| "someone".to_owned());
    let why = a
        .decision_reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let text = match event {
        NotifyEvent::Requested if a.status == Status::Review => {
            format!("break-glass by {}{why}", requester_name(a))
        }
        NotifyEvent::VoteCast if a.status == Status::Acknowledged => {
            format!("Break-glass acknowledged by {}", acknowledged_by(a))
        }
        NotifyEvent::Requested => format!("Approval requested by {}", requester_name(a)),
        NotifyEvent::VoteCast => match last_vote {
            Some(v) if v.decision == Decision::Approve => match a.quorum_summary() {
                Some(progress) => format!("{} approved ({progress})", v.approver),
                None => format!(
                    "{} approved ({} of {})",
                    v.approver,
                    a.approved_by().len(),
                    a.quorum
                ),
            },
            Some(v) => format!("{} voted {}", v.approver, v.decision.as_str()),
            None => "A vote was cast".to_owned(),
        },
        NotifyEvent::Approved => format!("Approved by {}", a.approved_by().join(", ")),
        NotifyEvent::Denied => format!("Denied by {by}{why}"),
        NotifyEvent::Expired => "Expired without a decision".to_owned(),
        NotifyEvent::Cancelled => format!("Cancelled by {by}{why}"),
        NotifyEvent::Executed { status } => format!("Sent upstream; it answered {status}"),
        NotifyEvent::ExecutionFailed => "Could not be delivered upstream".to_owned(),
        NotifyEvent::Reminder => format!(
            "Reminder {}: still waiting for approval ({})",
            a.nudges.reminders,
            progress(a)
        ),
        NotifyEvent::Escalated => {
            let added = a.nudges.escalation.as_ref().map(|e| e.added.join(", "));
            match added.filter(|s| !s.is_empty()) {
                Some(added) => format!("Escalated: still pending, so {added} may now approve"),
                None => "Escalated: still pending (nobody new to add)".to_owned(),
            }
        }
    };
    cut(&escape(&text), FIELD_CHARS)
}

/// `1 of 2 approvals`, or the table quorum's per-entry summary (`DBA 1/1, Security 0/1`).
fn progress(a: &Approval) -> String {
    a.quorum_summary()
        .unwrap_or_else(|| format!("{} of {} approvals", a.approved_by().len(), a.quorum))
}

/// The DM to the requester when `event` is a decision, else `None`.
pub fn requester_outcome(a: &Approval, event: &NotifyEvent, public_url: &Url) -> Option<String> {
    let what = match event {
        NotifyEvent::Approved
        | NotifyEvent::Denied
        | NotifyEvent::Expired
        | NotifyEvent::Cancelled => event_text(a, event),
        _ => return None,
    };
    Some(format!(
        "Your request `{} {}{}` (rule {}): {}. <{}|Details>",
        escape(&a.method),
        escape(&a.host),
        cut(&code_safe(&escape(&a.path_and_query())), FIELD_CHARS),
        escape(&a.rule),
        what,
        approval_url(public_url, a)
    ))
}

fn plain(text: &str) -> Value {
    json!({"type": "plain_text", "text": text, "emoji": true})
}

fn mrkdwn(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

/// Slack's three control characters in mrkdwn (its documented escaping).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text that cannot close a code span or block it sits in.
fn code_safe(text: &str) -> String {
    text.replace('`', "'")
}

/// At most `max` characters, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A date Slack renders in the reader's time zone, with a UTC fallback.
fn slack_date(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let fallback = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    );
    format!("<!date^{secs}^{{date_short_pretty}} {{time}}|{fallback}>")
}
