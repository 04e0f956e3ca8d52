//! [`ChatState`] on the approval store's Redis: posted chat copies (`cs:chat:{scope}:{id}`,
//! sealed like every record) and inbound chat events already handled (`cs:seen:...`). Owns
//! those two key families only; must not touch approval records.

use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::keys::ms;
use super::RedisStore;
use crate::approval::record::ApprovalId;
use crate::approval::store::{ChatState, StoreError};

/// Appends a chat copy and keeps the list at least the given TTL. KEYS: list. ARGV: copy, ttl
/// ms. One script, so a copy never exists without an expiry.
const ADD_COPY_LUA: &str = r"
redis.call('RPUSH', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
";

static ADD_COPY: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(ADD_COPY_LUA));

fn chat_key(scope: &str, id: &ApprovalId) -> String {
    format!("cs:chat:{scope}:{}", id.as_str())
}

/// Event keys come from the outside (long, any bytes): stored as a fixed-size hash.
fn seen_key(scope: &str, key: &str) -> String {
    use sha2::Digest;
    format!(
        "cs:seen:{scope}:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

#[async_trait]
impl ChatState for RedisStore {
    async fn add_copy(
        &self,
        scope: &str,
        id: &ApprovalId,
        copy: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        // Sealed like every other record: a copy names where a chat update (with the chat's
        // credentials) is sent, so a copy nobody sealed must never be used.
        let sealed = self.seal.seal(&format!("chat:{scope}"), id, copy);
        let mut c = self.conn().await?;
        let mut inv = ADD_COPY.prepare_invoke();
        inv.key(chat_key(scope, id)).arg(sealed).arg(ms(ttl));
        let _: i64 = self
            .call("add chat copy", async { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    async fn copies(&self, scope: &str, id: &ApprovalId) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        let key = chat_key(scope, id);
        let raw: Vec<String> = self
            .call("chat copies", async { c.lrange(&key, 0, -1).await })
            .await?;
        let kind = format!("chat:{scope}");
        Ok(raw
            .iter()
            .filter_map(|r| match self.seal.open(&kind, id, r) {
                Ok(copy) => Some(copy.to_owned()),
                Err(e) => {
                    // The other copies are still updated; this one is never used.
                    tracing::error!(approval_id = %id, scope, error = %e, "chat copy refused: failed its integrity check");
                    None
                }
            })
            .collect())
    }

    async fn first_seen(&self, scope: &str, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(seen_key(scope, key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms(ttl));
        let set: Option<String> = self
            .call("chat event", async { cmd.query_async(&mut c).await })
            .await?;
        Ok(set.is_some())
    }
}
