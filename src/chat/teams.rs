//! Microsoft Teams: Adaptive Cards posted through a Teams Workflows webhook (`[teams]`).
//!
//! Owns rendering the cards and delivering them with retries. Must not decide anything: a
//! Workflows webhook is one-way, so approvers decide on Countersign's approval page, which every
//! button opens (`Action.OpenUrl`), never in Teams itself.
//!
//! What is posted, per [`NotifyEvent`]:
//! - `Requested`: the request card (rule, FactSet of requester, method, host, path, reason,
//!   expiry and votes, the body preview, buttons Approve / Deny / Open to the approval page).
//! - `VoteCast`: a small progress card (who voted, votes so far). A webhook cannot edit a posted
//!   message, so a new card is the only way to keep the channel true while a quorum fills up.
//! - `Approved`, `Denied`, `Expired`, `Cancelled`, `Executed`, `ExecutionFailed`: an outcome card.
//!
//! Every user-controlled value (requester, host, path, reason, body) is defused before it goes
//! into a card: Adaptive Card text is markdown, and a requester must not be able to put a link
//! or a fake "Approve" button in front of an approver. The webhook URL is a bearer capability:
//! it never appears in logs or errors.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::approval::{Approval, Notifier, NotifyError, NotifyEvent};
use crate::secret::Secret;

use super::adaptive::{
    body_preview, fact_set, open_url, replayed_headers, request_facts, request_line, requester,
    rfc3339, title, votes, warning, CARD_CONTENT_TYPE, CARD_SCHEMA,
};

/// Adaptive Card version: 1.4 is what Teams renders everywhere (desktop, web, mobile).
const CARD_VERSION: &str = "1.4";

/// How deliveries are retried. 429 waits for `Retry-After`; 5xx and network errors back off
/// exponentially; any other 4xx is permanent at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubled for each further try.
    pub first_backoff: Duration,
    /// Longest wait between two tries (also caps the doubling).
    pub max_backoff: Duration,
    /// A 429 asking to wait longer than this fails at once instead of blocking the notifier.
    pub max_retry_after: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// Four tries, waits 250 ms, 500 ms, 1 s; honour `Retry-After` up to 10 s; 5 s per request.
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based) when the server gave no hint.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Posts approval cards to a Teams Workflows webhook ("When a Teams webhook request is
/// received" -> "Post card in a chat or channel"). Only approvals whose rule lists `teams` in
/// `notify` are posted; others are ignored.
pub struct TeamsNotifier {
    webhook_url: Secret,
    public_url: String,
    http: reqwest::Client,
    retry: RetryPolicy,
}

impl fmt::Debug for TeamsNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeamsNotifier")
            .field("webhook_url", &self.webhook_url)
            .field("public_url", &self.public_url)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl TeamsNotifier {
    /// A notifier posting to `webhook_url`, with buttons to `{public_url}/approvals/{id}`, with
    /// the default [`RetryPolicy`].
    pub fn new(webhook_url: Secret, public_url: &str, http: reqwest::Client) -> Self {
        Self {
            webhook_url,
            public_url: public_url.trim_end_matches('/').to_owned(),
            http,
            retry: RetryPolicy::default(),
        }
    }

    /// The same notifier with another retry policy (tests use short waits).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The approval page every button opens.
    fn approval_page(&self, approval: &Approval) -> String {
        format!("{}/approvals/{}", self.public_url, approval.id)
    }

    /// POSTs `message` with retries; the error never contains the webhook URL.
    async fn deliver(&self, approval: &Approval, message: &Value) -> Result<(), NotifyError> {
        let attempts = self.retry.attempts.max(1);
        let mut last = String::from("not sent");
        for attempt in 1..=attempts {
            let wait = match self.post_once(message).await {
                Attempt::Delivered => return Ok(()),
                Attempt::Permanent(why) => return Err(self.error(why)),
                Attempt::Retry { why, wait } => {
                    last = why;
                    wait.unwrap_or_else(|| self.retry.backoff(attempt))
                }
            };
            if attempt == attempts {
                break;
            }
            if wait > self.retry.max_retry_after {
                return Err(self.error(format!(
                    "{last}; asked to wait {}s, more than the {}s allowed",
                    wait.as_secs(),
                    self.retry.max_retry_after.as_secs()
                )));
            }
            tracing::warn!(
                approval_id = %approval.id,
                attempt,
                error = %self.scrub(&last),
                wait_ms = wait.as_millis() as u64,
                "teams webhook: retrying"
            );
            tokio::time::sleep(wait).await;
        }
        Err(self.error(format!("{last} (gave up after {attempts} tries)")))
    }

    /// One POST, classified.
    async fn post_once(&self, message: &Value) -> Attempt {
        let sent = self
            .http
            .post(self.webhook_url.expose())
            .timeout(self.retry.request_timeout)
            .json(message)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Attempt::Permanent("webhook URL is not a valid URL".to_owned())
            }
            // `without_url`: reqwest puts the URL (the secret) in its error messages.
            Err(e) => {
                return Attempt::Retry {
                    why: error_chain(&e.without_url()),
                    wait: None,
                }
            }
        };
        classify(response.status(), response.headers())
    }

    /// A [`NotifyError`] whose text went through [`Self::scrub`].
    fn error(&self, why: String) -> NotifyError {
        NotifyError(format!("teams: {}", self.scrub(&why)))
    }

    /// Removes the webhook URL and its path and query from `text` (defence in depth: no error
    /// we format should contain them, but a dependency's message might).
    fn scrub(&self, text: &str) -> String {
        let url = self.webhook_url.expose();
        let mut out = text.replace(url, "<webhook>");
        if let Ok(parsed) = url::Url::parse(url) {
            let tail = &url[parsed[..url::Position::BeforePath].len()..];
            // Only long tails are worth scrubbing: "/" would mangle every message.
            if tail.len() >= 8 {
                out = out.replace(tail, "<webhook>");
            }
        }
        out
    }
}

