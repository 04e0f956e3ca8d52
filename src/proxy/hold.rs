//! `action = "approve"` on the data plane (SPEC 5.5): buffer the body, create the approval,
//! hold the caller's connection until a decision, the hold time, a hang-up or shutdown, then
//! answer with the upstream's response (executed once by the broker), a 403, or a 202.
//!
//! While the caller is held, this replica is its holder (`Broker::wait` takes the hold; the
//! replica's heartbeat keeps it): if this replica dies, a surviving replica cancels the request
//! (`holder_lost`) instead of running it for a caller who saw a connection error. Once the caller is answered 202 the hold is
//! released and any replica executes the request once it is approved.
//!
//! Decisions belong to `approval::Broker`; this file only moves bytes and maps outcomes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use tokio::sync::watch;

use super::plane::{execute_now, submit_rejection};
use super::plane::{ApprovalPlane, HoldResult};
use super::RequestCtx;
use crate::approval::{ApprovalId, ExecuteError, StoredRequest, UpstreamResponse, WaitOutcome};
use crate::identity::Principal;
use crate::policy::Rule;
use crate::respond::Refusal;

/// Largest body a held request may carry (SPEC 5.5).
pub const MAX_HELD_BODY: usize = 1024 * 1024;

/// The `Prefer` header (RFC 7240): `respond-async` and `wait=N`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prefer {
    /// Answer 202 at once.
    pub respond_async: bool,
    /// Hold at most this many seconds.
    pub wait: Option<u64>,
}

impl Prefer {
    /// Parses every `Prefer` header value; unknown preferences are ignored (RFC 7240 2).
    pub fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut out = Prefer::default();
        for v in values {
            let Ok(v) = std::str::from_utf8(v) else {
                continue;
            };
            for pref in v.split(',') {
                let token = pref.split(';').next().unwrap_or("").trim();
                let (name, value) = match token.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (token, None),
                };
                if name.eq_ignore_ascii_case("respond-async") {
                    out.respond_async = true;
                } else if name.eq_ignore_ascii_case("wait") {
                    if let Some(n) = value.and_then(|v| v.parse::<u64>().ok()) {
                        out.wait = Some(out.wait.map_or(n, |w| w.min(n)));
                    }
                }
            }
        }
        out
    }

    /// The hold actually applied, given the rule's.
    pub fn hold(&self, rule_hold: Duration) -> Duration {
        if self.respond_async {
            return Duration::ZERO;
        }
        match self.wait {
            Some(w) => rule_hold.min(Duration::from_secs(w)),
            None => rule_hold,
        }
    }
}

/// Reads the whole request body, refusing more than [`MAX_HELD_BODY`].
async fn read_body(session: &mut Session) -> Result<Bytes, Refusal> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_HELD_BODY as u64) {
        return Err(Refusal::PayloadTooLarge);
    }
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_HELD_BODY {
                    return Err(Refusal::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => {
                return Err(Refusal::BadRequest(
                    "the request body could not be read".into(),
                ))
            }
        }
    }
}

