//! Route and rule matching and decisions (SPEC section 4). Pure: no I/O, no clock (the caller
//! passes `now`), no pingora types.

pub mod canonical;
pub mod lint;
mod outcome;
mod path;
pub mod quorum;
pub mod route;
#[cfg(test)]
mod tests;

pub use canonical::{canonical_path, normalize_path, CanonicalPath, InvalidRequest};
pub use outcome::Outcome;
use path::eq_case;
pub use path::{segment_prefix, PathTemplate};
pub use quorum::{Quorum, QuorumEntry};
pub use route::{CanonicalRequest, RawRequest, RouteEntry, RouteTable, Unroutable};

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

/// A rule's `mode`: whether it decides requests or is only watched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// The rule decides the requests it matches (the default).
    #[default]
    Enforce,
    /// `mode = "shadow"`: a match is recorded (log, metric, audit `policy.shadow`) and
    /// evaluation goes on to the next rule as if this one were not there, so a rule can be
    /// watched against real traffic before it is enforced.
    Shadow,
}

impl Mode {
    /// The word used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
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
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix("*.").filter(|s| !s.contains('*')) {
            check_host_name(suffix).map_err(|e| format!("host pattern {s:?}: {e}"))?;
            return Ok(HostPattern::Suffix(format!(".{suffix}")));
        }
        if lower.contains('*') {
            return Err(format!(
                "host pattern {s:?}: a wildcard is only allowed as a whole first label (\"*.example.com\")"
            ));
        }
        check_host_name(&lower).map_err(|e| format!("host pattern {s:?}: {e}"))?;
        Ok(HostPattern::Exact(lower))
    }

    /// Whether `host` (no port, any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match self {
            HostPattern::Exact(exact) => host.eq_ignore_ascii_case(exact.as_bytes()),
            // The suffix keeps its leading dot, so "example.com" itself can never match and
            // "evilexample.com" cannot either; at least one byte must come before the dot.
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// Checks a lowercase host name or IP literal (no port, no trailing dot).
fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "not a valid IPv6 literal".into());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            let hint = if c == ':' {
                " (give the host without a port)"
            } else {
                ""
            };
            return Err(format!("invalid character {c:?}{hint}"));
        }
    }
    Ok(())
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
    /// `pagerduty:SCHEDULE_ID`: whoever is on call in that PagerDuty schedule, resolved to
    /// emails when a request is created (SPEC 9).
    PagerDuty(String),
}

/// Defined in [`crate::notify`] (shared with approval and chat); re-exported for the policy.
pub use crate::notify::{ApproveVia, NotifyTarget};

/// `[rule.approval]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// Who may approve.
    pub approvers: Vec<Approver>,
    /// Approvals needed: a number of distinct approvers (default 1), or per-entry counts.
    pub quorum: Quorum,
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
    /// What to do with a requester whose token names no person (SPEC 8).
    pub unidentified_requester: UnidentifiedRequester,
    /// `break_glass = true`: a `Countersign-Break-Glass: <reason>` request is forwarded at once
    /// and reviewed afterwards (SPEC 9). Default false.
    pub break_glass: bool,
    /// `break_glass_cooldown`: at most one break-glass per requester and rule this often.
    pub break_glass_cooldown: Option<Duration>,
    /// `remind` and `escalate` (SPEC 9); empty by default.
    pub nudge: NudgeSpec,
    /// `grant = "15m"`, `grant_uses = 5` (SPEC 9): approvers may let the same requester's
    /// later requests for the same rule, method, host and path pass this long, this often.
    /// `None` (the default): every request needs its own approval.
    pub grant: Option<GrantSpec>,
}

/// `grant` and `grant_uses` in `[rule.approval]` (SPEC 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantSpec {
    /// How long a grant lets requests pass after the approval that made it.
    pub ttl: Duration,
    /// How many later requests it lets pass (the approved request itself is not one of them).
    pub uses: u32,
}

/// `remind` and `escalate` in `[rule.approval]` (SPEC 9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NudgeSpec {
    /// Re-notify approvers this often while the request is pending.
    pub remind: Option<Duration>,
    /// Add approvers and notify them when the request is still pending after a while.
    pub escalate: Option<EscalateSpec>,
}

