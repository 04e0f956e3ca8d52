//! The approval record, the stored request and the request hash: plain data, no I/O.
//!
//! Everything here is serde-serializable so a shared store (Redis, issue 5) can hold it as JSON.

pub use super::approvers::{expand_approvers, expand_approvers_with};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::notify::{ApproveVia, NotifyTarget};

/// RFC 4648 base32 alphabet, lowercased: ids are case-insensitive-safe and URL-safe.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Prefix of every approval id.
const ID_PREFIX: &str = "apr_";
/// 128 bits in base32 need 26 characters.
const ID_CHARS: usize = 26;

/// An approval's identifier: `apr_` followed by 128 random bits in lowercase base32 (26 chars).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApprovalId(String);

impl ApprovalId {
    /// A fresh random id (OS randomness).
    pub fn generate() -> Self {
        let bits: u128 = rand::random();
        let mut s = String::with_capacity(ID_PREFIX.len() + ID_CHARS);
        s.push_str(ID_PREFIX);
        // 26 groups of 5 bits from the top: the first group holds only 3 real bits.
        for i in (0..ID_CHARS).rev() {
            let idx = ((bits >> (i * 5)) & 0x1f) as usize;
            s.push(char::from(BASE32[idx]));
        }
        Self(s)
    }

    /// Parses an id from a URL or a store; `None` unless it has exactly the generated shape.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(ID_PREFIX)?;
        let well_formed = rest.len() == ID_CHARS && rest.bytes().all(|b| BASE32.contains(&b));
        well_formed.then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ApprovalId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or_else(|| format!("not an approval id: {s:?}"))
    }
}

impl From<ApprovalId> for String {
    fn from(id: ApprovalId) -> String {
        id.0
    }
}

/// The verified caller who asked for the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// Token issuer.
    pub iss: String,
    /// Token subject.
    pub sub: String,
    /// `email` claim, lowercased, if any.
    pub email: Option<String>,
}

impl Requester {
    /// The requester behind a verified principal.
    pub fn from_principal(p: &crate::identity::Principal) -> Self {
        Self {
            iss: p.issuer.clone(),
            sub: p.subject.clone(),
            email: p.email.as_deref().map(str::to_lowercase),
        }
    }

    /// Whether `(iss, sub)` is this requester (exact comparison, as token claims are).
    pub fn is(&self, iss: &str, sub: &str) -> bool {
        self.iss == iss && self.sub == sub
    }
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Countersign the request.
    Approve,
    /// Refuse it; one deny is final.
    Deny,
}

impl Decision {
    /// `"approve"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// Where a vote came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// The web approval page (approver login).
    Web,
    /// The JSON API with an approver's bearer token.
    Api,
    /// A Slack button.
    Slack,
    /// Microsoft Teams (via the approval page link).
    Teams,
}

impl Channel {
    /// Lowercase name for audit and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Api => "api",
            Channel::Slack => "slack",
            Channel::Teams => "teams",
        }
    }
}

/// Who is voting, as established by the control plane (Slack mapping, login, bearer token).
#[derive(Debug, Clone)]
pub struct ApproverIdentity {
    /// Email (any case).
    pub email: String,
    /// Issuer of the identity, when it came from a token or login.
    pub iss: Option<String>,
    /// Subject at that issuer.
    pub sub: Option<String>,
    /// Where the vote came from.
    pub via: Channel,
}

/// One recorded vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Approver email, lowercase.
    pub approver: String,
    /// Approve or deny.
    pub decision: Decision,
    /// Optional reason (always welcome on a deny).
    pub reason: Option<String>,
    /// When, unix milliseconds.
    pub at: u64,
    /// Where the vote came from.
    pub via: Channel,
    /// The requester approving their own request under `self_approval = true` (break-glass).
    #[serde(default)]
    pub self_approval: bool,
    /// An approval that also asks for a grant (SPEC 9, "Approve for 15 min").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grant: bool,
}

