//! What approvers are shown of a held request: the body preview (redacted, cut at
//! [`PREVIEW_MAX`]), its SHA-256, and the replayed headers with credentials masked. Pure
//! functions, no I/O. Owns the approver-facing rendering of request bytes; must not decide
//! anything about the lifecycle.

use sha2::{Digest, Sha256};

use super::record::{ShownHeader, StoredHeader};

/// Largest body preview, in bytes.
pub const PREVIEW_MAX: usize = 2048;
/// Appended when a preview was cut.
const ELLIPSIS: &str = " …";
/// What replaces a redacted JSON value (the audit log's marker).
pub use crate::audit::REDACTED;

/// A preview of `body` for approvers: at most [`PREVIEW_MAX`] bytes of UTF-8
/// ([`body_preview_of`] without whether it was cut).
pub fn body_preview(body: &[u8], content_type: Option<&str>, redact: &[String]) -> String {
    body_preview_of(body, content_type, redact).0
}

/// A preview of `body` for approvers, and whether it shows less than the whole body (cut at
/// [`PREVIEW_MAX`], or not shown at all); approvers are then shown the full size and SHA-256.
///
/// A body is shown as sent, byte for byte, unless a `redact` pointer matches: then the JSON is
/// re-serialised (keys sorted, whitespace dropped) with every matching value replaced by
/// `"[redacted]"` before anything is cut. When the rule redacts fields but the body is not
/// parseable JSON, nothing of it is shown: a redacted value must never leak through a body the
/// redaction could not understand.
pub fn body_preview_of(
    body: &[u8],
    content_type: Option<&str>,
    redact: &[String],
) -> (String, bool) {
    if body.is_empty() {
        return (String::new(), false);
    }
    let json_type = content_type
        .map(|c| c.to_ascii_lowercase().contains("json"))
        .unwrap_or(false);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) if json_type || value.is_object() || value.is_array() => {
            let mut redacted = false;
            for pointer in redact {
                if let Some(slot) = value.pointer_mut(pointer) {
                    *slot = serde_json::Value::String(REDACTED.to_owned());
                    redacted = true;
                }
            }
            match std::str::from_utf8(body) {
                Ok(text) if !redacted => truncate(text.to_owned()),
                _ => truncate(serde_json::to_string(&value).unwrap_or_default()),
            }
        }
        _ if !redact.is_empty() => (
            format!(
                "[body not shown: {} bytes, not JSON, rule redacts fields]",
                body.len()
            ),
            true,
        ),
        _ => match std::str::from_utf8(body) {
            Ok(text) => truncate(text.to_owned()),
            Err(_) => (format!("[binary body, {} bytes]", body.len()), true),
        },
    }
}

/// Hex SHA-256 of `body`, shown beside a cut preview so approvers can check what is sent.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn truncate(mut s: String) -> (String, bool) {
    if s.len() <= PREVIEW_MAX {
        return (s, false);
    }
    let mut cut = PREVIEW_MAX - ELLIPSIS.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(ELLIPSIS);
    (s, true)
}

/// Every header that will be replayed, in order, credential values masked: `Authorization`
/// keeps its scheme (`Bearer [masked, 812 bytes]`), `Cookie` its cookie names.
pub fn shown_headers(headers: &[StoredHeader]) -> Vec<ShownHeader> {
    headers
        .iter()
        .map(|h| ShownHeader {
            name: h.name.clone(),
            value: shown_value(h),
        })
        .collect()
}

fn shown_value(h: &StoredHeader) -> String {
    let text = String::from_utf8_lossy(&h.value);
    let masked = |n: usize| format!("[masked, {n} bytes]");
    match h.name.as_str() {
        "authorization" | "proxy-authorization" => match text.split_once(' ') {
            Some((scheme, rest)) => format!("{scheme} {}", masked(rest.len())),
            None => masked(h.value.len()),
        },
        "cookie" => text
            .split(';')
            .map(|c| match c.split_once('=') {
                Some((name, v)) => format!("{}={}", name.trim(), masked(v.len())),
                None => masked(c.len()),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => text.into_owned(),
    }
}
