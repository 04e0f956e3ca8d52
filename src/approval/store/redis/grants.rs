//! Grants on the approval store's Redis (SPEC 9, `grant`/`grant_uses`). Owns the grant key
//! family only; must not touch approval records.
//!
//! - `cs:grant:{id}`: `{approval id} {sealed grant}`, sealed like approvals (kind `grant`,
//!   bound to the approval that created it), so an edited grant (another requester, path,
//!   more uses, a later expiry) is refused. Expires with the grant.
//! - `cs:grant:n:{id}`: the uses so far, taken by one Lua script (check against the sealed
//!   `uses_max`, then `INCR`), so uses are counted exactly once across replicas.
//! - `cs:grant:r:{id}`: revoked marker, checked by the same script, so a revocation on one
//!   replica stops the next use on every replica.
//! - `cs:grants:k:{lookup key}`: set of grant ids per (requester, rule, method, host, path);
//!   `cs:grants`: sorted set of every grant id by expiry, for listing.
//!
//! Counters and markers are not sealed. Someone who can write Redis can delete a counter and
//! give a live grant back its uses (never more than `uses_max` at a time, never past its sealed
//! expiry, never to another request); they can already delete any record.

use redis::{AsyncCommands, Script};

use super::keys::{err, tampered};
use super::RedisStore;
use crate::approval::grant::Grant;
use crate::approval::record::ApprovalId;
use crate::approval::store::StoreError;

const KIND: &str = "grant";

/// Takes one use. KEYS: counter, revoked marker, record. ARGV: uses_max, ttl ms.
/// Returns the uses after this one, or -1 when used up, revoked or gone.
const USE_LUA: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return -1 end
n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
";

/// Stores a grant. KEYS: record, index, all. ARGV: sealed record, ttl ms, id, expires_at, now.
/// The index lives as long as its longest grant (no `PEXPIRE GT`: Redis 6 has none).
const PUT_LUA: &str = r"
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('SADD', KEYS[2], ARGV[3])
local left = redis.call('PTTL', KEYS[2])
if left < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
";

static PUT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(PUT_LUA));

static USE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(USE_LUA));

fn record_key(id: &str) -> String {
    format!("cs:grant:{id}")
}
fn count_key(id: &str) -> String {
    format!("cs:grant:n:{id}")
}
fn revoked_key(id: &str) -> String {
    format!("cs:grant:r:{id}")
}
fn index_key(lookup: &str) -> String {
    format!("cs:grants:k:{lookup}")
}
const ALL: &str = "cs:grants";

