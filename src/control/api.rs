//! The approval API on the control plane (SPEC 6), for clients with a bearer token validated
//! exactly like data-plane tokens: approvers list, read and decide; requesters read the parked
//! result or cancel. HTML pages for people live in `pages` and share the views built here.
// Handlers return early with a ready `Response` (axum's usual style); boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ControlState;
use crate::approval::store::Cursor;
use crate::approval::transition::{visible_to, Viewer};
use crate::approval::{
    Approval, ApprovalId, ApproverIdentity, CancelError, Channel, DecideError, Decision, Execution,
    ListFilter, ResultError, Status,
};
use crate::clock::rfc3339_ms;
use crate::identity::Principal;
use crate::oidc::{self, TokenError};
use crate::respond::Refusal;

/// A JSON error answer: `{"error", "error_description"}`. Only [`refuse`] calls it, so every
/// status, code and text comes from the refusal table.
fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let request_id = format!("{:032x}", rand::random::<u128>());
    tracing::debug!(
        request_id,
        status = status.as_u16(),
        code,
        "control-plane request refused"
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::HeaderName::from_static("countersign-request-id"),
                request_id.clone(),
            ),
        ],
        axum::Json(json!({
            "error": code,
            "error_description": description,
            "request_id": request_id,
        })),
    )
        .into_response()
}

/// Answers `r` as JSON, with status, code and text from the one refusal table.
pub fn refuse(r: Refusal) -> Response {
    let answer = r.answer();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error(status, answer.code, &answer.description);
    if let Some(secs) = answer.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    resp
}

/// Logs a store failure and answers [`Refusal::ApiStoreUnavailable`].
fn store_unavailable(e: &crate::approval::StoreError) -> Response {
    tracing::error!(error = %e, "approval store failed");
    refuse(Refusal::ApiStoreUnavailable)
}

/// The caller's verified bearer token, or the error response to send.
pub async fn bearer(state: &ControlState, headers: &HeaderMap) -> Result<Arc<Principal>, Response> {
    let token = oidc::bearer_token(
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes()),
    )
    .and_then(|t| t.ok_or(TokenError::Missing));
    let token = match token {
        Ok(t) => t,
        Err(e) => return Err(token_error(e)),
    };
    state.verifier.verify(token).await.map_err(token_error)
}

fn token_error(e: TokenError) -> Response {
    // Same statuses, codes and descriptions as the data plane: one table, in `respond`.
    let mut resp = refuse(Refusal::Token(e));
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"countersign\""),
        );
    }
    resp
}

/// Whether the client asked for JSON.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
        || headers.contains_key(header::AUTHORIZATION)
}

/// The JSON view of an approval (what API clients and tests see).
pub fn view(a: &Approval, public_url: &str) -> Value {
    let status_url = format!("{public_url}/approvals/{}", a.id);
    json!({
        "approval_id": a.id.as_str(),
        "status": a.status.as_str(),
        "status_url": status_url,
        "rule": a.rule,
        "requester": {
            "iss": a.requester.iss,
            "sub": a.requester.sub,
            "email": a.requester.email,
        },
        "method": a.method,
        "host": a.host,
        "path": a.path_and_query(),
        "reason": a.reason,
        "headers": a.headers.iter().map(|h| json!({"name": h.name, "value": h.value})).collect::<Vec<_>>(),
        "body_preview": a.body_preview,
        "body_preview_cut": a.body_preview_cut,
        "body_len": a.body_len,
        "body_sha256": a.body_sha256,
        "request_hash": a.request_hash,
        "execution": execution_view(&a.execution),
        "approvers": a.approvers,
        "quorum": a.quorum,
        // Table quorum (SPEC 9): per entry, who was assigned to it; empty for a number.
        "quorum_entries": a.quorum_progress(),
        "approvals": a.approved_by(),
        "votes": a.votes.iter().map(|v| json!({
            "approver": v.approver,
            "decision": v.decision.as_str(),
            "reason": v.reason,
            "at": rfc3339_ms(v.at),
            "via": v.via.as_str(),
            "self_approval": v.self_approval,
            "grant": v.grant,
        })).collect::<Vec<_>>(),
        // Grants (SPEC 9): what the rule offers, the grant this approval made, or the grant
        // this request passed under.
        "grant_offer": a.grant_offer.map(|g| json!({
            "seconds": g.ttl_ms / 1000,
            "uses": g.uses,
        })),
        "grant_id": crate::approval::grant::offered_by(a)
            .then(|| crate::approval::Grant::id_for(a.id.as_str())),
        "granted": a.granted.as_ref().map(|g| json!({
            "grant_id": g.grant_id,
            "from_approval_id": g.from_approval,
        })),
        "self_approval": a.self_approval,
        "break_glass": a.break_glass,
        "created_at": rfc3339_ms(a.created_at),
        "expires_at": rfc3339_ms(a.expires_at),
        "decided_by": a.decided_by,
        "decision_reason": a.decision_reason,
    })
}