#[async_trait]
impl Notifier for TeamsNotifier {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        if !super::notifies_teams(approval) {
            return Ok(());
        }
        let page = self.approval_page(approval);
        let card = match event {
            NotifyEvent::Requested => request_card(approval, &page, "Approval needed"),
            // Reminders and escalation post a new card (a webhook cannot update old ones).
            NotifyEvent::Reminder => request_card(approval, &page, "Reminder: approval needed"),
            NotifyEvent::Escalated => request_card(approval, &page, &escalated_title(approval)),
            NotifyEvent::VoteCast => vote_card(approval, &page),
            _ => outcome_card(approval, event, &page),
        };
        self.deliver(approval, &envelope(card)).await?;
        tracing::debug!(approval_id = %approval.id, event = event.as_str(), "teams card posted");
        Ok(())
    }
}

/// What one POST came to.
enum Attempt {
    Delivered,
    /// Will not get better by retrying (bad request, revoked webhook, ...).
    Permanent(String),
    /// Worth another try, after `wait` if the server said so.
    Retry {
        why: String,
        wait: Option<Duration>,
    },
}

/// Sorts a webhook answer: 2xx delivered; 429 retried after `Retry-After`; 408 and 5xx retried
/// with backoff; any other status is permanent.
fn classify(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let why = format!("webhook answered {status}");
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            why,
            wait: retry_after(headers),
        };
    }
    if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
        return Attempt::Retry { why, wait: None };
    }
    Attempt::Permanent(format!("{why} (not retried)"))
}

/// `Retry-After` in delta-seconds (RFC 9110 10.2.3). An HTTP-date is not parsed: the caller
/// falls back to its own backoff, which is always a legal, if early, retry time.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error and its sources, `: `-joined (reqwest's own Display stops at the outermost one).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

// ----- cards ------------------------------------------------------------------------------

