//! Break-glass and grants at the broker (SPEC 9), with an injected clock and an audit log that
//! can fail: nothing is forwarded unless `approval.break_glass` was recorded (fail closed), the
//! cooldown ends with the clock, and only the holder ever executes a break-glass record; a grant
//! the audit log does not have is never made, and a grant use that was not audited is never
//! forwarded.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::approval_fixture::{rule, spec};
use common::{EchoUpstream, RecordingAudit};
use countersign::approval::*;
use countersign::clock::{ManualClock, SharedClock};
use countersign::identity::Principal;
use countersign::policy::Rule;

struct Harness {
    broker: Broker,
    clock: Arc<ManualClock>,
    audit: Arc<RecordingAudit>,
    echo: EchoUpstream,
}

async fn harness() -> Harness {
    let echo = EchoUpstream::start().await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let audit = Arc::new(RecordingAudit::default());
    let mut groups = BTreeMap::new();
    groups.insert("sre-leads".to_owned(), vec!["alice@example.com".to_owned()]);
    let signer = ApprovalSigner::generate().expect("signer");
    let broker = Broker::new(
        Arc::new(MemoryStore::new()),
        Arc::new(LogNotifier),
        audit.clone(),
        clock.clone() as SharedClock,
        Arc::new(signer),
        Arc::new(Executor::new(Duration::from_secs(5)).with_upstream("echo", &echo.url(), None)),
        groups,
    );
    Harness {
        broker,
        clock,
        audit,
        echo,
    }
}

fn breaking_rule(cooldown: Option<Duration>) -> Rule {
    rule(countersign::policy::ApprovalSpec {
        break_glass: true,
        break_glass_cooldown: cooldown,
        grant: None,
        ..spec()
    })
}

fn requester() -> Principal {
    let claims = serde_json::json!({
        "iss": "https://idp.example.com",
        "sub": "user-dev",
        "email": "dev@example.com",
        "exp": 4_000_000_000u64,
    });
    Principal::from_claims(claims.as_object().expect("object").clone()).expect("principal")
}

fn stored() -> StoredRequest {
    StoredRequest::new(
        &http::Method::POST,
        "deploy.example.com",
        "/v1/restart",
        None,
        &http::HeaderMap::new(),
        b"{}".to_vec(),
        "echo",
        "user-dev",
    )
}

#[tokio::test]
async fn an_unrecorded_break_glass_is_never_forwarded() {
    let h = harness().await;
    h.audit.fail.store(true, Ordering::SeqCst);
    let r = breaking_rule(None);
    let refused = h
        .broker
        .break_glass(&r, &requester(), stored(), "prod down", None)
        .await;
    assert!(matches!(refused, Err(BrokerError::Audit(_))), "{refused:?}");
    // The record it created was withdrawn: nobody can execute it later.
    let all = h.broker.list(ListFilter::All, 10).await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, Status::Cancelled);
    assert!(h.broker.execute(&all[0].id).await.is_err());
    assert_eq!(h.echo.count(), 0);
}

#[tokio::test]
async fn only_the_holder_executes_a_break_glass_and_only_once() {
    let h = harness().await;
    let r = breaking_rule(None);
    let a = h
        .broker
        .break_glass(&r, &requester(), stored(), "  prod down  ", None)
        .await
        .expect("recorded");
    assert_eq!(a.status, Status::Review);
    assert_eq!(
        a.break_glass.as_ref().map(|b| b.reason.as_str()),
        Some("prod down")
    );
    // The background never takes a break-glass record: its caller forwards it.
    assert_eq!(
        h.broker.execute_in_background(&a.id).await.expect("bg"),
        None
    );
    let resp = h.broker.execute(&a.id).await.expect("forwarded");
    assert_eq!(resp.status, 200);
    assert!(matches!(
        h.broker.execute(&a.id).await,
        Err(ExecuteError::NotApproved(Status::Review))
    ));
    assert_eq!(h.echo.count(), 1);
    let names = h.audit.names_for(&a.id);
    assert_eq!(
        names,
        ["approval.break_glass", "request.forwarded"],
        "{names:?}"
    );
}

#[tokio::test]
async fn the_cooldown_ends_with_the_clock_and_an_empty_reason_is_refused() {
    let h = harness().await;
    let r = breaking_rule(Some(Duration::from_secs(600)));
    let empty = h
        .broker
        .break_glass(&r, &requester(), stored(), " ", None)
        .await;
    assert!(
        matches!(empty, Err(BrokerError::BreakGlassReasonRequired)),
        "{empty:?}"
    );
    // An empty reason does not start the cooldown.
    h.broker
        .break_glass(&r, &requester(), stored(), "first", None)
        .await
        .expect("first use");
    h.clock.advance(Duration::from_secs(599));
    match h
        .broker
        .break_glass(&r, &requester(), stored(), "second", None)
        .await
    {
        Err(BrokerError::BreakGlassCooldown { left }) => {
            assert_eq!(left, Duration::from_secs(1));
        }
        other => panic!("expected the cooldown, got {other:?}"),
    }
    h.clock.advance(Duration::from_secs(1));
    h.broker
        .break_glass(&r, &requester(), stored(), "third", None)
        .await
        .expect("after the cooldown");
}

