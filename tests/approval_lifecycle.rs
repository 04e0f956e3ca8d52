//! The approval lifecycle through the broker's public API, with a manual clock, recording fake
//! notifier and audit sink, and a local upstream that counts calls.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use common::approval_fixture::{rule, spec};
use common::RecordingAudit;
use countersign::approval::*;
use countersign::clock::{ManualClock, SharedClock};
use countersign::identity::Principal;
use countersign::metrics::Metrics;
use countersign::policy::{ApprovalSpec, ApproveVia, Approver, Quorum, QuorumEntry};
use serde_json::Value;

// ----- fakes -------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RecordingNotifier {
    sent: Mutex<Vec<(ApprovalId, NotifyEvent)>>,
    fail: AtomicBool,
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(NotifyError("slack is down".into()));
        }
        self.sent
            .lock()
            .unwrap()
            .push((approval.id.clone(), event.clone()));
        Ok(())
    }
}

impl RecordingNotifier {
    fn events_for(&self, id: &ApprovalId) -> Vec<NotifyEvent> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// A tiny upstream: counts calls per approval id and remembers the last request.
#[derive(Debug, Default)]
struct Upstream {
    calls: AtomicUsize,
    per_id: Mutex<HashMap<String, usize>>,
    last: Mutex<Option<(http::HeaderMap, String, Vec<u8>)>>,
}

async fn start_upstream() -> (SocketAddr, Arc<Upstream>) {
    let state = Arc::new(Upstream::default());
    let s = state.clone();
    let app = axum::Router::new().fallback(
        move |uri: http::Uri, headers: http::HeaderMap, body: bytes::Bytes| {
            let s = s.clone();
            async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                let id = headers
                    .get("countersign-approval-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                *s.per_id.lock().unwrap().entry(id).or_default() += 1;
                let echo = format!("created {}", String::from_utf8_lossy(&body));
                *s.last.lock().unwrap() = Some((headers, uri.to_string(), body.to_vec()));
                (http::StatusCode::CREATED, [("x-upstream", "yes")], echo)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

// ----- fixtures ----------------------------------------------------------------------------

struct Harness {
    broker: Broker,
    clock: Arc<ManualClock>,
    audit: Arc<RecordingAudit>,
    notifier: Arc<RecordingNotifier>,
    upstream: Arc<Upstream>,
    metrics: Metrics,
}

/// A loopback address nothing listens on.
fn dead_addr() -> std::net::SocketAddr {
    common::DEAD_ADDR.parse().unwrap()
}

async fn harness() -> Harness {
    harness_with(Arc::new(MemoryStore::new())).await
}

async fn harness_with(store: Arc<dyn ApprovalStore>) -> Harness {
    let (addr, upstream) = start_upstream().await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let audit = Arc::new(RecordingAudit::default());
    let notifier = Arc::new(RecordingNotifier::default());
    let mut groups = BTreeMap::new();
    groups.insert(
        "sre-leads".to_owned(),
        vec!["alice@example.com".to_owned(), "bob@example.com".to_owned()],
    );
    let signer = ApprovalSigner::generate()
        .unwrap()
        .with_issuer("https://countersign.example.com");
    let metrics = Metrics::new();
    let broker = Broker::new(
        store,
        notifier.clone(),
        audit.clone(),
        clock.clone() as SharedClock,
        Arc::new(signer),
        Arc::new(
            Executor::new(Duration::from_secs(5))
                .with_upstream("echo", &format!("http://{addr}"), None)
                .with_upstream("dead", &format!("http://{}", dead_addr()), None),
        ),
        groups,
    )
    .with_metrics(metrics.clone())
    .with_settings(BrokerSettings {
        sweep_interval: Duration::from_millis(50),
        recheck_interval: Duration::from_millis(50),
        ..BrokerSettings::default()
    });
    Harness {
        broker,
        clock,
        audit,
        notifier,
        upstream,
        metrics,
    }
}

fn requester() -> Principal {
    let claims = serde_json::json!({
        "iss": "https://idp.example.com",
        "sub": "user-dev",
        "email": "Dev@Example.com",
        "exp": 4_000_000_000u64,
    });
    Principal::from_claims(claims.as_object().unwrap().clone()).unwrap()
}

fn approver(email: &str) -> ApproverIdentity {
    ApproverIdentity {
        email: email.into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some(format!("sub-{email}")),
        via: Channel::Api,
    }
}

impl Harness {
    fn stored(&self) -> StoredRequest {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-trace", "abc".parse().unwrap());
        StoredRequest::new(
            &http::Method::POST,
            "deploy.example.com",
            "/v1/deployments/production",
            Some("force=1"),
            &headers,
            br#"{"version":"1.2.3","token":"s3cr3t"}"#.to_vec(),
            "echo",
            "user-dev",
        )
        .with_request_id("req-123")
    }

    async fn submit(&self, spec: ApprovalSpec) -> Approval {
        self.broker
            .submit(
                &rule(spec),
                &requester(),
                self.stored(),
                Some("ship it".into()),
            )
            .await
            .unwrap()
    }

    fn calls(&self) -> usize {
        self.upstream.calls.load(Ordering::SeqCst)
    }

    async fn status(&self, id: &ApprovalId) -> Approval {
        self.broker.get(id).await.unwrap().unwrap()
    }
}

// ----- tests -------------------------------------------------------------------------------

#[tokio::test]
async fn approved_while_held_is_forwarded_once_with_evidence() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    assert_eq!(a.status, Status::Pending);
    assert!(a.held);
    assert_eq!(
        a.approvers,
        [
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dev@example.com"
        ]
    );
    assert!(a.body_preview.contains("[redacted]") && !a.body_preview.contains("s3cr3t"));
    assert_eq!(h.metrics.approvals_pending.get(), 1);

    let waiter = {
        // Re-reads only every 10 s: returning sooner proves the decision woke it.
        let b = h.broker.clone().with_settings(BrokerSettings {
            recheck_interval: Duration::from_secs(10),
            ..*h.broker.settings()
        });
        let id = a.id.clone();
        tokio::spawn(async move { b.wait(&id, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    h.broker
        .decide(
            &a.id,
            approver("Alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), WaitOutcome::Approved);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woken by the decision, not a poll"
    );

    let resp = h.broker.execute(&a.id).await.unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(
        &resp.body[..],
        br#"created {"version":"1.2.3","token":"s3cr3t"}"#
    );
    assert_eq!(resp.headers["x-upstream"], "yes");
    assert_eq!(h.calls(), 1);
    assert!(matches!(
        h.broker.execute(&a.id).await,
        Err(ExecuteError::AlreadyClaimed)
    ));
    assert_eq!(h.calls(), 1);

    // What upstream saw: the exact stored request plus the evidence.
    let (headers, uri, body) = h.upstream.last.lock().unwrap().clone().unwrap();
    assert_eq!(uri, "/v1/deployments/production?force=1");
    assert_eq!(body, br#"{"version":"1.2.3","token":"s3cr3t"}"#);
    assert_eq!(headers["host"], "deploy.example.com");
    assert_eq!(headers["x-trace"], "abc");
    assert_eq!(headers["countersign-subject"], "user-dev");
    assert_eq!(headers["countersign-approval-id"], a.id.as_str());
    assert_eq!(headers["countersign-request-id"], "req-123");
    let token = headers["countersign-approval"].to_str().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(h.broker.signer().jwks()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&["https://countersign.example.com"]);
    v.validate_exp = false; // the manual clock started at the real time, but stay robust
    let claims = jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["jti"], a.id.as_str());
    assert_eq!(
        claims["approvers"],
        serde_json::json!(["alice@example.com"])
    );
    assert_eq!(claims["request_hash"], a.request_hash);
    assert_eq!(claims["requester"]["sub"], "user-dev");

    assert_eq!(
        h.audit.names_for(&a.id),
        [
            "approval.requested",
            "vote.cast",
            "approval.approved",
            "request.forwarded"
        ]
    );
    let fwd = &h.audit.find(&a.id, "request.forwarded")[0];
    assert_eq!(fwd["upstream_status"], 201);
    assert_eq!(
        h.audit.find(&a.id, "approval.requested")[0]["request_id"],
        "req-123"
    );
    assert_eq!(
        h.notifier.events_for(&a.id),
        [
            NotifyEvent::Requested,
            NotifyEvent::Approved,
            NotifyEvent::Executed { status: 201 }
        ]
    );
    assert!(matches!(
        h.status(&a.id).await.execution,
        Execution::Done { status: 201 }
    ));
    assert_eq!(h.metrics.approvals_pending.get(), 0);
    assert_eq!(
        h.metrics
            .approval_decisions
            .with_label_values(&["approved"])
            .get(),
        1
    );
    // Nothing secret in the audit log.
    let all = format!("{:?}", h.audit.events.lock().unwrap());
    assert!(!all.contains("s3cr3t"));
}

#[tokio::test]
async fn quorum_needs_distinct_approvers() {
    let h = harness().await;
    let a = h
        .submit(ApprovalSpec {
            quorum: Quorum::Count(2),
            ..spec()
        })
        .await;
    let first = h
        .broker
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(first.status, Status::Pending);
    assert!(matches!(
        h.broker
            .decide(
                &a.id,
                approver("ALICE@example.com"),
                Decision::Approve,
                None
            )
            .await,
        Err(DecideError::AlreadyVoted)
    ));
    assert_eq!(h.status(&a.id).await.votes.len(), 1);
    assert_eq!(
        h.broker
            .wait(&a.id, Duration::from_millis(10))
            .await
            .unwrap(),
        WaitOutcome::StillPending
    );
    let second = h
        .broker
        .decide(&a.id, approver("bob@example.com"), Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(second.status, Status::Approved);
    assert_eq!(
        second.approved_by(),
        ["alice@example.com", "bob@example.com"]
    );
    assert!(matches!(
        h.broker
            .decide(
                &a.id,
                approver("carol@example.com"),
                Decision::Approve,
                None
            )
            .await,
        Err(DecideError::AlreadyDecided(Status::Approved))
    ));
}

#[tokio::test]
async fn one_deny_denies_and_says_who_and_why() {
    let h = harness().await;
    let a = h
        .submit(ApprovalSpec {
            quorum: Quorum::Count(2),
            ..spec()
        })
        .await;
    h.broker
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    let denied = h
        .broker
        .decide(
            &a.id,
            approver("bob@example.com"),
            Decision::Deny,
            Some("not during the freeze".into()),
        )
        .await
        .unwrap();
    assert_eq!(denied.status, Status::Denied);
    assert_eq!(
        h.broker.wait(&a.id, Duration::from_secs(1)).await.unwrap(),
        WaitOutcome::Denied {
            by: Some("bob@example.com".into()),
            reason: Some("not during the freeze".into())
        }
    );
    assert!(matches!(
        h.broker.execute(&a.id).await,
        Err(ExecuteError::NotApproved(Status::Denied))
    ));
    h.broker.release_hold(&a.id).await.unwrap();
    h.broker.sweep().await;
    assert_eq!(h.calls(), 0);
    assert_eq!(
        h.audit.names_for(&a.id),
        [
            "approval.requested",
            "vote.cast",
            "vote.cast",
            "approval.denied"
        ]
    );
}

#[tokio::test]
async fn requester_cannot_approve_their_own_request() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    // Same iss+sub, different email.
    let by_sub = ApproverIdentity {
        email: "dev@example.com".into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some("user-dev".into()),
        via: Channel::Web,
    };
    assert!(matches!(
        h.broker
            .decide(&a.id, by_sub, Decision::Approve, None)
            .await,
        Err(DecideError::OwnRequest)
    ));
    // Same email from another identity (e.g. a Slack mapping).
    let by_email = ApproverIdentity {
        email: "DEV@example.com".into(),
        iss: None,
        sub: None,
        via: Channel::Slack,
    };
    assert!(matches!(
        h.broker
            .decide(&a.id, by_email, Decision::Approve, None)
            .await,
        Err(DecideError::OwnRequest)
    ));
    let current = h.status(&a.id).await;
    assert_eq!(current.status, Status::Pending);
    assert!(current.votes.is_empty());
}

#[tokio::test]
async fn self_approval_counts_once_and_is_flagged() {
    let h = harness().await;
    let a = h
        .submit(ApprovalSpec {
            quorum: Quorum::Count(2),
            self_approval: true,
            ..spec()
        })
        .await;
    let me = ApproverIdentity {
        email: "dev@example.com".into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some("user-dev".into()),
        via: Channel::Web,
    };
    let after = h
        .broker
        .decide(&a.id, me.clone(), Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        after.status,
        Status::Pending,
        "the requester counts as one, not two"
    );
    assert!(after.votes[0].self_approval);
    assert!(matches!(
        h.broker.decide(&a.id, me, Decision::Approve, None).await,
        Err(DecideError::AlreadyVoted)
    ));
    let vote = &h.audit.find(&a.id, "vote.cast")[0];
    assert_eq!(vote["self_approval"], true);
    assert!(vote["warning"].as_str().unwrap().contains("SELF-APPROVAL"));
    let done = h
        .broker
        .decide(
            &a.id,
            approver("carol@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, Status::Approved);
}

#[tokio::test]
async fn strangers_cannot_vote() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    assert!(matches!(
        h.broker
            .decide(
                &a.id,
                approver("mallory@example.com"),
                Decision::Approve,
                None
            )
            .await,
        Err(DecideError::NotAnApprover)
    ));
    assert!(matches!(
        h.broker
            .decide(
                &ApprovalId::generate(),
                approver("alice@example.com"),
                Decision::Approve,
                None
            )
            .await,
        Err(DecideError::NotFound)
    ));
    assert!(h.status(&a.id).await.votes.is_empty());
}

#[tokio::test]
async fn expiry_follows_the_clock() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    let b = h.submit(spec()).await;
    h.clock.advance(Duration::from_secs(3599));
    assert_eq!(
        h.broker
            .wait(&a.id, Duration::from_millis(5))
            .await
            .unwrap(),
        WaitOutcome::StillPending
    );
    h.clock.advance(Duration::from_secs(1));
    // A vote after expiry is refused and records the expiry.
    assert!(matches!(
        h.broker
            .decide(
                &a.id,
                approver("alice@example.com"),
                Decision::Approve,
                None
            )
            .await,
        Err(DecideError::Expired)
    ));
    assert_eq!(h.status(&a.id).await.status, Status::Expired);
    assert_eq!(
        h.broker.wait(&a.id, Duration::from_secs(1)).await.unwrap(),
        WaitOutcome::Expired
    );
    // The sweep expires the other one.
    let report = h.broker.sweep().await;
    assert_eq!(report.expired, 1);
    assert_eq!(h.status(&b.id).await.status, Status::Expired);
    assert_eq!(h.audit.find(&b.id, "approval.expired").len(), 1);
    assert!(h.notifier.events_for(&b.id).contains(&NotifyEvent::Expired));
    assert_eq!(
        h.metrics
            .approval_decisions
            .with_label_values(&["expired"])
            .get(),
        2
    );
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn reason_required_needs_a_reason() {
    let h = harness().await;
    let r = rule(ApprovalSpec {
        reason_required: true,
        ..spec()
    });
    for reason in [None, Some("   ".to_owned())] {
        assert!(matches!(
            h.broker.submit(&r, &requester(), h.stored(), reason).await,
            Err(BrokerError::ReasonRequired)
        ));
    }
    let a = h
        .broker
        .submit(&r, &requester(), h.stored(), Some("incident 42".into()))
        .await
        .unwrap();
    assert_eq!(a.reason.as_deref(), Some("incident 42"));
}

#[tokio::test]
async fn unsatisfiable_rules_fail_closed() {
    let h = harness().await;
    // Only the requester could approve, without self_approval.
    let only_me = ApprovalSpec {
        approvers: vec![Approver::Email("dev@example.com".into())],
        ..spec()
    };
    assert!(matches!(
        h.broker
            .submit(&rule(only_me), &requester(), h.stored(), None)
            .await,
        Err(BrokerError::Unsatisfiable {
            eligible: 0,
            quorum: 1
        })
    ));
}

#[tokio::test]
async fn cancelled_requests_are_never_executed() {
    let h = harness().await;
    let _bg = h.broker.spawn_background();
    let a = h.submit(spec()).await;
    let cancelled = h
        .broker
        .cancel(&a.id, "caller", "client disconnected")
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    h.broker.release_hold(&a.id).await.unwrap();
    assert!(matches!(
        h.broker
            .decide(
                &a.id,
                approver("alice@example.com"),
                Decision::Approve,
                None
            )
            .await,
        Err(DecideError::AlreadyDecided(Status::Cancelled))
    ));
    assert!(matches!(
        h.broker.execute(&a.id).await,
        Err(ExecuteError::NotApproved(Status::Cancelled))
    ));
    h.broker.sweep().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.calls(), 0);
    assert_eq!(
        h.audit.find(&a.id, "approval.cancelled")[0]["reason"],
        "client disconnected"
    );
    assert!(h
        .notifier
        .events_for(&a.id)
        .contains(&NotifyEvent::Cancelled));

    // Approved but the caller hung up before execution: cancelling still wins.
    let b = h.submit(spec()).await;
    h.broker
        .decide(
            &b.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    h.broker
        .cancel(&b.id, "caller", "client disconnected")
        .await
        .unwrap();
    h.broker.release_hold(&b.id).await.unwrap();
    h.broker.sweep().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn only_the_requester_may_withdraw() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    assert!(matches!(
        h.broker
            .cancel_as_requester(&a.id, "https://idp.example.com", "someone-else")
            .await,
        Err(CancelError::NotRequester)
    ));
    let c = h
        .broker
        .cancel_as_requester(&a.id, "https://idp.example.com", "user-dev")
        .await
        .unwrap();
    assert_eq!(c.status, Status::Cancelled);
    assert_eq!(c.decided_by.as_deref(), Some("dev@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_racing_approvals_forward_once() {
    let h = harness().await;
    let _bg = h.broker.spawn_background();
    let approvers: Vec<String> = (0..100).map(|i| format!("a{i}@example.com")).collect();
    let s = ApprovalSpec {
        approvers: approvers
            .iter()
            .map(|e| Approver::Email(e.clone()))
            .collect(),
        ..spec()
    };
    let a = h.submit(s).await;
    let waiter = {
        let b = h.broker.clone();
        let id = a.id.clone();
        tokio::spawn(async move {
            match b.wait(&id, Duration::from_secs(10)).await.unwrap() {
                WaitOutcome::Approved => b.execute(&id).await.ok().map(|r| r.status),
                _ => None,
            }
        })
    };
    let mut tasks = Vec::new();
    for email in approvers {
        let b = h.broker.clone();
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move {
            b.decide(&id, approver(&email), Decision::Approve, None)
                .await
        }));
    }
    let mut approved = 0;
    for t in tasks {
        if let Ok(a) = t.await.unwrap() {
            approved += usize::from(a.status == Status::Approved);
        }
    }
    assert_eq!(approved, 1, "exactly one vote reaches quorum");
    assert_eq!(waiter.await.unwrap(), Some(http::StatusCode::CREATED));
    // Retries of execute, concurrently, change nothing.
    let mut retries = Vec::new();
    for _ in 0..20 {
        let b = h.broker.clone();
        let id = a.id.clone();
        retries.push(tokio::spawn(async move { b.execute(&id).await.is_ok() }));
    }
    for r in retries {
        assert!(!r.await.unwrap());
    }
    h.broker.release_hold(&a.id).await.unwrap();
    h.broker.sweep().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_ending_as_the_approval_lands_forwards_once() {
    let h = harness().await;
    let _bg = h.broker.spawn_background();
    let mut ids = Vec::new();
    for i in 0..60u64 {
        let a = h.submit(spec()).await;
        ids.push(a.id.clone());
        // The proxy: hold briefly; approved -> execute, else release and answer 202.
        let proxy = {
            let b = h.broker.clone();
            let id = a.id.clone();
            tokio::spawn(async move {
                // Timers tick in milliseconds: 0 ends the hold at once, racing the vote.
                let hold = Duration::from_millis(i % 3);
                match b.wait(&id, hold).await.unwrap() {
                    WaitOutcome::Approved => {
                        // The holder saw the approval: it, not the background, must get it.
                        assert!(
                            b.execute(&id).await.is_ok(),
                            "held caller lost its response"
                        );
                    }
                    _ => {
                        b.release_hold(&id).await.unwrap();
                    }
                }
            })
        };
        let decide = {
            let b = h.broker.clone();
            let id = a.id.clone();
            tokio::spawn(async move {
                // Some votes land while held, some right at the end, some after a 202.
                if i % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                for _ in 0..(i % 5) {
                    tokio::task::yield_now().await;
                }
                b.decide(&id, approver("alice@example.com"), Decision::Approve, None)
                    .await
                    .unwrap();
            })
        };
        proxy.await.unwrap();
        decide.await.unwrap();
    }
    // Give the background (notification-driven and swept) time to finish every handoff.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut done = 0;
        for id in &ids {
            if matches!(h.status(id).await.execution, Execution::Done { .. }) {
                done += 1;
            }
        }
        if done == ids.len() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let per_id = h.upstream.per_id.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(
            per_id.get(id.as_str()),
            Some(&1),
            "{id} executed exactly once"
        );
    }
    assert_eq!(h.calls(), ids.len());
    // Both sides of the race happened: some answered while held, some handed off.
    let modes: Vec<String> = ids
        .iter()
        .map(|id| h.audit.find(id, "request.forwarded")[0]["mode"].to_string())
        .collect();
    let held = modes.iter().filter(|m| m.contains("held")).count();
    eprintln!("held: {held}, background: {}", ids.len() - held);
    assert!(held > 0 && held < ids.len(), "{modes:?}");
}

#[tokio::test]
async fn async_path_executes_in_background_and_parks_for_the_requester() {
    let h = harness().await;
    let _bg = h.broker.spawn_background();
    let a = h.submit(spec()).await;
    assert_eq!(
        h.broker
            .wait(&a.id, Duration::from_millis(10))
            .await
            .unwrap(),
        WaitOutcome::StillPending
    );
    h.broker.release_hold(&a.id).await.unwrap();
    assert!(matches!(
        h.broker.result(&a.id, "https://idp.example.com", "user-dev").await,
        Err(ResultError::Unavailable(p)) if p.status == Status::Pending
    ));
    h.broker
        .decide(&a.id, approver("bob@example.com"), Decision::Approve, None)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let parked = loop {
        match h
            .broker
            .result(&a.id, "https://idp.example.com", "user-dev")
            .await
        {
            Ok(p) => break p,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("no result: {e}"),
        }
    };
    assert_eq!(parked.status, 201);
    assert_eq!(
        parked.body,
        br#"created {"version":"1.2.3","token":"s3cr3t"}"#
    );
    assert!(!parked.truncated);
    assert!(parked.headers.iter().any(|h| h.name == "x-upstream"));
    assert!(matches!(
        h.broker
            .result(&a.id, "https://idp.example.com", "intruder")
            .await,
        Err(ResultError::NotRequester)
    ));
    assert!(matches!(
        h.broker
            .result(&a.id, "https://other-idp", "user-dev")
            .await,
        Err(ResultError::NotRequester)
    ));
    // Sweeps and late retries do not run it again.
    h.broker.sweep().await;
    assert!(matches!(
        h.broker.execute(&a.id).await,
        Err(ExecuteError::AlreadyClaimed)
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.calls(), 1);
    let fwd = &h.audit.find(&a.id, "request.forwarded")[0];
    assert_eq!(fwd["mode"], "background");
}

#[tokio::test]
async fn lost_notifications_only_delay_background_execution() {
    // No background task: the periodic sweep alone must execute the approved request.
    let h = harness().await;
    let a = h.submit(spec()).await;
    h.broker.release_hold(&a.id).await.unwrap();
    h.broker
        .decide(&a.id, approver("bob@example.com"), Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(h.calls(), 0);
    let report = h.broker.sweep().await;
    assert_eq!(report.executed, 1);
    assert_eq!(h.calls(), 1);
    assert_eq!(h.broker.sweep().await.executed, 0);
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn a_failing_notifier_loses_nothing_and_is_audited() {
    let h = harness().await;
    h.notifier.fail.store(true, Ordering::SeqCst);
    let a = h.submit(spec()).await;
    assert_eq!(h.status(&a.id).await.status, Status::Pending);
    let failed = h.audit.find(&a.id, "notify.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["notify_event"], "requested");
    assert_eq!(failed[0]["error"], "slack is down");
    let approved = h
        .broker
        .decide(
            &a.id,
            approver("carol@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(h.broker.execute(&a.id).await.unwrap().status, 201);
    assert_eq!(h.calls(), 1);
}

/// SPEC 8: a request is executed only after its deciding `vote.cast` and `approval.approved`
/// are durable. While `approval.approved` is being written nothing runs, and if that write
/// fails the request is withdrawn, never executed (by the background or anyone else).
#[tokio::test]
async fn nothing_runs_until_the_approval_is_audited() {
    for fail in [true, false] {
        let h = harness().await;
        let _bg = h.broker.spawn_background();
        let a = h.submit(spec()).await;
        h.broker.release_hold(&a.id).await.unwrap();
        *h.audit.stall_at.lock().unwrap() =
            Some(("approval.approved".into(), Duration::from_millis(500), fail));
        let decide = {
            let broker = h.broker.clone();
            let id = a.id.clone();
            tokio::spawn(async move {
                broker
                    .decide(&id, approver("bob@example.com"), Decision::Approve, None)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            h.calls(),
            0,
            "executed before approval.approved was durable"
        );
        assert!(
            h.broker.execute(&a.id).await.is_err(),
            "claimable before approval.approved was durable"
        );
        let decided = decide.await.unwrap();
        // Several background sweeps (every 50 ms) run after the decision.
        tokio::time::sleep(Duration::from_millis(400)).await;
        if fail {
            assert!(matches!(decided, Err(DecideError::Audit(_))), "{decided:?}");
            assert_eq!(h.status(&a.id).await.status, Status::Cancelled);
            assert_eq!(h.calls(), 0, "an unaudited approval was executed");
        } else {
            assert_eq!(decided.unwrap().status, Status::Approved);
            assert_eq!(h.calls(), 1, "executed once, after the audit");
            assert_eq!(
                h.audit.names_for(&a.id),
                [
                    "approval.requested",
                    "vote.cast",
                    "approval.approved",
                    "request.forwarded"
                ]
            );
        }
    }
}

/// A store whose next read of a pending approval returns the state from just before an
/// approver's vote landed: the holder's view is stale exactly when the expiry is due.
#[derive(Debug)]
struct StaleRead {
    inner: MemoryStore,
    /// When set, the next `get` of a pending approval lets this approver's vote land (just
    /// before expiry) and returns the snapshot from before it.
    vote_behind_the_read: Mutex<Option<Vote>>,
}

/// No holder registry: holds end at their backstop.
impl Holders for StaleRead {}

#[async_trait]
impl ApprovalStore for StaleRead {
    async fn create(
        &self,
        approval: &Approval,
        request: &StoredRequest,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.create(approval, request, ttl).await
    }
    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        let snapshot = self.inner.get(id).await?;
        let vote = self.vote_behind_the_read.lock().unwrap().take();
        if let (Some(vote), Some(a)) = (vote, &snapshot) {
            let just_before = a.expires_at - 1;
            self.inner.record_vote(id, vote, just_before).await?;
            // The broker confirms once vote.cast and approval.approved are audited.
            self.inner.confirm_audited(id).await?;
        }
        Ok(snapshot)
    }
    async fn stored_request(&self, id: &ApprovalId) -> Result<Option<StoredRequest>, StoreError> {
        self.inner.stored_request(id).await
    }
    async fn update(
        &self,
        id: &ApprovalId,
        change: &mut countersign::approval::store::Change<'_>,
    ) -> Result<Cas, StoreError> {
        self.inner.update(id, change).await
    }
    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.park_result(id, result, ttl).await
    }
    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError> {
        self.inner.result(id).await
    }
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Approval>, StoreError> {
        self.inner.list(filter, limit).await
    }
    async fn list_page(
        &self,
        filter: ListFilter,
        after: Option<&countersign::approval::store::Cursor>,
        limit: usize,
    ) -> Result<countersign::approval::store::Page, StoreError> {
        self.inner.list_page(filter, after, limit).await
    }
    async fn due(
        &self,
        now: u64,
        limit: usize,
        retry: Duration,
    ) -> Result<Vec<ApprovalId>, StoreError> {
        self.inner.due(now, limit, retry).await
    }
    async fn count_pending(&self, requester: Option<(&str, &str)>) -> Result<usize, StoreError> {
        self.inner.count_pending(requester).await
    }
    async fn publish(&self, id: &ApprovalId) -> Result<(), StoreError> {
        self.inner.publish(id).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ApprovalId> {
        self.inner.subscribe()
    }
    async fn cleanup(&self, now: u64) -> Result<usize, StoreError> {
        self.inner.cleanup(now).await
    }
}

/// SPEC 8 / issue 10 finding 5: a holder whose read is stale when the expiry is due must not
/// answer 403 `approval_expired` for a request that a vote approved in the meantime (it would
/// then be executed later, by the background, after the caller was told it never would be).
#[tokio::test]
async fn the_holder_answers_what_the_store_decided_not_a_stale_expiry() {
    let store = Arc::new(StaleRead {
        inner: MemoryStore::new(),
        vote_behind_the_read: Mutex::new(None),
    });
    let h = harness_with(store.clone()).await;
    let a = h.submit(spec()).await;
    h.clock.advance(Duration::from_secs(3600));
    *store.vote_behind_the_read.lock().unwrap() = Some(Vote {
        approver: "bob@example.com".into(),
        decision: Decision::Approve,
        reason: None,
        at: a.expires_at - 1,
        via: Channel::Api,
        self_approval: false,
        grant: false,
    });
    let outcome = h.broker.wait(&a.id, Duration::from_secs(1)).await.unwrap();
    assert_eq!(outcome, WaitOutcome::Approved, "told expired, yet approved");
    assert_eq!(h.status(&a.id).await.status, Status::Approved);
}

#[tokio::test]
async fn audit_failure_withdraws_instead_of_acknowledging() {
    let h = harness().await;
    h.audit.fail.store(true, Ordering::SeqCst);
    assert!(matches!(
        h.broker
            .submit(&rule(spec()), &requester(), h.stored(), None)
            .await,
        Err(BrokerError::Audit(_))
    ));
    h.audit.fail.store(false, Ordering::SeqCst);
    let a = h.submit(spec()).await;
    h.audit.fail.store(true, Ordering::SeqCst);
    assert!(matches!(
        h.broker
            .decide(
                &a.id,
                approver("alice@example.com"),
                Decision::Approve,
                None
            )
            .await,
        Err(DecideError::Audit(_))
    ));
    assert_eq!(h.status(&a.id).await.status, Status::Cancelled);
    assert!(h.broker.execute(&a.id).await.is_err());
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn unreachable_upstream_is_an_error_and_not_retried() {
    let h = harness().await;
    let mut stored = h.stored();
    // A query secret must not reach the audit log through the error text (issue 10).
    stored.query = Some("api_key=hunter2-query-secret".into());
    // A port nothing listens on.
    stored.upstream = "dead".into();
    let a = h
        .broker
        .submit(&rule(spec()), &requester(), stored, None)
        .await
        .unwrap();
    h.broker
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        h.broker.execute(&a.id).await,
        Err(ExecuteError::Upstream(_))
    ));
    assert!(matches!(
        h.status(&a.id).await.execution,
        Execution::Failed { .. }
    ));
    assert!(matches!(
        h.broker.execute(&a.id).await,
        Err(ExecuteError::AlreadyClaimed)
    ));
    let failed = h.audit.find(&a.id, "request.failed");
    assert_eq!(failed.len(), 1);
    assert!(
        !failed[0].to_string().contains("hunter2"),
        "query value in the audit line: {}",
        failed[0]
    );
    assert!(h
        .notifier
        .events_for(&a.id)
        .contains(&NotifyEvent::ExecutionFailed));
}

#[tokio::test]
async fn wait_is_cancel_safe() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    // Dropping a wait mid-way (the client hung up) leaves the approval intact.
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        h.broker.wait(&a.id, Duration::from_secs(30)),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(h.status(&a.id).await.status, Status::Pending);
    h.broker
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        h.broker.wait(&a.id, Duration::from_secs(1)).await.unwrap(),
        WaitOutcome::Approved
    );
}

#[tokio::test]
async fn list_shows_pending_and_recent() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    h.clock.advance(Duration::from_millis(5));
    let b = h.submit(spec()).await;
    h.broker
        .decide(&a.id, approver("alice@example.com"), Decision::Deny, None)
        .await
        .unwrap();
    let pending = h.broker.list(ListFilter::Pending, 10).await.unwrap();
    assert_eq!(pending.iter().map(|x| &x.id).collect::<Vec<_>>(), [&b.id]);
    let all = h.broker.list(ListFilter::All, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|x| &x.id).collect::<Vec<_>>(),
        [&b.id, &a.id]
    );
}

#[tokio::test]
async fn login_rules_only_accept_votes_from_the_approval_page() {
    let h = harness().await;
    let a = h
        .submit(ApprovalSpec {
            approve_via: ApproveVia::Login,
            ..spec()
        })
        .await;
    for via in [Channel::Slack, Channel::Api, Channel::Teams] {
        let who = ApproverIdentity {
            via,
            ..approver("alice@example.com")
        };
        assert!(matches!(
            h.broker.decide(&a.id, who, Decision::Approve, None).await,
            Err(DecideError::LoginRequired)
        ));
    }
    let web = ApproverIdentity {
        via: Channel::Web,
        ..approver("alice@example.com")
    };
    let done = h
        .broker
        .decide(&a.id, web, Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(done.status, Status::Approved);
    assert_eq!(done.votes[0].via, Channel::Web);
}

#[tokio::test]
async fn parked_results_are_bounded() {
    let h = harness().await;
    let broker = h.broker.clone().with_settings(BrokerSettings {
        result_cap: 10,
        ..*h.broker.settings()
    });
    let a = broker
        .submit(&rule(spec()), &requester(), h.stored(), None)
        .await
        .unwrap();
    broker.release_hold(&a.id).await.unwrap();
    broker
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(broker.sweep().await.executed, 1);
    let parked = broker
        .result(&a.id, "https://idp.example.com", "user-dev")
        .await
        .unwrap();
    assert_eq!(parked.body, b"created {\"");
    assert!(parked.truncated);
    // The parked result lives for result_ttl, then only the status remains.
    h.clock.advance(broker.settings().result_ttl);
    broker.sweep().await;
    assert!(matches!(
        broker
            .result(&a.id, "https://idp.example.com", "user-dev")
            .await,
        Err(ResultError::Unavailable(_))
    ));
}

#[tokio::test]
async fn check_voter_tells_pages_who_may_vote() {
    let h = harness().await;
    let a = h.submit(spec()).await;
    let me = ApproverIdentity {
        email: "dev@example.com".into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some("user-dev".into()),
        via: Channel::Web,
    };
    let b = &h.broker;
    assert!(matches!(
        b.check_voter(&a, &me, Decision::Approve),
        Err(DecideError::OwnRequest)
    ));
    assert!(matches!(
        b.check_voter(&a, &approver("eve@example.com"), Decision::Approve),
        Err(DecideError::NotAnApprover)
    ));
    assert!(matches!(
        b.check_voter(&a, &approver("alice@example.com"), Decision::Approve),
        Ok(false)
    ));
    let a = h
        .broker
        .decide(&a.id, approver("alice@example.com"), Decision::Deny, None)
        .await
        .unwrap();
    assert!(matches!(
        b.check_voter(&a, &approver("bob@example.com"), Decision::Approve),
        Err(DecideError::AlreadyDecided(Status::Denied))
    ));
    let c = h.submit(spec()).await;
    h.clock.advance(Duration::from_secs(3600));
    assert!(matches!(
        b.check_voter(&c, &approver("bob@example.com"), Decision::Approve),
        Err(DecideError::Expired)
    ));
}

/// `countersign_approvals_pending` is kept from counts updated on every transition (issue 12
/// target 3): it must follow each create, approval, cancellation and expiry exactly.
#[tokio::test]
async fn pending_gauge_follows_create_approve_cancel_and_expire() {
    let h = harness().await;
    let gauge = || h.metrics.approvals_pending.get();
    let a = h.submit(spec()).await;
    let b = h.submit(spec()).await;
    let c = h.submit(spec()).await;
    assert_eq!(gauge(), 3, "three created");
    h.broker
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(gauge(), 2, "one approved");
    h.broker.cancel(&b.id, "caller", "hung up").await.unwrap();
    assert_eq!(gauge(), 1, "one cancelled");
    h.clock.advance(Duration::from_secs(3600));
    let report = h.broker.sweep().await;
    assert_eq!(report.expired, 1, "the sweep expired the last one");
    assert_eq!(h.status(&c.id).await.status, Status::Expired);
    assert_eq!(gauge(), 0, "one expired");
    // Cancelling what is already decided changes nothing.
    let _ = h.broker.cancel(&a.id, "caller", "late").await;
    assert_eq!(gauge(), 0);
}

/// A store whose change notifications are all lost (a broken pub/sub).
#[derive(Debug)]
struct Deaf {
    inner: MemoryStore,
}

/// No holder registry: holds end at their backstop.
impl Holders for Deaf {}

#[async_trait]
impl ApprovalStore for Deaf {
    async fn create(
        &self,
        approval: &Approval,
        request: &StoredRequest,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.create(approval, request, ttl).await
    }
    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        self.inner.get(id).await
    }
    async fn stored_request(&self, id: &ApprovalId) -> Result<Option<StoredRequest>, StoreError> {
        self.inner.stored_request(id).await
    }
    async fn update(
        &self,
        id: &ApprovalId,
        change: &mut countersign::approval::store::Change<'_>,
    ) -> Result<Cas, StoreError> {
        self.inner.update(id, change).await
    }
    async fn park_result(
        &self,
        id: &ApprovalId,
        result: &ParkedResult,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.park_result(id, result, ttl).await
    }
    async fn result(&self, id: &ApprovalId) -> Result<Option<ParkedResult>, StoreError> {
        self.inner.result(id).await
    }
    async fn list_page(
        &self,
        filter: ListFilter,
        after: Option<&countersign::approval::store::Cursor>,
        limit: usize,
    ) -> Result<countersign::approval::store::Page, StoreError> {
        self.inner.list_page(filter, after, limit).await
    }
    async fn due(
        &self,
        now: u64,
        limit: usize,
        retry: Duration,
    ) -> Result<Vec<ApprovalId>, StoreError> {
        self.inner.due(now, limit, retry).await
    }
    async fn count_pending(&self, requester: Option<(&str, &str)>) -> Result<usize, StoreError> {
        self.inner.count_pending(requester).await
    }
    async fn publish(&self, _id: &ApprovalId) -> Result<(), StoreError> {
        Ok(())
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ApprovalId> {
        self.inner.subscribe()
    }
    async fn cleanup(&self, now: u64) -> Result<usize, StoreError> {
        self.inner.cleanup(now).await
    }
}

/// With every change notification lost, a holder still sees the decision by its safety
/// re-read: after at least 0.75 x `recheck_interval` (so not by a notification) and within
/// 1.25 x (the documented bound), never only at the end of its hold.
#[tokio::test]
async fn a_holder_whose_notifications_are_lost_sees_the_decision_at_its_safety_recheck() {
    let h = harness_with(Arc::new(Deaf {
        inner: MemoryStore::new(),
    }))
    .await;
    let recheck = Duration::from_millis(800);
    let broker = h.broker.clone().with_settings(BrokerSettings {
        recheck_interval: recheck,
        ..*h.broker.settings()
    });
    let a = h.submit(spec()).await;
    let started = std::time::Instant::now();
    let waiter = {
        let id = a.id.clone();
        tokio::spawn(async move { broker.wait(&id, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.broker
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), WaitOutcome::Approved);
    let took = started.elapsed();
    assert!(
        took >= recheck.mul_f64(0.75),
        "the decision arrived before any re-read ({took:?}): the notification was not lost?"
    );
    assert!(
        took < recheck.mul_f64(1.25) + Duration::from_millis(300),
        "lost notification delayed the holder past 1.25 x recheck: {took:?}"
    );
}

/// `{group:sre-leads = 1, carol = 1}` with `approvers` = sre-leads and carol.
fn across_groups() -> ApprovalSpec {
    ApprovalSpec {
        approvers: vec![
            Approver::Group("sre-leads".into()),
            Approver::Email("carol@example.com".into()),
        ],
        quorum: Quorum::Entries(vec![
            QuorumEntry {
                approver: Approver::Group("sre-leads".into()),
                count: 1,
            },
            QuorumEntry {
                approver: Approver::Email("carol@example.com".into()),
                count: 1,
            },
        ]),
        ..spec()
    }
}

#[tokio::test]
async fn quorum_members_are_fixed_when_the_request_is_created() {
    let h = harness().await;
    let a = h.submit(across_groups()).await;
    assert_eq!(a.quorum, 2);
    assert_eq!(
        a.quorum_entries[0].members,
        ["alice@example.com", "bob@example.com"]
    );
    // The groups change (a restart or another replica with a new config): sre-leads is erin.
    let later = h.broker.clone().with_groups(BTreeMap::from([(
        "sre-leads".to_owned(),
        vec!["erin@example.com".to_owned()],
    )]));
    let erin = later
        .decide(&a.id, approver("erin@example.com"), Decision::Approve, None)
        .await;
    assert!(matches!(erin, Err(DecideError::NotAnApprover)), "{erin:?}");
    let after = later
        .decide(
            &a.id,
            approver("alice@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(after.status, Status::Pending);
    assert_eq!(
        after.quorum_summary().as_deref(),
        Some("sre-leads 1/1, carol@example.com 0/1")
    );
    let done = later
        .decide(
            &a.id,
            approver("carol@example.com"),
            Decision::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, Status::Approved);
    // A request created now resolves the new members.
    let b = later
        .submit(&rule(across_groups()), &requester(), h.stored(), None)
        .await
        .unwrap();
    assert_eq!(b.quorum_entries[0].members, ["erin@example.com"]);
    assert!(b.approvers.contains(&"erin@example.com".to_owned()));
}

#[tokio::test]
async fn a_quorum_entry_only_the_requester_could_fill_fails_closed() {
    let h = harness().await;
    // dev@example.com is the requester: without self_approval nobody can fill that entry.
    let mut s = across_groups();
    s.approvers.push(Approver::Email("dev@example.com".into()));
    s.quorum = Quorum::Entries(vec![
        QuorumEntry {
            approver: Approver::Group("sre-leads".into()),
            count: 1,
        },
        QuorumEntry {
            approver: Approver::Email("dev@example.com".into()),
            count: 1,
        },
    ]);
    let refused = h
        .broker
        .submit(&rule(s), &requester(), h.stored(), None)
        .await;
    assert!(
        matches!(
            refused,
            Err(BrokerError::Unsatisfiable {
                eligible: 3,
                quorum: 2
            })
        ),
        "{refused:?}"
    );
}
