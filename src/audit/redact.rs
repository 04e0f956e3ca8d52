//! Hiding the `redact` JSON pointers of a rule (SPEC 4) before a body is shown anywhere:
//! the audit log, chat messages and the approval page all go through these helpers.

use serde_json::Value;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shown instead of a body that has redaction rules but cannot be parsed as JSON: without a
/// parse the pointers cannot be applied, so nothing of it is shown (fail closed).
pub const UNREDACTABLE_BODY: &str =
    "[body hidden: not JSON, so its redaction rules cannot be applied]";

/// Returns `value` with the value at each RFC 6901 JSON pointer replaced by `"[redacted]"`.
///
/// A pointer that matches nothing is ignored (the field is simply absent). The empty pointer
/// `""` means the whole document. A pointer that does not start with `/` is malformed; rather
/// than silently showing what it was meant to hide, the whole document is redacted.
pub fn redact_json(mut value: Value, pointers: &[String]) -> Value {
    for pointer in pointers {
        if pointer.is_empty() || !pointer.starts_with('/') {
            return Value::String(REDACTED.to_owned());
        }
        if let Some(target) = value.pointer_mut(pointer) {
            *target = Value::String(REDACTED.to_owned());
        }
    }
    value
}

/// A short, redacted, human-readable preview of a request body, at most `max_chars`
/// characters (plus `…` when cut).
///
/// With no redaction rules the body is shown as (lossy) UTF-8. With rules, the body must parse
/// as JSON; it is redacted and re-serialized compactly (object keys sorted), otherwise [`UNREDACTABLE_BODY`] is
/// returned instead of the body.
pub fn body_preview(body: &[u8], pointers: &[String], max_chars: usize) -> String {
    let text = if pointers.is_empty() {
        String::from_utf8_lossy(body).into_owned()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => redact_json(value, pointers).to_string(),
            Err(_) => return UNREDACTABLE_BODY.to_owned(),
        }
    };
    truncate_chars(text, max_chars)
}

/// Cuts on a character boundary so a preview is always valid UTF-8.
fn truncate_chars(text: String, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