/// `escalate = { after, approvers, notify }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalateSpec {
    /// How long after creation (shorter than `expires`).
    pub after: Duration,
    /// Who is added, resolved when the escalation happens.
    pub approvers: Vec<Approver>,
    /// Where they are told (may be empty: then the rule's `notify` targets only get a notice).
    pub notify: Vec<NotifyTarget>,
}

/// `unidentified_requester`: a requester whose token lacks the issuer's identity claim (or has
/// `email_verified = false`) could approve their own request from an identified account, since
/// nothing ties the two together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnidentifiedRequester {
    /// 403 `identity_required` (the default).
    #[default]
    Refuse,
    /// `"hold"`: held anyway; messages, pages and audit say "requester not identified".
    Hold,
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
    /// Enforced, or only watched (`mode = "shadow"`).
    pub mode: Mode,
}

/// The request facts rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Method.
    pub method: &'a http::Method,
    /// Host without port, as sent.
    pub host: &'a str,
    /// Path without query, in canonical match form ([`CanonicalRequest::facts`]).
    pub path: &'a str,
    /// Whether paths compare in any ASCII case (the upstream's `case_insensitive_paths`).
    pub case_insensitive: bool,
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
    /// Shadow rules (`mode = "shadow"`) that matched before the deciding rule, in order. They
    /// decide nothing; whoever acts on the decision records them.
    pub shadow: Vec<&'p Rule>,
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

/// One step of an evaluation that did not decide, for whoever wants to say why
/// ([`PolicySet::evaluate_traced`]; `explain` prints them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'p> {
    /// The rule does not apply: the first condition it failed.
    Skipped(&'p Rule, Mismatch),
    /// A shadow rule matched: recorded, and evaluation goes on.
    Shadow(&'p Rule),
}

impl PolicySet {
    /// Evaluates `req`. With `who = None` this returns `Decided` only for a `public` rule that
    /// needs no claims; anything else returns `NeedsToken`.
    pub fn evaluate<'p>(
        &'p self,
        req: &RequestFacts<'_>,
        who: Option<&Principal>,
    ) -> Evaluation<'p> {
        self.evaluate_traced(req, who, |_| {})
    }

    /// [`PolicySet::evaluate`], telling `step` about every rule passed over on the way, in
    /// order: the one evaluation the proxy, `explain` and `test` share.
    ///
    /// Shadow rules never decide. Without a token a shadow rule is recorded only when it has
    /// no `claims` condition (nothing else can be known), and it never asks for a token.
    pub fn evaluate_traced<'p>(
        &'p self,
        req: &RequestFacts<'_>,
        who: Option<&Principal>,
        mut step: impl FnMut(Step<'p>),
    ) -> Evaluation<'p> {
        let mut shadow = Vec::new();
        for rule in &self.rules {
            let params = match rule.shape_mismatch(req) {
                Ok(params) => params,
                Err(why) => {
                    step(Step::Skipped(rule, why));
                    continue;
                }
            };
            let shadowed = rule.mode == Mode::Shadow;
            match who {
                None if shadowed && !rule.claims.is_empty() => continue,
                None if shadowed || (rule.action == Action::Public && rule.claims.is_empty()) => {}
                // Whether this rule applies depends on the token (claims), or it needs one.
                None => return Evaluation::NeedsToken,
                Some(who) => {
                    if let Some(why) = rule.claim_mismatch(who) {
                        step(Step::Skipped(rule, why));
                        continue;
                    }
                }
            }
            if shadowed {
                step(Step::Shadow(rule));
                shadow.push(rule);
                continue;
            }
            return Evaluation::Decided(Decision {
                rule: Some(rule),
                action: rule.action,
                params,
                shadow,
            });
        }
        match who {
            None => Evaluation::NeedsToken,
            Some(_) => Evaluation::Decided(Decision {
                shadow,
                ..self.default_decision()
            }),
        }
    }

    /// The decision when no rule matches.
    pub fn default_decision(&self) -> Decision<'_> {
        Decision {
            rule: None,
            action: match self.default {
                DefaultAction::Allow => Action::Allow,
                DefaultAction::Deny => Action::Deny,
            },
            params: Vec::new(),
            shadow: Vec::new(),
        }
    }
}

