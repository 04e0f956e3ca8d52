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

/// Bodies longer than this (in characters) are cut on the page; the page says so.
const BODY_PREVIEW_MAX_CHARS: usize = 4096;

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusView {
    /// Waiting for votes.
    Pending,
    /// Quorum reached.
    Approved,
    /// Someone denied it.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The requester hung up or cancelled.
    Cancelled,
    /// Break-glass: forwarded without approval, waiting for an acknowledgement.
    Review,
    /// Break-glass, acknowledged.
    Acknowledged,
}

impl StatusView {
    fn label(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Approved => "Approved",
            Self::Denied => "Denied",
            Self::Expired => "Expired",
            Self::Cancelled => "Cancelled",
            Self::Review => "Break-glass: review",
            Self::Acknowledged => "Break-glass: acknowledged",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Review => "review",
            Self::Acknowledged => "acknowledged",
        }
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
}

impl DecisionView {
    fn label(self) -> &'static str {
        match self {
            Self::Approve | Self::ApproveGrant => "Approved",
            Self::Deny => "Denied",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Approve | Self::ApproveGrant => "approved",
            Self::Deny => "denied",
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
    /// Approval id.
    pub id: String,
    /// Name of the rule that asked for approval.
    pub rule: String,
    /// Who sent the request: email, or `sub` at issuer.
    pub requester: String,
    /// HTTP method.
    pub method: String,
    /// Host the request was sent to.
    pub host: String,
    /// Path with query.
    pub path: String,
    /// The requester's `Countersign-Reason`, if any.
    pub reason: Option<String>,
    /// Body as text with `redact` pointers already hidden; `None` when there was no body.
    pub body_preview: Option<String>,
    /// What will be replayed besides the body preview (SPEC 8).
    pub replay: ReplayView,
    /// When the request was held.
    pub created_at: SystemTime,
    /// When it stops being approvable.
    pub expires_at: SystemTime,
    /// Where it stands.
    pub status: StatusView,
    /// Votes so far, in order.
    pub votes: Vec<VoteView>,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// Distinct approvals so far.
    pub approvals_so_far: u32,
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
    pub status: StatusView,
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
    pub status: StatusView,
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
    let page = DetailPage {
        viewer: Some(viewer),
        v: view,
        pending: view.status == StatusView::Pending,
        status_label: view.status.label(),
        status_class: view.status.class(),
        created_abs: absolute(view.created_at),
        created_rel: relative(view.created_at, now),
        expires_abs: absolute(view.expires_at),
        expires_rel: relative(view.expires_at, now),
        body,
        body_truncated,
        votes: view.votes.iter().map(vote_row).collect(),
        fresh_login_href: super::urls::login_url(
            &format!("/approvals/{}", path_segment(&view.id)),
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
        let a_done = a.status != StatusView::Pending;
        let b_done = b.status != StatusView::Pending;
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
    let when = if s.status == StatusView::Pending {
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
        status_label: s.status.label(),
        status_class: s.status.class(),
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
    };
    let message = match view.status {
        StatusView::Pending => {
            let missing = view.quorum.saturating_sub(view.approvals_so_far);
            match &view.quorum_progress {
                Some(p) => format!("Approvals so far: {p}; waiting for {missing} more."),
                None => format!(
                    "{} of {} approvals so far; waiting for {missing} more.",
                    view.approvals_so_far, view.quorum
                ),
            }
        }
        StatusView::Approved => "The request is approved and will be sent on.".to_owned(),
        StatusView::Denied => "The request is denied; the caller has been told.".to_owned(),
        StatusView::Expired => "The request expired before it was decided.".to_owned(),
        StatusView::Cancelled => "The request was cancelled by the caller.".to_owned(),
        StatusView::Review | StatusView::Acknowledged => {
            "The request was forwarded by break-glass.".to_owned()
        }
    };
    let page = ResultPage {
        viewer: Some(viewer),
        id: &view.id,
        headline,
        status_label: view.status.label(),
        status_class: view.status.class(),
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
mod tests {
    use super::*;
    use axum::http::header;
    use std::time::UNIX_EPOCH;

    const EVIL: &str = "<script>alert(1)</script>";

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn view() -> ApprovalView {
        ApprovalView {
            id: "apr_123".into(),
            rule: "prod-deploy".into(),
            requester: "ci@example.com".into(),
            method: "POST".into(),
            host: "deploy.example.com".into(),
            path: "/v1/deployments/production?force=1".into(),
            reason: Some("hotfix for INC-42".into()),
            body_preview: Some("{\"image\":\"v1.2.3\",\"password\":\"[redacted]\"}".into()),
            replay: ReplayView::default(),
            created_at: t(1_800_000_000),
            expires_at: t(1_800_000_000 + 3600),
            status: StatusView::Pending,
            votes: vec![],
            quorum: 2,
            approvals_so_far: 0,
            quorum_progress: None,
            can_vote: true,
            why_not: None,
            csrf_token: "csrf-token-value".into(),
            fresh_login_required: false,
            acr_values: vec![],
            self_approval_flag: false,
            grant_label: None,
        }
    }

    async fn body_of(r: Response) -> (StatusCode, axum::http::HeaderMap, String) {
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn detail_shows_what_an_approver_needs_and_a_no_js_form() {
        let now = t(1_800_000_000 + 17 * 60);
        let (status, headers, html) =
            body_of(render_detail(&view(), "alice@example.com", now)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        for needle in [
            "name=\"viewport\"",
            "POST",
            "deploy.example.com/v1/deployments/production?force=1",
            "ci@example.com",
            "prod-deploy",
            "hotfix for INC-42",
            "[redacted]",
            "in 43 min",
            "2027-01-15 08:00:00 UTC",
            "0 of 2 needed",
            "Signed in as alice@example.com",
            "action=\"/approvals/apr_123/decision\"",
            "name=\"csrf\" value=\"csrf-token-value\"",
            "name=\"decision\" value=\"approve\"",
            "name=\"decision\" value=\"deny\"",
            "name=\"reason\"",
        ] {
            assert!(html.contains(needle), "{needle:?} missing in:\n{html}");
        }
        assert!(!html.contains("<script"), "no JavaScript on the page");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
    }

    #[tokio::test]
    async fn everything_is_escaped() {
        let mut v = view();
        v.path = format!("/x?q={EVIL}");
        v.reason = Some(EVIL.into());
        v.body_preview = Some(format!("{{\"a\":\"{EVIL}\"}}"));
        v.requester = EVIL.into();
        v.rule = EVIL.into();
        v.host = EVIL.into();
        v.votes = vec![VoteView {
            approver: EVIL.into(),
            decision: DecisionView::Deny,
            reason: Some(EVIL.into()),
            at: t(1_800_000_100),
        }];
        v.id = "\"><script>x</script>".into();
        let (_, _, html) = body_of(render_detail(&v, EVIL, t(1_800_000_000))).await;
        assert!(!html.contains("<script"), "unescaped script in:\n{html}");
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));

        let summary = ApprovalSummary {
            id: v.id.clone(),
            rule: EVIL.into(),
            requester: EVIL.into(),
            method: EVIL.into(),
            host: EVIL.into(),
            path: EVIL.into(),
            created_at: t(0),
            expires_at: t(10),
            status: StatusView::Pending,
            quorum: 1,
            approvals_so_far: 0,
        };
        let (_, _, list) = body_of(render_list(&[summary], EVIL, t(0))).await;
        assert!(!list.contains("<script"), "unescaped script in:\n{list}");
        let (_, _, err) = body_of(error_page(StatusCode::BAD_REQUEST, EVIL, EVIL)).await;
        assert!(!err.contains("<script"));
    }

    #[tokio::test]
    async fn no_buttons_when_the_viewer_cannot_vote() {
        let mut v = view();
        v.can_vote = false;
        v.why_not = Some("You sent this request.".into());
        let (_, _, html) = body_of(render_detail(&v, "ci@example.com", t(1_800_000_000))).await;
        assert!(html.contains("You sent this request."));
        assert!(!html.contains("value=\"approve\""));
    }

    #[tokio::test]
    async fn fresh_login_replaces_buttons_with_a_sign_in_link() {
        let mut v = view();
        v.fresh_login_required = true;
        let (_, _, html) = body_of(render_detail(&v, "a@example.com", t(1_800_000_000))).await;
        assert!(!html.contains("value=\"approve\""));
        assert!(
            html.contains("href=\"/login?next=%2Fapprovals%2Fapr_123&#38;fresh=1\""),
            "{html}"
        );
        v.acr_values = vec!["urn:mfa".into()];
        let (_, _, html) = body_of(render_detail(&v, "a@example.com", t(1_800_000_000))).await;
        assert!(
            html.contains("fresh=1&#38;acr_values=urn%3Amfa\""),
            "{html}"
        );
    }

    #[tokio::test]
    async fn decided_requests_show_votes_and_no_form() {
        let mut v = view();
        v.status = StatusView::Denied;
        v.votes = vec![VoteView {
            approver: "bob@example.com".into(),
            decision: DecisionView::Deny,
            reason: Some("not during the freeze".into()),
            at: t(1_800_000_100),
        }];
        v.self_approval_flag = true;
        let (_, _, html) = body_of(render_detail(&v, "a@example.com", t(1_800_000_200))).await;
        assert!(html.contains("bob@example.com"));
        assert!(html.contains("not during the freeze"));
        assert!(html.contains("Denied"));
        assert!(html.contains("self-approval allowed"));
        assert!(!html.contains("<form"));
    }

    #[tokio::test]
    async fn list_puts_pending_first() {
        let mk = |id: &str, status, created| ApprovalSummary {
            id: id.into(),
            rule: "r".into(),
            requester: "x@example.com".into(),
            method: "POST".into(),
            host: "h".into(),
            path: "/p".into(),
            created_at: t(created),
            expires_at: t(created + 3600),
            status,
            quorum: 1,
            approvals_so_far: 0,
        };
        let items = [
            mk("apr_done", StatusView::Approved, 300),
            mk("apr_late", StatusView::Pending, 200),
            mk("apr_soon", StatusView::Pending, 100),
        ];
        let (_, _, html) = body_of(render_list(&items, "a@example.com", t(400))).await;
        let pos = |id: &str| html.find(&format!("/approvals/{id}\"")).unwrap();
        assert!(pos("apr_soon") < pos("apr_late"));
        assert!(pos("apr_late") < pos("apr_done"));
    }

    #[tokio::test]
    async fn result_page_says_what_happens_next() {
        let r = ResultView {
            id: "apr_1".into(),
            decision: DecisionView::Approve,
            status: StatusView::Pending,
            quorum: 2,
            approvals_so_far: 1,
            quorum_progress: None,
        };
        let (_, _, html) = body_of(render_result(&r, "a@example.com")).await;
        assert!(html.contains("You approved"));
        assert!(html.contains("waiting for 1 more"));
    }

    #[test]
    fn relative_times() {
        assert_eq!(relative(t(43 * 60), t(0)), "in 43 min");
        assert_eq!(relative(t(0), t(90)), "1 min ago");
        assert_eq!(relative(t(7500), t(0)), "in 2 h 5 min");
        assert_eq!(relative(t(5), t(5)), "now");
        assert_eq!(absolute(t(0)), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn decision_form_reason_blank_is_none() {
        let f: DecisionForm =
            serde_urlencoded::from_str("decision=deny&reason=+++&csrf=abc").unwrap();
        assert_eq!(f.decision, DecisionView::Deny);
        assert_eq!(f.reason(), None);
        assert!(serde_urlencoded::from_str::<DecisionForm>("decision=maybe").is_err());
    }

    #[test]
    fn long_bodies_are_cut_on_a_char_boundary() {
        let s = "é".repeat(BODY_PREVIEW_MAX_CHARS + 5);
        assert_eq!(
            truncate_chars(&s, BODY_PREVIEW_MAX_CHARS).chars().count(),
            BODY_PREVIEW_MAX_CHARS
        );
    }
}
