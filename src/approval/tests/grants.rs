//! Grants in the in-process store: uses are counted exactly once each (also under concurrent
//! callers), used-up, expired and revoked grants stop matching, and keys never cross.

use std::sync::Arc;

use crate::approval::grant::{lookup_key, Grant};
use crate::approval::store::memory::MemoryStore;
use crate::approval::store::ApprovalStore;

fn grant(uses_max: u32, expires_at: u64) -> Grant {
    crate::approval::grant::fixture(uses_max, expires_at)
}

#[tokio::test]
async fn concurrent_uses_never_exceed_the_limit() {
    let s = Arc::new(MemoryStore::new());
    let g = grant(3, u64::MAX);
    s.put_grant(&g).await.unwrap();
    let key = g.key();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, key) = (s.clone(), key.clone());
        tasks.push(tokio::spawn(
            async move { s.use_grant(&key, 1).await.unwrap() },
        ));
    }
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(passed, 3);
    let listed = s.grants(1).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uses, 3);
}

#[tokio::test]
async fn expired_revoked_and_other_keys_do_not_match() {
    let s = MemoryStore::new();
    let g = grant(5, 100);
    s.put_grant(&g).await.unwrap();
    let other = lookup_key(&g.requester, "r", "POST", "api", "/y");
    assert!(s.use_grant(&other, 1).await.unwrap().is_none());
    assert!(s.use_grant(&g.key(), 100).await.unwrap().is_none());
    let used = s.use_grant(&g.key(), 1).await.unwrap().unwrap();
    assert_eq!((used.id.as_str(), used.uses), (g.id.as_str(), 1));
    let revoked = s.revoke_grant(&g.id, "bob@example.com").await.unwrap();
    assert_eq!(
        revoked.unwrap().revoked_by.as_deref(),
        Some("bob@example.com")
    );
    assert!(s.use_grant(&g.key(), 2).await.unwrap().is_none());
    assert!(s.revoke_grant("gr_nope", "bob").await.unwrap().is_none());
}
