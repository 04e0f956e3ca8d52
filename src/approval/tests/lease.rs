//! Unit tests of the hold lease (issue 13): the pure rules in [`super::super::transition`]
//! (a later take moves the backstop, a passed backstop or a dead holder cancels, released hold never cancels, expiry
//! and a started execution win), the due-index time they give ([`super::super::store::due_at`]),
//! and the same rules through the memory store.

use std::time::Duration;

use super::{approval, stored};
use crate::approval::store::due_at;
use crate::approval::transition::{
    cancel_lost_hold, hold_deadline, hold_lost, take_hold, HEARTBEAT_EVERY, HOLDER_LOST,
    HOLD_GRACE, HOLD_LEASE,
};
use crate::approval::*;

const T0: u64 = 5_000;

/// The replica holding the callers in these tests.
const HOLDER: &str = "replica-1";

/// Takes the hold for [`HOLDER`] at `at` for no time: its backstop is `at` + the lease.
fn renew(a: &mut Approval, at: u64) -> bool {
    take_hold(a, HOLDER, at + ms(HOLD_LEASE))
}

/// Pending, held under a lease taken at [`T0`] (expires at 10 s).
fn held_at_t0() -> Approval {
    let mut a = approval(1);
    assert!(renew(&mut a, T0));
    a
}