#[tokio::test]
async fn a_rule_without_break_glass_cannot_break_the_glass() {
    let h = harness().await;
    let r = rule(spec());
    let refused = h
        .broker
        .break_glass(&r, &requester(), stored(), "prod down", None)
        .await;
    assert!(
        matches!(refused, Err(BrokerError::NotAnApprovalRule(_))),
        "{refused:?}"
    );
    assert!(h
        .broker
        .list(ListFilter::All, 10)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn acknowledge_moves_review_to_acknowledged_once_and_only_by_an_approver() {
    let h = harness().await;
    let r = breaking_rule(None);
    let a = h
        .broker
        .break_glass(&r, &requester(), stored(), "prod down", None)
        .await
        .expect("recorded");
    let who = |email: &str| ApproverIdentity {
        email: email.into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some(format!("sub-{email}")),
        via: Channel::Api,
    };
    assert!(matches!(
        h.broker
            .acknowledge(&a.id, who("mallory@example.com"))
            .await,
        Err(DecideError::NotAnApprover)
    ));
    assert!(matches!(
        h.broker.acknowledge(&a.id, who("dev@example.com")).await,
        Err(DecideError::OwnRequest)
    ));
    assert!(matches!(
        h.broker
            .decide(&a.id, who("alice@example.com"), Decision::Approve, None)
            .await,
        Err(DecideError::AlreadyDecided(Status::Review))
    ));
    let acked = h
        .broker
        .acknowledge(&a.id, who("alice@example.com"))
        .await
        .expect("acknowledged");
    assert_eq!(acked.status, Status::Acknowledged);
    assert!(matches!(
        h.broker.acknowledge(&a.id, who("carol@example.com")).await,
        Err(DecideError::AlreadyDecided(Status::Acknowledged))
    ));
    let acks = h.audit.find(&a.id, "approval.acknowledged");
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0]["actor"], "alice@example.com");
}

fn granting_rule() -> Rule {
    rule(countersign::policy::ApprovalSpec {
        grant: Some(countersign::policy::GrantSpec {
            ttl: Duration::from_secs(900),
            uses: 2,
        }),
        ..spec()
    })
}

fn alice() -> ApproverIdentity {
    ApproverIdentity {
        email: "alice@example.com".into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some("alice".into()),
        via: Channel::Api,
    }
}

/// Alice approves a held request of `requester()` on `r`, asking for a grant.
async fn approve_with_grant(h: &Harness, r: &Rule) -> Approval {
    let a = h
        .broker
        .submit(r, &requester(), stored(), None)
        .await
        .expect("submit");
    h.broker
        .decide_granting(&a.id, alice(), Decision::Approve, None, true)
        .await
        .expect("approved")
}

fn viewer() -> GrantViewer<'static> {
    GrantViewer {
        email: Some("alice@example.com"),
        iss: "https://idp.example.com",
        sub: "alice",
    }
}

#[tokio::test]
async fn a_grant_the_audit_log_does_not_have_is_never_made() {
    let h = harness().await;
    *h.audit.stall_at.lock().unwrap() = Some(("grant.created".into(), Duration::ZERO, true));
    let r = granting_rule();
    let approved = approve_with_grant(&h, &r).await;
    assert_eq!(
        approved.status,
        Status::Approved,
        "the approval itself stands"
    );
    assert!(h
        .broker
        .grants_for(&viewer())
        .await
        .expect("grants")
        .is_empty());
    let mut again = stored();
    let used = h
        .broker
        .pass_under_grant(&r, &requester(), &mut again, None)
        .await
        .expect("no error");
    assert!(used.is_none(), "nothing passes under an unaudited grant");
}

#[tokio::test]
async fn a_grant_use_that_was_not_audited_is_never_forwarded() {
    let h = harness().await;
    let r = granting_rule();
    approve_with_grant(&h, &r).await;
    assert_eq!(
        h.broker.grants_for(&viewer()).await.expect("grants").len(),
        1
    );
    *h.audit.stall_at.lock().unwrap() = Some(("grant.used".into(), Duration::ZERO, true));
    let mut again = stored();
    let refused = h
        .broker
        .pass_under_grant(&r, &requester(), &mut again, None)
        .await;
    assert!(matches!(refused, Err(BrokerError::Audit(_))), "{refused:?}");
    let all = h.broker.list(ListFilter::All, 10).await.expect("list");
    let under_grant: Vec<_> = all.iter().filter(|a| a.granted.is_some()).collect();
    assert_eq!(under_grant.len(), 1);
    assert_eq!(under_grant[0].status, Status::Cancelled, "withdrawn");
    assert!(h.broker.execute(&under_grant[0].id).await.is_err());
    assert_eq!(h.echo.count(), 0, "nothing went upstream");
}
