//! Grants on the control plane (SPEC 9): `GET /grants` lists the grants the caller may see
//! (their own as requester; those made by approvals they were an approver of), `DELETE
//! /grants/{id}` revokes one at once on every replica. JSON with a bearer token validated
//! exactly like data-plane tokens, as for the approval API; for a signed-in approver in a
//! browser, `GET /grants` is a page with a Revoke button per live grant
//! (`POST /grants/{id}/revoke`, CSRF-protected like a vote).
//!
//! Owns these handlers, the JSON shape of a grant and the grants page. Must not decide
//! visibility or liveness (that is `approval::grant`) nor touch the store directly.

use askama::Template;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{bearer, refuse};
use super::session::ApproverSession;
use super::ControlState;
use crate::approval::{BrokerError, Grant, GrantViewer, RevokeError};
use crate::clock::rfc3339_ms;
use crate::identity::Principal;
use crate::respond::{PageRefusal, Refusal};

/// A grant as JSON. `state`: `active`, `used_up`, `revoked` or `expired` at `now`.
pub fn grant_view(g: &Grant, now: u64) -> Value {
    let state = if g.revoked_by.is_some() {
        "revoked"
    } else if now >= g.expires_at {
        "expired"
    } else if g.uses >= g.uses_max {
        "used_up"
    } else {
        "active"
    };
    json!({
        "grant_id": g.id,
        "state": state,
        "rule": g.rule,
        "requester": {
            "iss": g.requester.iss,
            "sub": g.requester.sub,
            "email": g.requester.email,
        },
        "method": g.method,
        "host": g.host,
        "path": g.path,
        "approval_id": g.approval_id,
        "approvers": g.approvers,
        "uses": g.uses,
        "uses_max": g.uses_max,
        "created_at": rfc3339_ms(g.created_at),
        "expires_at": rfc3339_ms(g.expires_at),
        "revoked_by": g.revoked_by,
    })
}

/// Who is asking, as the broker judges grant visibility: the token's person and subject.
fn viewer(who: &Principal) -> GrantViewer<'_> {
    GrantViewer {
        email: who.email.as_deref(),
        iss: &who.issuer,
        sub: &who.subject,
    }
}

/// `GET /grants`: `{"grants": [...]}`, newest first.
pub async fn list(state: &ControlState, headers: &HeaderMap) -> Response {
    let who = match bearer(state, headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let viewer = viewer(&who);
    match state.broker.grants_for(&viewer).await {
        Ok(grants) => {
            let now = state.broker.now();
            let grants: Vec<Value> = grants.iter().map(|g| grant_view(g, now)).collect();
            axum::Json(json!({ "grants": grants })).into_response()
        }
        Err(BrokerError::Store(e)) => {
            tracing::error!(error = %e, "approval store failed listing grants");
            refuse(Refusal::ApiStoreUnavailable)
        }
        Err(e) => {
            tracing::error!(error = %e, "grants not listed");
            refuse(Refusal::ApiStoreUnavailable)
        }
    }
}

/// `DELETE /grants/{id}`: revokes it; answers the grant, now `revoked`.
pub async fn revoke(state: &ControlState, headers: &HeaderMap, id: &str) -> Response {
    let who = match bearer(state, headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match revoke_logged(state, id, &viewer(&who)).await {
        Ok(g) => axum::Json(grant_view(&g, state.broker.now())).into_response(),
        Err(RevokeError::NotFound) => refuse(Refusal::GrantNotFound),
        Err(RevokeError::Store(_)) => refuse(Refusal::ApiStoreUnavailable),
        Err(RevokeError::Audit(_)) => refuse(Refusal::AuditUnavailable),
    }
}

/// Revokes grant `id` for `viewer`. A store or audit failure is logged here; the caller answers
/// it in its own form (JSON or page).
async fn revoke_logged(
    state: &ControlState,
    id: &str,
    viewer: &GrantViewer<'_>,
) -> Result<Grant, RevokeError> {
    let revoked = state.broker.revoke_grant(id, viewer).await;
    match &revoked {
        Err(RevokeError::Store(e)) => {
            tracing::error!(error = %e, "approval store failed revoking a grant");
        }
        Err(RevokeError::Audit(e)) => {
            tracing::error!(error = %e, grant_id = id, "grant revoked, but the audit log failed");
        }
        Ok(_) | Err(RevokeError::NotFound) => {}
    }
    revoked
}

/// The signed-in person as the broker judges grant visibility.
fn session_viewer(s: &ApproverSession) -> GrantViewer<'_> {
    GrantViewer {
        email: Some(&s.who.email),
        iss: &s.who.iss,
        sub: &s.who.sub,
    }
}

/// One grant on the grants page.
struct GrantRow {
    id: String,
    state: &'static str,
    state_label: &'static str,
    active: bool,
    rule: String,
    method: String,
    host: String,
    path: String,
    requester: String,
    approvers: String,
    uses: u32,
    uses_max: u32,
    until: String,
    csrf: String,
}

#[derive(Template)]
#[template(path = "grants.html")]
struct GrantsPage<'a> {
    viewer: Option<&'a str>,
    items: Vec<GrantRow>,
}

