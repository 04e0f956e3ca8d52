//! Reminders and escalation at the broker level (SPEC 9), with a manual clock so nothing
//! sleeps: the sweep finds them through the store's due-index, sends each once even when two
//! brokers (replicas) sweep the same store at once, resolves the escalation's groups when it
//! happens, and stops at the decision.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use common::approval_fixture::{rule, spec};
use common::RecordingAudit;
use countersign::approval::*;
use countersign::clock::{ManualClock, SharedClock};
use countersign::identity::Principal;
use countersign::policy::{ApprovalSpec, Approver, EscalateSpec, NotifyTarget, NudgeSpec};

#[derive(Debug, Default)]
struct RecordingNotifier {
    sent: Mutex<Vec<(ApprovalId, NotifyEvent)>>,
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        self.sent
            .lock()
            .unwrap()
            .push((approval.id.clone(), event.clone()));
        Ok(())
    }
}

impl RecordingNotifier {
    fn count(&self, id: &ApprovalId, event: &NotifyEvent) -> usize {
        let sent = self.sent.lock().unwrap();
        sent.iter().filter(|(i, e)| i == id && e == event).count()
    }
}

struct Harness {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    audit: Arc<RecordingAudit>,
    notifier: Arc<RecordingNotifier>,
}

impl Harness {
    fn new() -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            clock: Arc::new(ManualClock::new(SystemTime::now())),
            audit: Arc::new(RecordingAudit::default()),
            notifier: Arc::new(RecordingNotifier::default()),
        }
    }

    /// A broker (one replica) on the shared store, clock, audit and notifier.
    fn broker(&self, managers: &[&str]) -> Broker {
        let groups = BTreeMap::from([(
            "managers".to_owned(),
            managers.iter().map(|m| (*m).to_owned()).collect(),
        )]);
        Broker::new(
            self.store.clone(),
            self.notifier.clone(),
            self.audit.clone(),
            self.clock.clone() as SharedClock,
            Arc::new(ApprovalSigner::generate().unwrap()),
            Arc::new(Executor::new(Duration::from_secs(1))),
            groups,
        )
    }

    async fn submit(&self, broker: &Broker, nudge: NudgeSpec) -> Approval {
        let claims = serde_json::json!({
            "iss": "https://idp.example.com",
            "sub": "user-dev",
            "email": "dev@example.com",
            "exp": 4_000_000_000u64,
        });
        let requester = Principal::from_claims(claims.as_object().unwrap().clone()).unwrap();
        let stored = StoredRequest::new(
            &http::Method::POST,
            "deploy.example.com",
            "/v1/deployments/production",
            None,
            &http::HeaderMap::new(),
            b"{}".to_vec(),
            "echo",
            "user-dev",
        );
        let spec = ApprovalSpec {
            approvers: vec![Approver::Email("alice@example.com".into())],
            nudge,
            ..spec()
        };
        let a = broker
            .submit(&rule(spec), &requester, stored, None)
            .await
            .unwrap();
        // Released (answered 202), so no hold lease is due meanwhile.
        broker.release_hold(&a.id).await.unwrap();
        a
    }
}

fn approver(email: &str) -> ApproverIdentity {
    ApproverIdentity {
        email: email.into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some(format!("sub-{email}")),
        via: Channel::Api,
    }
}

fn every(secs: u64) -> NudgeSpec {
    NudgeSpec {
        remind: Some(Duration::from_secs(secs)),
        escalate: None,
    }
}

