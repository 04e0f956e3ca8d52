//! The break-glass rules of the state machine, as pure functions: who may claim a record in
//! review, what acknowledging does, and that a record from before break-glass still reads.

use super::approval;
use crate::approval::transition::{acknowledge, claim, may_cancel, vote, VoteResultKind};
use crate::approval::*;

fn in_review() -> Approval {
    let mut a = approval(1);
    a.status = Status::Review;
    a.held = true;
    a.break_glass = Some(BreakGlass {
        reason: "prod down".into(),
        acknowledged_by: None,
        acknowledged_at: None,
    });
    a
}

#[test]
fn only_the_holder_claims_a_review_once_and_a_review_without_break_glass_never() {
    let mut a = in_review();
    assert!(!claim(&mut a, Claimant::Background, "bg", 1));
    assert!(claim(&mut a, Claimant::Holder, "holder", 1));
    assert!(!claim(&mut a, Claimant::Holder, "holder", 2));
    // A status forged without the break-glass record is never sendable.
    let mut forged = in_review();
    forged.break_glass = None;
    assert!(!claim(&mut forged, Claimant::Holder, "holder", 1));
}

#[test]
fn acknowledge_moves_review_to_acknowledged_once_and_votes_do_not_count() {
    let mut a = in_review();
    let v = Vote {
        approver: "alice@example.com".into(),
        decision: Decision::Approve,
        reason: None,
        at: 1,
        via: Channel::Api,
        self_approval: false,
        grant: false,
    };
    assert_eq!(vote(&mut a, v, 1), VoteResultKind::NotPending);
    assert!(acknowledge(&mut a, "alice@example.com", 5));
    assert_eq!(a.status, Status::Acknowledged);
    let bg = a.break_glass.clone().unwrap_or_else(|| unreachable!());
    assert_eq!(bg.acknowledged_by.as_deref(), Some("alice@example.com"));
    assert_eq!(bg.acknowledged_at, Some(5));
    assert!(!acknowledge(&mut a, "bob@example.com", 6));
    let mut pending = approval(1);
    assert!(!acknowledge(&mut pending, "alice@example.com", 5));
    assert_eq!(pending.status, Status::Pending);
}

#[test]
fn an_unsent_review_may_be_withdrawn_a_sent_one_not() {
    let mut a = in_review();
    assert!(may_cancel(&a));
    assert!(claim(&mut a, Claimant::Holder, "holder", 1));
    assert!(!may_cancel(&a));
}

#[test]
fn records_without_break_glass_still_deserialize_and_the_signer_marks_break_glass() {
    let mut json = serde_json::to_value(approval(1)).unwrap_or_default();
    if let Some(o) = json.as_object_mut() {
        o.remove("break_glass");
    }
    let a: Approval = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.break_glass, None);
    let signer = ApprovalSigner::generate().unwrap_or_else(|e| panic!("{e}"));
    assert!(signer.claims(&a, 1).get("break_glass").is_none());
    assert_eq!(signer.claims(&in_review(), 1)["break_glass"], true);
}