/// [`held_at_t0`], created in `store` with an empty request.
async fn create_held_at_t0(store: &MemoryStore) -> Approval {
    let a = held_at_t0();
    store
        .create(
            &a,
            &stored(&http::HeaderMap::new(), vec![]),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    a
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[test]
fn the_lease_outlasts_two_missed_beats_and_is_noticed_within_five_seconds() {
    assert_eq!(HEARTBEAT_EVERY, Duration::from_secs(1));
    assert!(HOLD_LEASE >= HEARTBEAT_EVERY * 3);
    // Lease, plus one 1 s sweep tick, after the last beat: within the 5 s of issue 13.
    assert!(HOLD_LEASE + Duration::from_secs(1) < Duration::from_secs(5));
}

#[test]
fn a_later_take_moves_the_backstop() {
    let mut a = held_at_t0();
    let lease = ms(HOLD_LEASE);
    assert_eq!(hold_deadline(&a), Some(T0 + lease));
    assert!(!hold_lost(&a, T0 + lease - 1, None));
    assert!(hold_lost(&a, T0 + lease, None));
    // Renewed one period later: the old deadline passes harmlessly.
    assert!(renew(&mut a, T0 + 1_000));
    assert_eq!(hold_deadline(&a), Some(T0 + 1_000 + lease));
    assert!(!hold_lost(&a, T0 + lease, None));
    let mut kept = a.clone();
    assert!(!cancel_lost_hold(&mut kept, T0 + lease, None));
    assert_eq!(kept, a, "a declined cancel changes nothing");
}

#[test]
fn a_lapsed_lease_cancels_pending_or_approved_with_holder_lost() {
    for status in [Status::Pending, Status::Approved] {
        let mut a = held_at_t0();
        a.status = status;
        let lapsed = T0 + ms(HOLD_LEASE);
        assert!(cancel_lost_hold(&mut a, lapsed, None), "{status:?}");
        assert_eq!(a.status, Status::Cancelled);
        assert_eq!(a.decision_reason.as_deref(), Some(HOLDER_LOST));
        assert_eq!(HOLDER_LOST, "holder_lost");
        assert_eq!(a.decided_by.as_deref(), Some("countersign"));
        assert_eq!(a.decided_at, Some(lapsed));
        // Never claimable afterwards, and the lease is not taken back.
        assert!(!transition::may_claim(&a, Claimant::Holder));
        assert!(!renew(&mut a, lapsed + 1));
        assert!(
            !cancel_lost_hold(&mut a, lapsed + 1, None),
            "cancelled once"
        );
    }
}

#[test]
fn a_released_hold_never_cancels() {
    let mut a = held_at_t0();
    assert!(transition::set_held(&mut a, false));
    assert_eq!(hold_deadline(&a), None);
    assert!(!hold_lost(&a, u64::MAX, None));
    let before_expiry = a.expires_at - 1;
    assert!(!cancel_lost_hold(&mut a, before_expiry, None));
    assert_eq!(a.status, Status::Pending);
    // Taking the hold racing the release does not take it back.
    assert!(!renew(&mut a, T0 + 1_000));
    assert!(!a.held);
}

#[test]
fn expiry_and_a_started_execution_win_over_a_lost_hold() {
    // Pending past its expiry: it expires (what a live holder would have answered).
    let a = held_at_t0();
    assert!(!hold_lost(&a, a.expires_at, None));
    // Claimed (or done): it may have reached the upstream; nothing to cancel.
    let mut b = held_at_t0();
    b.status = Status::Approved;
    b.execution = Execution::Claimed {
        owner: "a/held".into(),
        at: T0,
    };
    assert!(!hold_lost(&b, u64::MAX, None));
    assert!(!renew(&mut b, T0 + 1_000));
    // Denied: nothing to hold any more.
    let mut c = held_at_t0();
    c.status = Status::Denied;
    assert!(!renew(&mut c, T0 + 1_000));
    assert!(!hold_lost(&c, u64::MAX, None));
}

#[test]
fn a_record_without_a_lease_is_believed_until_expiry_plus_grace() {
    let mut a = approval(1);
    a.status = Status::Approved;
    assert!(a.held && a.held_until.is_none());
    let until = a.expires_at + ms(HOLD_GRACE);
    assert_eq!(hold_deadline(&a), Some(until));
    assert!(!hold_lost(&a, until - 1, None));
    assert!(hold_lost(&a, until, None));
}

#[test]
fn the_due_index_wakes_at_the_lease_deadline() {
    let mut a = held_at_t0();
    let lease = T0 + ms(HOLD_LEASE);
    assert_eq!(due_at(&a), Some(lease), "pending and held: the lease first");
    renew(&mut a, T0 + 1_000);
    assert_eq!(due_at(&a), Some(lease + 1_000), "a later take moves it");
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

#[tokio::test]
async fn memory_store_moves_the_backstop_wakes_at_it_and_cancels_a_lost_hold() {
    let store = MemoryStore::new();
    let a = create_held_at_t0(&store).await;
    let lease = ms(HOLD_LEASE);
    let retry = Duration::from_millis(1);
    assert!(store
        .due(T0 + lease - 1, 10, retry)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.take_hold(&held_here(&a.id, T0 + 1_000 + ms(HOLD_LEASE))).await.unwrap(),
        Cas::Applied(x) if x.held_until == Some(T0 + 1_000 + lease)
    ));
    assert!(
        store.due(T0 + lease, 10, retry).await.unwrap().is_empty(),
        "moved: not due at the old backstop"
    );
    assert!(matches!(
        store.cancel_lost_hold(&a.id, T0 + lease, None).await.unwrap(),
        Cas::Conflict(x) if x.status == Status::Pending
    ));
    assert_eq!(
        store.due(T0 + 1_000 + lease, 10, retry).await.unwrap(),
        vec![a.id.clone()]
    );
    assert!(matches!(
        store.cancel_lost_hold(&a.id, T0 + 1_000 + lease, None).await.unwrap(),
        Cas::Applied(x) if x.status == Status::Cancelled
    ));
    assert_eq!(store.count_pending(None).await.unwrap(), 0);
    // Its audit line is owed until the canceller notes it written; then nothing is due.
    assert_eq!(
        store.due(u64::MAX, 10, retry).await.unwrap(),
        vec![a.id.clone()]
    );
    store
        .confirm_audited_end(&a.id, Status::Cancelled)
        .await
        .unwrap();
    assert!(store.due(u64::MAX, 10, retry).await.unwrap().is_empty());
    assert!(matches!(
        store
            .take_hold(&held_here(&a.id, T0 + 2_000 + ms(HOLD_LEASE)))
            .await
            .unwrap(),
        Cas::Conflict(_)
    ));

    // Released (answered 202), then approved: never lost, the background's at once.
    let b = create_held_at_t0(&store).await;
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
    store.confirm_audited(&b.id).await.unwrap();
    assert!(matches!(
        store.cancel_lost_hold(&b.id, b.expires_at + 1, None).await.unwrap(),
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

#[test]
fn a_dead_holder_loses_its_live_holds_at_once_and_only_its_own() {
    let a = held_at_t0();
    assert_eq!(a.holder.as_deref(), Some(HOLDER));
    // Long before the backstop: lost only if its own holder is the dead one.
    assert!(hold_lost(&a, T0 + 1, Some(HOLDER)));
    assert!(!hold_lost(&a, T0 + 1, Some("replica-2")));
    assert!(!hold_lost(&a, T0 + 1, None));
    let mut approved = a.clone();
    approved.status = Status::Approved;
    assert!(cancel_lost_hold(&mut approved, T0 + 1, Some(HOLDER)));
    assert_eq!(approved.status, Status::Cancelled);
    assert_eq!(approved.decision_reason.as_deref(), Some(HOLDER_LOST));
    // Released (answered 202), or past its expiry: a dead holder changes nothing.
    let mut released = a.clone();
    transition::set_held(&mut released, false);
    assert!(!hold_lost(&released, T0 + 1, Some(HOLDER)));
    assert!(!hold_lost(&a, a.expires_at, Some(HOLDER)));
    // Not yet taken (submit's backstop only): no holder to be dead.
    let fresh = approval(1);
    assert!(!hold_lost(&fresh, T0 + 1, Some(HOLDER)));
}

/// [`HOLDER`] holding `id` until `backstop`.
fn held_here(id: &ApprovalId, backstop: u64) -> Hold<'_> {
    Hold {
        holder: HOLDER,
        id,
        backstop,
    }
}

/// Replica `r1` holding `id` until `backstop`.
fn hold(id: &ApprovalId, backstop: u64) -> Hold<'_> {
    Hold {
        holder: "r1",
        id,
        backstop,
    }
}

/// Replica `r1`, silent since `last_beat`.
fn silent(last_beat: u64) -> Silent {
    Silent {
        holder: "r1".to_owned(),
        last_beat,
    }
}

#[tokio::test]
async fn memory_store_keeps_holders_and_forgets_a_dead_one_only_once_it_is_dealt_with() {
    let store = MemoryStore::new();
    let (x, y) = (ApprovalId::generate(), ApprovalId::generate());
    store.add_hold(&hold(&x, T0 + 10_000), T0).await.unwrap();
    store.add_hold(&hold(&y, T0 + 1_000), T0).await.unwrap();
    store.beat("r2", T0 + 4_000).await.unwrap();
    // r1 beat last at T0: dead from T0 + 1 on; r2 is alive.
    assert!(store.silent_holders(T0, 10).await.unwrap().is_empty());
    assert_eq!(
        store.silent_holders(T0 + 1, 10).await.unwrap(),
        vec![silent(T0)]
    );
    let mut held = store.holds_of("r1", 10).await.unwrap();
    held.sort();
    let mut both = vec![x.clone(), y.clone()];
    both.sort();
    assert_eq!(held, both);
    assert_eq!(store.holds_of("r1", 1).await.unwrap().len(), 1, "limited");
    // Dealt with one of two: r1 stays (it still holds the other).
    store
        .forget_holds(&silent(T0), std::slice::from_ref(&x))
        .await
        .unwrap();
    assert_eq!(store.holds_of("r1", 10).await.unwrap(), vec![y.clone()]);
    assert_eq!(store.silent_holders(T0 + 1, 10).await.unwrap().len(), 1);
    // r1 was only stalled: it beats again, which also drops holds past their backstop.
    store.beat("r1", T0 + 2_000).await.unwrap();
    assert!(store.holds_of("r1", 10).await.unwrap().is_empty());
    store.forget_holds(&silent(T0), &[]).await.unwrap();
    assert_eq!(
        store.silent_holders(T0 + 2_001, 10).await.unwrap(),
        vec![silent(T0 + 2_000)],
        "a beat since the sweep looked keeps the holder"
    );
    store.forget_holds(&silent(T0 + 2_000), &[]).await.unwrap();
    assert!(store
        .silent_holders(u64::MAX, 10)
        .await
        .unwrap()
        .iter()
        .all(|s| s.holder != "r1"));
}
