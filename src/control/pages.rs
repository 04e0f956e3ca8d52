//! Server-rendered HTML for approvers: the list of approval requests, one request with its
//! Approve / Deny form, the page after voting, and error pages.
//!
//! Owns presentation only. Callers fill the small view models below (already redacted, already
//! authorised); nothing here looks at the approval store or decides who may vote. Pages need no
//! JavaScript and no external assets, read well on a phone, and every value is HTML-escaped by
//! the templates (askama, auto-escaping on).

use std::time::{Duration, SystemTime};

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::html::html;
/// The error pages live in [`super::html`]; re-exported for the page handlers.
pub use super::html::{error_page, error_page_with_link};
use crate::approval::Status;

/// Bodies longer than this (in characters) are cut on the page; the page says so.
const BODY_PREVIEW_MAX_CHARS: usize = 4096;

/// How a status reads on a page; its CSS class is [`Status::as_str`].
fn status_label(status: Status) -> &'static str {
    match status {
        Status::Pending => "Pending",
        Status::Approved => "Approved",
        Status::Denied => "Denied",
        Status::Expired => "Expired",
        Status::Cancelled => "Cancelled",
        Status::Review => "Break-glass: review",
        Status::Acknowledged => "Break-glass: acknowledged",
    }
}

/// A vote: approve or deny. Also the `decision` field of the decision form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionView {
    /// Approve.
    Approve,
    /// Approve, and let the same request pass again for the rule's `grant` (SPEC 9).
    #[serde(rename = "approve_grant")]
    ApproveGrant,
    /// Deny.
    Deny,
    /// Acknowledge a break-glass request under review (SPEC 9).
    Acknowledge,
}

impl DecisionView {
    fn label(self) -> &'static str {
        match self {
            Self::Approve | Self::ApproveGrant => "Approved",
            Self::Deny => "Denied",
            Self::Acknowledge => "Acknowledged",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Approve | Self::ApproveGrant => "approved",
            Self::Deny => "denied",
            Self::Acknowledge => "acknowledged",
        }
    }
}

/// One vote cast so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteView {
    /// Who voted (email).
    pub approver: String,
    /// How.
    pub decision: DecisionView,
    /// Why, if they said.
    pub reason: Option<String>,
    /// When.
    pub at: SystemTime,
}

/// What approvers must see of the request that will be replayed: every header (credentials
/// masked) and, when the preview is cut, the body's full size and SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayView {
    /// Header name and shown value, in order.
    pub headers: Vec<(String, String)>,
    /// Body size in bytes.
    pub body_len: u64,
    /// Hex SHA-256 of the whole body.
    pub body_sha256: String,
    /// The preview shows less than the body.
    pub body_cut: bool,
}

/// Everything the request page shows. The caller has already redacted `body_preview` and
/// decided `can_vote` / `why_not` / `fresh_login_required` for the viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalView {
    /// What the list page shows of it too.
    pub summary: ApprovalSummary,
    /// The requester's `Countersign-Reason`, if any.
    pub reason: Option<String>,
    /// Body as text with `redact` pointers already hidden; `None` when there was no body.
    pub body_preview: Option<String>,
    /// What will be replayed besides the body preview (SPEC 8).
    pub replay: ReplayView,
    /// Votes so far, in order.
    pub votes: Vec<VoteView>,
    /// Per-entry progress of a table quorum (`dba 1/1, security 0/1`); `None` for a number.
    pub quorum_progress: Option<String>,
    /// Whether the viewer may vote (listed approver, not the requester, not voted yet).
    pub can_vote: bool,
    /// Why not, for the viewer (e.g. "You sent this request.").
    pub why_not: Option<String>,
    /// CSRF token for this viewer and this approval (see `Sessions::csrf_token`).
    pub csrf_token: String,
    /// The viewer must sign in again before deciding (the rule wants a fresh login, or an
    /// `acr` the viewer's login lacks): the page shows "sign in again" instead of the buttons.
    pub fresh_login_required: bool,
    /// `acr` values to ask the IdP for on that new sign-in (empty: none).
    pub acr_values: Vec<String>,
    /// `self_approval = true` (break-glass): shown as a loud banner.
    pub self_approval_flag: bool,
    /// The rule offers grants (SPEC 9): "15 min" for an "Approve for 15 min" button.
    pub grant_label: Option<String>,
    /// A break-glass request under review that the viewer may acknowledge (SPEC 9).
    pub can_acknowledge: bool,
}

