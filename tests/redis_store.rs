//! The approval store contract on a real `redis-server`: the same rules as the memory store,
//! atomic across two store instances (two connections, like two replicas), cross-instance
//! notifications, the hold lease, an outage that keeps data, and records that are sealed
//! (MAC, encrypted credentials) so an edit in Redis is refused (SPEC 8).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use countersign::approval::*;
use countersign::policy::{ApproveVia, NotifyTarget};

use common::RedisServer;

const TTL: Duration = Duration::from_secs(600);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn approval(quorum: u32) -> Approval {
    let now = now_ms();
    Approval {
        id: ApprovalId::generate(),
        rule: "prod-deploy".into(),
        requester: Requester {
            iss: "https://idp".into(),
            sub: "u1".into(),
            email: Some("dev@example.com".into()),
        },
        method: "POST".into(),
        host: "deploy.example.com".into(),
        path: "/v1/deployments/production".into(),
        query: None,
        request_hash: "00".into(),
        reason: Some("release".into()),
        body_preview: "{}".into(),
        body_len: 2,
        body_preview_cut: false,
        body_sha256: String::new(),
        headers: Vec::new(),
        approvers: (0..60).map(|i| format!("a{i}@example.com")).collect(),
        quorum,
        quorum_entries: Vec::new(),
        self_approval: false,
        approve_via: ApproveVia::Button,
        notify: vec![
            NotifyTarget::SlackChannel("#prod".into()),
            NotifyTarget::Teams,
        ],
        created_at: now,
        expires_at: now + 60_000,
        votes: vec![],
        status: Status::Pending,
        decided_by: None,
        decision_reason: None,
        decided_at: None,
        held: false,
        held_until: None,
        holder: None,
        execution: Execution::NotStarted,
        audit_pending: false,
        nudges: Default::default(),
        break_glass: None,
        grant_offer: None,
        granted: None,
    }
}

fn stored() -> StoredRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("authorization", "Bearer secret-token-xyz".parse().unwrap());
    StoredRequest::new(
        &http::Method::POST,
        "deploy.example.com",
        "/v1/deployments/production",
        None,
        &headers,
        br#"{"version":"1.2.3"}"#.to_vec(),
        "deploy-api",
        "u1",
    )
}

/// `holder` holds `id` until `backstop`.
fn hold<'a>(holder: &'a str, id: &'a ApprovalId, backstop: u64) -> Hold<'a> {
    Hold {
        holder,
        id,
        backstop,
    }
}

/// `holder`, silent since `last_beat`.
fn silent(holder: &str, last_beat: u64) -> Silent {
    Silent {
        holder: holder.to_owned(),
        last_beat,
    }
}

fn vote(who: &str, decision: Decision) -> Vote {
    Vote {
        approver: who.into(),
        decision,
        reason: None,
        at: now_ms(),
        via: Channel::Api,
        self_approval: false,
        grant: false,
    }
}

/// The keys every replica derives from the shared signing key.
fn seal() -> Arc<RecordSeal> {
    Arc::new(RecordSeal::derive_from(b"test signing key material"))
}

async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(&redis.url())
        .await
        .expect("connect")
        .with_seal(seal())
}

async fn created(s: &RedisStore, quorum: u32) -> Approval {
    let a = approval(quorum);
    s.create(&a, &stored(), TTL).await.unwrap();
    a
}

#[tokio::test]
async fn create_get_list_and_duplicate_ids() {
    let redis = RedisServer::start();
    let (s1, s2) = (store(&redis).await, store(&redis).await);
    let a = created(&s1, 1).await;
    assert_eq!(s2.get(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(s2.stored_request(&a.id).await.unwrap(), Some(stored()));
    let dup = s2.create(&a, &stored(), TTL).await;
    assert!(dup.is_err(), "a second create with the same id must fail");
    assert_eq!(s2.get(&ApprovalId::generate()).await.unwrap(), None);

    let mut b = approval(1);
    b.created_at = a.created_at + 1;
    s2.create(&b, &stored(), TTL).await.unwrap();
    let all: Vec<_> = s1.list(ListFilter::All, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|x| x.id.clone()).collect::<Vec<_>>(),
        vec![b.id.clone(), a.id.clone()],
        "newest first"
    );
    assert_eq!(s1.list(ListFilter::All, 1).await.unwrap().len(), 1);
    s1.record_vote(&b.id, vote("a1@example.com", Decision::Approve), now_ms())
        .await
        .unwrap();
    // The broker confirms once vote.cast and approval.approved are audited.
    s1.confirm_audited(&b.id).await.unwrap();
    let pending = s1.list(ListFilter::Pending, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|x| &x.id).collect::<Vec<_>>(),
        vec![&a.id]
    );
    let awaiting = s1.list(ListFilter::AwaitingExecution, 10).await.unwrap();
    assert_eq!(
        awaiting.iter().map(|x| &x.id).collect::<Vec<_>>(),
        vec![&b.id]
    );
}

