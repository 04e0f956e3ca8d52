//! The tamper-evident audit log (SPEC 7): one JSON line per event, chained by SHA-256.
//!
//! Owns: the event builder and its redaction rules, the line format and hash chain, the single
//! fsyncing writer, and `audit verify`. Must not touch: approval state, chat, HTTP. Callers
//! build an [`Event`], `append` it, and acknowledge the step it records only after `append`
//! returned `Ok` (the line is then on disk).
//!
//! # Line format
//! Every line is one JSON object, written compactly (no spaces) and ended by `\n`, with its
//! members in this order (optional ones are left out when absent):
//!
//! | member | content |
//! |---|---|
//! | `ts` | time of writing, RFC 3339 UTC with milliseconds, `2026-11-28T15:55:32.123Z` |
//! | `seq` | 1 for the first line of the file, then +1 per line |
//! | `event` | `approval.requested`, `notify.sent`, `notify.failed`, `vote.cast`, `approval.approved`, `approval.denied`, `approval.expired`, `approval.cancelled`, `request.forwarded`, `policy.reloaded`, `policy.shadow`, ... |
//! | `replica` | which Countersign process wrote it |
//! | `approval_id`, `request_id`, `actor`, `rule` | optional strings |
//! | `details` | optional object of string, integer and boolean values, in the order added |
//! | `prev` | `hash` of the line before; 64 zeros on the first line |
//! | `hash` | see below; always the last member |
//!
//! # Hash
//! `hash` = lowercase hex SHA-256 over the 64 ASCII characters of `prev` immediately followed by
//! the line's *body*: the exact bytes of the line as written, with the final
//! `,"hash":"<64 hex>"` removed (so the body ends with `"prev":"<64 hex>"}`) and no newline.
//! The body is defined on bytes, not on re-serialized JSON, so any tool can recompute it.
//! The text `,"hash":"` cannot occur inside a JSON string (quotes in strings are escaped), so
//! its last occurrence is the hash member. An operator can check a file with bash, `jq` and
//! `sha256sum` (what `countersign audit verify` does, plus stricter checks of each line's shape):
//!
//! ```sh
//! prev=0000000000000000000000000000000000000000000000000000000000000000; n=0
//! while IFS= read -r line; do
//!   n=$((n + 1))
//!   body="${line%,\"hash\":\"*}}"                       # the line without its hash member
//!   hash=$(printf '%s%s' "$prev" "$body" | sha256sum | cut -d' ' -f1)
//!   [ "$(jq -r '"\(.seq) \(.prev) \(.hash)"' <<<"$line")" = "$n $prev $hash" ] \
//!     || { echo "line $n: bad"; break; }
//!   prev=$hash
//! done < audit.jsonl
//! ```
//!
//! The chain shows any edit, deletion, insertion or reordering *inside* the file. Cutting
//! whole lines off the end, or rewriting the tail with fresh hashes, is only visible against a
//! `last_hash` kept elsewhere (see [`VerifySummary`]).
//!
//! # Never in the log
//! Values are plain strings, integers and booleans; [`crate::secret::Secret`] cannot be passed.
//! Credential-like field names and token-like values are refused (see [`Event::field`]).
//! Request bodies go through [`redact_json`] / [`body_preview`] with the rule's `redact`
//! pointers before they are shown anywhere.

mod chain;
mod event;
mod redact;
mod verify;
pub mod webhook;
mod writer;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub use chain::GENESIS_HASH;
pub use event::{
    looks_like_credential_name, looks_like_token, Event, FieldValue, Refusal, RefusalReason,
};
pub use redact::{body_preview, redact_json, REDACTED, UNREDACTABLE_BODY};
pub use verify::{verify, VerifyError, VerifySummary};
pub use writer::AuditLog;

/// Why an event was not recorded. Whoever gets one must not acknowledge the step.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The event carried a field that must never be written (nothing was written).
    #[error("audit event refused: field `{field}`: {reason}")]
    Refused {
        /// The refused field's name.
        field: String,
        /// Why it was refused.
        reason: RefusalReason,
    },
    /// Writing or fsyncing the file failed; the log refuses every later event.
    #[error("audit log write failed: {0}")]
    Write(Arc<std::io::Error>),
    /// An earlier write failed, so nothing more is accepted until restart.
    #[error("audit log is unavailable after an earlier write failure")]
    Poisoned,
    /// The event could not be serialized (a bug).
    #[error("audit event could not be encoded: {0}")]
    Encode(String),
    /// The writer thread is gone.
    #[error("audit log writer has stopped")]
    Closed,
}

/// `countersign audit verify FILE`: prints `FILE: ok (N events, last seq S)` to stdout and
/// returns success, or prints `FILE:LINE: reason` (or `FILE: reason` when the file cannot be
/// read) to stderr and returns exit code 1.
pub fn verify_cli(path: impl AsRef<Path>) -> ExitCode {
    let path = path.as_ref();
    match verify(path) {
        Ok(summary) => {
            println!(
                "{}: ok ({} events, last seq {})",
                path.display(),
                summary.lines,
                summary.last_seq
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.line == 0 => {
            eprintln!("{}: {}", path.display(), e.reason);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}:{}: {}", path.display(), e.line, e.reason);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
