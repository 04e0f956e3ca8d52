//! Fixtures shared by the chat tests.

use crate::approval::{Approval, Channel, Decision, Status, Vote};

/// Makes `a` denied by `by` for `reason`, with their one vote cast through `via` at `at`.
pub(crate) fn deny(a: &mut Approval, by: &str, reason: &str, via: Channel, at: u64) {
    a.status = Status::Denied;
    a.decided_by = Some(by.into());
    a.decision_reason = Some(reason.into());
    a.votes.push(Vote {
        approver: by.into(),
        decision: Decision::Deny,
        reason: Some(reason.into()),
        at,
        via,
        self_approval: false,
        grant: false,
    });
}