/// Where an approval is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for votes.
    Pending,
    /// Quorum reached.
    Approved,
    /// Someone denied.
    Denied,
    /// Nobody decided before `expires_at`.
    Expired,
    /// The caller hung up or withdrew it.
    Cancelled,
    /// Break-glass (SPEC 9): forwarded at once without approval; open until an approver
    /// acknowledges it.
    Review,
    /// A break-glass request an approver has acknowledged.
    Acknowledged,
}

impl Status {
    /// Lowercase name (JSON, audit, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Review => "review",
            Status::Acknowledged => "acknowledged",
        }
    }
}

/// Whether (and by whom) the stored request was sent upstream. Moves forward only:
/// `NotStarted -> Claimed -> Done | Failed`. A claim is never retried: exactly once means at
/// most once when the upstream cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Execution {
    /// Not sent.
    NotStarted,
    /// Someone won the claim and is sending it.
    Claimed {
        /// Who claimed (replica and role).
        owner: String,
        /// When, unix milliseconds.
        at: u64,
    },
    /// Upstream answered.
    Done {
        /// Upstream status code.
        status: u16,
    },
    /// Upstream could not be reached or did not answer; not retried.
    Failed {
        /// What went wrong (for operators; never shown to callers verbatim).
        reason: String,
    },
}

/// One approval request with its votes and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Identifier.
    pub id: ApprovalId,
    /// Name of the rule that asked for approval.
    pub rule: String,
    /// Who asked.
    pub requester: Requester,
    /// HTTP method.
    pub method: String,
    /// Host (no port) as sent.
    pub host: String,
    /// Path as sent (percent-encoded).
    pub path: String,
    /// Query string without `?`, if any.
    pub query: Option<String>,
    /// Hex SHA-256 binding method, host, path, query, body and requester ([`request_hash`]).
    pub request_hash: String,
    /// The caller's `Countersign-Reason`.
    pub reason: Option<String>,
    /// Body preview for approvers: UTF-8, at most 2 KiB, redacted ([`body_preview`]).
    pub body_preview: String,
    /// Body size in bytes.
    pub body_len: u64,
    /// Whether `body_preview` shows less than the body (then `body_len` and `body_sha256` are
    /// shown beside it).
    #[serde(default)]
    pub body_preview_cut: bool,
    /// Hex SHA-256 of the whole body.
    #[serde(default)]
    pub body_sha256: String,
    /// Every header that will be replayed, credentials masked ([`shown_headers`]).
    #[serde(default)]
    pub headers: Vec<ShownHeader>,
    /// Who may vote: emails, lowercase, deduplicated, groups expanded.
    pub approvers: Vec<String>,
    /// Distinct approvals needed (for a table quorum: the sum of its entries' counts).
    pub quorum: u32,
    /// The table form of `quorum`, resolved when the request was created (empty for a number):
    /// every entry must be met at once, one entry per approver ([`super::quorum`]).
    #[serde(default)]
    pub quorum_entries: Vec<QuorumEntry>,
    /// Whether the requester may count as one approver.
    pub self_approval: bool,
    /// Button or fresh login.
    #[serde(with = "super::serde_fields::approve_via_serde")]
    pub approve_via: ApproveVia,
    /// Where approvers are told (the rule's `notify`).
    #[serde(with = "super::serde_fields::notify_serde")]
    pub notify: Vec<NotifyTarget>,
    /// Created, unix milliseconds.
    pub created_at: u64,
    /// Pending until, unix milliseconds.
    pub expires_at: u64,
    /// Votes in arrival order.
    pub votes: Vec<Vote>,
    /// Current status.
    pub status: Status,
    /// Who ended it: last approver reaching quorum, the denier, or the canceller.
    pub decided_by: Option<String>,
    /// The deny or cancel reason.
    pub decision_reason: Option<String>,
    /// When it left `Pending`, unix milliseconds.
    pub decided_at: Option<u64>,
    /// A caller connection is waiting for the decision (so the background must not execute).
    pub held: bool,
    /// While `held`: when the hold runs out whoever holds it (unix ms): the end of the hold
    /// plus [`super::transition::HOLD_LEASE`] ([`super::transition::take_hold`]). `None` in
    /// records written before leases: those are believed until `expires_at` +
    /// [`super::transition::HOLD_GRACE`].
    #[serde(default)]
    pub held_until: Option<u64>,
    /// While `held`: the instance id of the replica holding the caller, which beats for it
    /// ([`super::store::ApprovalStore::beat`]); `None` until the hold is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Upstream execution state.
    pub execution: Execution,
    /// Approved, but the deciding `vote.cast` and `approval.approved` are not yet durable in
    /// the audit log: nobody may execute it until the broker confirms them (SPEC 8).
    #[serde(default)]
    pub audit_pending: bool,
    /// Reminders and escalation ([`super::nudge`]): the rule's `remind` and `escalate`, and
    /// how far they went.
    #[serde(default)]
    pub nudges: super::nudges::Nudges,
    /// Set when the requester broke the glass (SPEC 9): the request was forwarded without
    /// approval and is [`Status::Review`] until acknowledged.
    #[serde(default)]
    pub break_glass: Option<BreakGlass>,
    /// The rule's grant terms (SPEC 9), fixed when the request was created: approvers may
    /// then approve with a grant. `None`: the rule makes no grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_offer: Option<GrantOffer>,
    /// Set when this request passed under a grant instead of votes (SPEC 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<Granted>,
}