/// Whether and how the approved request was sent; the failure text stays in the audit log.
fn execution_view(e: &Execution) -> Value {
    match e {
        Execution::NotStarted => json!({ "state": "not_started" }),
        Execution::Claimed { .. } => json!({ "state": "sending" }),
        Execution::Done { status } => json!({ "state": "done", "upstream_status": status }),
        Execution::Failed { .. } => json!({ "state": "failed" }),
    }
}

/// Whether `who` may see `a`: an approver of it, or its requester.
pub fn may_see(a: &Approval, who: &Principal) -> bool {
    let viewer = Viewer {
        iss: &who.issuer,
        sub: &who.subject,
        email: who.email.as_deref(),
    };
    visible_to(a, &viewer)
}

/// Default and largest `limit` of `GET /approvals`.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 500;

/// Index entries one `GET /approvals` reads at most looking for approvals the caller may see;
/// past that it answers what it found with a `next_cursor`.
const PAGE_SCAN: usize = 2000;

/// `?limit=&cursor=&status=` of `GET /approvals`.
#[derive(Debug, PartialEq, Eq)]
struct PageQuery {
    limit: usize,
    cursor: Option<Cursor>,
    filter: ListFilter,
}

/// Parses the query of `GET /approvals`; `Err` names the bad parameter.
fn page_query(query: Option<&str>) -> Result<PageQuery, &'static str> {
    let mut out = PageQuery {
        limit: PAGE_DEFAULT,
        cursor: None,
        filter: ListFilter::All,
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=PAGE_MAX).contains(&n) => out.limit = n,
                _ => return Err("limit must be a number from 1 to 500"),
            },
            "cursor" => {
                out.cursor = Some(Cursor::parse(&v).ok_or("cursor is not a next_cursor value")?);
            }
            "status" => match &*v {
                "pending" => out.filter = ListFilter::Pending,
                "all" => out.filter = ListFilter::All,
                _ => return Err("status must be pending or all"),
            },
            _ => {}
        }
    }
    Ok(out)
}