#[tokio::test]
async fn reminders_come_due_through_the_sweep_once_each_and_stop_at_the_decision() {
    let h = Harness::new();
    let (a, b) = (h.broker(&[]), h.broker(&[]));
    let approval = h.submit(&a, every(10)).await;
    let id = &approval.id;
    let reminders = || h.notifier.count(id, &NotifyEvent::Reminder);

    h.clock.advance(Duration::from_secs(9));
    assert_eq!(a.sweep().await.nudged, 0, "not due yet");
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(a.sweep().await.nudged, 1);
    assert_eq!(reminders(), 1);
    assert_eq!(a.sweep().await.nudged, 0, "sent once");

    // Two replicas sweeping at once: one of them sends it.
    h.clock.advance(Duration::from_secs(10));
    let (ra, rb) = tokio::join!(a.sweep(), b.sweep());
    assert_eq!(ra.nudged + rb.nudged, 1);
    assert_eq!(reminders(), 2);
    let record = a.get(id).await.unwrap().unwrap();
    assert_eq!(record.nudges.reminders, 2);
    let audited = h.audit.find(id, "notify.sent");
    let audited_reminders = audited
        .iter()
        .filter(|e| e.to_string().contains("\"reminder\""))
        .count();
    assert_eq!(
        audited_reminders, 2,
        "each reminder is audited: {audited:?}"
    );

    a.decide(id, approver("alice@example.com"), Decision::Approve, None)
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(30));
    a.sweep().await;
    b.sweep().await;
    assert_eq!(reminders(), 2, "no reminder after the decision");
}

#[tokio::test]
async fn escalation_resolves_its_groups_when_it_happens_once() {
    let h = Harness::new();
    let at_creation = h.broker(&["mia@example.com"]);
    let nudge = NudgeSpec {
        remind: None,
        escalate: Some(EscalateSpec {
            after: Duration::from_secs(30),
            approvers: vec![Approver::Group("managers".into())],
            notify: vec![NotifyTarget::SlackChannel("esc".into())],
        }),
    };
    let approval = h.submit(&at_creation, nudge).await;
    let id = &approval.id;
    // The groups changed (a reload) before the escalation: it adds who is a manager then.
    let later = h.broker(&["max@example.com"]);

    let early = later
        .decide(id, approver("max@example.com"), Decision::Approve, None)
        .await;
    assert!(
        matches!(early, Err(DecideError::NotAnApprover)),
        "{early:?}"
    );
    h.clock.advance(Duration::from_secs(29));
    assert_eq!(later.sweep().await.nudged, 0);
    h.clock.advance(Duration::from_secs(1));
    let (r1, r2) = tokio::join!(later.sweep(), at_creation.sweep());
    assert_eq!(r1.nudged + r2.nudged, 1, "escalated once");
    let record = later.get(id).await.unwrap().unwrap();
    assert_eq!(record.approvers, ["alice@example.com", "max@example.com"]);
    assert_eq!(h.notifier.count(id, &NotifyEvent::Escalated), 1);
    let audited = h.audit.find(id, "approval.escalated");
    assert_eq!(audited.len(), 1);
    assert!(
        audited[0].to_string().contains("max@example.com"),
        "{audited:?}"
    );
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(later.sweep().await.nudged, 0, "escalation happens once");

    let voted = later
        .decide(id, approver("max@example.com"), Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(voted.status, Status::Approved);
}

#[tokio::test]
async fn no_escalation_after_the_decision() {
    let h = Harness::new();
    let broker = h.broker(&["mia@example.com"]);
    let nudge = NudgeSpec {
        remind: Some(Duration::from_secs(5)),
        escalate: Some(EscalateSpec {
            after: Duration::from_secs(30),
            approvers: vec![Approver::Group("managers".into())],
            notify: vec![],
        }),
    };
    let approval = h.submit(&broker, nudge).await;
    broker
        .decide(
            &approval.id,
            approver("alice@example.com"),
            Decision::Deny,
            Some("no".into()),
        )
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(120));
    assert_eq!(broker.sweep().await.nudged, 0);
    let record = broker.get(&approval.id).await.unwrap().unwrap();
    assert_eq!(record.approvers, ["alice@example.com"]);
    assert!(h.audit.find(&approval.id, "approval.escalated").is_empty());
    assert_eq!(h.notifier.count(&approval.id, &NotifyEvent::Reminder), 0);
}
