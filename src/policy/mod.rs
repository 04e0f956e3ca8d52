//! Route and rule matching and decisions (SPEC section 4). Pure: no I/O, no clock (the caller
//! passes `now`), no pingora types.

use std::path::PathBuf;
use std::time::Duration;

use crate::identity::Principal;

/// What happens when no rule matches a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    /// Forward any request with a valid token.
    Allow,
    /// Refuse (after authentication).
    Deny,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No token needed.
    Public,
    /// A valid token (and the rule's `require`) is enough.
    Allow,
    /// Always refused.
    Deny,
    /// Held until approvers countersign.
    Approve,
}

impl Action {
    /// The word used in files, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Public => "public",
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Approve => "approve",
        }
    }
}

/// A host condition: exact (case-insensitive) or `*.suffix` (one or more labels before the
/// suffix; the bare suffix itself does not match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `deploy.example.com`, stored lowercase.
    Exact(String),
    /// `*.example.com`, stored as `.example.com` lowercase.
    Suffix(String),
}

impl HostPattern {
    /// Parses `host`, `*.suffix`. Errors name what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let _ = s;
        todo!("HostPattern::parse")
    }

    /// Whether `host` (no port, any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        let _ = host;
        todo!("HostPattern::matches")
    }
}

/// A compiled path template: `/v1/deployments/{env}`, `/files/{*rest}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The template as written.
    pub source: String,
}

impl PathTemplate {
    /// Parses a template. `{name}` matches one non-empty segment, `{*rest}` (last segment only)
    /// the remaining tail. Names are unique.
    pub fn parse(s: &str) -> Result<Self, String> {
        let _ = s;
        todo!("PathTemplate::parse")
    }

    /// Names of the parameters, in order.
    pub fn param_names(&self) -> Vec<&str> {
        todo!("PathTemplate::param_names")
    }

    /// Matches a request path (no query), returning the parameters (percent-decoded).
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let _ = path;
        todo!("PathTemplate::matches")
    }
}

/// How a rule matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// `path = "..."`.
    Template(PathTemplate),
    /// `path_prefix = "..."`.
    Prefix(String),
}

/// `require = { ... }`: step-up requirements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// All of these scopes.
    pub scopes: Vec<String>,
    /// `acr` must be one of these (when non-empty).
    pub acr: Vec<String>,
    /// `auth_time` no older than this.
    pub max_age: Option<Duration>,
}

/// Why a token does not meet a rule's requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// Missing scopes: 403 `insufficient_scope`, `scope` = all required scopes.
    Scopes {
        /// Every scope the rule requires (space-joined in the challenge).
        required: Vec<String>,
    },
    /// acr and/or auth_time not good enough: 401 `insufficient_user_authentication` (RFC 9470).
    Authentication {
        /// `acr_values` to ask for (empty when only max_age failed).
        acr_values: Vec<String>,
        /// `max_age` to ask for, seconds (when the rule has one and it failed or auth_time is
        /// missing).
        max_age: Option<u64>,
    },
}

/// Who may approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approver {
    /// An email address (lowercase).
    Email(String),
    /// `group:NAME` from `[approvers.groups]`.
    Group(String),
}

/// Where approvers are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// `slack:#channel`.
    SlackChannel(String),
    /// `slack:@person@example.com` (a DM).
    SlackUser(String),
    /// `teams`.
    Teams,
}

/// How approvers decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveVia {
    /// One click in chat.
    Button,
    /// Web page with a fresh OIDC login.
    Login,
}

/// `[rule.approval]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// Who may approve.
    pub approvers: Vec<Approver>,
    /// Distinct approvers needed (default 1).
    pub quorum: u32,
    /// Where to notify.
    pub notify: Vec<NotifyTarget>,
    /// How long the caller's connection is held (default 55 s).
    pub hold: Duration,
    /// How long the request stays pending (default 1 h).
    pub expires: Duration,
    /// Requester may count as one approver (default false).
    pub self_approval: bool,
    /// Button or login (default button).
    pub approve_via: ApproveVia,
    /// Caller must send `Countersign-Reason` (default false).
    pub reason_required: bool,
    /// JSON pointers hidden in messages, pages and audit.
    pub redact: Vec<String>,
}

/// Where a rule was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Policy file.
    pub file: PathBuf,
    /// 1-based line of the `[[rule]]` header.
    pub line: usize,
}

/// One compiled `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Where it was written.
    pub origin: Origin,
    /// Methods (uppercase); `None` = any.
    pub methods: Option<Vec<http::Method>>,
    /// Host condition; `None` = any.
    pub host: Option<HostPattern>,
    /// Path condition.
    pub path: PathMatch,
    /// Conditions on path parameters (name, required value).
    pub params: Vec<(String, String)>,
    /// Conditions on claims (name, value): string claim equal, or array claim containing it.
    pub claims: Vec<(String, String)>,
    /// What happens.
    pub action: Action,
    /// Step-up requirements.
    pub require: Requirements,
    /// Approval settings (present iff `action == Approve`).
    pub approval: Option<ApprovalSpec>,
}

/// The request facts rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Method.
    pub method: &'a http::Method,
    /// Host without port, as sent.
    pub host: &'a str,
    /// Path without query, as sent (percent-encoded).
    pub path: &'a str,
}

/// The outcome of matching one request against the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation<'p> {
    /// A rule with a `claims` condition, or a non-public rule/default, was reached: verify the
    /// token and evaluate again with the principal.
    NeedsToken,
    /// Decided.
    Decided(Decision<'p>),
}

/// Which rule applies and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    /// The rule, or `None` for the `[policy] default`.
    pub rule: Option<&'p Rule>,
    /// The action.
    pub action: Action,
    /// Path parameters captured by the rule's template.
    pub params: Vec<(String, String)>,
}

impl Decision<'_> {
    /// Rule name for logs and metrics (`"default"` when no rule matched).
    pub fn rule_name(&self) -> &str {
        self.rule.map(|r| r.name.as_str()).unwrap_or("default")
    }
}

/// All rules from all policy files, in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySet {
    /// Rules in order (files sorted by path, rules in file order).
    pub rules: Vec<Rule>,
    /// When nothing matches.
    pub default: DefaultAction,
}

impl PolicySet {
    /// Evaluates `req`. With `who = None` this returns `Decided` only for a `public` rule that
    /// needs no claims; anything else returns `NeedsToken`.
    pub fn evaluate<'p>(
        &'p self,
        req: &RequestFacts<'_>,
        who: Option<&Principal>,
    ) -> Evaluation<'p> {
        let _ = (req, who);
        todo!("PolicySet::evaluate")
    }
}

impl Requirements {
    /// Checks scopes, then acr and max_age (against `auth_time`), at `now` (unix seconds).
    pub fn check(&self, who: &Principal, now: u64) -> Result<(), Unmet> {
        let _ = (who, now);
        todo!("Requirements::check")
    }
}

/// A compiled route table: first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    entries: Vec<(Option<HostPattern>, String)>,
}

impl RouteTable {
    /// Builds a table from (host, path_prefix) pairs in order.
    pub fn new(entries: Vec<(Option<HostPattern>, String)>) -> Self {
        Self { entries }
    }

    /// Index of the first route matching `host` (no port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        self.entries.iter().position(|(h, prefix)| {
            h.as_ref().is_none_or(|h| h.matches(host)) && path.starts_with(prefix.as_str())
        })
    }
}

/// Why a request path cannot be matched safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError;

/// Normalizes a request path for matching (see the config branch for the real implementation).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let _ = raw;
    todo!("policy::normalize_path")
}
