//! The line format and the hash chain: sealing a record into a line, and checking one line on
//! its own (its shape and its `hash`). Linking lines together (`seq`, `prev`) is done by the
//! callers, the writer and [`super::verify`], which know the line before.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::event::{Event, FieldValue};

/// `prev` of the first line: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The member that closes every line; everything before it is what the hash covers.
const HASH_MEMBER: &str = ",\"hash\":\"";

/// One line without its `hash`, in the order the members are written.
#[derive(Serialize)]
struct Record<'a> {
    ts: &'a str,
    seq: u64,
    event: &'a str,
    replica: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "details_empty")]
    details: Details<'a>,
    prev: &'a str,
}

/// `details` in insertion order (serde_json's map would sort the keys).
struct Details<'a>(&'a [(String, FieldValue)]);

fn details_empty(d: &Details<'_>) -> bool {
    d.0.is_empty()
}

impl Serialize for Details<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A line ready to be written, and the hash the next line must name as `prev`.
#[derive(Debug)]
pub(super) struct Sealed {
    /// The full line, ending with `\n`.
    pub line: String,
    /// Its `hash`.
    pub hash: String,
}

/// Where in the chain a new line goes and what it carries besides the event.
#[derive(Debug, Clone, Copy)]
pub(super) struct Position<'a> {
    pub ts: &'a str,
    pub seq: u64,
    pub replica: &'a str,
    pub prev: &'a str,
}

/// Serializes `event` at `at` and appends its `hash`.
pub(super) fn seal(event: &Event, at: Position<'_>) -> Result<Sealed, serde_json::Error> {
    let record = Record {
        ts: at.ts,
        seq: at.seq,
        event: &event.kind,
        replica: at.replica,
        approval_id: event.approval_id.as_deref(),
        request_id: event.request_id.as_deref(),
        actor: event.actor.as_deref(),
        rule: event.rule.as_deref(),
        details: Details(&event.details),
        prev: at.prev,
    };
    let body = serde_json::to_string(&record)?;
    let hash = chain_hash(at.prev, body.as_bytes());
    // A serialized struct always ends with its closing brace; reopen it to add `hash` last.
    let open = body.strip_suffix('}').ok_or_else(|| {
        <serde_json::Error as serde::ser::Error>::custom("record is not an object")
    })?;
    let line = format!("{open}{HASH_MEMBER}{hash}\"}}\n");
    Ok(Sealed { line, hash })
}

/// `hash` = lowercase hex SHA-256 of `prev` (64 ASCII hex characters) immediately followed by
/// the line's bytes without its `hash` member.
pub(super) fn chain_hash(prev: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// The members of a line, as read back. Unknown members are an error: nothing can be smuggled
/// into a line that the writer would not have produced.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Every member is parsed to check the shape; not all are used afterwards.
struct StoredRecord {
    ts: String,
    seq: u64,
    event: String,
    replica: String,
    approval_id: Option<String>,
    request_id: Option<String>,
    actor: Option<String>,
    rule: Option<String>,
    #[serde(default)]
    details: BTreeMap<String, serde_json::Value>,
    prev: String,
}

/// What the chain needs from a line that is sound on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LineLink {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
}

/// Checks one line (without its `\n`) on its own: shape, members, and that `hash` recomputes.
/// The error is a reason for a person reading `audit verify` output.
pub(super) fn check_line(line: &[u8]) -> Result<LineLink, String> {
    if line.is_empty() {
        return Err("empty line".to_owned());
    }
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    let (body, stated_hash) = split_hash(text)?;
    let record: StoredRecord =
        serde_json::from_str(&body).map_err(|e| format!("not a valid audit record: {e}"))?;
    check_members(&record)?;
    let computed = chain_hash(&record.prev, body.as_bytes());
    if computed != stated_hash {
        return Err(format!(
            "hash does not match the line's content (the line was altered): computed {computed}, line says {stated_hash}"
        ));
    }
    Ok(LineLink {
        seq: record.seq,
        prev: record.prev,
        hash: stated_hash.to_owned(),
    })
}

/// Splits `{...,"hash":"H"}` into the hashed body `{...}` and `H`.
fn split_hash(text: &str) -> Result<(String, &str), String> {
    let missing = || "no `hash` member at the end of the line".to_owned();
    let inner = text.strip_suffix("\"}").ok_or_else(missing)?;
    let at = inner.rfind(HASH_MEMBER).ok_or_else(missing)?;
    let hash = &inner[at + HASH_MEMBER.len()..];
    if !is_hex64(hash) {
        return Err("`hash` is not 64 lowercase hex digits".to_owned());
    }
    Ok((format!("{}}}", &inner[..at]), hash))
}

fn check_members(record: &StoredRecord) -> Result<(), String> {
    if !is_hex64(&record.prev) {
        return Err("`prev` is not 64 lowercase hex digits".to_owned());
    }
    if humantime::parse_rfc3339(&record.ts).is_err() {
        return Err(format!("`ts` is not an RFC 3339 UTC time: {:?}", record.ts));
    }
    if record.event.is_empty() {
        return Err("`event` is empty".to_owned());
    }
    match record
        .details
        .iter()
        .find(|(_, v)| !(v.is_string() || v.is_u64() || v.is_i64() || v.is_boolean()))
    {
        Some((name, _)) => Err(format!(
            "`details.{name}` is not a string, integer or boolean"
        )),
        None => Ok(()),
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