/// `grant` / `grant_uses` of the rule, as fixed on an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantOffer {
    /// How long a grant lasts, milliseconds.
    pub ttl_ms: u64,
    /// Later requests it lets pass.
    pub uses: u32,
}

impl From<crate::policy::GrantSpec> for GrantOffer {
    fn from(g: crate::policy::GrantSpec) -> Self {
        GrantOffer {
            ttl_ms: u64::try_from(g.ttl.as_millis()).unwrap_or(u64::MAX),
            uses: g.uses,
        }
    }
}

/// The grant a request passed under, and who approved the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// The grant's id (`gr_...`).
    pub grant_id: String,
    /// The approval that made the grant.
    pub from_approval: String,
    /// Who approved it (lowercase emails).
    pub approvers: Vec<String>,
}

/// A break-glass use: why, and who acknowledged it afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// The `Countersign-Break-Glass` reason (trimmed, non-empty).
    pub reason: String,
    /// The approver who acknowledged it, lowercase email.
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    /// When, unix milliseconds.
    #[serde(default)]
    pub acknowledged_at: Option<u64>,
}

impl Approval {
    /// Emails that approved, in vote order.
    pub fn approved_by(&self) -> Vec<String> {
        if let Some(g) = &self.granted {
            return g.approvers.clone();
        }
        self.votes
            .iter()
            .filter(|v| v.decision == Decision::Approve)
            .map(|v| v.approver.clone())
            .collect()
    }

    /// Whether `email` (any case) already voted.
    pub fn has_voted(&self, email: &str) -> bool {
        self.votes
            .iter()
            .any(|v| v.approver.eq_ignore_ascii_case(email))
    }

    /// Path plus `?query` when there is one.
    pub fn path_and_query(&self) -> String {
        join_path_query(&self.path, self.query.as_deref())
    }
}

fn join_path_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// One header to replay upstream (values may be any bytes HTTP allows).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHeader {
    /// Lowercase header name.
    pub name: String,
    /// Raw value.
    #[serde(with = "super::serde_fields::b64")]
    pub value: Vec<u8>,
}

/// Header names whose values are credentials: never printed by `Debug`.
const SENSITIVE_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

impl fmt::Debug for StoredHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SENSITIVE_HEADERS.contains(&self.name.as_str()) {
            write!(f, "{}: <redacted>", self.name)
        } else {
            write!(
                f,
                "{}: {:?}",
                self.name,
                String::from_utf8_lossy(&self.value)
            )
        }
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) and framing headers the client library sets itself.
const NOT_REPLAYED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// The exact request that is replayed upstream once approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    /// HTTP method.
    pub method: String,
    /// Host as the caller sent it (no port); sent as `Host`.
    pub host: String,
    /// Path as sent (percent-encoded).
    pub path: String,
    /// Query without `?`.
    pub query: Option<String>,
    /// End-to-end headers to replay (no hop-by-hop, no `Countersign-*`, no `Host`).
    pub headers: Vec<StoredHeader>,
    /// The buffered body.
    #[serde(with = "super::serde_fields::b64")]
    pub body: Vec<u8>,
    /// Name of the `[[upstream]]` to send it to. The executing replica looks the name up in
    /// its own config: a store never supplies a URL (SPEC 8).
    #[serde(default)]
    pub upstream: String,
    /// The caller's subject, sent as `Countersign-Subject`.
    pub subject: String,
    /// The caller's issuer, sent as `Countersign-Issuer` (empty in records written before it
    /// was stored).
    #[serde(default)]
    pub issuer: String,
    /// The data plane's request id (audit correlation; sent as `Countersign-Request-Id`).
    #[serde(default)]
    pub request_id: Option<String>,
}

