//! What one audit event says, and the rules that keep credentials out of it.
//!
//! An [`Event`] is built by the code that performs a step (`Event::new("vote.cast")...`) and
//! handed to [`super::AuditLog::append`]. Values are plain strings, integers and booleans only:
//! [`FieldValue`] has no conversion from [`crate::secret::Secret`] (which is not `Serialize`
//! either), so a secret cannot be passed by accident. Fields whose *name* looks like a
//! credential, and values that look like a bearer token or a JWT, are dropped when they are
//! added and make `append` fail, so the mistake is loud and nothing reaches the disk.

use std::fmt;

use serde::Serialize;

/// One plain value in an event's `details`.
///
/// There is deliberately no `From<Secret>` and no floating point: durations and sizes are
/// recorded as integers (milliseconds, bytes), so every line has one exact textual form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A string.
    Str(String),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A boolean.
    Bool(bool),
}

/// `From` each listed type into one variant, through the lossless `From` of the variant's own
/// type (`usize` has no such conversion into `u64`: it saturates, below).
macro_rules! field_value_from {
    ($variant:ident($inner:ty): $($t:ty),*) => {$(
        impl From<$t> for FieldValue {
            fn from(v: $t) -> Self {
                FieldValue::$variant(<$inner>::from(v))
            }
        }
    )*};
}
field_value_from!(Str(String): &str, String, &String);
field_value_from!(Int(i64): i8, i16, i32, i64);
field_value_from!(UInt(u64): u8, u16, u32, u64);
field_value_from!(Bool(bool): bool);

impl From<usize> for FieldValue {
    fn from(v: usize) -> Self {
        // usize is at most 64 bits on every supported target; saturate rather than panic.
        FieldValue::UInt(u64::try_from(v).unwrap_or(u64::MAX))
    }
}

/// Why a field was dropped from an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The field name looks like a credential (`token`, `password`, `cookie`, ...).
    CredentialName,
    /// The value looks like a bearer token, a basic-auth header or a JWT.
    TokenLikeValue,
    /// The field or event name is empty, too long, or uses characters outside `[A-Za-z0-9_.-]`.
    BadName,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalReason::CredentialName => "the name looks like a credential",
            RefusalReason::TokenLikeValue => "the value looks like a token",
            RefusalReason::BadName => "the name is empty, too long or has unusual characters",
        })
    }
}

/// A field that was dropped when it was added; only its name is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field's name (names are never secret; values are not kept).
    pub field: String,
    /// Why it was dropped.
    pub reason: RefusalReason,
}

/// One audit event, built with chained calls:
/// `Event::new("vote.cast").approval_id(id).actor(email).field("decision", "approve")`.
///
/// The well-known members (`approval_id`, `request_id`, `actor`, `rule`) become top-level keys
/// of the line; everything passed to [`Event::field`] goes into its `details` object, in the
/// order added (a repeated name replaces the earlier value).
///
/// A [`crate::secret::Secret`] cannot be used as a value:
/// ```compile_fail,E0277
/// use countersign::{audit::Event, secret::Secret};
/// let _ = Event::new("notify.sent").field("channel", Secret::new("xoxb-1"));
/// ```
/// while plain values can:
/// ```
/// use countersign::audit::Event;
/// let _ = Event::new("notify.sent").field("channel", "#prod").field("attempt", 2u32);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub(super) kind: String,
    pub(super) approval_id: Option<String>,
    pub(super) request_id: Option<String>,
    pub(super) actor: Option<String>,
    pub(super) rule: Option<String>,
    pub(super) details: Vec<(String, FieldValue)>,
    refused: Vec<Refusal>,
}

/// The setters of the well-known members: each keeps the value under its own name unless it
/// looks like a token, which is refused under that name instead.
macro_rules! heads {
    ($($(#[$doc:meta])* $name:ident($arg:ident);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: impl Into<String>) -> Self {
                self.$name = self.checked_value(stringify!($name), $arg.into());
                self
            }
        )*
    };
}

