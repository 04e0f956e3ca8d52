//! The approval pages for people (SPEC 6): the list and one request with Approve / Deny, behind
//! the approver login session. Turns broker state into the page view models and votes from the
//! form into `Broker::decide`; rendering lives in `pages`, sessions and CSRF in `session`.
// Handlers return early with a ready `Response` (axum's usual style); boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};

use super::html::{refusal_page, refusal_page_with_link, status};
use super::pages::{
    self, ApprovalSummary, ApprovalView, DecisionForm, DecisionView, ReplayView, ResultView,
    VoteView,
};
use super::session::ApproverSession;
use super::ControlState;
use crate::approval::transition::{visible_to, Viewer};
use crate::approval::{Approval, ApprovalId, ApproverIdentity, Channel, Decision, ListFilter};
use crate::policy::ApproveVia;
use crate::respond::{PageRefusal, VOTE_NOT_COUNTED};

/// How fresh a login must be to decide on an `approve_via = "login"` request.
const FRESH_LOGIN: Duration = Duration::from_secs(5 * 60);

fn ms(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t)
}

fn decision_view(d: Decision) -> DecisionView {
    match d {
        Decision::Approve => DecisionView::Approve,
        Decision::Deny => DecisionView::Deny,
    }
}

fn requester_label(a: &Approval) -> String {
    a.requester
        .email
        .clone()
        .unwrap_or_else(|| format!("{} at {}", a.requester.sub, a.requester.iss))
}

fn identity(s: &ApproverSession) -> ApproverIdentity {
    ApproverIdentity {
        email: s.who.email.clone(),
        iss: Some(s.who.iss.clone()),
        sub: Some(s.who.sub.clone()),
        via: Channel::Web,
    }
}

/// The session, or the answer that sends the person to log in.
pub(super) fn session_or_login(
    state: &ControlState,
    headers: &HeaderMap,
    next: &str,
) -> Result<ApproverSession, Response> {
    let Some(sessions) = &state.sessions else {
        return Err(refusal_page(PageRefusal::LoginNotConfigured));
    };
    sessions
        .from_headers(headers)
        .ok_or_else(|| Redirect::to(&super::urls::login_url(next, false, &[])).into_response())
}

/// Why this viewer cannot vote now, if they cannot.
fn why_not(state: &ControlState, a: &Approval, s: &ApproverSession) -> Option<String> {
    state
        .broker
        .check_voter(a, &identity(s), Decision::Approve)
        .err()
        .map(|e| sentence(&super::api::decide_refusal(&e).answer().description))
}

/// `"you already voted"` -> `"You already voted."`, for a page.
fn sentence(description: &str) -> String {
    let mut chars = description.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    out.push_str(chars.as_str());
    out.push('.');
    out
}

fn needs_fresh_login(a: &Approval, s: &ApproverSession, now: SystemTime) -> bool {
    a.approve_via == ApproveVia::Login && !s.is_fresh_for(ms(a.created_at), FRESH_LOGIN, now)
}

/// What the list shows of `a` (and the request page, above its details).
fn summary(a: &Approval) -> ApprovalSummary {
    ApprovalSummary {
        id: a.id.to_string(),
        rule: a.rule.clone(),
        requester: requester_label(a),
        method: a.method.clone(),
        host: a.host.clone(),
        path: a.path_and_query(),
        created_at: ms(a.created_at),
        expires_at: ms(a.expires_at),
        status: a.status,
        quorum: a.quorum,
        approvals_so_far: approvals_counted(a),
    }
}

fn detail_view(
    state: &ControlState,
    a: &Approval,
    s: &ApproverSession,
    now: SystemTime,
) -> ApprovalView {
    let why_not = why_not(state, a, s);
    let csrf_token = state
        .sessions
        .as_ref()
        .map(|ss| ss.csrf_token(s, a.id.as_str()))
        .unwrap_or_default();
    ApprovalView {
        summary: summary(a),
        reason: a.reason.clone(),
        body_preview: (a.body_len > 0).then(|| a.body_preview.clone()),
        replay: ReplayView {
            headers: a
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            body_len: a.body_len,
            body_sha256: a.body_sha256.clone(),
            body_cut: a.body_preview_cut,
        },
        votes: a
            .votes
            .iter()
            .map(|v| VoteView {
                approver: v.approver.clone(),
                decision: decision_view(v.decision),
                reason: v.reason.clone(),
                at: ms(v.at),
            })
            .collect(),
        quorum_progress: a.quorum_summary(),
        can_vote: why_not.is_none(),
        why_not,
        csrf_token,
        fresh_login_required: needs_fresh_login(a, s, now),
        acr_values: Vec::new(),
        self_approval_flag: a.self_approval,
        grant_label: a
            .grant_offer
            .map(|g| crate::approval::granting::ttl_label(g.ttl_ms)),
        can_acknowledge: state.broker.check_acknowledger(a, &identity(s)).is_ok(),
    }
}

