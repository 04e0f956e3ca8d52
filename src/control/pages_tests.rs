//! Tests of the approver pages: what is shown, escaped and offered.
use super::*;
use axum::http::header;
use std::time::UNIX_EPOCH;

const EVIL: &str = "<script>alert(1)</script>";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn view() -> ApprovalView {
    ApprovalView {
        summary: ApprovalSummary {
            id: "apr_123".into(),
            rule: "prod-deploy".into(),
            requester: "ci@example.com".into(),
            method: "POST".into(),
            host: "deploy.example.com".into(),
            path: "/v1/deployments/production?force=1".into(),
            created_at: t(1_800_000_000),
            expires_at: t(1_800_000_000 + 3600),
            status: Status::Pending,
            quorum: 2,
            approvals_so_far: 0,
        },
        reason: Some("hotfix for INC-42".into()),
        body_preview: Some("{\"image\":\"v1.2.3\",\"password\":\"[redacted]\"}".into()),
        replay: ReplayView::default(),
        votes: vec![],
        quorum_progress: None,
        can_vote: true,
        why_not: None,
        csrf_token: "csrf-token-value".into(),
        fresh_login_required: false,
        acr_values: vec![],
        self_approval_flag: false,
        grant_label: None,
        can_acknowledge: false,
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
    let (status, headers, html) = body_of(render_detail(&view(), "alice@example.com", now)).await;
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
    v.summary.path = format!("/x?q={EVIL}");
    v.reason = Some(EVIL.into());
    v.body_preview = Some(format!("{{\"a\":\"{EVIL}\"}}"));
    v.summary.requester = EVIL.into();
    v.summary.rule = EVIL.into();
    v.summary.host = EVIL.into();
    v.votes = vec![VoteView {
        approver: EVIL.into(),
        decision: DecisionView::Deny,
        reason: Some(EVIL.into()),
        at: t(1_800_000_100),
    }];
    v.summary.id = "\"><script>x</script>".into();
    let (_, _, html) = body_of(render_detail(&v, EVIL, t(1_800_000_000))).await;
    assert!(!html.contains("<script"), "unescaped script in:\n{html}");
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));

    let summary = ApprovalSummary {
        id: v.summary.id.clone(),
        rule: EVIL.into(),
        requester: EVIL.into(),
        method: EVIL.into(),
        host: EVIL.into(),
        path: EVIL.into(),
        created_at: t(0),
        expires_at: t(10),
        status: Status::Pending,
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
    v.summary.status = Status::Denied;
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
        mk("apr_done", Status::Approved, 300),
        mk("apr_late", Status::Pending, 200),
        mk("apr_soon", Status::Pending, 100),
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
        status: Status::Pending,
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
    let f: DecisionForm = serde_urlencoded::from_str("decision=deny&reason=+++&csrf=abc").unwrap();
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
