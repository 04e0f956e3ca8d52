//! Break-glass on the data plane (SPEC 9): reads `Countersign-Break-Glass` before client
//! `Countersign-*` headers are stripped, and on a `break_glass = true` rule forwards the
//! request at once through the broker (recorded, audited and announced first; fail closed).
//!
//! Owns only the header and the mapping of outcomes to answers. Must not decide anything about
//! the approval (that is `approval::Broker::break_glass`) nor hold the caller.

use std::sync::Arc;

use super::plane::{execute_now, submit_rejection, ApprovalPlane, HoldResult};
use super::RequestCtx;
use crate::approval::StoredRequest;
use crate::identity::Principal;
use crate::policy::Rule;
use crate::respond::Refusal;

/// The header a caller breaks the glass with.
pub const HEADER: &str = "countersign-break-glass";

/// The caller's `Countersign-Break-Glass`, trimmed: `None` when absent, empty when empty or
/// not UTF-8 (refused later with 400 on a break-glass rule). At most 1000 characters.
pub fn header(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(HEADER)?;
    Some(
        v.to_str()
            .map(|s| s.trim().chars().take(1000).collect())
            .unwrap_or_default(),
    )
}

/// Records the break-glass and forwards `stored` once, answering with the upstream's
/// response. Nothing is forwarded unless the broker recorded and audited it.
pub async fn forward(
    plane: &ApprovalPlane,
    ctx: &mut RequestCtx,
    rule: &Rule,
    principal: &Arc<Principal>,
    stored: StoredRequest,
    reason: &str,
) -> Result<HoldResult, Refusal> {
    let approval = plane
        .broker
        .break_glass(rule, principal, stored, reason, ctx.reason.take())
        .await
        .map_err(submit_rejection)?;
    let id = approval.id.clone();
    ctx.approval_id = Some(id.to_string());
    ctx.outcome = "break_glass";
    tracing::warn!(request_id = %ctx.request_id, approval_id = %id, rule = %rule.name,
        "break-glass: forwarding without approval");
    let response = execute_now(plane, &ctx.request_id, &id, "break-glass").await?;
    Ok(HoldResult::Forward {
        id,
        response,
        grant_id: None,
    })
}