/// `GET /approvals` (JSON): one page of the approvals the caller may see.
///
/// Pages follow the store's listing order (newest first); `?limit=` (1-500, default 100),
/// `?status=pending` (only pending ones) and `?cursor=` (the previous answer's
/// `next_cursor`) page through every approval exactly once. Within a page, pending ones come
/// first. `next_cursor` is `null` on the last page; a page may hold fewer than `limit` items
/// and still have a next one. Each answer reads O(limit) index entries (at most 2,000).
pub async fn list(state: &ControlState, headers: &HeaderMap, query: Option<&str>) -> Response {
    let who = match bearer(state, headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = match page_query(query) {
        Ok(q) => q,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_request", why),
    };
    let mut items: Vec<Approval> = Vec::new();
    let mut cursor = q.cursor;
    let mut scanned = 0;
    while items.len() < q.limit && scanned < PAGE_SCAN {
        let want = (q.limit - items.len()).min(PAGE_SCAN - scanned);
        let page = match state
            .broker
            .list_page(q.filter, cursor.as_ref(), want)
            .await
        {
            Ok(page) => page,
            Err(e) => return store_unavailable(&e),
        };
        scanned += want;
        items.extend(page.items.into_iter().filter(|a| may_see(a, &who)));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    items.sort_by_key(|a| (a.status != Status::Pending, std::cmp::Reverse(a.created_at)));
    let views: Vec<Value> = items.iter().map(|a| view(a, &state.public_url)).collect();
    let next = cursor.map(|c| c.to_string());
    axum::Json(json!({ "approvals": views, "next_cursor": next })).into_response()
}

/// Loads an approval by its path id (404 for malformed or unknown ids).
pub async fn load(state: &ControlState, id: &str) -> Result<Approval, Response> {
    let not_found = || refuse(Refusal::NotFound);
    let id = ApprovalId::parse(id).ok_or_else(not_found)?;
    match state.broker.get(&id).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(not_found()),
        Err(e) => Err(store_unavailable(&e)),
    }
}

/// `GET /approvals/{id}` (JSON).
pub async fn get_one(state: &ControlState, headers: &HeaderMap, id: &str) -> Response {
    let who = match bearer(state, headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let a = match load(state, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !may_see(&a, &who) {
        return refuse(Refusal::NotFound);
    }
    axum::Json(view(&a, &state.public_url)).into_response()
}

/// Body of `POST /approvals/{id}/decision` (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `approve` or `deny`.
    pub decision: String,
    /// Optional reason (shown to the requester when denying).
    #[serde(default)]
    pub reason: Option<String>,
    /// With `approve`: also let the requester's matching requests pass for the rule's `grant`
    /// time and `grant_uses` uses (SPEC 9).
    #[serde(default)]
    pub grant: bool,
}

/// Parses `approve` / `deny`.
pub fn parse_decision(s: &str) -> Option<Decision> {
    match s {
        "approve" => Some(Decision::Approve),
        "deny" => Some(Decision::Deny),
        _ => None,
    }
}

/// Maps a refused vote to its answer.
pub fn decide_error(e: &DecideError) -> Response {
    refuse(decide_refusal(e))
}

/// The refusal for a vote the broker did not count, shared by the JSON API and the approval
/// page.
pub fn decide_refusal(e: &DecideError) -> Refusal {
    match e {
        DecideError::NotFound => Refusal::NotFound,
        DecideError::NotAnApprover => Refusal::NotAnApprover,
        DecideError::LoginRequired => Refusal::LoginRequired,
        DecideError::OwnRequest => Refusal::OwnRequest,
        DecideError::AlreadyVoted => Refusal::AlreadyVoted,
        DecideError::AlreadyDecided(Status::Review) => Refusal::InReview,
        DecideError::AlreadyDecided(_) => Refusal::AlreadyDecided,
        DecideError::Expired => Refusal::VoteExpired,
        DecideError::GrantNotAllowed => Refusal::GrantNotAllowed,
        DecideError::Store(_) => Refusal::ApiStoreUnavailable,
        DecideError::Audit(_) => Refusal::AuditUnavailable,
    }
}

/// `POST /approvals/{id}/decision` with a bearer token and a JSON body.
pub async fn decide_api(
    state: &ControlState,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
) -> Response {
    let who = match bearer(state, headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !who.may_approve {
        return refuse(Refusal::IssuerNotApprover);
    }
    let Some(email) = who.email.clone() else {
        return refuse(Refusal::NoApproverIdentity);
    };
    let body: DecisionBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return refuse(Refusal::BadDecisionBody(e.to_string())),
    };
    let acknowledge = body.decision == "acknowledge";
    let decision = match parse_decision(&body.decision) {
        Some(d) => d,
        None if acknowledge => Decision::Approve,
        None => return refuse(Refusal::BadDecision),
    };
    let Some(id) = ApprovalId::parse(id) else {
        return refuse(Refusal::NotFound);
    };
    let approver = ApproverIdentity {
        email,
        iss: Some(who.issuer.clone()),
        sub: Some(who.subject.clone()),
        via: Channel::Api,
    };
    if acknowledge {
        // Break-glass review (SPEC 9).
        return match state.broker.acknowledge(&id, approver).await {
            Ok(a) => axum::Json(view(&a, &state.public_url)).into_response(),
            Err(DecideError::AlreadyDecided(_)) => refuse(Refusal::NotInReview),
            Err(e) => decide_error(&e),
        };
    }
    match state
        .broker
        .decide_granting(&id, approver, decision, body.reason, body.grant)
        .await
    {
        Ok(a) => axum::Json(view(&a, &state.public_url)).into_response(),
        Err(e) => decide_error(&e),
    }
}

/// The verified caller and the parsed path id (an id that cannot exist is 404, checked after
/// the token so an unauthenticated caller learns nothing about ids).
async fn caller_and_id(
    state: &ControlState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Arc<Principal>, ApprovalId), Response> {
    let who = bearer(state, headers).await?;
    let id = ApprovalId::parse(id).ok_or_else(|| refuse(Refusal::NotFound))?;
    Ok((who, id))
}

/// `GET /approvals/{id}/result`: the parked upstream response, for the requester only.
pub async fn result(state: &ControlState, headers: &HeaderMap, id: &str) -> Response {
    let (who, id) = match caller_and_id(state, headers, id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    match state.broker.result(&id, &who.issuer, &who.subject).await {
        Ok(parked) => {
            let mut builder = axum::http::Response::builder().status(parked.status);
            for h in &parked.headers {
                builder = builder.header(h.name.as_str(), h.value.as_slice());
            }
            builder = builder
                .header("countersign-approval-id", id.as_str())
                .header(header::CACHE_CONTROL, "no-store");
            if parked.truncated {
                builder = builder.header("countersign-result-truncated", "true");
            }
            builder
                .body(axum::body::Body::from(parked.body))
                .unwrap_or_else(|_| refuse(Refusal::Internal))
        }
        Err(ResultError::NotFound | ResultError::NotRequester) => refuse(Refusal::NotFound),
        Err(ResultError::Unavailable(a)) => unavailable_result(&a, &state.public_url),
        Err(ResultError::Store(e)) => store_unavailable(&e),
    }
}

fn unavailable_result(a: &Approval, public_url: &str) -> Response {
    match a.status {
        Status::Pending => not_yet(a, public_url, "5"),
        // Approved and the upstream has not answered yet: the result is on its way, so the
        // client keeps polling (a 404 here would make it give up on a request that succeeds).
        Status::Approved
            if matches!(
                a.execution,
                Execution::NotStarted | Execution::Claimed { .. }
            ) =>
        {
            not_yet(a, public_url, "1")
        }
        // Sent once and failed; never retried. Same answer the held caller got, so the
        // requester can tell it from a result that is merely gone.
        Status::Approved if matches!(a.execution, Execution::Failed { .. }) => {
            refuse(Refusal::ExecutionFailed)
        }
        Status::Denied => refuse(Refusal::ApprovalDenied {
            by: a
                .decided_by
                .clone()
                .unwrap_or_else(|| "an approver".to_owned()),
            reason: a.decision_reason.clone(),
        }),
        Status::Expired => refuse(Refusal::ApprovalExpired),
        Status::Cancelled => refuse(Refusal::ResultCancelled),
        // Break-glass: the caller got the upstream's answer directly; nothing is parked.
        Status::Approved | Status::Review | Status::Acknowledged => {
            refuse(Refusal::ResultUnavailable)
        }
    }
}

/// 202 with the JSON view and `Retry-After: retry_after` seconds: no result yet.
fn not_yet(a: &Approval, public_url: &str, retry_after: &'static str) -> Response {
    let mut resp = (StatusCode::ACCEPTED, axum::Json(view(a, public_url))).into_response();
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from_static(retry_after),
    );
    resp
}

/// `DELETE /approvals/{id}`: the requester withdraws a pending request.
pub async fn cancel(state: &ControlState, headers: &HeaderMap, id: &str) -> Response {
    let (who, id) = match caller_and_id(state, headers, id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    match state
        .broker
        .cancel_as_requester(&id, &who.issuer, &who.subject)
        .await
    {
        Ok(a) => axum::Json(view(&a, &state.public_url)).into_response(),
        Err(CancelError::NotFound | CancelError::NotRequester) => refuse(Refusal::NotFound),
        Err(CancelError::AlreadyDecided(_)) => refuse(Refusal::AlreadyDecided),
        Err(CancelError::Store(e)) => store_unavailable(&e),
        Err(CancelError::Audit(_)) => refuse(Refusal::AuditUnavailable),
    }
}

/// `GET /.well-known/jwks.json`: keys that verify `Countersign-Approval`.
pub async fn jwks(State(s): State<Arc<ControlState>>) -> Response {
    (
        [(header::CACHE_CONTROL, "max-age=300")],
        axum::Json(s.broker.signer().jwks()),
    )
        .into_response()
}
