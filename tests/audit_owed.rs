//! Audit lines owed (issue 13, "the merged audit logs account for every approval"): an end that
//! reached the store but never the audit log (its replica died between the two writes, or its
//! store write timed out although Redis applied it) is written by another replica's sweep once
//! the grace has passed, marked `recorded_late`, exactly once; an approval recorded that way
//! is then executed, once. Two brokers on one memory store; the holding replica's write
//! without its audit line is made on the store directly, as a replica that died would leave it.

mod common;

use std::time::Duration;

use common::replicas::{harness, Harness};
use countersign::approval::*;

/// A request submitted (and answered 202) by the holding replica, which then dies.
async fn submitted_then_holder_dies(h: &Harness) -> Approval {
    let a = h.submit().await;
    h.holder.release_hold(&a.id).await.unwrap();
    h.holder_background.abort();
    tokio::task::yield_now().await;
    assert!(
        h.holder_background.is_finished(),
        "the holding replica is gone"
    );
    a
}

fn now(h: &Harness) -> u64 {
    ApprovalStore::now_ms(&*h.store)
}

fn vote(decision: Decision) -> Vote {
    Vote {
        approver: "alice@example.com".into(),
        decision,
        reason: Some("looked at it".into()),
        at: 0,
        via: Channel::Api,
        self_approval: false,
        grant: false,
    }
}

fn told(h: &Harness, id: &ApprovalId, event: &NotifyEvent) -> usize {
    let told = h.told.0.lock().unwrap();
    told.iter().filter(|(i, e)| i == id && e == event).count()
}

#[tokio::test(start_paused = true)]
async fn every_end_its_replica_never_audited_is_written_late_once() {
    let h = harness();
    let (denied, expired, cancelled) = (
        submitted_then_holder_dies(&h).await,
        submitted_then_holder_dies(&h).await,
        submitted_then_holder_dies(&h).await,
    );
    let t = now(&h);
    h.store
        .record_vote(&denied.id, vote(Decision::Deny), t)
        .await
        .unwrap();
    // Expired at its expiry: the sweeps below run past it.
    h.store
        .expire(&expired.id, expired.expires_at)
        .await
        .unwrap();
    let until_expired = Duration::from_millis(expired.expires_at - t);
    h.store
        .cancel(&cancelled.id, "dev@example.com", "hung up", t)
        .await
        .unwrap();
    for a in [&denied, &expired, &cancelled] {
        let names = h.audit.names_for(&a.id);
        assert_eq!(names, ["approval.requested"], "nothing audited yet");
    }
    assert_eq!(h.broker.sweep().await.recorded_late, 0, "within the grace");

    tokio::time::sleep(until_expired + Duration::from_secs(11)).await;
    assert_eq!(h.broker.sweep().await.recorded_late, 3);
    for (a, kind, told_as) in [
        (&denied, "approval.denied", NotifyEvent::Denied),
        (&expired, "approval.expired", NotifyEvent::Expired),
        (&cancelled, "approval.cancelled", NotifyEvent::Cancelled),
    ] {
        let lines = h.audit.find(&a.id, kind);
        assert_eq!(lines.len(), 1, "{kind}: {lines:?}");
        assert_eq!(lines[0]["recorded_late"], true, "{kind}: {lines:?}");
        assert_eq!(told(&h, &a.id, &told_as), 1, "{kind}: approvers told");
    }
    let cancel = &h.audit.find(&cancelled.id, "approval.cancelled")[0];
    assert_eq!(cancel["actor"], "dev@example.com");
    assert_eq!(cancel["reason"], "hung up");
    assert_eq!(
        h.audit.find(&denied.id, "approval.denied")[0]["actor"],
        "alice@example.com"
    );

    // Written once: the debt is cleared.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(h.broker.sweep().await.recorded_late, 0);
    for a in [&denied, &expired, &cancelled] {
        assert_eq!(h.audit.names_for(&a.id).len(), 2, "{:?}", a.id);
    }
}

#[tokio::test(start_paused = true)]
async fn an_approval_its_replica_never_audited_is_written_late_then_run_once() {
    let h = harness();
    let a = submitted_then_holder_dies(&h).await;
    h.store
        .record_vote(&a.id, vote(Decision::Approve), now(&h))
        .await
        .unwrap();
    let report = h.broker.sweep().await;
    assert_eq!((report.recorded_late, report.executed), (0, 0));
    assert_eq!(
        h.broker.execute_in_background(&a.id).await.unwrap(),
        None,
        "not executable while its approval is not in the audit log"
    );

    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(h.broker.sweep().await.recorded_late, 1);
    let approved = h.audit.find(&a.id, "approval.approved");
    assert_eq!(approved.len(), 1, "{approved:?}");
    assert_eq!(approved[0]["recorded_late"], true);
    assert_eq!(approved[0]["actor"], "alice@example.com");
    h.broker.sweep().await;
    // Then it runs (nothing listens at the upstream: `request.failed`, the attempt, once).
    assert_eq!(
        h.audit.find(&a.id, "request.failed").len(),
        1,
        "then it runs"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(h.broker.sweep().await.recorded_late, 0);
    let names = h.audit.names_for(&a.id);
    let runs = names.iter().filter(|n| n.starts_with("request.")).count();
    assert_eq!(runs, 1, "executed once: {names:?}");
}

#[tokio::test(start_paused = true)]
async fn an_end_audited_by_its_own_replica_is_never_written_again() {
    let h = harness();
    let a = h.submit().await;
    h.holder.release_hold(&a.id).await.unwrap();
    h.holder
        .cancel(&a.id, "dev@example.com", "withdrawn")
        .await
        .unwrap();
    let b = h.submit().await;
    h.holder.release_hold(&b.id).await.unwrap();
    let alice = ApproverIdentity {
        email: "alice@example.com".into(),
        iss: None,
        sub: None,
        via: Channel::Api,
    };
    h.holder
        .decide(&b.id, alice, Decision::Deny, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.broker.sweep().await.recorded_late, 0);
    assert_eq!(h.audit.find(&a.id, "approval.cancelled").len(), 1);
    assert_eq!(h.audit.find(&b.id, "approval.denied").len(), 1);
    for line in h.audit.find(&a.id, "approval.cancelled") {
        assert!(line.get("recorded_late").is_none(), "{line:?}");
    }
}
