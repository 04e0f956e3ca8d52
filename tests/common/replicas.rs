//! Two replicas (brokers) on one memory store, with tokio's paused time driving both their
//! heartbeats and the injected clock: the broker-level harness for what happens when a replica
//! dies (tests/approval_hold_lease.rs, tests/audit_owed.rs). The holding replica submits and
//! holds; the surviving one's sweeps are the ones the tests run and count.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use countersign::approval::*;
use countersign::clock::{Clock, SharedClock};
use countersign::identity::Principal;

use super::approval_fixture::{rule, spec};
use super::RecordingAudit;

/// Wall time that follows tokio's clock (paused in these tests), so the lease the broker
/// writes and the renewals its timer drives agree.
#[derive(Debug)]
pub struct TokioClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// Records what approvers were told; telling them of a new request takes `slow` (a chat API
/// answering 429 with Retry-After).
#[derive(Debug, Default)]
pub struct Told(pub Mutex<Vec<(ApprovalId, NotifyEvent)>>, pub Duration);

#[async_trait]
impl Notifier for Told {
    async fn notify(&self, a: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        if *event == NotifyEvent::Requested {
            tokio::time::sleep(self.1).await;
        }
        self.0.lock().unwrap().push((a.id.clone(), event.clone()));
        Ok(())
    }
}

pub struct Harness {
    /// The store both replicas share.
    pub store: Arc<MemoryStore>,
    /// The surviving replica: its sweeps are the ones the tests run and count.
    pub broker: Broker,
    /// The replica that takes and holds the callers.
    pub holder: Broker,
    /// The holding replica's background (its heartbeat, and its own sweeps).
    pub holder_background: tokio::task::JoinHandle<()>,
    pub audit: Arc<RecordingAudit>,
    pub told: Arc<Told>,
}

pub fn harness() -> Harness {
    harness_with_chat_taking(Duration::ZERO)
}

pub fn harness_with_chat_taking(slow: Duration) -> Harness {
    let audit = Arc::new(RecordingAudit::default());
    let told = Arc::new(Told(Mutex::default(), slow));
    let clock = Arc::new(TokioClock {
        base: SystemTime::now(),
        start: tokio::time::Instant::now(),
    });
    let groups = BTreeMap::from([("sre-leads".to_owned(), vec!["alice@example.com".to_owned()])]);
    // Nothing listens there: any execution attempt would show as `request.failed`.
    let dead: std::net::SocketAddr = super::DEAD_ADDR.parse().unwrap();
    let store = Arc::new(MemoryStore::new());
    let signer = Arc::new(ApprovalSigner::generate().unwrap());
    let replica = || {
        Broker::new(
            store.clone(),
            told.clone(),
            audit.clone(),
            clock.clone() as SharedClock,
            signer.clone(),
            Arc::new(Executor::new(Duration::from_secs(1)).with_upstream(
                "echo",
                &format!("http://{dead}"),
                None,
            )),
            groups.clone(),
        )
        .with_settings(BrokerSettings {
            // As in `countersign run`: chat APIs get time to retry before a delivery counts
            // as failed.
            notify_timeout: Duration::from_secs(10),
            ..BrokerSettings::default()
        })
    };
    let holder = replica();
    let holder_background = holder.spawn_background();
    Harness {
        store: store.clone(),
        broker: replica(),
        holder,
        holder_background,
        audit,
        told,
    }
}

pub fn requester() -> Principal {
    let claims = serde_json::json!({
        "iss": "https://idp.example.com",
        "sub": "user-dev",
        "email": "dev@example.com",
        "exp": 4_000_000_000u64,
    });
    Principal::from_claims(claims.as_object().unwrap().clone()).unwrap()
}

impl Harness {
    pub async fn submit(&self) -> Approval {
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
        self.holder
            .submit(&rule(spec()), &requester(), stored, None)
            .await
            .unwrap()
    }

    /// The holding replica holds the caller: waits until its task ends or is aborted.
    pub fn hold(&self, id: &ApprovalId) -> tokio::task::JoinHandle<WaitOutcome> {
        let (broker, id) = (self.holder.clone(), id.clone());
        tokio::spawn(async move { broker.wait(&id, Duration::from_secs(55)).await.unwrap() })
    }

    /// The holding replica dies without a word: no cancel, no release, no more heartbeats.
    pub fn kill_holder(&self, waiting: &tokio::task::JoinHandle<WaitOutcome>) {
        waiting.abort();
        self.holder_background.abort();
    }

    pub async fn status(&self, id: &ApprovalId) -> Approval {
        self.broker.get(id).await.unwrap().unwrap()
    }

    pub fn cancelled_for(&self, id: &ApprovalId) -> Vec<NotifyEvent> {
        self.told
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, e)| i == id && *e == NotifyEvent::Cancelled)
            .map(|(_, e)| e.clone())
            .collect()
    }
}
