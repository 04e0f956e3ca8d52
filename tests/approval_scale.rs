//! The store indexes that keep periodic work O(what is due) with many pending approvals
//! (issue 12 target 3, issue 13 item 3), on both backends: the due-index a sweep reads, the
//! paged listing behind `GET /approvals`, and the pending counts behind the gauge and
//! `max_pending_per_requester`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{RecordingAudit, RedisServer};
use countersign::approval::store::Cursor;
use countersign::approval::*;
use countersign::clock::{SharedClock, SystemClock};
use countersign::policy::ApproveVia;

const TTL: Duration = Duration::from_secs(7200);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn approval(created_at: u64, expires_at: u64, sub: &str) -> Approval {
    Approval {
        id: ApprovalId::generate(),
        rule: "prod-deploy".into(),
        requester: Requester {
            iss: "https://idp".into(),
            sub: sub.into(),
            email: None,
        },
        method: "POST".into(),
        host: "deploy.example.com".into(),
        path: "/v1/deploy".into(),
        query: None,
        request_hash: "00".into(),
        reason: None,
        body_preview: "{}".into(),
        body_len: 2,
        body_preview_cut: false,
        body_sha256: String::new(),
        headers: Vec::new(),
        approvers: vec!["alice@example.com".into()],
        quorum: 1,
        quorum_entries: Vec::new(),
        self_approval: false,
        approve_via: ApproveVia::Button,
        notify: vec![],
        created_at,
        expires_at,
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
    StoredRequest::new(
        &http::Method::POST,
        "deploy.example.com",
        "/v1/deploy",
        None,
        &http::HeaderMap::new(),
        b"{}".to_vec(),
        "deploy-api",
        "u1",
    )
}

fn broker(store: Arc<dyn ApprovalStore>) -> Broker {
    Broker::new(
        store,
        Arc::new(LogNotifier),
        Arc::new(RecordingAudit::default()),
        Arc::new(SystemClock) as SharedClock,
        Arc::new(ApprovalSigner::generate().unwrap()),
        Arc::new(Executor::new(Duration::from_secs(5))),
        BTreeMap::new(),
    )
}

/// 2,000 pending approvals not due for an hour and one overdue: the due-index hands out only
/// the overdue one (and leases it, so the next read does not), and a sweep expires exactly it.
async fn due_index_finds_the_one_overdue_among_many(store: Arc<dyn ApprovalStore>) {
    let now = now_ms();
    for i in 0..2000 {
        let a = approval(now - 10 + i % 7, now + 3_600_000, "many");
        store.create(&a, &stored(), TTL).await.unwrap();
    }
    let overdue = approval(now - 5000, now - 1, "late");
    store.create(&overdue, &stored(), TTL).await.unwrap();

    let due = store.due(now, 100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(due, vec![overdue.id.clone()], "only the overdue one is due");
    assert!(
        store
            .due(now, 100, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "a due id is leased: not handed out again before its retry time"
    );
    assert_eq!(store.count_pending(None).await.unwrap(), 2001);

    // The lease does not hide it from the sweep's own logic once it is due again.
    let again = store
        .due(now + 61_000, 100, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again, vec![overdue.id.clone()]);

    // A fresh overdue one: the broker's sweep expires exactly it and nothing else.
    let late = approval(now - 5000, now - 1, "late");
    store.create(&late, &stored(), TTL).await.unwrap();
    let report = broker(store.clone()).sweep().await;
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(
        store.get(&late.id).await.unwrap().unwrap().status,
        Status::Expired
    );
    assert_eq!(
        store.count_pending(None).await.unwrap(),
        2001,
        "2,000 not due and the leased overdue one"
    );
    assert_eq!(
        store
            .count_pending(Some(("https://idp", "late")))
            .await
            .unwrap(),
        1,
        "the leased one is still pending: only the swept one left the count"
    );
    // Expired: out of the due-index for good.
    assert!(store
        .due(now + 3_000_000, 100, Duration::from_secs(60))
        .await
        .unwrap()
        .iter()
        .all(|id| id != &late.id));
}

/// 57 approvals, many sharing a `created_at` (ties across page boundaries): paging with
/// `list_page` returns each exactly once, newest first; the pending listing skips decided ones.
async fn pages_return_every_approval_exactly_once(store: Arc<dyn ApprovalStore>) {
    let now = now_ms();
    let mut all = Vec::new();
    for i in 0..57u64 {
        let a = approval(now - 1000 + i / 5, now + 3_600_000, &format!("u{}", i % 3));
        store.create(&a, &stored(), TTL).await.unwrap();
        all.push(a);
    }
    for a in all.iter().step_by(4) {
        store.cancel(&a.id, "t", "test", now).await.unwrap();
    }
    for (filter, want) in [
        (ListFilter::All, all.len()),
        (ListFilter::Pending, all.len() - all.len().div_ceil(4)),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<Cursor> = None;
        let mut pages = 0;
        loop {
            let page = store.list_page(filter, cursor.as_ref(), 7).await.unwrap();
            assert!(page.items.len() <= 7);
            seen.extend(page.items.iter().map(|a| (a.created_at, a.id.clone())));
            pages += 1;
            assert!(pages < 100, "paging does not end");
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let unique: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{filter:?}: an approval came twice"
        );
        assert_eq!(seen.len(), want, "{filter:?}: every approval, once");
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted, "{filter:?}: newest first, ties by id");
    }
    for (sub, n) in [("u0", 19), ("u1", 19), ("u2", 19)] {
        let cancelled = all
            .iter()
            .step_by(4)
            .filter(|a| a.requester.sub == sub)
            .count();
        assert_eq!(
            store
                .count_pending(Some(("https://idp", sub)))
                .await
                .unwrap(),
            n - cancelled,
            "pending of {sub}"
        );
    }
}

#[tokio::test]
async fn memory_due_index_finds_the_one_overdue_among_many() {
    due_index_finds_the_one_overdue_among_many(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redis_due_index_finds_the_one_overdue_among_many() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    due_index_finds_the_one_overdue_among_many(Arc::new(store)).await;
}

#[tokio::test]
async fn memory_pages_return_every_approval_exactly_once() {
    pages_return_every_approval_exactly_once(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redis_pages_return_every_approval_exactly_once() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    pages_return_every_approval_exactly_once(Arc::new(store)).await;
}

/// Redis: records Redis expired natively leave the indexes through cleanup, which reads only
/// the eviction index (not every id).
#[tokio::test]
async fn redis_cleanup_drops_index_entries_of_expired_records() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let now = now_ms();
    let keep = approval(now, now + 3_600_000, "k");
    store.create(&keep, &stored(), TTL).await.unwrap();
    let gone = approval(now, now + 50, "g");
    store
        .create(&gone, &stored(), Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.count_pending(None).await.unwrap(),
        2,
        "before cleanup"
    );
    assert_eq!(store.cleanup(now_ms()).await.unwrap(), 1);
    assert_eq!(store.count_pending(None).await.unwrap(), 1);
    assert_eq!(
        store
            .count_pending(Some(("https://idp", "g")))
            .await
            .unwrap(),
        0
    );
    let ids: Vec<_> = store
        .list(ListFilter::All, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, vec![keep.id]);
    assert!(store
        .due(now_ms() + 10_000_000, 10, Duration::from_secs(1))
        .await
        .unwrap()
        .iter()
        .all(|id| id != &gone.id));
}
