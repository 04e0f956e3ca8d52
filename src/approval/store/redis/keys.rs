//! Redis key names, the Lua scripts that write a record together with its indexes, and the
//! small argument helpers they share. Owns the on-Redis layout only (documented in
//! [`super`]); must not read or decide anything.

use std::time::Duration;

use super::super::StoreError;
use crate::approval::record::{Approval, ApprovalId};

/// Default bound on one Redis round trip.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often one state change re-reads after losing a race before giving up. Each lost round
/// means another writer won, so this only bounds pathological contention.
pub(super) const MAX_ATTEMPTS: usize = 256;

/// The channel every replica listens on.
pub(super) const CHANNEL: &str = "cs:changes";

/// The listing index.
pub(super) const INDEX: &str = "cs:idx";

/// The pending listing and count.
pub(super) const PENDING: &str = "cs:pending";

/// The due-index.
pub(super) const DUE: &str = "cs:due";

/// The store's epoch (see `Epoch` in the parent module).
pub(super) const EPOCH: &str = "cs:epoch";

/// The eviction index.
pub(super) const GC: &str = "cs:gc";

/// Creates an approval if its id is new, with its index entries. KEYS: apr, req, idx,
/// pending, preq, due, gc. ARGV: json, req json, ttl ms, created_at, id, pending (1/0), due
/// score ('' for none), evict at (unix ms).
pub(super) const CREATE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'ver', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[5])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[6], ARGV[7], ARGV[5]) end
redis.call('ZADD', KEYS[7], ARGV[8], ARGV[5])
return 1
";

/// Writes a new approval state if the version is unchanged, moves it in the indexes, then
/// publishes the id (unless the channel is '': a quiet write). KEYS: apr, pending, preq, due.
/// ARGV: expected ver, json, id, channel, pending (1/0), due score ('' for none). Returns 1
/// written, 0 lost race, -1 gone.
pub(super) const CAS_LUA: &str = r"
local v = redis.call('HGET', KEYS[1], 'ver')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'ver', tostring(tonumber(v) + 1))
if ARGV[5] ~= '1' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[3])
end
if ARGV[6] == '' then
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[3])
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[3]) end
return 1
";

/// Parks a result and keeps the approval and its request at least as long.
/// KEYS: apr, req, res, gc. ARGV: result json, ttl ms, id, until (unix ms). Returns 0 when the
/// approval is gone.
pub(super) const PARK_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ttl)
for _, k in ipairs({KEYS[1], KEYS[2]}) do
  local left = redis.call('PTTL', k)
  if left >= 0 and left < ttl then redis.call('PEXPIRE', k, ttl) end
end
local old = redis.call('ZSCORE', KEYS[4], ARGV[3])
if (not old) or tonumber(old) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
end
return 1
";

/// Ids due at or before now, oldest first, each leased until `later`. KEYS: due. ARGV: now,
/// limit, later.
pub(super) const DUE_LUA: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
";

/// Trims the indexes of records Redis expired: reads only ids due for eviction. KEYS: gc,
/// idx, pending, due. ARGV: now, limit. A record still alive (its TTL was extended) is
/// re-scored by its remaining TTL. Returns how many were dropped.
pub(super) const GC_LUA: &str = r"
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(ids) do
  local left = redis.call('PTTL', 'cs:apr:' .. id)
  if left > 0 then
    redis.call('ZADD', KEYS[1], now + left, id)
  else
    for _, k in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}) do redis.call('ZREM', k, id) end
    n = n + 1
  end
end
return n
";

/// The pending count of one requester, dropping entries whose record expired. KEYS: preq.
/// ARGV: now.
pub(super) const COUNT_LUA: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
";

/// How many entries one cleanup or due read takes at most.
pub(super) const BATCH: usize = 1000;

pub(super) fn err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("redis {context}: {e}"))
}

pub(super) fn tampered(kind: &str, id: &ApprovalId, why: impl std::fmt::Display) -> StoreError {
    StoreError::Tampered {
        record: format!("{kind} {id}"),
        why: why.to_string(),
    }
}

/// A TTL in milliseconds for Redis: at least 1 (0 would mean "no expiry" to some commands).
pub(super) fn ms(d: Duration) -> u64 {
    crate::clock::duration_ms(d).max(1)
}

pub(super) fn apr_key(id: &ApprovalId) -> String {
    format!("cs:apr:{}", id.as_str())
}

pub(super) fn req_key(id: &ApprovalId) -> String {
    format!("cs:req:{}", id.as_str())
}

pub(super) fn res_key(id: &ApprovalId) -> String {
    format!("cs:res:{}", id.as_str())
}

/// The per-requester pending index: hashed, so issuer and subject never appear in key names.
pub(super) fn preq_key(iss: &str, sub: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(iss.as_bytes());
    h.update([0u8]);
    h.update(sub.as_bytes());
    format!("cs:preq:{}", hex::encode(&h.finalize()[..16]))
}

/// A [`crate::approval::store::due_at`] as a Lua argument ('' for none).
pub(super) fn due_arg(a: &Approval) -> String {
    super::super::due_at(a)
        .map(|d| d.to_string())
        .unwrap_or_default()
}

pub(super) fn pending_arg(a: &Approval) -> &'static str {
    if a.status == crate::approval::record::Status::Pending {
        "1"
    } else {
        "0"
    }
}

/// Record kinds, as the MAC names them.
pub(super) const APPROVAL: &str = "approval";
pub(super) const REQUEST: &str = "request";
pub(super) const RESULT: &str = "result";