/// Grant ids are `gr_` and hex only: anything else never names a key.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("gr_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl RedisStore {
    fn seal_grant(&self, g: &Grant) -> Result<String, StoreError> {
        let aid = ApprovalId::parse(&g.approval_id)
            .ok_or_else(|| err("grant", "the grant names no approval"))?;
        let json = serde_json::to_string(g).map_err(|e| err("encoding grant", e))?;
        Ok(format!("{aid} {}", self.seal.seal(KIND, &aid, &json)))
    }

    /// The grant in `raw` under `id`, once its MAC verifies and it names `id`.
    fn open_grant(&self, id: &str, raw: &str) -> Result<Grant, StoreError> {
        let (aid, sealed) = raw
            .split_once(' ')
            .ok_or_else(|| err("grant", "malformed record"))?;
        let aid = ApprovalId::parse(aid).ok_or_else(|| err("grant", "malformed record"))?;
        let json = self
            .seal
            .open(KIND, &aid, sealed)
            .map_err(|e| tampered(KIND, &aid, e))?;
        let g: Grant = serde_json::from_str(json).map_err(|e| err("decoding grant", e))?;
        if g.id != id || g.approval_id != aid.as_str() {
            return Err(tampered(KIND, &aid, "moved to another key"));
        }
        Ok(g)
    }

    /// [`crate::approval::ApprovalStore::put_grant`] on Redis.
    pub(super) async fn put_grant_here(&self, g: &Grant, now: u64) -> Result<(), StoreError> {
        if !valid_id(&g.id) {
            return Err(err("grant", "malformed grant id"));
        }
        let ttl = g.expires_at.saturating_sub(now).max(1);
        let raw = self.seal_grant(g)?;
        let mut c = self.conn().await?;
        let mut inv = PUT.prepare_invoke();
        inv.key(record_key(&g.id))
            .key(index_key(&g.key()))
            .key(ALL)
            .arg(raw)
            .arg(ttl)
            .arg(&g.id)
            .arg(g.expires_at)
            .arg(now);
        self.call("put grant", async { inv.invoke_async::<()>(&mut c).await })
            .await?;
        self.durable(&mut c).await
    }

    /// The grant `id` with its current uses, `None` when gone; errors when tampered.
    async fn read_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let mut c = self.conn().await?;
        let (raw, uses, revoked): (Option<String>, Option<u32>, bool) = self
            .call("read grant", async {
                redis::pipe()
                    .get(record_key(id))
                    .get(count_key(id))
                    .exists(revoked_key(id))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let mut g = self.open_grant(id, &raw)?;
        g.uses = uses.unwrap_or(0).min(g.uses_max);
        if revoked && g.revoked_by.is_none() {
            g.revoked_by = Some("unknown".into());
        }
        Ok(Some(g))
    }

    /// [`crate::approval::ApprovalStore::use_grant`] on Redis.
    pub(super) async fn use_grant_here(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<Grant>, StoreError> {
        let mut c = self.conn().await?;
        let mut ids: Vec<String> = self
            .call("grant index", async { c.smembers(index_key(key)).await })
            .await?;
        ids.sort();
        for id in ids {
            let g = match self.read_grant(&id).await {
                Ok(Some(g)) => g,
                Ok(None) => continue,
                Err(e) => {
                    // A tampered grant is refused; the request is held as usual.
                    tracing::warn!(grant_id = %id, error = %e, "grant refused");
                    continue;
                }
            };
            if g.key() != key || !g.is_live(now) {
                continue;
            }
            let mut inv = USE.prepare_invoke();
            inv.key(count_key(&id))
                .key(revoked_key(&id))
                .key(record_key(&id))
                .arg(g.uses_max)
                .arg(g.expires_at.saturating_sub(now).max(1));
            let n: i64 = self
                .call("use grant", async { inv.invoke_async(&mut c).await })
                .await?;
            if let Ok(n) = u32::try_from(n) {
                self.durable(&mut c).await?;
                return Ok(Some(Grant { uses: n, ..g }));
            }
        }
        Ok(None)
    }

    /// [`crate::approval::ApprovalStore::grants`] on Redis.
    pub(super) async fn grants_here(&self, now: u64) -> Result<Vec<Grant>, StoreError> {
        let mut c = self.conn().await?;
        let ids: Vec<String> = self
            .call("grant list", async {
                c.zrangebyscore_limit(ALL, format!("({now}"), "+inf", 0, 1000)
                    .await
            })
            .await?;
        let mut out = Vec::new();
        for id in ids {
            match self.read_grant(&id).await {
                Ok(Some(g)) => out.push(g),
                Ok(None) => {}
                Err(e) => tracing::warn!(grant_id = %id, error = %e, "grant refused"),
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// [`crate::approval::ApprovalStore::revoke_grant`] on Redis: the marker first (it alone
    /// stops uses on every replica), then the sealed record notes who revoked it.
    pub(super) async fn revoke_grant_here(
        &self,
        id: &str,
        by: &str,
        now: u64,
    ) -> Result<Option<Grant>, StoreError> {
        let Some(mut g) = self.read_grant(id).await? else {
            return Ok(None);
        };
        if g.revoked_by.as_deref().is_some_and(|r| r != "unknown") {
            return Ok(Some(g));
        }
        g.revoked_by = Some(by.to_owned());
        let ttl = g.expires_at.saturating_sub(now).max(1);
        let uses = g.uses;
        let raw = self.seal_grant(&Grant {
            uses: 0,
            ..g.clone()
        })?;
        let mut c = self.conn().await?;
        self.call("revoke grant", async {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(revoked_key(id))
                .arg(by)
                .arg("PX")
                .arg(ttl)
                .ignore()
                .cmd("SET")
                .arg(record_key(id))
                .arg(raw)
                .arg("KEEPTTL")
                .arg("XX")
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.durable(&mut c).await?;
        Ok(Some(Grant { uses, ..g }))
    }
}