/// One line of the list page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSummary {
    /// Approval id.
    pub id: String,
    /// Rule name.
    pub rule: String,
    /// Who sent the request.
    pub requester: String,
    /// HTTP method.
    pub method: String,
    /// Host.
    pub host: String,
    /// Path with query.
    pub path: String,
    /// When it was held.
    pub created_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Where it stands.
    pub status: Status,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// Distinct approvals so far.
    pub approvals_so_far: u32,
}

/// The page after a vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultView {
    /// Approval id.
    pub id: String,
    /// What the viewer chose.
    pub decision: DecisionView,
    /// Where the request stands now.
    pub status: Status,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// Distinct approvals so far (including the viewer's).
    pub approvals_so_far: u32,
    /// Per-entry progress of a table quorum; `None` for a number.
    pub quorum_progress: Option<String>,
}

/// The decision form as posted by the request page.
#[derive(Debug, Clone, Deserialize)]
pub struct DecisionForm {
    /// `approve` or `deny`.
    pub decision: DecisionView,
    /// Free text; empty means none.
    #[serde(default)]
    pub reason: String,
    /// The CSRF token from the page.
    #[serde(default)]
    pub csrf: String,
}

impl DecisionForm {
    /// The reason, trimmed; `None` when blank.
    pub fn reason(&self) -> Option<&str> {
        Some(self.reason.trim()).filter(|r| !r.is_empty())
    }
}

#[derive(Debug)]
struct VoteRow<'a> {
    approver: &'a str,
    label: &'static str,
    class: &'static str,
    reason: Option<&'a str>,
    at: String,
}

#[derive(Template)]
#[template(path = "approval_detail.html")]
struct DetailPage<'a> {
    viewer: Option<&'a str>,
    v: &'a ApprovalView,
    s: &'a ApprovalSummary,
    pending: bool,
    status_label: &'static str,
    status_class: &'static str,
    created_abs: String,
    created_rel: String,
    expires_abs: String,
    expires_rel: String,
    body: Option<&'a str>,
    body_truncated: bool,
    votes: Vec<VoteRow<'a>>,
    fresh_login_href: String,
}

#[derive(Debug)]
struct ListRow<'a> {
    id: &'a str,
    rule: &'a str,
    requester: &'a str,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status_label: &'static str,
    status_class: &'static str,
    approvals_so_far: u32,
    quorum: u32,
    when: String,
}

#[derive(Template)]
#[template(path = "approval_list.html")]
struct ListPage<'a> {
    viewer: Option<&'a str>,
    items: Vec<ListRow<'a>>,
}

#[derive(Template)]
#[template(path = "approval_result.html")]
struct ResultPage<'a> {
    viewer: Option<&'a str>,
    id: &'a str,
    headline: &'static str,
    status_label: &'static str,
    status_class: &'static str,
    message: String,
}

/// The request page for `viewer` (shown in the header).
pub fn render_detail(view: &ApprovalView, viewer: &str, now: SystemTime) -> Response {
    let (body, body_truncated) = match view.body_preview.as_deref() {
        Some(b) => {
            let cut = truncate_chars(b, BODY_PREVIEW_MAX_CHARS);
            (Some(cut), cut.len() < b.len() || view.replay.body_cut)
        }
        None => (None, false),
    };
    let summary = &view.summary;
    let page = DetailPage {
        viewer: Some(viewer),
        v: view,
        s: summary,
        pending: summary.status == Status::Pending,
        status_label: status_label(summary.status),
        status_class: summary.status.as_str(),
        created_abs: absolute(summary.created_at),
        created_rel: relative(summary.created_at, now),
        expires_abs: absolute(summary.expires_at),
        expires_rel: relative(summary.expires_at, now),
        body,
        body_truncated,
        votes: view.votes.iter().map(vote_row).collect(),
        fresh_login_href: super::urls::login_url(
            &format!("/approvals/{}", path_segment(&summary.id)),
            true,
            &view.acr_values,
        ),
    };
    html(StatusCode::OK, page.render())
}