impl Event {
    /// Starts an event of kind `kind`, e.g. `approval.requested` or `vote.cast`.
    pub fn new(kind: impl Into<String>) -> Self {
        let kind = kind.into();
        let mut refused = Vec::new();
        if !is_plain_name(&kind) {
            refused.push(Refusal {
                field: "event".to_owned(),
                reason: RefusalReason::BadName,
            });
        }
        Self {
            kind,
            approval_id: None,
            request_id: None,
            actor: None,
            rule: None,
            details: Vec::new(),
            refused,
        }
    }

    heads! {
        /// The approval this event belongs to.
        approval_id(id);
        /// The data-plane request (its `request_id`) this event belongs to.
        request_id(id);
        /// Who did it: an approver's or requester's email, `iss|sub`, or `system`.
        actor(actor);
        /// The policy rule's name.
        rule(rule);
    }

    /// Adds a plain value under `details`. A credential-like name or a token-like value is
    /// dropped here and makes [`super::AuditLog::append`] fail with [`super::AuditError::Refused`].
    pub fn field(mut self, name: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        let name = name.into();
        let value = value.into();
        let reason = if !is_plain_name(&name) {
            Some(RefusalReason::BadName)
        } else if looks_like_credential_name(&name) {
            Some(RefusalReason::CredentialName)
        } else if matches!(&value, FieldValue::Str(s) if looks_like_token(s)) {
            Some(RefusalReason::TokenLikeValue)
        } else {
            None
        };
        match reason {
            Some(reason) => self.refused.push(Refusal {
                field: name,
                reason,
            }),
            None => match self.details.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => self.details.push((name, value)),
            },
        }
        self
    }

    /// The event as one flat JSON object (`approval_id`, `request_id`, `actor`, `rule` and
    /// every detail), without the chain members: for in-memory sinks and tests.
    pub fn to_flat_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        let heads = [
            ("approval_id", &self.approval_id),
            ("request_id", &self.request_id),
            ("actor", &self.actor),
            ("rule", &self.rule),
        ];
        for (name, value) in heads {
            if let Some(v) = value {
                map.insert(name.to_owned(), serde_json::Value::String(v.clone()));
            }
        }
        for (name, value) in &self.details {
            map.insert(
                name.clone(),
                serde_json::to_value(value).unwrap_or_default(),
            );
        }
        serde_json::Value::Object(map)
    }

    /// The event kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Fields that were dropped while building; `append` refuses the event if any.
    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    /// Keeps `value` unless it looks like a token, in which case it is dropped and recorded.
    fn checked_value(&mut self, field: &str, value: String) -> Option<String> {
        if looks_like_token(&value) {
            self.refused.push(Refusal {
                field: field.to_owned(),
                reason: RefusalReason::TokenLikeValue,
            });
            None
        } else {
            Some(value)
        }
    }
}

/// Name fragments that mark a credential. Matched as substrings of the lower-cased name with
/// `-` read as `_`, so `X-Auth-Token`, `csrf_token` and `client_secret` are all caught; a
/// false positive costs a renamed field, a false negative costs a leaked secret.
const CREDENTIAL_FRAGMENTS: &[&str] = &[
    "authorization",
    "token",
    "cookie",
    "password",
    "passwd",
    "secret",
    "credential",
    "api_key",
    "apikey",
    "private_key",
    "bearer",
];

/// Whether a field name looks like it would carry a credential.
pub fn looks_like_credential_name(name: &str) -> bool {
    let normalized = name.to_ascii_lowercase().replace('-', "_");
    CREDENTIAL_FRAGMENTS
        .iter()
        .any(|fragment| normalized.contains(fragment))
}

/// Whether a value looks like an `Authorization` header value (`Bearer ...`, `Basic ...`) or
/// contains a JWT (a word of three base64url segments, the first a JSON object: `eyJ...`).
pub fn looks_like_token(value: &str) -> bool {
    let v = value.trim_start().to_ascii_lowercase();
    v.starts_with("bearer ")
        || v.starts_with("basic ")
        || value.split_whitespace().any(is_jwt_shaped)
}

fn is_jwt_shaped(word: &str) -> bool {
    let segments: Vec<&str> = word.split('.').collect();
    segments.len() == 3
        && segments[0].starts_with("eyJ")
        && segments[..2]
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(is_base64url))
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='
}

/// Event and field names: short, ASCII, no spaces, so they are easy to grep and `jq`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
