//! The chat state on a real `redis-server` (issue 13 item 2): posted copies and handled-event
//! keys written through one store instance are seen through another (two connections, like
//! two replicas), both carry the TTLs asked for, a replay race has exactly one winner, and an
//! unreachable Redis is an error (callers fail closed), never a "first seen".

mod common;

use std::process::Command;
use std::time::Duration;

use countersign::approval::store::{ChatState, RedisStore};
use countersign::approval::{ApprovalId, RecordSeal};
use std::sync::Arc;

use common::RedisServer;

/// Two store instances with the keys every replica derives from the shared signing key.
async fn two_replicas(redis: &RedisServer) -> (RedisStore, RedisStore) {
    let seal = Arc::new(RecordSeal::derive_from(b"shared signing key"));
    (
        RedisStore::connect(&redis.url())
            .await
            .expect("connect a")
            .with_seal(seal.clone()),
        RedisStore::connect(&redis.url())
            .await
            .expect("connect b")
            .with_seal(seal),
    )
}

/// Remaining TTL of `key` in ms, read with a plain client.
async fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .expect("PTTL")
}

async fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut c)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn copies_added_on_one_replica_are_read_on_the_other_in_order_with_their_ttl() {
    let redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    let id = ApprovalId::generate();
    let ten_minutes = Duration::from_secs(600);
    a.add_copy("slack", &id, "{\"n\":1}", ten_minutes)
        .await
        .unwrap();
    b.add_copy("slack", &id, "{\"n\":2}", Duration::from_secs(60))
        .await
        .unwrap();
    a.add_copy("teams", &id, "card", ten_minutes).await.unwrap();
    assert_eq!(
        b.copies("slack", &id).await.unwrap(),
        ["{\"n\":1}", "{\"n\":2}"]
    );
    assert_eq!(a.copies("teams", &id).await.unwrap(), ["card"]);
    assert!(a
        .copies("slack", &ApprovalId::generate())
        .await
        .unwrap()
        .is_empty());

    // The shorter TTL of the second copy did not shorten the list's life; a longer one extends it.
    let key = format!("cs:chat:slack:{}", id.as_str());
    let left = pttl(&redis, &key).await;
    assert!((590_000..=600_000).contains(&left), "PTTL {left}");
    b.add_copy("slack", &id, "{\"n\":3}", Duration::from_secs(900))
        .await
        .unwrap();
    let left = pttl(&redis, &key).await;
    assert!((890_000..=900_000).contains(&left), "PTTL {left}");

    // And it goes when its TTL runs out.
    let short = ApprovalId::generate();
    a.add_copy("slack", &short, "x", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(b.copies("slack", &short).await.unwrap(), ["x"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.copies("slack", &short).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_event_is_first_seen_once_across_replicas_until_its_ttl_runs_out() {
    let redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    let ttl = Duration::from_secs(600);
    assert!(a
        .first_seen("slack", "UALICE:trigger-1", ttl)
        .await
        .unwrap());
    assert!(!b
        .first_seen("slack", "UALICE:trigger-1", ttl)
        .await
        .unwrap());
    assert!(!a
        .first_seen("slack", "UALICE:trigger-1", ttl)
        .await
        .unwrap());
    // Scopes are apart.
    assert!(b
        .first_seen("teams", "UALICE:trigger-1", ttl)
        .await
        .unwrap());

    // The key is stored hashed (fixed size whatever comes in) with the TTL asked for.
    let long_key = "x".repeat(10_000);
    assert!(a.first_seen("teams", &long_key, ttl).await.unwrap());
    let stored = keys(&redis, "cs:seen:teams:*").await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored
        .iter()
        .all(|k| k.len() == "cs:seen:teams:".len() + 64));
    for k in &stored {
        let left = pttl(&redis, k).await;
        assert!((590_000..=600_000).contains(&left), "PTTL {left} of {k}");
    }

    // Twenty deliveries of one event racing on both replicas: exactly one wins.
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let racers = (0..20).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { store.first_seen("teams", "race", ttl).await.unwrap() })
    });
    let wins = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().expect("racer"))
        .count();
    assert_eq!(wins, 1);

    // Remembered only for its TTL.
    let short = Duration::from_millis(300);
    assert!(a.first_seen("slack", "short", short).await.unwrap());
    assert!(!b.first_seen("slack", "short", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.first_seen("slack", "short", short).await.unwrap());
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_first_sighting() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url())
        .await
        .expect("connect")
        .with_timeout(Duration::from_millis(300));
    let id = ApprovalId::generate();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &redis.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} redis");
    };
    signal("-STOP");
    let seen = store
        .first_seen("slack", "k", Duration::from_secs(60))
        .await;
    let added = store
        .add_copy("slack", &id, "x", Duration::from_secs(60))
        .await;
    let read = store.copies("slack", &id).await;
    signal("-CONT");
    assert!(seen.is_err(), "{seen:?}");
    assert!(added.is_err(), "{added:?}");
    assert!(read.is_err(), "{read:?}");
    // Back. The timed-out SET may still have reached Redis, so "k" may count as seen now: a
    // click whose check failed is never acted on, and its user clicks again (a new event).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store
            .first_seen("slack", "k2", Duration::from_secs(60))
            .await
        {
            Ok(first) => {
                assert!(first);
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_copy_written_into_redis_by_someone_else_is_never_used() {
    let redis = RedisServer::start();
    let (a, _) = two_replicas(&redis).await;
    let id = ApprovalId::generate();
    let ttl = Duration::from_secs(600);
    a.add_copy(
        "teams",
        &id,
        "{\"service_url\":\"https://smba.example\"}",
        ttl,
    )
    .await
    .unwrap();
    // An attacker with Redis access appends a copy pointing elsewhere.
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let key = keys(&redis, "cs:chat:teams:*")
        .await
        .pop()
        .expect("copies key");
    let _: i64 = redis::cmd("RPUSH")
        .arg(&key)
        .arg("{\"service_url\":\"https://attacker.example\"}")
        .query_async(&mut c)
        .await
        .expect("RPUSH");
    assert_eq!(
        a.copies("teams", &id).await.unwrap(),
        vec!["{\"service_url\":\"https://smba.example\"}".to_owned()]
    );
}
