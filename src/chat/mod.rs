//! Chat delivery: Slack and Microsoft Teams.
//!
//! [`state`] is what both chat integrations remember between events (posted copies, handled
//! events), shared across replicas through the approval store; [`refusal`] is what both tell a
//! clicking user whose vote the broker refused; [`with_outcome`] is the state both show after
//! an event; [`notifies_teams`] is whether either Teams mode (webhook or bot) posts an approval;
//! [`Button`] is the one vocabulary of their vote buttons.

pub mod adaptive;
pub mod fanout;
#[cfg(test)]
mod quorum_tests;
#[cfg(test)]
pub(crate) use crate::approval::tests::sample_approval;
#[cfg(test)]
mod test_support;
#[cfg(test)]
pub(crate) use test_support::deny;
pub mod slack;
pub mod state;
pub mod teams;
pub mod teams_bot;

use crate::approval::{Approval, DecideError, Decision, Execution, NotifyEvent, Status};
use crate::notify::NotifyTarget;

/// How a message headlines an approval in `status`.
pub(crate) const fn status_word(status: Status) -> &'static str {
    match status {
        Status::Pending => "Approval needed",
        Status::Approved => "Approved",
        Status::Denied => "Denied",
        Status::Expired => "Expired",
        Status::Cancelled => "Cancelled",
        Status::Review => "Break-glass: review needed",
        Status::Acknowledged => "Break-glass acknowledged",
    }
}

/// A vote button in chat. Its [`name`](Self::name) is the Slack `action_id` and the Teams
/// `Action.Execute` verb alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// Approve (once, when the rule also offers a grant).
    Approve,
    /// "Approve for 15 min" on rules with `grant` (SPEC 9).
    ApproveGrant,
    /// Deny.
    Deny,
    /// Acknowledge a break-glass request under review (SPEC 9); Slack only.
    Acknowledge,
}

impl Button {
    const ALL: [Self; 4] = [
        Self::Approve,
        Self::ApproveGrant,
        Self::Deny,
        Self::Acknowledge,
    ];

    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::ApproveGrant => "approve_grant",
            Self::Deny => "deny",
            Self::Acknowledge => "acknowledge",
        }
    }

    /// The button named `name`, if any.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The vote a click casts (an acknowledgement is an approval of the review).
    pub const fn decision(self) -> Decision {
        match self {
            Self::Deny => Decision::Deny,
            Self::Approve | Self::ApproveGrant | Self::Acknowledge => Decision::Approve,
        }
    }
}

/// What the clicking user alone is told when the broker refused their vote; `page` is the
/// approval page (for login-only rules).
pub(crate) fn refusal(e: &DecideError, page: &str) -> String {
    match e {
        DecideError::NotFound => "This request no longer exists.".to_owned(),
        DecideError::NotAnApprover => {
            "You are not an approver of this request; nothing changed.".to_owned()
        }
        DecideError::LoginRequired => format!(
            "This request must be approved on the approval page after a fresh login: {page}"
        ),
        DecideError::OwnRequest => {
            "You cannot approve your own request; nothing changed.".to_owned()
        }
        DecideError::AlreadyVoted => "You already voted on this request.".to_owned(),
        DecideError::AlreadyDecided(status) => {
            format!(
                "This request is already {}; nothing changed.",
                status.as_str()
            )
        }
        DecideError::Expired => "This request expired; nothing changed.".to_owned(),
        DecideError::GrantNotAllowed => {
            "This rule makes no grants; nothing changed. Use Approve instead.".to_owned()
        }
        DecideError::Store(_) | DecideError::Audit(_) => NOT_RECORDED.to_owned(),
    }
}

/// The answer to a click that could not be recorded (store or audit log unavailable).
pub(crate) const NOT_RECORDED: &str =
    "Countersign could not record your vote; nothing changed. Try again or use the approval page.";

/// `a` as a message must show it after `event`: an execution event carries the upstream's
/// outcome, which the snapshot (taken when the execution was claimed) does not have yet.
pub(crate) fn with_outcome(a: &Approval, event: &NotifyEvent) -> Approval {
    let mut a = a.clone();
    match event {
        NotifyEvent::Executed { status } => a.execution = Execution::Done { status: *status },
        NotifyEvent::ExecutionFailed if !matches!(a.execution, Execution::Failed { .. }) => {
            a.execution = Execution::Failed {
                reason: "upstream unreachable".into(),
            }
        }
        _ => {}
    }
    a
}

/// Whether `a` is posted to Teams: its rule notifies Teams, or its escalation does and has
/// happened.
pub(crate) fn notifies_teams(a: &Approval) -> bool {
    let escalated_here = a
        .nudges
        .escalation
        .as_ref()
        .is_some_and(|e| e.done && e.notify.contains(&NotifyTarget::Teams));
    a.notify.contains(&NotifyTarget::Teams) || escalated_here
}
