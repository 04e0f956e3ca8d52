//! What the data plane's approval paths share ([`super::hold`] holds a caller,
//! [`super::break_glass`] forwards at once): the handle on the approval lifecycle
//! ([`ApprovalPlane`]), how such a request ended ([`HoldResult`]) and how a refused submit is
//! answered ([`submit_rejection`]).
//!
//! Owns these shared types only. Must not hold a caller, read a body or decide anything about
//! an approval (that is `approval::Broker`).

use tokio::sync::watch;

use crate::approval::{ApprovalId, Broker, BrokerError, ExecuteError, UpstreamResponse};
use crate::respond::Refusal;

/// What the data plane needs for approvals.
#[derive(Debug)]
pub struct ApprovalPlane {
    /// The approval lifecycle.
    pub broker: Broker,
    /// `{public_url}` without a trailing slash, for status URLs.
    pub public_url: String,
    /// Name of each upstream, by index (a stored request names its upstream; the executor
    /// looks it up in the local config).
    pub upstreams: Vec<String>,
    /// Flips to `true` on SIGTERM: held callers get 503 `shutting_down`.
    pub shutdown: watch::Receiver<bool>,
}

/// How a held request ended, for the caller.
#[derive(Debug)]
pub enum HoldResult {
    /// Approved and executed: send this upstream response.
    Forward {
        /// The approval.
        id: ApprovalId,
        /// What upstream answered.
        response: UpstreamResponse,
        /// The grant it passed under, if it did (SPEC 9; sent as `Countersign-Grant-Id`).
        grant_id: Option<String>,
    },
    /// Still pending: 202 with these details.
    Accepted {
        /// The approval.
        id: ApprovalId,
        /// Unix ms.
        expires_at: u64,
    },
}

/// Sends approval `id`, recorded as approved for this caller at once (break-glass, grant),
/// upstream through the broker's one execution path; `what` names the path in logs.
pub async fn execute_now(
    plane: &ApprovalPlane,
    request_id: &str,
    id: &ApprovalId,
    what: &str,
) -> Result<UpstreamResponse, Refusal> {
    match plane.broker.execute(id).await {
        Ok(response) => Ok(response),
        Err(ExecuteError::Upstream(e)) => {
            tracing::warn!(request_id, error = %e, "{what} request could not reach upstream");
            Err(Refusal::UpstreamUnavailable)
        }
        Err(e) => {
            tracing::error!(request_id, error = %e, "{what} request not executed");
            Err(Refusal::ApprovalsUnavailable)
        }
    }
}

/// How a refused submit (hold, break-glass, grant use) is answered.
pub fn submit_rejection(e: BrokerError) -> Refusal {
    match e {
        BrokerError::BreakGlassReasonRequired => Refusal::BreakGlassReasonRequired,
        BrokerError::BreakGlassCooldown { left } => Refusal::BreakGlassCooldown {
            retry_after: left.as_secs_f64().ceil().max(1.0) as u64,
        },
        BrokerError::ReasonRequired => Refusal::ReasonRequired,
        BrokerError::Unsatisfiable { .. } => Refusal::ApprovalUnsatisfiable,
        BrokerError::TooManyPending { .. } => Refusal::TooManyPending,
        BrokerError::Store(err) => {
            tracing::error!(error = %err, "approval store failed");
            Refusal::StoreUnavailable
        }
        BrokerError::Audit(err) => {
            tracing::error!(error = %err, "audit log failed; not holding");
            Refusal::ApprovalsUnavailable
        }
        BrokerError::NotFound => Refusal::ApprovalCancelled,
        BrokerError::Lost => Refusal::StoreUnavailable,
        BrokerError::NotAnApprovalRule(rule) => {
            tracing::error!(rule, "approve rule without [rule.approval]");
            Refusal::Internal
        }
    }
}
