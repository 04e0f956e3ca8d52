//! Holders on the approval store's Redis (the hold lease, issue 13). Owns two key families
//! only; must not touch approval records (what a dead holder means for a record is
//! [`crate::approval::transition::cancel_lost_hold`]'s call, made by a sweep).
//!
//! - `cs:holders`: sorted set of replica instance ids by last heartbeat (unix ms); each
//!   replica `ZADD`s itself once per [`crate::approval::transition::HEARTBEAT_EVERY`].
//! - `cs:held:{instance}`: sorted set of the approval ids that replica holds a caller for, by
//!   backstop (end of hold + lease). Added to when a hold starts; pruned by its owner's beat
//!   once the backstop passed; emptied by the sweep that found the owner dead.
//!
//! So a held caller costs one `ZADD` when its hold starts and nothing while it waits; the
//! heartbeat costs two commands per replica per second, however many callers it holds.
//! Neither is sealed: someone who can write Redis can make a live replica look dead (its held
//! requests are then cancelled, never run) or a dead one look alive (its held requests are
//! then cancelled at their backstop instead, never run): both fail closed.

use async_trait::async_trait;
use redis::Script;

use super::RedisStore;
use crate::approval::record::ApprovalId;
use crate::approval::store::{Hold, Holders, Silent, StoreError};

const HOLDERS: &str = "cs:holders";

fn held_key(holder: &str) -> String {
    format!("cs:held:{holder}")
}

/// Forgets dealt-with ids of a dead holder, then the holder if it holds nothing more and has
/// not beaten since. KEYS: held set, holders. ARGV: holder, last beat, ids...
const FORGET_LUA: &str = r"
for i = 3, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
local beat = redis.call('ZSCORE', KEYS[2], ARGV[1])
if beat and tonumber(beat) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
";

static FORGET: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(FORGET_LUA));

#[async_trait]
impl Holders for RedisStore {
    /// Two commands in one round trip.
    async fn beat(&self, holder: &str, now: u64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.call("heartbeat", async {
            redis::pipe()
                .zadd(HOLDERS, holder, now)
                .ignore()
                .zrembyscore(held_key(holder), "-inf", format!("({now}"))
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Made durable like a record write: a failover must not forget a hold whose holder then
    /// dies.
    async fn add_hold(&self, hold: &Hold<'_>, now: u64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.call("add hold", async {
            redis::pipe()
                .atomic()
                .zadd(held_key(hold.holder), hold.id.as_str(), hold.backstop)
                .ignore()
                .zadd(HOLDERS, hold.holder, now)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.durable(&mut c).await
    }

    async fn silent_holders(&self, since: u64, limit: usize) -> Result<Vec<Silent>, StoreError> {
        let mut c = self.conn().await?;
        let limit = isize::try_from(limit).unwrap_or(isize::MAX);
        let silent: Vec<(String, u64)> = self
            .call("silent holders", async {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(HOLDERS)
                    .arg("-inf")
                    .arg(format!("({since}"))
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(silent
            .into_iter()
            .map(|(holder, last_beat)| Silent { holder, last_beat })
            .collect())
    }

    async fn holds_of(&self, holder: &str, limit: usize) -> Result<Vec<ApprovalId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let stop = isize::try_from(limit - 1).unwrap_or(isize::MAX);
        let ids: Vec<String> = self
            .call("holds", async {
                redis::cmd("ZRANGE")
                    .arg(held_key(holder))
                    .arg(0)
                    .arg(stop)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // Anything that is not an approval id names nothing: skipped.
        Ok(ids.iter().filter_map(|id| ApprovalId::parse(id)).collect())
    }

    /// In one script.
    async fn forget_holds(&self, silent: &Silent, ids: &[ApprovalId]) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let mut inv = FORGET.prepare_invoke();
        inv.key(held_key(&silent.holder))
            .key(HOLDERS)
            .arg(&silent.holder)
            .arg(silent.last_beat);
        for id in ids {
            inv.arg(id.as_str());
        }
        self.call("forget holds", async {
            inv.invoke_async::<i64>(&mut c).await
        })
        .await
        .map(drop)
    }
}
