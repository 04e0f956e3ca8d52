//! Grants on the control plane (SPEC 9): `GET /grants` lists the grants the caller may see
//! (their own as requester; those made by approvals they were an approver of), `DELETE
//! /grants/{id}` revokes one at once on every replica. JSON with a bearer token validated
//! exactly like data-plane tokens, as for the approval API.
//!
//! Owns the two handlers and the JSON shape of a grant. Must not decide visibility or
//! liveness (that is `approval::grant`) nor touch the store directly.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::api::{bearer, refuse};
use super::ControlState;
use crate::approval::{BrokerError, Grant, GrantViewer, RevokeError};
use crate::clock::rfc3339_ms;
use crate::identity::Principal;
use crate::respond::Refusal;

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
    let viewer = viewer(&who);
    match state.broker.revoke_grant(id, &viewer).await {
        Ok(g) => axum::Json(grant_view(&g, state.broker.now())).into_response(),
        Err(RevokeError::NotFound) => refuse(Refusal::GrantNotFound),
        Err(RevokeError::Store(e)) => {
            tracing::error!(error = %e, "approval store failed revoking a grant");
            refuse(Refusal::ApiStoreUnavailable)
        }
        Err(RevokeError::Audit(e)) => {
            tracing::error!(error = %e, grant_id = id, "grant revoked, but the audit log failed");
            refuse(Refusal::AuditUnavailable)
        }
    }
}