/// The first condition of a rule a request does not meet (for `explain` and debug logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The method is not in the rule's list.
    Method,
    /// The host does not match.
    Host,
    /// The path does not match the template or prefix.
    Path,
    /// A path parameter has another value.
    Param {
        /// Parameter name.
        name: String,
        /// Value the rule wants.
        want: String,
        /// Value the request has.
        got: String,
    },
    /// A claim is missing or has another value.
    Claim {
        /// Claim name.
        name: String,
        /// Value the rule wants.
        want: String,
    },
}

impl Rule {
    /// Path parameters when method, host, path and params match (claims not looked at).
    pub fn shape_matches(&self, req: &RequestFacts<'_>) -> Option<Vec<(String, String)>> {
        self.shape_mismatch(req).ok()
    }

    /// The first request-shape condition that fails, or the captured parameters.
    pub fn shape_mismatch(
        &self,
        req: &RequestFacts<'_>,
    ) -> Result<Vec<(String, String)>, Mismatch> {
        if let Some(methods) = &self.methods {
            if !methods.contains(req.method) {
                return Err(Mismatch::Method);
            }
        }
        if let Some(host) = &self.host {
            if !host.matches(req.host) {
                return Err(Mismatch::Host);
            }
        }
        let params = match &self.path {
            PathMatch::Any => Vec::new(),
            PathMatch::Template(t) => t
                .matches(req.path, req.case_insensitive)
                .ok_or(Mismatch::Path)?,
            PathMatch::Prefix(p) if segment_prefix(p, req.path, req.case_insensitive) => Vec::new(),
            PathMatch::Prefix(_) => return Err(Mismatch::Path),
        };
        for (name, want) in &self.params {
            let got = params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            if !got.is_some_and(|g| eq_case(g, want, req.case_insensitive)) {
                return Err(Mismatch::Param {
                    name: name.clone(),
                    want: want.clone(),
                    got: got.unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(params)
    }

    /// Whether every `claims` condition holds for `who`.
    pub fn claims_match(&self, who: &Principal) -> bool {
        self.claim_mismatch(who).is_none()
    }

    /// The first `claims` condition that fails.
    pub fn claim_mismatch(&self, who: &Principal) -> Option<Mismatch> {
        self.claims
            .iter()
            .find(|(name, want)| !who.claim(name).is_some_and(|v| claim_has(v, want)))
            .map(|(name, want)| Mismatch::Claim {
                name: name.clone(),
                want: want.clone(),
            })
    }
}

/// A string claim equal to `want`, or an array claim containing it; numbers and booleans
/// compare by their JSON text (`42`, `true`).
fn claim_has(value: &serde_json::Value, want: &str) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        Value::Array(items) => items.iter().any(|v| !v.is_array() && claim_has(v, want)),
        Value::Null | Value::Object(_) => false,
    }
}

impl Requirements {
    /// Checks scopes, then acr and max_age (against `auth_time`), at `now` (unix seconds).
    pub fn check(&self, who: &Principal, now: u64) -> Result<(), Unmet> {
        if !self.scopes.iter().all(|s| who.scopes.contains(s)) {
            return Err(Unmet::Scopes {
                required: self.scopes.clone(),
            });
        }
        let acr_ok =
            self.acr.is_empty() || who.acr.as_ref().is_some_and(|acr| self.acr.contains(acr));
        // A missing auth_time cannot prove a recent login, so it fails max_age.
        let max_age_ok = self.max_age.is_none_or(|max| {
            who.auth_time
                .is_some_and(|t| now.saturating_sub(t) <= max.as_secs())
        });
        if acr_ok && max_age_ok {
            return Ok(());
        }
        Err(Unmet::Authentication {
            acr_values: if acr_ok { Vec::new() } else { self.acr.clone() },
            max_age: if max_age_ok {
                None
            } else {
                self.max_age.map(|d| d.as_secs())
            },
        })
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.acr.is_empty() && self.max_age.is_none()
    }
}
