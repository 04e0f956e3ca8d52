//! Cooldowns on the approval store's Redis (`break_glass_cooldown`, SPEC 9): one plain key per
//! running cooldown, `cs:cool:{sha256 of key}`, set with `SET NX PX` so exactly one replica
//! starts it. Owns that key family only; must not touch approval records.
//!
//! The marker is not sealed: its only meaning is "refuse for now", so a forged marker can only
//! make Countersign stricter. Someone who can write Redis can delete one (and end a cooldown
//! early), as they can delete any record; they cannot turn it into an allow.

use std::time::Duration;

use redis::Script;

use super::keys::ms;
use super::RedisStore;
use crate::approval::store::StoreError;

/// Starts the cooldown unless it runs. KEYS: marker. ARGV: ttl ms. Returns -1 when started,
/// else the milliseconds left (0 when Redis has no expiry on it: treated as running).
const START_LUA: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return -1 end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return 0 end
return left
";

static START: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(START_LUA));

/// Keys come from requester identities (any bytes, any length): stored as a fixed-size hash.
fn cooldown_key(key: &str) -> String {
    use sha2::Digest;
    format!(
        "cs:cool:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

impl RedisStore {
    /// [`crate::approval::ApprovalStore::start_cooldown`] on Redis.
    pub(super) async fn start_cooldown_here(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let mut c = self.conn().await?;
        let mut inv = START.prepare_invoke();
        inv.key(cooldown_key(key)).arg(ms(ttl).max(1));
        let left: i64 = self
            .call("cooldown", async { inv.invoke_async(&mut c).await })
            .await?;
        Ok(u64::try_from(left).ok().map(Duration::from_millis))
    }
}