fn vote_row(v: &VoteView) -> VoteRow<'_> {
    VoteRow {
        approver: &v.approver,
        label: v.decision.label(),
        class: v.decision.class(),
        reason: v.reason.as_deref(),
        at: absolute(v.at),
    }
}

/// The list page: pending requests first (soonest to expire first), then the rest, newest first.
pub fn render_list(items: &[ApprovalSummary], viewer: &str, now: SystemTime) -> Response {
    let mut sorted: Vec<&ApprovalSummary> = items.iter().collect();
    sorted.sort_by(|a, b| {
        let a_done = a.status != Status::Pending;
        let b_done = b.status != Status::Pending;
        a_done.cmp(&b_done).then_with(|| {
            if a_done {
                b.created_at.cmp(&a.created_at)
            } else {
                a.expires_at.cmp(&b.expires_at)
            }
        })
    });
    let page = ListPage {
        viewer: Some(viewer),
        items: sorted.into_iter().map(|s| list_row(s, now)).collect(),
    };
    html(StatusCode::OK, page.render())
}

fn list_row(s: &ApprovalSummary, now: SystemTime) -> ListRow<'_> {
    let when = if s.status == Status::Pending {
        format!("expires {}", relative(s.expires_at, now))
    } else {
        format!("requested {}", relative(s.created_at, now))
    };
    ListRow {
        id: &s.id,
        rule: &s.rule,
        requester: &s.requester,
        method: &s.method,
        host: &s.host,
        path: &s.path,
        status_label: status_label(s.status),
        status_class: s.status.as_str(),
        approvals_so_far: s.approvals_so_far,
        quorum: s.quorum,
        when,
    }
}

/// The page after the viewer voted.
pub fn render_result(view: &ResultView, viewer: &str) -> Response {
    let headline = match view.decision {
        DecisionView::Approve => "You approved",
        DecisionView::ApproveGrant => "You approved, with a grant",
        DecisionView::Deny => "You denied",
        DecisionView::Acknowledge => "You acknowledged the break-glass",
    };
    let message = match view.status {
        Status::Pending => {
            let missing = view.quorum.saturating_sub(view.approvals_so_far);
            match &view.quorum_progress {
                Some(p) => format!("Approvals so far: {p}; waiting for {missing} more."),
                None => format!(
                    "{} of {} approvals so far; waiting for {missing} more.",
                    view.approvals_so_far, view.quorum
                ),
            }
        }
        Status::Approved => "The request is approved and will be sent on.".to_owned(),
        Status::Denied => "The request is denied; the caller has been told.".to_owned(),
        Status::Expired => "The request expired before it was decided.".to_owned(),
        Status::Cancelled => "The request was cancelled by the caller.".to_owned(),
        Status::Review => "The request was forwarded by break-glass; it awaits review.".to_owned(),
        Status::Acknowledged => {
            "The request was forwarded by break-glass and has been reviewed.".to_owned()
        }
    };
    let page = ResultPage {
        viewer: Some(viewer),
        id: &view.id,
        headline,
        status_label: status_label(view.status),
        status_class: view.status.as_str(),
        message,
    };
    html(StatusCode::OK, page.render())
}

/// At most `max` characters of `s`, cut on a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An approval id made safe for one path segment.
fn path_segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, super::urls::COMPONENT).to_string()
}

/// `2026-11-28 15:55:32 UTC`.
pub fn absolute(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// `in 43 min`, `5 s ago`, `in 2 h 5 min`, `now`.
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(ahead) if ahead.as_secs() > 0 => format!("in {}", span(ahead)),
        Ok(_) => "now".to_owned(),
        Err(e) if e.duration().as_secs() == 0 => "now".to_owned(),
        Err(e) => format!("{} ago", span(e.duration())),
    }
}

fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
#[path = "pages_tests.rs"]
mod tests;