#[tokio::test]
async fn records_expire_with_their_ttl() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let a = approval(1);
    s.create(&a, &stored(), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(s.get(&a.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.get(&a.id).await.unwrap(), None);
    assert_eq!(s.stored_request(&a.id).await.unwrap(), None);
    assert_eq!(s.cleanup(now_ms()).await.unwrap(), 1, "index entry dropped");
    assert!(s.list(ListFilter::All, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn quorum_duplicate_voter_and_deny() {
    let redis = RedisServer::start();
    let (s1, s2) = (store(&redis).await, store(&redis).await);
    let a = created(&s1, 2).await;
    let now = now_ms();
    let r = s1
        .record_vote(&a.id, vote("a1@example.com", Decision::Approve), now)
        .await
        .unwrap();
    assert!(matches!(r, VoteResult::Recorded(ref x) if x.votes.len() == 1));
    let r = s2
        .record_vote(&a.id, vote("A1@example.com", Decision::Approve), now)
        .await
        .unwrap();
    assert!(matches!(r, VoteResult::Duplicate(ref x) if x.votes.len() == 1));
    let r = s2
        .record_vote(&a.id, vote("a2@example.com", Decision::Approve), now)
        .await
        .unwrap();
    match r {
        VoteResult::Approved(x) => {
            assert_eq!(x.status, Status::Approved);
            assert_eq!(x.decided_by.as_deref(), Some("a2@example.com"));
        }
        other => panic!("expected Approved, got {other:?}"),
    }
    let r = s1
        .record_vote(&a.id, vote("a3@example.com", Decision::Deny), now)
        .await
        .unwrap();
    assert!(matches!(r, VoteResult::NotPending(_)));

    let d = created(&s1, 2).await;
    s1.record_vote(&d.id, vote("a1@example.com", Decision::Approve), now)
        .await
        .unwrap();
    let r = s2
        .record_vote(&d.id, vote("a2@example.com", Decision::Deny), now)
        .await
        .unwrap();
    assert!(matches!(r, VoteResult::Denied(ref x) if x.status == Status::Denied));
    assert_eq!(s1.get(&d.id).await.unwrap().unwrap().status, Status::Denied);

    let late = created(&s1, 1).await;
    let r = s2
        .record_vote(
            &late.id,
            vote("a1@example.com", Decision::Approve),
            late.expires_at,
        )
        .await
        .unwrap();
    assert!(matches!(r, VoteResult::Expired(ref x) if x.status == Status::Expired));
    let r = s2
        .record_vote(
            &ApprovalId::generate(),
            vote("a1@example.com", Decision::Approve),
            now,
        )
        .await
        .unwrap();
    assert_eq!(r, VoteResult::NotFound);
}

#[tokio::test]
async fn expire_and_cancel_are_compare_and_set() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let a = created(&s, 1).await;
    assert!(matches!(
        s.expire(&a.id, a.expires_at - 1).await.unwrap(),
        Cas::Conflict(_)
    ));
    assert!(
        matches!(s.expire(&a.id, a.expires_at).await.unwrap(), Cas::Applied(ref x) if x.status == Status::Expired)
    );
    assert!(matches!(
        s.cancel(&a.id, "dev", "late", now_ms()).await.unwrap(),
        Cas::Conflict(_)
    ));

    let b = created(&s, 1).await;
    match s
        .cancel(&b.id, "dev@example.com", "hung up", now_ms())
        .await
        .unwrap()
    {
        Cas::Applied(x) => {
            assert_eq!(x.status, Status::Cancelled);
            assert_eq!(x.decision_reason.as_deref(), Some("hung up"));
        }
        other => panic!("{other:?}"),
    }

    // Approved but claimed: too late to cancel.
    let c = created(&s, 1).await;
    s.record_vote(&c.id, vote("a1@example.com", Decision::Approve), now_ms())
        .await
        .unwrap();
    // The broker confirms once vote.cast and approval.approved are audited.
    s.confirm_audited(&c.id).await.unwrap();
    s.claim_execution(&c.id, Claimant::Background, "r1", now_ms())
        .await
        .unwrap();
    assert!(matches!(
        s.cancel(&c.id, "dev", "x", now_ms()).await.unwrap(),
        Cas::Conflict(_)
    ));
    assert_eq!(
        s.expire(&ApprovalId::generate(), now_ms()).await.unwrap(),
        Cas::NotFound
    );
}

#[tokio::test]
async fn claim_has_exactly_one_winner_across_instances() {
    let redis = RedisServer::start();
    let s1 = Arc::new(store(&redis).await);
    let s2 = Arc::new(store(&redis).await);
    for round in 0..20 {
        let a = created(&s1, 1).await;
        s1.record_vote(&a.id, vote("a1@example.com", Decision::Approve), now_ms())
            .await
            .unwrap();
        // The broker confirms once vote.cast and approval.approved are audited.
        s1.confirm_audited(&a.id).await.unwrap();
        let mut tasks = Vec::new();
        for (i, s) in [&s1, &s2, &s1, &s2].into_iter().enumerate() {
            let (s, id) = (Arc::clone(s), a.id.clone());
            tasks.push(tokio::spawn(async move {
                s.claim_execution(&id, Claimant::Background, &format!("r{i}"), now_ms())
                    .await
                    .unwrap()
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            if let Cas::Applied(x) = t.await.unwrap() {
                winners.push(x.execution);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = s2.get(&a.id).await.unwrap().unwrap();
        assert_eq!(stored.execution, winners[0]);
        let done = s2
            .finish_execution(&a.id, Execution::Done { status: 201 })
            .await
            .unwrap();
        assert!(
            matches!(done, Cas::Applied(ref x) if x.execution == Execution::Done { status: 201 })
        );
        assert!(matches!(
            s1.finish_execution(&a.id, Execution::Done { status: 500 })
                .await
                .unwrap(),
            Cas::Conflict(_)
        ));
    }
}

async fn race_votes(s1: &Arc<RedisStore>, s2: &Arc<RedisStore>, quorum: u32) -> (Approval, usize) {
    let a = created(s1, quorum).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = Arc::clone(if i % 2 == 0 { s1 } else { s2 });
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move {
            s.record_vote(
                &id,
                vote(&format!("a{i}@example.com"), Decision::Approve),
                now_ms(),
            )
            .await
            .unwrap()
        }));
    }
    let mut approved = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), VoteResult::Approved(_)) {
            approved += 1;
        }
    }
    (s1.get(&a.id).await.unwrap().unwrap(), approved)
}

#[tokio::test]
async fn fifty_concurrent_votes_reach_quorum_exactly_once() {
    let redis = RedisServer::start();
    let s1 = Arc::new(store(&redis).await);
    let s2 = Arc::new(store(&redis).await);

    let (a, approved) = race_votes(&s1, &s2, 1).await;
    assert_eq!(approved, 1);
    assert_eq!(a.status, Status::Approved);
    assert_eq!(a.votes.len(), 1, "later votes are refused, not counted");

    // No vote is lost either: with quorum 50 every one of the 50 counts.
    let (a, approved) = race_votes(&s1, &s2, 50).await;
    assert_eq!(approved, 1);
    assert_eq!(a.votes.len(), 50);
    assert_eq!(a.status, Status::Approved);
}

#[tokio::test]
async fn publish_on_one_instance_wakes_a_subscriber_on_another() {
    let redis = RedisServer::start();
    let (s1, s2) = (store(&redis).await, store(&redis).await);
    let mut rx = s2.subscribe();
    let id = ApprovalId::generate();
    let started = Instant::now();
    s1.publish(&id).await.unwrap();
    let got = tokio::time::timeout(Duration::from_millis(100), rx.recv())
        .await
        .expect("woken within 100 ms")
        .unwrap();
    assert_eq!(got, id);
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn parked_result_is_readable_from_another_instance() {
    let redis = RedisServer::start();
    let (s1, s2) = (store(&redis).await, store(&redis).await);
    let a = created(&s1, 1).await;
    let parked = ParkedResult {
        status: 201,
        headers: vec![],
        body: b"{\"ok\":true}".to_vec(),
        truncated: false,
        at: now_ms(),
    };
    assert_eq!(s2.result(&a.id).await.unwrap(), None);
    s1.park_result(&a.id, &parked, TTL).await.unwrap();
    assert_eq!(s2.result(&a.id).await.unwrap(), Some(parked.clone()));
    assert!(s1
        .park_result(&ApprovalId::generate(), &parked, TTL)
        .await
        .is_err());
}

/// Ids in `store`'s due-index at `at` (leasing them, as a sweep does).
async fn due_ids(s: &RedisStore, at: u64) -> Vec<ApprovalId> {
    s.due(at, 100, Duration::from_millis(1)).await.unwrap()
}

/// Issue 13: `held` is a lease with a backstop the holder sets when it takes the hold. Seen
/// from a second instance (another replica): a held request is never executed in the
/// background, a later take moves the backstop, the due-index brings it up exactly when the
/// backstop passes, and a passed backstop cancels it (`holder_lost`), approved or not, after
/// which nobody can claim it.
#[tokio::test]
async fn a_hold_is_a_lease_with_a_backstop_and_a_passed_one_cancels() {
    let redis = RedisServer::start();
    let (holder, other) = (store(&redis).await, store(&redis).await);
    let a = created(&holder, 1).await;
    let t0 = now_ms();
    holder.set_held(&a.id, true).await.unwrap();
    assert!(matches!(
        holder.take_hold(&hold("replica-1", &a.id, t0 + 3_000)).await.unwrap(),
        Cas::Applied(x) if x.held_until == Some(t0 + 3_000)
    ));
    holder
        .record_vote(&a.id, vote("a1@example.com", Decision::Approve), t0)
        .await
        .unwrap();
    // The broker confirms once vote.cast and approval.approved are audited.
    holder.confirm_audited(&a.id).await.unwrap();
    assert!(other
        .list(ListFilter::AwaitingExecution, 10)
        .await
        .unwrap()
        .is_empty());
    let much_later = a.expires_at + 3_600_000;
    assert!(
        matches!(
            other
                .claim_execution(&a.id, Claimant::Background, "bg", much_later)
                .await
                .unwrap(),
            Cas::Conflict(_)
        ),
        "a held request is never the background's, however late"
    );

    // Taken again at t0 + 2 s: good until t0 + 5 s, and quietly (nobody is woken by it).
    let mut changes = other.subscribe();
    let probe = ApprovalId::generate();
    holder.publish(&probe).await.unwrap();
    let listening = tokio::time::timeout(Duration::from_secs(2), changes.recv()).await;
    assert_eq!(listening.unwrap().unwrap(), probe, "the subscriber listens");
    assert!(matches!(
        holder.take_hold(&hold("replica-1", &a.id, t0 + 2_000 + 3_000)).await.unwrap(),
        Cas::Applied(x) if x.held_until == Some(t0 + 5_000)
    ));
    let woken = tokio::time::timeout(Duration::from_millis(300), changes.recv()).await;
    assert!(woken.is_err(), "taking a hold is not announced: {woken:?}");
    assert!(!due_ids(&other, t0 + 4_000).await.contains(&a.id));
    assert!(matches!(
        other.cancel_lost_hold(&a.id, t0 + 4_000, None).await.unwrap(),
        Cas::Conflict(x) if x.status == Status::Approved
    ));

    // The backstop passed: due at t0 + 5 s, and cancelled, never claimable.
    assert!(due_ids(&other, t0 + 5_000).await.contains(&a.id));
    match other
        .cancel_lost_hold(&a.id, t0 + 5_000, None)
        .await
        .unwrap()
    {
        Cas::Applied(x) => {
            assert_eq!(x.status, Status::Cancelled);
            assert_eq!(x.decision_reason.as_deref(), Some("holder_lost"));
            assert_eq!(x.decided_by.as_deref(), Some("countersign"));
        }
        other => panic!("{other:?}"),
    }
    let announced = tokio::time::timeout(Duration::from_secs(2), changes.recv()).await;
    assert_eq!(
        announced.unwrap().unwrap(),
        a.id,
        "a cancellation is announced"
    );
    for who in [Claimant::Holder, Claimant::Background] {
        assert!(matches!(
            holder
                .claim_execution(&a.id, who, "late", t0 + 5_001)
                .await
                .unwrap(),
            Cas::Conflict(x) if x.status == Status::Cancelled
        ));
    }
    assert!(
        matches!(
            holder
                .take_hold(&hold("replica-1", &a.id, t0 + 5_001 + 3_000))
                .await
                .unwrap(),
            Cas::Conflict(_)
        ),
        "a cancelled hold is not taken back"
    );
    // Due only while its audit line is owed: the canceller notes it written.
    assert!(due_ids(&other, much_later).await.contains(&a.id));
    other
        .confirm_audited_end(&a.id, Status::Cancelled)
        .await
        .unwrap();
    assert!(!due_ids(&other, much_later).await.contains(&a.id));

    // A live holder claims while held.
    let b = created(&holder, 1).await;
    holder.set_held(&b.id, true).await.unwrap();
    holder
        .take_hold(&hold("replica-1", &b.id, now_ms() + 3_000))
        .await
        .unwrap();
    holder
        .record_vote(&b.id, vote("a1@example.com", Decision::Approve), now_ms())
        .await
        .unwrap();
    holder.confirm_audited(&b.id).await.unwrap();
    assert!(matches!(
        holder
            .claim_execution(&b.id, Claimant::Holder, "holder", now_ms())
            .await
            .unwrap(),
        Cas::Applied(_)
    ));
    assert!(
        matches!(
            other
                .cancel_lost_hold(&b.id, much_later, None)
                .await
                .unwrap(),
            Cas::Conflict(_)
        ),
        "once claimed, a hold is never lost"
    );
}

/// A released hold (the caller was answered 202) is never lost: the background of any
/// replica executes it once approved, whenever that is.
#[tokio::test]
async fn a_released_hold_is_never_cancelled_and_runs_in_the_background() {
    let redis = RedisServer::start();
    let (holder, other) = (store(&redis).await, store(&redis).await);
    let a = created(&holder, 1).await;
    let t0 = now_ms();
    holder.set_held(&a.id, true).await.unwrap();
    holder
        .take_hold(&hold("replica-1", &a.id, t0 + 3_000))
        .await
        .unwrap();
    holder.set_held(&a.id, false).await.unwrap();
    let much_later = a.expires_at - 1;
    assert!(matches!(
        other.cancel_lost_hold(&a.id, much_later, None).await.unwrap(),
        Cas::Conflict(x) if x.status == Status::Pending
    ));
    assert!(
        matches!(
            holder.take_hold(&hold("replica-1", &a.id, t0 + 1_000 + 3_000)).await.unwrap(),
            Cas::Conflict(x) if !x.held
        ),
        "taking the hold racing the release does not take it back"
    );
    other
        .record_vote(
            &a.id,
            vote("a1@example.com", Decision::Approve),
            t0 + 10_000,
        )
        .await
        .unwrap();
    other.confirm_audited(&a.id).await.unwrap();
    assert!(due_ids(&other, t0 + 10_000).await.contains(&a.id));
    assert!(matches!(
        other
            .claim_execution(&a.id, Claimant::Background, "bg", much_later)
            .await
            .unwrap(),
        Cas::Applied(_)
    ));
}

fn signal(redis: &RedisServer, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &redis.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn outage_fails_fast_then_recovers_with_data_intact() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let a = created(&s, 1).await;

    signal(&redis, "-STOP");
    let started = Instant::now();
    assert!(s.get(&a.id).await.is_err());
    assert!(s
        .record_vote(&a.id, vote("a1@example.com", Decision::Approve), now_ms())
        .await
        .is_err());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    signal(&redis, "-CONT");

    // Reconnects on its own; nothing was lost.
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        match s.get(&a.id).await {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("still down: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert_eq!(got, Some(a.clone()));
    let r = s
        .record_vote(&a.id, vote("a1@example.com", Decision::Approve), now_ms())
        .await
        .unwrap();
    assert!(matches!(r, VoteResult::Approved(_)));
}

#[tokio::test]
async fn unreachable_redis_is_an_error_not_a_hang() {
    let port = common::free_port();
    let s = RedisStore::new(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    let started = Instant::now();
    assert!(s.get(&ApprovalId::generate()).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(RedisStore::connect(&format!("redis://127.0.0.1:{port}/0"))
        .await
        .is_err());
    assert!(RedisStore::new("http://not-redis").is_err());
}

#[tokio::test]
async fn a_password_from_config_replaces_the_one_in_the_url() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cr3t-pw"]);
    let without = RedisStore::new(&redis.url()).unwrap();
    assert!(
        without.get(&ApprovalId::generate()).await.is_err(),
        "no password: refused"
    );
    let wrong_in_url = redis.url().replace("redis://", "redis://:wrong@");
    let s = RedisStore::with_password(&wrong_in_url, Some("s3cr3t-pw")).unwrap();
    let a = created(&s, 1).await;
    assert_eq!(s.get(&a.id).await.unwrap(), Some(a));
}

#[tokio::test]
async fn rediss_speaks_tls_with_rustls() {
    let dir = common::TestDir::new();
    let tls = common::TlsFixture::generate(dir.path(), "redis");
    let tls_port = common::free_port().to_string();
    let path = |p: &std::path::Path| p.display().to_string();
    let (cert, key, ca) = (path(&tls.cert_pem), path(&tls.key_pem), path(&tls.ca_pem));
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let ca_pem = std::fs::read(&tls.ca_pem).unwrap();
    let s = RedisStore::with_options(&url, None, Some(ca_pem)).unwrap();
    let a = created(&s, 1).await;
    assert_eq!(s.get(&a.id).await.unwrap(), Some(a.clone()));
    // Plain text on the TLS port is refused: it really is TLS.
    let plain = RedisStore::new(&format!("redis://127.0.0.1:{tls_port}/0")).unwrap();
    assert!(plain.get(&a.id).await.is_err());
    // Without the CA the server certificate is not trusted.
    let unverified = RedisStore::new(&url).unwrap();
    let refused = unverified.get(&a.id).await.unwrap_err();
    assert!(
        !refused.to_string().contains("timed out"),
        "a TLS error, not a hang: {refused}"
    );
    drop(redis);
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

#[tokio::test]
async fn credentials_are_not_in_redis_in_clear_text() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let a = created(&s, 1).await;
    let raw = redis_cli(&redis, &["GET", &format!("cs:req:{}", a.id)]);
    assert!(raw.starts_with("m1."), "sealed: {raw}");
    assert!(raw.contains("deploy.example.com"), "{raw}");
    assert!(!raw.contains("secret-token-xyz"), "in clear text: {raw}");
    // The base64 of the value must not be there either.
    assert!(
        !raw.contains("c2VjcmV0LXRva2VuLXh5"),
        "base64 in clear: {raw}"
    );
    assert_eq!(s.stored_request(&a.id).await.unwrap(), Some(stored()));
}

#[tokio::test]
async fn an_edited_record_is_refused_as_tampered() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let a = created(&s, 1).await;
    // Edit the stored request's path, keeping the old MAC.
    let key = format!("cs:req:{}", a.id);
    let raw = redis_cli(&redis, &["GET", &key]);
    let edited = raw.replace("/v1/deployments/production", "/v1/deployments/everything");
    assert_ne!(raw, edited);
    redis_cli(&redis, &["SET", &key, &edited]);
    let err = s.stored_request(&a.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Tampered { .. }), "{err}");
    // A record written without a MAC at all.
    let json = raw.splitn(3, '.').nth(2).unwrap().to_owned();
    redis_cli(&redis, &["SET", &key, &json]);
    let err = s.stored_request(&a.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Tampered { .. }), "{err}");

    // The approval record, marked approved by hand.
    let apr = format!("cs:apr:{}", a.id);
    let raw = redis_cli(&redis, &["HGET", &apr, "json"]);
    let edited = raw.replace(r#""status":"pending""#, r#""status":"approved""#);
    assert_ne!(raw, edited);
    redis_cli(&redis, &["HSET", &apr, "json", &edited]);
    let err = s.get(&a.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Tampered { .. }), "{err}");
    // A listing skips it instead of failing for every other approval.
    let b = created(&s, 1).await;
    let listed = s.list(ListFilter::All, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|x| &x.id).collect::<Vec<_>>(),
        vec![&b.id]
    );
    // Moving a valid record to another id does not verify either.
    let b_raw = redis_cli(&redis, &["HGET", &format!("cs:apr:{}", b.id), "json"]);
    redis_cli(&redis, &["HSET", &apr, "json", &b_raw]);
    assert!(matches!(
        s.get(&a.id).await.unwrap_err(),
        StoreError::Tampered { .. }
    ));
}

#[tokio::test]
async fn a_replica_with_another_signing_key_cannot_read_the_records() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let a = created(&s, 1).await;
    let other = RedisStore::connect(&redis.url())
        .await
        .unwrap()
        .with_seal(Arc::new(RecordSeal::derive_from(b"another key")));
    assert!(matches!(
        other.get(&a.id).await.unwrap_err(),
        StoreError::Tampered { .. }
    ));
}

/// A table quorum (SPEC 9) on Redis: the entries resolved at creation survive the sealed
/// record, and votes from two instances are counted by assignment, not by sum.
#[tokio::test]
async fn quorum_entries_are_kept_sealed_and_counted_across_instances() {
    let redis = RedisServer::start();
    let (s1, s2) = (store(&redis).await, store(&redis).await);
    let mut a = approval(2);
    let entry = |name: &str, members: &[&str]| QuorumEntry {
        entry: format!("group:{name}"),
        need: 1,
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    };
    // a1 is in both groups; a2 only in security.
    a.quorum_entries = vec![
        entry("dba", &["a1@example.com"]),
        entry("security", &["a1@example.com", "a2@example.com"]),
    ];
    s1.create(&a, &stored(), TTL).await.unwrap();
    assert_eq!(s2.get(&a.id).await.unwrap(), Some(a.clone()));
    let now = now_ms();
    let r = s1
        .record_vote(&a.id, vote("a1@example.com", Decision::Approve), now)
        .await
        .unwrap();
    match r {
        VoteResult::Recorded(x) => {
            assert_eq!(x.quorum_summary().as_deref(), Some("dba 1/1, security 0/1"))
        }
        other => panic!("one person in both groups approved it alone: {other:?}"),
    }
    let r = s2
        .record_vote(&a.id, vote("a2@example.com", Decision::Approve), now)
        .await
        .unwrap();
    assert!(matches!(r, VoteResult::Approved(_)), "{r:?}");
}

/// Issue 11 item 4: the due-index brings a pending approval up when its next reminder is due
/// (not only at expiry), and a reminder claimed on one instance is not claimed again on
/// another; after the decision it is never due for a reminder again.
#[tokio::test]
async fn the_due_index_wakes_for_reminders_and_a_claim_happens_once() {
    use countersign::approval::nudge;
    let redis = RedisServer::start();
    let (s1, s2) = (store(&redis).await, store(&redis).await);
    let mut a = approval(1);
    a.held = false;
    a.nudges.remind_every = 10_000;
    s1.create(&a, &stored(), TTL).await.unwrap();
    let t = a.created_at;
    assert!(!due_ids(&s2, t + 9_999).await.contains(&a.id));
    assert!(due_ids(&s2, t + 10_000).await.contains(&a.id));
    let claim = |now: u64| move |x: &mut Approval| nudge::remind(x, now);
    assert!(matches!(
        s1.update(&a.id, &mut claim(t + 10_100)).await.unwrap(),
        Cas::Applied(x) if x.nudges.reminders == 1
    ));
    assert!(matches!(
        s2.update(&a.id, &mut claim(t + 10_200)).await.unwrap(),
        Cas::Conflict(x) if x.nudges.reminders == 1
    ));
    assert!(!due_ids(&s2, t + 19_999).await.contains(&a.id));
    assert!(due_ids(&s2, t + 20_000).await.contains(&a.id));
    s1.cancel(&a.id, "dev", "withdrawn", t + 20_100)
        .await
        .unwrap();
    assert!(!due_ids(&s2, t + 30_000).await.contains(&a.id));
}

/// Issue 13: the heartbeat. A replica notes each hold it takes and beats once a second for all
/// of them; another replica finds a silent one, cancels what it held (only what it still
/// holds), and forgets it, unless it beat again meanwhile (it was only stalled).
#[tokio::test]
async fn a_silent_holder_is_found_by_another_replica_and_its_holds_cancelled() {
    let redis = RedisServer::start();
    let (holder, other) = (store(&redis).await, store(&redis).await);
    let t0 = now_ms();
    let (a, b) = (created(&holder, 1).await, created(&holder, 1).await);
    for x in [&a, &b] {
        holder.set_held(&x.id, true).await.unwrap();
        holder
            .add_hold(&hold("r1", &x.id, t0 + 60_000), t0)
            .await
            .unwrap();
        holder
            .take_hold(&hold("r1", &x.id, t0 + 60_000))
            .await
            .unwrap();
    }
    // b was answered 202 before r1 died: not r1's to lose any more.
    holder.set_held(&b.id, false).await.unwrap();
    other.beat("r2", t0 + 100_000).await.unwrap();
    assert!(other.silent_holders(t0, 10).await.unwrap().is_empty());
    assert_eq!(
        other.silent_holders(t0 + 3_000, 10).await.unwrap(),
        vec![silent("r1", t0)]
    );
    let mut held = other.holds_of("r1", 10).await.unwrap();
    held.sort();
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(held, both);
    assert_eq!(other.holds_of("r1", 1).await.unwrap().len(), 1, "limited");
    assert!(
        matches!(
            other.cancel_lost_hold(&a.id, t0 + 3_000, Some("r2")).await.unwrap(),
            Cas::Conflict(x) if x.status == Status::Pending
        ),
        "only the dead holder's holds"
    );
    match other
        .cancel_lost_hold(&a.id, t0 + 3_000, Some("r1"))
        .await
        .unwrap()
    {
        Cas::Applied(x) => {
            assert_eq!(x.status, Status::Cancelled);
            assert_eq!(x.decision_reason.as_deref(), Some("holder_lost"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(
            other.cancel_lost_hold(&b.id, t0 + 3_000, Some("r1")).await.unwrap(),
            Cas::Conflict(x) if x.status == Status::Pending && !x.held
        ),
        "released: never lost"
    );

    // r1 beats again before the sweep forgets it (it was stalled): it stays.
    holder.beat("r1", t0 + 3_500).await.unwrap();
    other
        .forget_holds(&silent("r1", t0), &[a.id.clone(), b.id.clone()])
        .await
        .unwrap();
    assert!(other.holds_of("r1", 10).await.unwrap().is_empty());
    assert_eq!(
        other.silent_holders(t0 + 10_000, 10).await.unwrap(),
        vec![silent("r1", t0 + 3_500)]
    );
    // A hold it takes now is kept by a forget that does not name it.
    let c = created(&holder, 1).await;
    holder
        .add_hold(&hold("r1", &c.id, t0 + 60_000), t0 + 3_500)
        .await
        .unwrap();
    other
        .forget_holds(&silent("r1", t0 + 3_500), &[])
        .await
        .unwrap();
    assert_eq!(other.holds_of("r1", 10).await.unwrap(), vec![c.id.clone()]);
    assert_eq!(
        other.silent_holders(t0 + 10_000, 10).await.unwrap().len(),
        1
    );
    // Dealt with everything: forgotten.
    other
        .forget_holds(&silent("r1", t0 + 3_500), std::slice::from_ref(&c.id))
        .await
        .unwrap();
    assert!(other
        .silent_holders(t0 + 10_000, 10)
        .await
        .unwrap()
        .is_empty());

    // A beat drops holds whose backstop passed.
    holder
        .add_hold(&hold("r3", &c.id, t0 + 1_000), t0)
        .await
        .unwrap();
    holder.beat("r3", t0 + 2_000).await.unwrap();
    assert!(other.holds_of("r3", 10).await.unwrap().is_empty());
}