/// `GET /grants` as HTML, for the signed-in approver (or requester).
pub async fn page(state: &ControlState, headers: &HeaderMap) -> Response {
    let s = match super::web::session_or_login(state, headers, "/grants") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(sessions) = &state.sessions else {
        return super::html::refusal_page(PageRefusal::LoginNotConfigured);
    };
    let grants = match state.broker.grants_for(&session_viewer(&s)).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "grants page: store failed");
            return super::html::refusal_page(PageRefusal::StoreUnavailable);
        }
    };
    let now = state.broker.now();
    let items = grants
        .iter()
        .map(|g| {
            // CSS class (the approval pages' colours) and label.
            let (state, state_label) = if g.revoked_by.is_some() {
                ("denied", "Revoked")
            } else if g.uses >= g.uses_max {
                ("expired", "Used up")
            } else {
                ("approved", "Active")
            };
            GrantRow {
                id: g.id.clone(),
                state,
                state_label,
                active: g.is_live(now),
                rule: g.rule.clone(),
                method: g.method.clone(),
                host: g.host.clone(),
                path: g.path.clone(),
                requester: g
                    .requester
                    .email
                    .clone()
                    .unwrap_or_else(|| format!("{} at {}", g.requester.sub, g.requester.iss)),
                approvers: g.approvers.join(", "),
                uses: g.uses,
                uses_max: g.uses_max,
                until: rfc3339_ms(g.expires_at),
                csrf: sessions.csrf_token(&s, &g.id),
            }
        })
        .collect();
    let page = GrantsPage {
        viewer: Some(&s.who.email),
        items,
    };
    super::html::html(StatusCode::OK, page.render())
}

/// The revoke form as posted by the grants page.
#[derive(Debug, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /grants/{id}/revoke` from the grants page: revokes it and goes back to the page.
pub async fn revoke_form(
    state: &ControlState,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
) -> Response {
    use super::html::{refusal_page, refusal_page_with_link};
    let Some(sessions) = &state.sessions else {
        return refusal_page(PageRefusal::VoteWithoutLogin);
    };
    let Some(s) = sessions.from_headers(headers) else {
        let login = super::urls::login_url("/grants", false, &[]);
        return refusal_page_with_link(PageRefusal::SessionEnded, &login, "Sign in");
    };
    let Ok(form) = serde_urlencoded::from_bytes::<RevokeForm>(body) else {
        return refusal_page(PageRefusal::BadForm);
    };
    if !sessions.verify_csrf(&s, id, &form.csrf) {
        return refusal_page(PageRefusal::StaleForm);
    }
    match revoke_logged(state, id, &session_viewer(&s)).await {
        Ok(_) => Redirect::to("/grants").into_response(),
        Err(RevokeError::NotFound) => refusal_page(PageRefusal::NotFound),
        Err(RevokeError::Store(_)) => refusal_page(PageRefusal::StoreUnavailable),
        Err(RevokeError::Audit(_)) => refusal_page(PageRefusal::RevokedNotRecorded),
    }
}