/// Resolves when the client hangs up (after the body was read).
async fn hang_up(session: &mut Session) {
    loop {
        match session.as_downstream_mut().read_body_or_idle(true).await {
            Err(_) => return,
            // Bytes after the request (pipelining): not a hang-up; keep holding.
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

/// Resolves when SIGTERM arrives.
async fn shutting_down(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|down| *down).await.is_err() {
        // The sender is gone: the process is going away without a drain; keep holding.
        std::future::pending::<()>().await;
    }
}

/// Holds an approval request (the rule's step-up requirements were already met).
pub async fn hold(
    plane: &ApprovalPlane,
    session: &mut Session,
    ctx: &mut RequestCtx,
    rule: &Rule,
    principal: &Arc<Principal>,
    upstream: usize,
) -> Result<HoldResult, Refusal> {
    let spec = rule.approval.as_ref().ok_or(Refusal::Internal)?;
    let body = read_body(session).await?;
    let prefer = Prefer::parse(
        session
            .req_header()
            .headers
            .get_all("prefer")
            .iter()
            .map(|v| v.as_bytes()),
    );
    let upstream = plane.upstreams.get(upstream).ok_or(Refusal::Internal)?;
    let mut stored = {
        // The canonical request (SPEC 8) is what is bound, shown and replayed.
        let canonical = ctx.canonical.as_ref().ok_or(Refusal::Internal)?;
        StoredRequest::new(
            &canonical.wire_method,
            &canonical.host,
            &canonical.path,
            canonical.query.as_deref(),
            &session.req_header().headers,
            body.to_vec(),
            upstream,
            &principal.subject,
        )
        // The audit's `approval.requested` names the request (and its trace span is linked).
        .with_request_id(&ctx.request_id)
        .with_issuer(&principal.issuer)
    };
    if let Some(reason) = ctx.break_glass.take().filter(|_| spec.break_glass) {
        return super::break_glass::forward(plane, ctx, rule, principal, stored, &reason).await;
    }
    // A grant the approvers gave this requester for this request (SPEC 9) lets it pass now.
    let used = plane
        .broker
        .pass_under_grant(rule, principal, &mut stored, ctx.reason.clone())
        .await
        .map_err(submit_rejection)?;
    if let Some((approval, grant)) = used {
        ctx.approval_id = Some(approval.id.to_string());
        ctx.outcome = "granted";
        let response = execute_now(plane, &ctx.request_id, &approval.id, "granted").await?;
        return Ok(HoldResult::Forward {
            id: approval.id,
            response,
            grant_id: Some(grant.id),
        });
    }
    let approval = plane
        .broker
        .submit(rule, principal, stored, ctx.reason.take())
        .await
        .map_err(submit_rejection)?;
    let id = approval.id.clone();
    ctx.approval_id = Some(id.to_string());
    tracing::info!(
        request_id = %ctx.request_id,
        approval_id = %id,
        rule = %rule.name,
        "request held for approval"
    );

    let hold = prefer.hold(spec.hold);
    let outcome = tokio::select! {
        r = plane.broker.wait(&id, hold) => r.map_err(submit_rejection)?,
        () = hang_up(session) => {
            let _ = plane.broker.cancel(&id, "caller", "the caller disconnected while held").await;
            return Err(Refusal::ApprovalCancelled);
        }
        () = shutting_down(plane.shutdown.clone()) => {
            let _ = plane.broker.cancel(&id, "countersign", "the proxy shut down while the request was held").await;
            return Err(Refusal::ShuttingDown);
        }
    };
    match outcome {
        WaitOutcome::Approved => match plane.broker.execute(&id).await {
            Ok(response) => Ok(HoldResult::Forward {
                id,
                response,
                grant_id: None,
            }),
            // The background took it (the hold was released in a race): the result will be
            // parked; tell the caller where.
            Err(ExecuteError::AlreadyClaimed) => Ok(HoldResult::Accepted {
                id,
                expires_at: approval.expires_at,
            }),
            // Cancelled between the decision and the claim (this replica could not beat in time
            // and another cancelled its hold): never executed.
            Err(ExecuteError::NotApproved(crate::approval::Status::Cancelled)) => {
                Err(Refusal::ApprovalCancelled)
            }
            Err(ExecuteError::Upstream(e)) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "approved request could not reach upstream");
                Err(Refusal::UpstreamUnavailable)
            }
            Err(e) => {
                tracing::error!(request_id = %ctx.request_id, error = %e, "approved request not executed");
                Err(Refusal::ApprovalsUnavailable)
            }
        },
        WaitOutcome::Denied { by, reason } => Err(Refusal::ApprovalDenied {
            by: by.unwrap_or_else(|| "an approver".to_owned()),
            reason,
        }),
        WaitOutcome::Expired => Err(Refusal::ApprovalExpired),
        WaitOutcome::Cancelled { .. } => Err(Refusal::ApprovalCancelled),
        WaitOutcome::StillPending => {
            let a = plane
                .broker
                .release_hold(&id)
                .await
                .map_err(submit_rejection)?;
            Ok(HoldResult::Accepted {
                id,
                expires_at: a.expires_at,
            })
        }
    }
}

/// Writes an executed request's upstream response to the caller.
pub async fn write_forward(
    session: &mut Session,
    request_id: &str,
    id: &ApprovalId,
    grant_id: Option<&str>,
    response: UpstreamResponse,
) -> Result<()> {
    let mut header =
        ResponseHeader::build(response.status.as_u16(), Some(response.headers.len() + 4))?;
    for (name, value) in response.headers.iter() {
        header.append_header(name.clone(), value.clone())?;
    }
    header.insert_header(
        http::header::CONTENT_LENGTH,
        response.body.len().to_string(),
    )?;
    header.insert_header("countersign-approval-id", id.as_str())?;
    header.insert_header("countersign-request-id", request_id)?;
    if let Some(grant_id) = grant_id {
        header.insert_header("countersign-grant-id", grant_id)?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(response.body), true).await
}

/// Writes the 202 for a request still pending (SPEC 5.5).
pub async fn write_accepted(
    session: &mut Session,
    public_url: &str,
    request_id: &str,
    id: &ApprovalId,
    expires_at_ms: u64,
) -> Result<()> {
    let status_url = format!("{public_url}/approvals/{id}");
    let body = serde_json::json!({
        "approval_id": id.as_str(),
        "status": "pending",
        "status_url": status_url,
        "result_url": format!("{status_url}/result"),
        "expires_at": crate::clock::rfc3339_ms(expires_at_ms),
        "request_id": request_id,
    });
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(202, Some(6))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::LOCATION, status_url.as_str())?;
    header.insert_header(http::header::RETRY_AFTER, "5")?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header("countersign-approval-id", id.as_str())?;
    header.insert_header("countersign-request-id", request_id)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Prefer {
        Prefer::parse(v.iter().map(|s| s.as_bytes()))
    }

    #[test]
    fn prefer_respond_async_and_wait() {
        assert_eq!(
            parse(&["respond-async, wait=10"]),
            Prefer {
                respond_async: true,
                wait: Some(10)
            }
        );
        assert_eq!(parse(&["wait=3", "wait=7"]).wait, Some(3));
        assert_eq!(parse(&["handling=strict"]), Prefer::default());
        assert_eq!(parse(&["wait=abc"]).wait, None);
    }

    #[test]
    fn hold_is_shortened_never_lengthened() {
        let rule = Duration::from_secs(55);
        assert_eq!(parse(&["wait=5"]).hold(rule), Duration::from_secs(5));
        assert_eq!(parse(&["wait=500"]).hold(rule), rule);
        assert_eq!(parse(&["respond-async"]).hold(rule), Duration::ZERO);
        assert_eq!(parse(&[]).hold(rule), rule);
    }
}
