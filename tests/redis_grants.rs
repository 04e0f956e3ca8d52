//! Grants on a real `redis-server` (SPEC 9): two store instances (two replicas) share one
//! use count, so concurrent uses across both never exceed `grant_uses`; a revocation on one
//! stops the next use on the other; an edited grant record is refused.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use countersign::approval::grant::Grant;
use countersign::approval::*;

use common::RedisServer;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn seal() -> Arc<RecordSeal> {
    Arc::new(RecordSeal::derive_from(b"test signing key material"))
}

async fn store(redis: &RedisServer) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(&redis.url())
            .await
            .expect("connect")
            .with_seal(seal()),
    )
}

fn grant(uses_max: u32) -> Grant {
    let now = now_ms();
    Grant {
        id: Grant::generate_id(),
        rule: "prod-deploy".into(),
        requester: Requester {
            iss: "https://idp".into(),
            sub: "u1".into(),
            email: Some("dev@example.com".into()),
        },
        method: "POST".into(),
        host: "deploy.example.com".into(),
        path: "/v1/deployments/production".into(),
        approval_id: ApprovalId::generate().to_string(),
        approvers: vec!["lead@example.com".into()],
        approvers_of_rule: vec!["lead@example.com".into()],
        created_at: now,
        expires_at: now + 60_000,
        uses_max,
        uses: 0,
        revoked_by: None,
    }
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
async fn uses_are_counted_across_replicas_exactly() {
    let redis = RedisServer::start();
    let (a, b) = (store(&redis).await, store(&redis).await);
    let g = grant(3);
    a.put_grant(&g).await.unwrap();
    let key = g.key();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            s.use_grant(&key, now_ms()).await.unwrap()
        }));
    }
    let mut uses = Vec::new();
    for t in tasks {
        if let Some(g) = t.await.unwrap() {
            uses.push(g.uses);
        }
    }
    uses.sort_unstable();
    assert_eq!(uses, [1, 2, 3]);
    let listed = b.grants(now_ms()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].uses), (g.id.as_str(), 3));
    // Another path is another key.
    let other = grant::lookup_key(&g.requester, &g.rule, "POST", &g.host, "/v1/other");
    assert!(a.use_grant(&other, now_ms()).await.unwrap().is_none());
}

#[tokio::test]
async fn revocation_on_one_replica_stops_the_next_use_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = (store(&redis).await, store(&redis).await);
    let g = grant(5);
    a.put_grant(&g).await.unwrap();
    assert!(b.use_grant(&g.key(), now_ms()).await.unwrap().is_some());
    let revoked = a.revoke_grant(&g.id, "lead@example.com").await.unwrap();
    assert_eq!(
        revoked.unwrap().revoked_by.as_deref(),
        Some("lead@example.com")
    );
    assert!(b.use_grant(&g.key(), now_ms()).await.unwrap().is_none());
    let listed = b.grants(now_ms()).await.unwrap();
    assert_eq!(listed[0].revoked_by.as_deref(), Some("lead@example.com"));
    assert_eq!(listed[0].uses, 1);
    assert!(a.revoke_grant("gr_nope", "x").await.unwrap().is_none());
}

#[tokio::test]
async fn an_edited_grant_is_refused() {
    let redis = RedisServer::start();
    let s = store(&redis).await;
    let g = grant(5);
    s.put_grant(&g).await.unwrap();
    let key = format!("cs:grant:{}", g.id);
    let raw = redis_cli(&redis, &["GET", &key]);
    let forged = raw.replace("\"uses_max\":5", "\"uses_max\":500");
    assert_ne!(raw, forged);
    redis_cli(&redis, &["SET", &key, &forged, "KEEPTTL"]);
    assert!(s.use_grant(&g.key(), now_ms()).await.unwrap().is_none());
    assert!(s.grants(now_ms()).await.unwrap().is_empty());
}
