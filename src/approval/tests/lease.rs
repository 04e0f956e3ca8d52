//! Unit tests of the hold lease (issue 13): the pure rules in [`super::super::transition`]
//! (renewed lease keeps the hold, lapsed lease cancels, released hold never cancels, expiry
//! and a started execution win), the due-index time they give ([`super::super::store::due_at`]),
//! and the same rules through the memory store.

use std::time::Duration;

use super::approval;
use crate::approval::store::due_at;
use crate::approval::transition::{
    cancel_lost_hold, hold_deadline, hold_lost, renew_hold, HOLDER_LOST, HOLD_GRACE, HOLD_LEASE,
    HOLD_RENEW_EVERY,
};
use crate::approval::*;

const T0: u64 = 5_000;

/// Pending, held under a lease taken at [`T0`] (expires at 10 s).
fn held_at_t0() -> Approval {
    let mut a = approval(1);
    assert!(renew_hold(&mut a, T0));
    a
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[test]
fn the_lease_outlasts_two_missed_renewals_and_is_noticed_within_five_seconds() {
    assert_eq!(HOLD_RENEW_EVERY, Duration::from_secs(1));
    assert!(HOLD_LEASE >= HOLD_RENEW_EVERY * 3);
    // Lease, plus one 1 s sweep tick, after the last renewal: within the 5 s of issue 13.
    assert!(HOLD_LEASE + Duration::from_secs(1) < Duration::from_secs(5));
}

#[test]
fn a_renewed_lease_keeps_the_hold() {
    let mut a = held_at_t0();
    let lease = ms(HOLD_LEASE);
    assert_eq!(hold_deadline(&a), Some(T0 + lease));
    assert!(!hold_lost(&a, T0 + lease - 1));
    assert!(hold_lost(&a, T0 + lease));
    // Renewed one period later: the old deadline passes harmlessly.
    assert!(renew_hold(&mut a, T0 + 1_000));
    assert_eq!(hold_deadline(&a), Some(T0 + 1_000 + lease));
    assert!(!hold_lost(&a, T0 + lease));
    let mut kept = a.clone();
    assert!(!cancel_lost_hold(&mut kept, T0 + lease));
    assert_eq!(kept, a, "a declined cancel changes nothing");
}

#[test]
fn a_lapsed_lease_cancels_pending_or_approved_with_holder_lost() {
    for status in [Status::Pending, Status::Approved] {
        let mut a = held_at_t0();
        a.status = status;
        let lapsed = T0 + ms(HOLD_LEASE);
        assert!(cancel_lost_hold(&mut a, lapsed), "{status:?}");
        assert_eq!(a.status, Status::Cancelled);
        assert_eq!(a.decision_reason.as_deref(), Some(HOLDER_LOST));
        assert_eq!(HOLDER_LOST, "holder_lost");
        assert_eq!(a.decided_by.as_deref(), Some("countersign"));
        assert_eq!(a.decided_at, Some(lapsed));
        // Never claimable afterwards, and the lease is not taken back.
        assert!(!transition::may_claim(&a, Claimant::Holder));
        assert!(!renew_hold(&mut a, lapsed + 1));
        assert!(!cancel_lost_hold(&mut a, lapsed + 1), "cancelled once");
    }
}

#[test]
fn a_released_hold_never_cancels() {
    let mut a = held_at_t0();
    assert!(transition::set_held(&mut a, false));
    assert_eq!(hold_deadline(&a), None);
    assert!(!hold_lost(&a, u64::MAX));
    let before_expiry = a.expires_at - 1;
    assert!(!cancel_lost_hold(&mut a, before_expiry));
    assert_eq!(a.status, Status::Pending);
    // A renewal racing the release does not take the hold back.
    assert!(!renew_hold(&mut a, T0 + 1_000));
    assert!(!a.held);
}

#[test]
fn expiry_and_a_started_execution_win_over_a_lost_hold() {
    // Pending past its expiry: it expires (what a live holder would have answered).
    let a = held_at_t0();
    assert!(!hold_lost(&a, a.expires_at));
    // Claimed (or done): it may have reached the upstream; nothing to cancel.
    let mut b = held_at_t0();
    b.status = Status::Approved;
    b.execution = Execution::Claimed {
        owner: "a/held".into(),
        at: T0,
    };
    assert!(!hold_lost(&b, u64::MAX));
    assert!(!renew_hold(&mut b, T0 + 1_000));
    // Denied: nothing to hold any more.
    let mut c = held_at_t0();
    c.status = Status::Denied;
    assert!(!renew_hold(&mut c, T0 + 1_000));
    assert!(!hold_lost(&c, u64::MAX));
}

#[test]
fn a_record_without_a_lease_is_believed_until_expiry_plus_grace() {
    let mut a = approval(1);
    a.status = Status::Approved;
    assert!(a.held && a.held_until.is_none());
    let until = a.expires_at + ms(HOLD_GRACE);
    assert_eq!(hold_deadline(&a), Some(until));
    assert!(!hold_lost(&a, until - 1));
    assert!(hold_lost(&a, until));
}

#[test]
fn the_due_index_wakes_at_the_lease_deadline() {
    let mut a = held_at_t0();
    let lease = T0 + ms(HOLD_LEASE);
    assert_eq!(due_at(&a), Some(lease), "pending and held: the lease first");
    renew_hold(&mut a, T0 + 1_000);
    assert_eq!(due_at(&a), Some(lease + 1_000), "a renewal moves it");
    a.status = Status::Approved;
    a.audit_pending = true;
    assert_eq!(
        due_at(&a),
        Some(lease + 1_000),
        "approved, held, audit pending"
    );
    a.audit_pending = false;
    assert_eq!(due_at(&a), Some(lease + 1_000), "approved and held");
    transition::set_held(&mut a, false);
    assert_eq!(due_at(&a), Some(0), "released: execute at once");
    let mut p = held_at_t0();
    p.expires_at = T0 + 1_000;
    assert_eq!(due_at(&p), Some(T0 + 1_000), "expiry first when sooner");
}

fn request() -> StoredRequest {
    StoredRequest::new(
        &http::Method::POST,
        "h",
        "/",
        None,
        &http::HeaderMap::new(),
        vec![],
        "echo",
        "u1",
    )
}

#[tokio::test]
async fn memory_store_renews_wakes_at_the_lease_and_cancels_a_lost_hold() {
    let store = MemoryStore::new();
    let a = held_at_t0();
    store
        .create(&a, &request(), Duration::from_secs(60))
        .await
        .unwrap();
    let lease = ms(HOLD_LEASE);
    let retry = Duration::from_millis(1);
    assert!(store
        .due(T0 + lease - 1, 10, retry)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.renew_hold(&a.id, T0 + 1_000).await.unwrap(),
        Cas::Applied(x) if x.held_until == Some(T0 + 1_000 + lease)
    ));
    assert!(
        store.due(T0 + lease, 10, retry).await.unwrap().is_empty(),
        "renewed: not due at the old deadline"
    );
    assert!(matches!(
        store.cancel_lost_hold(&a.id, T0 + lease).await.unwrap(),
        Cas::Conflict(x) if x.status == Status::Pending
    ));
    assert_eq!(
        store.due(T0 + 1_000 + lease, 10, retry).await.unwrap(),
        vec![a.id.clone()]
    );
    assert!(matches!(
        store.cancel_lost_hold(&a.id, T0 + 1_000 + lease).await.unwrap(),
        Cas::Applied(x) if x.status == Status::Cancelled
    ));
    assert_eq!(store.count_pending(None).await.unwrap(), 0);
    assert!(store.due(u64::MAX, 10, retry).await.unwrap().is_empty());
    assert!(matches!(
        store.renew_hold(&a.id, T0 + 2_000).await.unwrap(),
        Cas::Conflict(_)
    ));

    // Released (answered 202), then approved: never lost, the background's at once.
    let b = held_at_t0();
    store
        .create(&b, &request(), Duration::from_secs(60))
        .await
        .unwrap();
    store.set_held(&b.id, false).await.unwrap();
    let vote = Vote {
        approver: "a@example.com".into(),
        decision: Decision::Approve,
        reason: None,
        at: T0,
        via: Channel::Api,
        self_approval: false,
        grant: false,
    };
    store.record_vote(&b.id, vote, T0).await.unwrap();
    store.confirm_audited(&b.id, T0).await.unwrap();
    assert!(matches!(
        store.cancel_lost_hold(&b.id, b.expires_at + 1).await.unwrap(),
        Cas::Conflict(x) if x.status == Status::Approved
    ));
    assert_eq!(store.due(T0, 10, retry).await.unwrap(), vec![b.id.clone()]);
    assert!(matches!(
        store
            .claim_execution(&b.id, Claimant::Background, "bg", T0)
            .await
            .unwrap(),
        Cas::Applied(_)
    ));
}
