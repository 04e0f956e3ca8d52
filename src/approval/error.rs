//! Why a broker call did not do what was asked: one enum per operation, each variant a refusal
//! a caller can render.
//!
//! Owns the error types of the approval lifecycle. Must not touch HTTP, chat or HTML: callers
//! render these through the one refusal table.

use super::executor::ExecutorError;
use super::ports::AuditError;
use super::record::{Approval, Status};
use super::store::StoreError;

/// Why an approval request could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The rule has `reason_required` and no `Countersign-Reason` was sent (400).
    #[error("this request needs a Countersign-Reason header")]
    ReasonRequired,
    /// The rule has no `[rule.approval]` (a bug in the caller).
    #[error("rule {0} does not ask for approval")]
    NotAnApprovalRule(String),
    /// Fewer eligible approvers than the quorum: it could never be approved (fail closed).
    #[error("rule needs {quorum} approvers but only {eligible} may approve this request")]
    Unsatisfiable {
        /// Approvers other than the requester (or including them under `self_approval`).
        eligible: usize,
        /// The rule's quorum.
        quorum: u32,
    },
    /// `Countersign-Break-Glass` was empty (400).
    #[error("Countersign-Break-Glass needs a reason")]
    BreakGlassReasonRequired,
    /// The requester broke the glass on this rule within `break_glass_cooldown` (429).
    #[error("break-glass cooldown: {}s left", .left.as_secs())]
    BreakGlassCooldown {
        /// Time left.
        left: std::time::Duration,
    },
    /// The requester already has this many approvals pending (429).
    #[error("the requester already has {limit} approvals pending")]
    TooManyPending {
        /// `max_pending_per_requester`.
        limit: usize,
    },
    /// No such approval (or it was cleaned up).
    #[error("no such approval")]
    NotFound,
    /// A held approval's record is gone from the store: the store lost data (503, audited).
    #[error("the approval store lost this approval")]
    Lost,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed; nothing was acknowledged.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Why a vote was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// The voter is not among the approvers.
    #[error("you are not an approver of this request")]
    NotAnApprover,
    /// The rule has `approve_via = "login"` and the vote did not come from the web page
    /// (where the control plane enforces a fresh login): chat buttons and API calls do not count.
    #[error("this request must be approved on the approval page after a fresh login")]
    LoginRequired,
    /// The requester tried to approve their own request without `self_approval`.
    #[error("you cannot approve your own request")]
    OwnRequest,
    /// This approver already voted; nothing changed.
    #[error("you already voted")]
    AlreadyVoted,
    /// Decided before this vote arrived.
    #[error("already {}", .0.as_str())]
    AlreadyDecided(Status),
    /// The approval expired (now recorded as such).
    #[error("the approval expired")]
    Expired,
    /// `"grant": true` on a deny, or on a rule without `grant` (SPEC 9).
    #[error("this rule makes no grants (grant is only for an approval on a rule with \"grant\")")]
    GrantNotAllowed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed; the decision is not acknowledged (an approval is cancelled).
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Why a grant was not revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No such grant, or not one the caller may see (404 either way).
    #[error("no such grant")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Revoked, but the audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Why a cancel did nothing.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// Only the requester may cancel it.
    #[error("only the requester may cancel this request")]
    NotRequester,
    /// Already decided (and executing or executed, for approvals).
    #[error("already {}", .0.as_str())]
    AlreadyDecided(Status),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Why the stored request was not (successfully) sent.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// Not approved (any more).
    #[error("not approved: {}", .0.as_str())]
    NotApproved(Status),
    /// Someone else already claimed the one execution.
    #[error("already executed")]
    AlreadyClaimed,
    /// The approval token could not be signed.
    #[error(transparent)]
    Signer(#[from] super::signer::SignerError),
    /// The stored request does not verify against the approved record (SPEC 8): refused,
    /// never sent.
    #[error("refused: the stored request failed its integrity check: {0}")]
    Integrity(String),
    /// Upstream unreachable (502).
    #[error(transparent)]
    Upstream(#[from] ExecutorError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a parked result cannot be returned.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// No such approval.
    #[error("no such approval")]
    NotFound,
    /// Only the requester may read it.
    #[error("only the requester may read this result")]
    NotRequester,
    /// No parked result (yet): pending, denied, expired, cancelled, executing, delivered to a
    /// held caller, failed upstream, or the result's lifetime passed. The approval says which.
    #[error("no result: approval is {}", .0.status.as_str())]
    Unavailable(Box<Approval>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