/// `GET /approvals` as HTML.
pub async fn list(state: &ControlState, headers: &HeaderMap) -> Response {
    let s = match session_or_login(state, headers, "/approvals") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = state
        .sessions
        .as_ref()
        .map_or_else(SystemTime::now, |ss| ss.clock().now());
    let mut all = match state.broker.list(ListFilter::All, 500).await {
        Ok(all) => all,
        Err(e) => return store_unavailable(&e),
    };
    all.retain(|a| visible_to(a, &viewer(&s)));
    let items: Vec<ApprovalSummary> = all.iter().map(summary).collect();
    pages::render_list(&items, &s.who.email, now)
}

/// `GET /approvals/{id}` as HTML.
pub async fn detail(state: &ControlState, headers: &HeaderMap, id: &str) -> Response {
    let next = format!("/approvals/{id}");
    let s = match session_or_login(state, headers, &next) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let a = match load(state, id).await {
        Ok(a) if visible_to(&a, &viewer(&s)) => a,
        // Not shown to others, and not told apart from a missing one.
        Ok(_) => return not_found(),
        Err(r) => return r,
    };
    let now = state
        .sessions
        .as_ref()
        .map_or_else(SystemTime::now, |ss| ss.clock().now());
    let view = detail_view(state, &a, &s, now);
    pages::render_detail(&view, &s.who.email, now)
}

/// Approvals that count toward the quorum: for a table quorum, an approval that fills no entry
/// (an approver in none of them) is not progress.
fn approvals_counted(a: &Approval) -> u32 {
    a.quorum.saturating_sub(a.approvals_missing())
}

fn viewer(s: &ApproverSession) -> Viewer<'_> {
    Viewer {
        iss: &s.who.iss,
        sub: &s.who.sub,
        email: Some(&s.who.email),
    }
}

fn not_found() -> Response {
    refusal_page(PageRefusal::NotFound)
}

/// A store outage: 503, as the API answers it.
fn store_unavailable(e: &crate::approval::StoreError) -> Response {
    tracing::error!(error = %e, "approval store failed");
    refusal_page(PageRefusal::StoreUnavailable)
}

/// The approval `id`, or the page to answer: 404 when there is none, 503 when the store fails.
async fn load(state: &ControlState, id: &str) -> Result<Approval, Response> {
    let Some(id) = ApprovalId::parse(id) else {
        return Err(not_found());
    };
    match state.broker.get(&id).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(not_found()),
        Err(e) => Err(store_unavailable(&e)),
    }
}

/// `POST /approvals/{id}/decision` from the page (form, CSRF-protected).
pub async fn decide(state: &ControlState, headers: &HeaderMap, id: &str, body: &[u8]) -> Response {
    let Some(sessions) = &state.sessions else {
        return refusal_page(PageRefusal::VoteWithoutLogin);
    };
    let Some(s) = sessions.from_headers(headers) else {
        return refusal_page_with_link(
            PageRefusal::SessionEnded,
            &super::urls::login_url(&format!("/approvals/{id}"), false, &[]),
            "Sign in",
        );
    };
    let form: DecisionForm = match serde_urlencoded::from_bytes(body) {
        Ok(f) => f,
        Err(_) => return refusal_page(PageRefusal::BadForm),
    };
    if !sessions.verify_csrf(&s, id, &form.csrf) {
        return refusal_page(PageRefusal::StaleForm);
    }
    let a = match load(state, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = sessions.clock().now();
    if needs_fresh_login(&a, &s, now) {
        return refusal_page_with_link(
            PageRefusal::FreshSignInNeeded,
            &super::urls::login_url(&format!("/approvals/{id}"), true, &[]),
            "Sign in again",
        );
    }
    let reason = form.reason().map(str::to_owned);
    let broker = &state.broker;
    let done = match form.decision {
        DecisionView::Approve | DecisionView::ApproveGrant => {
            let grant = form.decision == DecisionView::ApproveGrant;
            broker
                .decide_granting(&a.id, identity(&s), Decision::Approve, reason, grant)
                .await
        }
        DecisionView::Deny => {
            broker
                .decide(&a.id, identity(&s), Decision::Deny, reason)
                .await
        }
        // Break-glass review (SPEC 9): records that an approver looked; releases nothing.
        DecisionView::Acknowledge => broker.acknowledge(&a.id, identity(&s)).await,
    };
    match done {
        Ok(after) => pages::render_result(
            &ResultView {
                id: after.id.to_string(),
                decision: form.decision,
                status: after.status,
                quorum: after.quorum,
                approvals_so_far: approvals_counted(&after),
                quorum_progress: after.quorum_summary(),
            },
            &s.who.email,
        ),
        Err(e) => {
            let answer = super::api::decide_refusal(&e).answer();
            pages::error_page(
                status(answer.status),
                VOTE_NOT_COUNTED,
                &sentence(&answer.description),
            )
        }
    }
}

/// Whether a request body is an HTML form post.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}