/// The Workflows webhook body: a `message` with one Adaptive Card attachment.
fn envelope(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// An Adaptive Card with `body` and `actions`.
fn card(body: Vec<Value>, actions: Vec<Value>) -> Value {
    json!({
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "body": body,
        "actions": actions,
    })
}

/// The card that asks approvers to decide.
fn request_card(a: &Approval, page: &str, headline: &str) -> Value {
    let mut body = vec![
        title(&format!("{headline}: {}", a.rule), "Default"),
        fact_set(
            &[
                request_facts(a),
                vec![("Expires", rfc3339(a.expires_at)), ("Votes", votes(a))],
            ]
            .concat(),
        ),
    ];
    if a.self_approval {
        body.push(warning(
            "Break-glass rule: the requester may count as one of the approvers.",
        ));
    }
    body.extend(replayed_headers(a));
    body.extend(body_preview(a));
    let actions = vec![
        open_url("Approve", page, Some("positive")),
        open_url("Deny", page, Some("destructive")),
        open_url("Open", page, None),
    ];
    card(body, actions)
}

/// The headline of an escalation card: who may now approve.
fn escalated_title(a: &Approval) -> String {
    let added = a.nudges.escalation.as_ref().map(|e| e.added.join(", "));
    match added.filter(|s| !s.is_empty()) {
        Some(added) => format!("Escalated to {added}"),
        None => "Escalated".to_owned(),
    }
}

/// A small card saying a vote was counted and how many are still needed.
fn vote_card(a: &Approval, page: &str) -> Value {
    let body = vec![
        title(&format!("Vote counted: {}", a.rule), "Default"),
        fact_set(&[
            ("Request", request_line(a)),
            ("Votes", votes(a)),
            ("Status", a.status.as_str().to_owned()),
        ]),
    ];
    card(body, vec![open_url("Open", page, None)])
}

/// The follow-up card with how it ended.
fn outcome_card(a: &Approval, event: &NotifyEvent, page: &str) -> Value {
    let (headline, color, facts) = outcome(a, event);
    let mut all = vec![("Request", request_line(a)), ("Requester", requester(a))];
    all.extend(facts);
    let body = vec![
        title(&format!("{headline}: {}", a.rule), color),
        fact_set(&all),
    ];
    card(body, vec![open_url("Open", page, None)])
}

/// Headline, title color and facts for a final event.
fn outcome(
    a: &Approval,
    event: &NotifyEvent,
) -> (&'static str, &'static str, Vec<(&'static str, String)>) {
    let by = || a.decided_by.clone().unwrap_or_else(|| "unknown".into());
    let reason = || {
        a.decision_reason
            .clone()
            .unwrap_or_else(|| "(none given)".into())
    };
    match event {
        NotifyEvent::Approved => (
            "Approved",
            "Good",
            vec![("Approved by", a.approved_by().join(", "))],
        ),
        NotifyEvent::Denied => (
            "Denied",
            "Attention",
            vec![("Denied by", by()), ("Reason", reason())],
        ),
        NotifyEvent::Expired => (
            "Expired",
            "Warning",
            vec![
                (
                    "Outcome",
                    "Nobody decided in time; the request was not sent".into(),
                ),
                ("Votes", votes(a)),
            ],
        ),
        NotifyEvent::Cancelled => (
            "Cancelled",
            "Warning",
            vec![(
                "Outcome",
                "Cancelled by the caller; the request was not sent".into(),
            )],
        ),
        NotifyEvent::Executed { status } => (
            "Executed",
            if (200..400).contains(status) {
                "Good"
            } else {
                "Warning"
            },
            vec![
                ("Approved by", a.approved_by().join(", ")),
                ("Upstream status", status.to_string()),
            ],
        ),
        NotifyEvent::ExecutionFailed => (
            "Not delivered",
            "Attention",
            vec![
                ("Approved by", a.approved_by().join(", ")),
                (
                    "Outcome",
                    "The upstream could not be reached; the request was not retried".into(),
                ),
            ],
        ),
        // Not final, but rendered sensibly should a caller route them here.
        NotifyEvent::Requested
        | NotifyEvent::VoteCast
        | NotifyEvent::Reminder
        | NotifyEvent::Escalated => (
            "Pending",
            "Default",
            vec![("Votes", votes(a)), ("Status", a.status.as_str().into())],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        let waits: Vec<u128> = (1..=4).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 350, 350]);
        assert_eq!(p.backoff(200), Duration::from_millis(350));
    }

    /// A notifier whose webhook URL holds SECRET in its path and query.
    fn notifier(public_url: &str) -> TeamsNotifier {
        TeamsNotifier::new(
            Secret::new("https://x.example/workflows/SECRETPATH?sig=SECRETSIG"),
            public_url,
            reqwest::Client::new(),
        )
    }

    #[test]
    fn debug_hides_the_webhook_url() {
        let n = notifier("https://c.example/");
        let debug = format!("{n:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert_eq!(n.public_url, "https://c.example");
    }

    #[test]
    fn scrub_removes_the_url_and_its_tail() {
        let n = notifier("https://c.example");
        let msg = n.scrub("failed https://x.example/workflows/SECRETPATH?sig=SECRETSIG and /workflows/SECRETPATH?sig=SECRETSIG");
        assert!(!msg.contains("SECRET"), "{msg}");
    }
}