impl StoredRequest {
    /// [`request_hash`] of this request as its requester (`issuer`, `subject`) sent it, hex:
    /// what approvers approve and what execution checks again (SPEC 8).
    pub fn hash_hex(&self) -> String {
        hex::encode(request_hash(
            &self.method,
            &self.host,
            &self.path,
            self.query.as_deref(),
            &self.body,
            &self.issuer,
            &self.subject,
        ))
    }

    /// Builds a stored request from the caller's request, keeping only the headers that may be
    /// replayed: hop-by-hop headers (including those named in `Connection`), `Host`,
    /// `Content-Length` and every `Countersign-*` header are dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        method: &http::Method,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
        body: Vec<u8>,
        upstream: &str,
        subject: &str,
    ) -> Self {
        Self {
            method: method.as_str().to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers: replayable_headers(headers),
            body,
            upstream: upstream.to_owned(),
            subject: subject.to_owned(),
            issuer: String::new(),
            request_id: None,
        }
    }

    /// Sets the caller's issuer (sent as `Countersign-Issuer`).
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_owned();
        self
    }

    /// Sets the data plane's request id.
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self
    }

    /// Path plus `?query` when there is one.
    pub fn path_and_query(&self) -> String {
        join_path_query(&self.path, self.query.as_deref())
    }

    /// The `Content-Type` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == "content-type")
            .and_then(|h| std::str::from_utf8(&h.value).ok())
    }
}

/// End-to-end headers of `headers`, in order.
pub fn replayable_headers(headers: &http::HeaderMap) -> Vec<StoredHeader> {
    // Headers listed in `Connection` are hop-by-hop too (RFC 9110 7.6.1).
    let named_by_connection: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            !NOT_REPLAYED.contains(&n)
                && !n.starts_with("countersign-")
                && !named_by_connection.iter().any(|c| c == n)
        })
        .map(|(name, value)| StoredHeader {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

/// SHA-256 binding a request to its requester: method, host, path, query, body, iss and sub,
/// each length-prefixed (u64 big-endian) after a version tag, so no two different field
/// tuples hash the same bytes. A missing query differs from an empty one.
pub fn request_hash(
    method: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    iss: &str,
    sub: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"countersign-request-hash-v1");
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(method.as_bytes());
    field(host.to_ascii_lowercase().as_bytes());
    field(path.as_bytes());
    match query {
        Some(q) => {
            field(b"?");
            field(q.as_bytes());
        }
        None => field(b""),
    }
    field(body);
    field(iss.as_bytes());
    field(sub.as_bytes());
    h.finalize().into()
}

/// A replayed header as approvers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownHeader {
    /// Lowercase name.
    pub name: String,
    /// The value, or for a credential its scheme and size only.
    pub value: String,
}

/// One entry of a table quorum, resolved when the request was created: who could fill it is
/// fixed then, so a later group or policy change does not change who counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumEntry {
    /// The entry as the policy wrote it: `group:NAME` or an email.
    pub entry: String,
    /// Approvals it needs (at least 1).
    pub need: u32,
    /// Who may fill it: emails, lowercase, deduplicated (a group's members at creation).
    pub members: Vec<String>,
}

impl QuorumEntry {
    /// The name shown to people: the group name as given (`dba`), or the email.
    pub fn label(&self) -> &str {
        self.entry.strip_prefix("group:").unwrap_or(&self.entry)
    }
}
