//! The hold lease through the broker (issue 13): two replicas (brokers) on one memory store,
//! with tokio's paused time driving both the heartbeats and the injected clock. A caller still
//! waiting on the holding replica keeps its hold however long it waits; when the holding
//! replica dies (its wait and its background, which beats, are gone), the surviving
//! replica's sweep cancels the request with reason `holder_lost`, audits and notifies it,
//! and never executes it, approved or not.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::replicas::{harness, harness_with_chat_taking, Harness};
use countersign::approval::*;

/// Asserts `id` was cancelled `holder_lost` once, audited and notified, never executed.
async fn assert_lost_and_never_run(h: &Harness, id: &ApprovalId) {
    let a = h.status(id).await;
    assert_eq!(a.status, Status::Cancelled);
    assert_eq!(a.execution, Execution::NotStarted);
    let cancelled = h.audit.find(id, "approval.cancelled");
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(cancelled[0]["reason"], "holder_lost", "{cancelled:?}");
    assert_eq!(cancelled[0]["actor"], "countersign", "{cancelled:?}");
    assert_eq!(h.cancelled_for(id).len(), 1, "approvers told once");
    assert_eq!(h.broker.execute_in_background(id).await.unwrap(), None);
    let names = h.audit.names_for(id);
    assert!(
        !names.iter().any(|n| n.starts_with("request.")),
        "never executed: {names:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_holder_keeps_its_hold_and_a_gone_one_is_cancelled_holder_lost() {
    let h = harness();
    let a = h.submit().await;
    let holder = h.hold(&a.id);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(h.broker.sweep().await.holder_lost, 0, "beating all along");
    let live = h.status(&a.id).await;
    assert_eq!(live.status, Status::Pending);
    assert!(
        live.holder.is_some(),
        "the holding replica is named: {live:?}"
    );
    assert!(
        live.held_until > a.held_until,
        "backstop at the end of the hold: {live:?}"
    );

    // The holding replica is gone without a word: no cancel, no release, no heartbeat.
    // Its last beat was at 19 s or 20 s: it counts as dead from 22 s or 23 s.
    h.kill_holder(&holder);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(h.broker.sweep().await.holder_lost, 0, "lease still running");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.broker.sweep().await.holder_lost,
        1,
        "holder silent past the lease"
    );
    assert_lost_and_never_run(&h, &a.id).await;
    assert_eq!(h.broker.sweep().await.holder_lost, 0, "cancelled once");
    assert!(matches!(
        h.broker
            .decide(
                &a.id,
                ApproverIdentity {
                    email: "alice@example.com".into(),
                    iss: None,
                    sub: None,
                    via: Channel::Api,
                },
                Decision::Approve,
                None,
            )
            .await,
        Err(DecideError::AlreadyDecided(Status::Cancelled))
    ));
}

/// SPEC-silent, decided fail-closed: approved while held, and the holder died before it
/// claimed the execution. Its caller got no answer, so no other replica runs it.
#[tokio::test(start_paused = true)]
async fn approved_but_never_claimed_by_a_dead_holder_is_cancelled_not_run() {
    let h = harness();
    let a = h.submit().await;
    let mut holder = h.hold(&a.id);
    // Holding (and beating) for a while before the decision lands.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let approver = ApproverIdentity {
        email: "carol@example.com".into(),
        iss: None,
        sub: None,
        via: Channel::Api,
    };
    h.broker
        .decide(&a.id, approver, Decision::Approve, None)
        .await
        .unwrap();
    // The holder learns of it and dies before `execute`.
    assert_eq!((&mut holder).await.unwrap(), WaitOutcome::Approved);
    h.kill_holder(&holder);
    assert_eq!(
        h.broker.sweep().await.executed,
        0,
        "held: not the background's"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = h.broker.sweep().await;
    assert_eq!((report.holder_lost, report.executed), (1, 0));
    assert_lost_and_never_run(&h, &a.id).await;
    let names = h.audit.names_for(&a.id);
    assert_eq!(
        names,
        [
            "approval.requested",
            "vote.cast",
            "approval.approved",
            "approval.cancelled"
        ]
    );
}

/// A hold released for a 202 is never lost, however long the approval takes.
#[tokio::test(start_paused = true)]
async fn a_released_hold_is_never_cancelled() {
    let h = harness();
    let a = h.submit().await;
    assert_eq!(
        h.broker.wait(&a.id, Duration::ZERO).await.unwrap(),
        WaitOutcome::StillPending
    );
    h.broker.release_hold(&a.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.broker.sweep().await.holder_lost, 0);
    assert_eq!(h.status(&a.id).await.status, Status::Pending);
    assert!(h.audit.find(&a.id, "approval.cancelled").is_empty());
}

/// Telling approvers of a new request may take up to `notify_timeout` (10 s in `countersign
/// run`) before the holder starts waiting and takes the hold: the first backstop covers that, so a live
/// caller is never cancelled as `holder_lost` because chat was slow.
#[tokio::test(start_paused = true)]
async fn a_slow_chat_at_submit_does_not_lose_a_live_hold() {
    let h = Arc::new(harness_with_chat_taking(Duration::from_secs(9)));
    let submitting = {
        let h = h.clone();
        tokio::spawn(async move { h.submit().await })
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pending = h.broker.list(ListFilter::Pending, 10).await.unwrap();
    assert_eq!(pending.len(), 1, "created, approvers still being told");
    assert_eq!(h.broker.sweep().await.holder_lost, 0, "8 s into submit");
    let a = submitting.await.unwrap();
    let _holder = h.hold(&a.id);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.broker.sweep().await.holder_lost, 0);
    }
    assert_eq!(h.status(&a.id).await.status, Status::Pending);
}
