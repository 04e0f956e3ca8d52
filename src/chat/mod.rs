//! Chat delivery: Slack and Microsoft Teams.
//!
//! [`state`] is what both chat integrations remember between events (posted copies, handled
//! events), shared across replicas through the approval store; [`refusal`] is what both tell a
//! clicking user whose vote the broker refused; [`with_outcome`] is the state both show after
//! an event; [`notifies_teams`] is whether either Teams mode (webhook or bot) posts an approval.

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

use crate::approval::{Approval, DecideError, Execution, NotifyEvent};
use crate::notify::NotifyTarget;

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
