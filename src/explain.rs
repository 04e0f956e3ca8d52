//! `countersign explain`: what would happen to one request, and why, as plain text.
//!
//! Pure like `policy`: it reads a loaded [`Config`] and [`PolicySet`] and never contacts an IdP
//! or upstream. The output is one `key: value` fact per line, stable so it can be grepped and
//! asserted in tests. The same walk yields a [`Verdict`] (outcome, deciding rule, shadow
//! matches) for `countersign test`, so what `test` judges is exactly what `explain` shows.

use std::fmt::Write as _;

use crate::config::Config;
use crate::identity::Principal;
use crate::policy::canonical::canonical_host;
use crate::policy::{
    canonical_path, Action, ApprovalSpec, Approver, Evaluation, Mismatch, Mode, NotifyTarget,
    Outcome, PathMatch, PolicySet, RawRequest, RequestFacts, Requirements, Rule, Step,
    UnidentifiedRequester, Unmet, Unroutable,
};
use crate::respond::Refusal;

#[cfg(test)]
mod tests;
mod verdict;

pub use verdict::{caller_from_claims, Verdict};

/// Explains what Countersign would do with `method url` for `who` (`None` = no token given) at
/// `now` (unix seconds): the [`Report`]'s text is what `countersign explain` prints, its
/// [`Report::verdict`] what `countersign test` judges. Errors only when the method or URL
/// cannot be understood.
pub fn explain(
    config: &Config,
    policy: &PolicySet,
    method: &str,
    url: &str,
    who: Option<&Principal>,
    now: u64,
) -> Result<Report, String> {
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{method:?} is not an HTTP method"))?;
    let target = split_url(url)?;
    let mut out = Report {
        request: format!("{method} {url}"),
        ..Report::default()
    };
    out.fact("request", out.request.clone());
    let headers = http::HeaderMap::new();
    let raw = RawRequest {
        method: &method,
        target_authority: Some(&target.authority),
        path: &target.path,
        query: target.query.as_deref(),
        headers: &headers,
        default_port: target.default_port,
    };
    let canonical = match config.route_table().resolve(&raw) {
        Ok(c) => c,
        Err(Unroutable::Invalid(why)) => {
            out.fact("path", format!("{} rejected: {why}", target.path));
            out.outcome(
                Outcome::InvalidRequest,
                format!(
                    "{} (the request is refused before any policy)",
                    Refusal::BadRequest(why.to_string().into())
                        .answer()
                        .status_and_code()
                ),
            );
            return Ok(out);
        }
        Err(Unroutable::NoRoute) => {
            // Say what was judged even when no route takes it.
            if let (Ok(h), Ok(p)) = (
                canonical_host(&target.authority, target.default_port),
                canonical_path(&target.path),
            ) {
                out.fact("host", &h.host);
                out.fact("path", &p.path);
            }
            caller(&mut out, config, who, now);
            out.fact("route", "none matches");
            out.outcome(
                Outcome::NoRoute,
                Refusal::NoRoute.answer().status_and_code(),
            );
            return Ok(out);
        }
    };
    out.fact("host", &canonical.host);
    out.fact("path", &canonical.path);
    out.fact(
        "canonical",
        format!(
            "{} {}://{}{}",
            canonical.method,
            if target.default_port == 443 {
                "https"
            } else {
                "http"
            },
            canonical.authority,
            canonical.path_and_query()
        ),
    );
    if let Some(m) = &canonical.match_path {
        out.fact("matched as", m);
    }
    if canonical.case_insensitive {
        out.fact(
            "note",
            "the upstream has case_insensitive_paths: paths match in any case",
        );
    }
    let rejected = caller(&mut out, config, who, now);
    route(&mut out, config, canonical.route);
    let req = canonical.facts();
    match who {
        Some(who) => decide(&mut out, config, policy, &req, (who, rejected), now)?,
        None => without_token(&mut out, policy, &req),
    }
    Ok(out)
}

/// The report being written, and what it concluded.
#[derive(Debug, Default)]
pub struct Report {
    /// `key: value` lines, as `countersign explain` prints them.
    pub text: String,
    /// `METHOD url`, as the `request:` line shows it.
    request: String,
    /// Set by the `outcome:` line.
    outcome: Option<Outcome>,
    /// The deciding rule's name (`default` for `[policy] default`).
    rule: Option<String>,
    /// Shadow rules that matched, with their actions.
    shadow: Vec<(String, Action)>,
}

impl Report {
    /// What the report concludes, as data: the outcome, the deciding rule and the shadow rules
    /// that matched.
    pub fn verdict(self) -> Result<Verdict, String> {
        match self.outcome {
            Some(outcome) => Ok(Verdict {
                outcome,
                rule: self.rule,
                shadow: self.shadow,
            }),
            None => Err(format!("{}: no outcome was reached (a bug)", self.request)),
        }
    }

    /// Appends `key: value`.
    fn fact(&mut self, key: &str, value: impl AsRef<str>) {
        let _ = writeln!(self.text, "{key}: {}", value.as_ref());
    }

    /// Appends the `outcome:` line and records `outcome`.
    fn outcome(&mut self, outcome: Outcome, text: impl AsRef<str>) {
        self.outcome = Some(outcome);
        self.fact("outcome", text);
    }

    /// A shadow rule matched: say what it would have done, and record it.
    fn shadow(&mut self, rule: &Rule) {
        self.fact(
            "shadow",
            format!(
                "{} matches and would have {}; recorded only, not enforced",
                rule_ref(rule),
                would_have(rule.action)
            ),
        );
        self.shadow.push((rule.name.clone(), rule.action));
    }
}

/// What an action does to a request, in the past conditional.
fn would_have(action: Action) -> &'static str {
    match action {
        Action::Public => "let it through without a token",
        Action::Allow => "allowed it",
        Action::Deny => "denied it",
        Action::Approve => "held it for approval",
    }
}

/// The parts of an absolute http(s) URL as they would arrive on the wire.
#[derive(Debug)]
struct Target {
    /// Authority as written (`Deploy.Example.com:8443`).
    authority: String,
    /// Path as written (no query).
    path: String,
    /// Query as written.
    query: Option<String>,
    /// The scheme's default port.
    default_port: u16,
}

/// Splits an absolute http(s) URL. The parts are taken from the text rather than from
/// `url::Url`, which would resolve `..` and decode escapes and so hide exactly what `explain`
/// should show.
fn split_url(url: &str) -> Result<Target, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
    let default_port = match parsed.scheme() {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("{url:?} must be an http:// or https:// URL")),
    };
    parsed
        .host_str()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_start = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let authority = after_scheme[..path_start].to_owned();
    let tail = after_scheme[path_start..]
        .split('#')
        .next()
        .unwrap_or_default();
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (tail, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok(Target {
        authority,
        path: path.to_owned(),
        query,
        default_port,
    })
}

/// Who is asking; returns why the proxy would refuse the token, if it would.
fn caller(
    out: &mut Report,
    config: &Config,
    who: Option<&Principal>,
    now: u64,
) -> Option<&'static str> {
    let Some(who) = who else {
        out.fact(
            "caller",
            "none (no token given; pass --token or --claims to decide for a caller)",
        );
        return None;
    };
    out.fact("caller", format!("iss={} sub={}", who.issuer, who.subject));
    if let Some(email) = &who.email {
        out.fact("caller email", email);
    }
    out.fact("caller scopes", list_or(&who.scopes, " ", "none"));
    out.fact("caller acr", who.acr.as_deref().unwrap_or("none"));
    match who.auth_time {
        Some(t) => out.fact(
            "caller auth_time",
            format!("{t} ({}s ago)", now.saturating_sub(t)),
        ),
        None => out.fact("caller auth_time", "none"),
    }
    let mut rejected = None;
    if !config.issuers.iter().any(|i| i.issuer == who.issuer) {
        out.fact(
            "warning",
            format!("issuer {} is not configured", who.issuer),
        );
        rejected = Some("issuer not configured");
    }
    if who.expires_at < now {
        out.fact("warning", "the token has expired");
        rejected = rejected.or(Some("token expired"));
    }
    out.fact("note", "explain does not verify the token's signature");
    rejected
}

/// Reports the first matching route; `false` when none matches.
fn route(out: &mut Report, config: &Config, index: usize) {
    let Some(r) = config.routes.get(index) else {
        return;
    };
    let host = r.host.as_ref().map_or("any".to_owned(), |h| h.to_string());
    let upstream = config.upstreams.get(r.upstream);
    out.fact(
        "route",
        format!(
            "#{} host={host} path_prefix={} upstream={} ({})",
            index + 1,
            r.path_prefix,
            upstream.map_or("?", |u| u.name.as_str()),
            upstream.map_or("?", |u| u.url.as_str()),
        ),
    );
}

/// `name (file:line)`.
fn rule_ref(rule: &Rule) -> String {
    format!(
        "{} ({}:{})",
        rule.name,
        rule.origin.file.display(),
        rule.origin.line
    )
}

/// Why a rule's request-shape condition failed, for a person.
fn shape_reason(rule: &Rule, req: &RequestFacts<'_>, why: &Mismatch) -> String {
    match why {
        Mismatch::Method => {
            let methods: Vec<String> = rule
                .methods
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect();
            format!("method {} not in {}", req.method, methods.join(", "))
        }
        Mismatch::Host => match &rule.host {
            Some(h) => format!("host {} does not match {h}", req.host),
            None => "host does not match".into(),
        },
        Mismatch::Path => match &rule.path {
            PathMatch::Template(t) => format!("path {} does not match {}", req.path, t.source),
            PathMatch::Prefix(p) => format!("path {} does not start with {p}", req.path),
            PathMatch::Any => "path does not match".into(),
        },
        Mismatch::Param { name, want, got } => {
            format!("param {name} is {got:?}, the rule wants {want:?}")
        }
        Mismatch::Claim { name, want } => format!("claim {name} does not hold {want:?}"),
    }
}

/// With a caller: the first enforcing rule whose every condition holds decides (the proxy's
/// own evaluation, traced).
fn decide(
    out: &mut Report,
    config: &Config,
    policy: &PolicySet,
    req: &RequestFacts<'_>,
    (who, rejected): (&Principal, Option<&str>),
    now: u64,
) -> Result<(), String> {
    let outcome = |out: &mut Report, action, require, approval| match rejected {
        // A public rule never looks at the token; anything else refuses a bad one first.
        Some(why) if action != Action::Public => {
            out.fact("action", Action::as_str(action));
            out.outcome(Outcome::InvalidToken, format!("401 invalid_token ({why})"));
        }
        _ => outcome(out, config, action, require, approval, who, now),
    };
    let evaluation = policy.evaluate_traced(req, Some(who), |step| match step {
        Step::Skipped(rule, why) => out.fact(
            "skipped",
            format!("{}: {}", rule_ref(rule), shape_reason(rule, req, &why)),
        ),
        Step::Shadow(rule) => out.shadow(rule),
    });
    let Evaluation::Decided(d) = evaluation else {
        return Err("the policy did not decide for a caller (a bug)".into());
    };
    match d.rule {
        Some(rule) => {
            out.fact("rule", format!("{} matches", rule_ref(rule)));
            for (k, v) in &d.params {
                out.fact("param", format!("{k}={v}"));
            }
            out.rule = Some(rule.name.clone());
            outcome(out, rule.action, &rule.require, rule.approval.as_ref());
        }
        None => {
            out.fact(
                "rule",
                format!("none matches; [policy] default = {}", d.action.as_str()),
            );
            out.rule = Some("default".into());
            outcome(out, d.action, &Requirements::default(), None);
        }
    }
    Ok(())
}

/// The decision for a matched rule (or the default) and a caller.
fn outcome(
    out: &mut Report,
    config: &Config,
    action: Action,
    require: &Requirements,
    approval: Option<&ApprovalSpec>,
    who: &Principal,
    now: u64,
) {
    out.fact("action", action.as_str());
    match action {
        Action::Public => {
            return out.outcome(Outcome::Public, "public: forwarded, no token needed")
        }
        Action::Deny => {
            let refused = Refusal::Denied.answer().status_and_code();
            return out.outcome(Outcome::Deny, format!("deny: {refused}"));
        }
        Action::Allow | Action::Approve => {}
    }
    if !require.is_empty() {
        out.fact("requires", requirements(require));
    }
    match &require.check(who, now) {
        Err(unmet @ Unmet::Scopes { required }) => {
            let missing: Vec<&str> = required
                .iter()
                .filter(|s| !who.scopes.contains(s))
                .map(String::as_str)
                .collect();
            out.fact("missing scopes", missing.join(" "));
            out.outcome(
                Outcome::InsufficientScope,
                format!(
                    "step-up needed: {} scope=\"{}\"",
                    Refusal::StepUp(unmet.clone()).answer().status_and_code(),
                    required.join(" ")
                ),
            );
        }
        Err(Unmet::Authentication {
            acr_values,
            max_age,
        }) => {
            let mut challenge =
                String::from("step-up needed: 401 insufficient_user_authentication");
            if !acr_values.is_empty() {
                let _ = write!(challenge, " acr_values=\"{}\"", acr_values.join(" "));
            }
            if let Some(m) = max_age {
                let _ = write!(challenge, " max_age={m}");
            }
            out.outcome(Outcome::StepUp, challenge);
        }
        Ok(()) if action == Action::Allow => {
            out.outcome(Outcome::Allow, "allow: forwarded upstream")
        }
        Ok(()) => {
            if let Some(spec) = approval {
                approval_facts(out, config, spec);
            }
            // As the proxy does: a requester nobody can name could approve their own request
            // from an identified account (SPEC 8).
            let hold_anyway =
                approval.is_some_and(|a| a.unidentified_requester == UnidentifiedRequester::Hold);
            if who.email.is_none() && !hold_anyway {
                let refused = Refusal::IdentityRequired.answer().status_and_code();
                out.outcome(
                    Outcome::IdentityRequired,
                    format!("{refused} (the token names no person; unidentified_requester = \"refuse\")"),
                );
            } else {
                out.outcome(
                    Outcome::Approve,
                    "approval required: held until approvers decide",
                );
            }
        }
    }
}

/// `scopes=a b acr=x|y max_age=900s`.
fn requirements(r: &Requirements) -> String {
    let mut parts = Vec::new();
    if !r.scopes.is_empty() {
        parts.push(format!("scopes={}", r.scopes.join(" ")));
    }
    if !r.acr.is_empty() {
        parts.push(format!("acr={}", r.acr.join("|")));
    }
    if let Some(m) = r.max_age {
        parts.push(format!("max_age={}s", m.as_secs()));
    }
    parts.join(" ")
}

/// Everything about who approves and how.
fn approval_facts(out: &mut Report, config: &Config, spec: &ApprovalSpec) {
    let written: Vec<String> = spec.approvers.iter().map(ToString::to_string).collect();
    let mut emails: Vec<String> = Vec::new();
    for a in &spec.approvers {
        let members: Vec<String> = match a {
            Approver::Email(e) => vec![e.clone()],
            Approver::Group(g) => config
                .approver_groups
                .get(g)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            // Never calls PagerDuty: who is on call is fixed when a request is created.
            Approver::PagerDuty(s) => vec![format!(
                "on call in PagerDuty schedule {s} (resolved when a request is created)"
            )],
        };
        for m in members {
            if !emails.contains(&m) {
                emails.push(m);
            }
        }
    }
    out.fact("approvers", written.join(", "));
    out.fact("approver emails", emails.join(", "));
    out.fact("quorum", spec.quorum.to_string());
    quorum_entry_facts(out, config, spec);
    let notify: Vec<String> = spec
        .notify
        .iter()
        .map(|n| match n {
            NotifyTarget::SlackChannel(c) => format!("slack:#{c}"),
            NotifyTarget::SlackUser(u) => format!("slack:@{u}"),
            NotifyTarget::Teams => "teams".to_owned(),
        })
        .collect();
    out.fact(
        "notify",
        list_or(&notify, ", ", "none (approval page only)"),
    );
    out.fact("hold", humantime::format_duration(spec.hold).to_string());
    out.fact(
        "expires",
        humantime::format_duration(spec.expires).to_string(),
    );
    let via = match spec.approve_via {
        crate::policy::ApproveVia::Button => "button",
        crate::policy::ApproveVia::Login => "login",
    };
    out.fact("approve_via", via);
    out.fact("reason_required", spec.reason_required.to_string());
    out.fact("self_approval", spec.self_approval.to_string());
    if !spec.redact.is_empty() {
        out.fact("redact", spec.redact.join(", "));
    }
}

/// A table quorum (SPEC 9): one line per entry with who can fill it (as a request created now
/// would fix it).
fn quorum_entry_facts(out: &mut Report, config: &Config, spec: &ApprovalSpec) {
    let crate::policy::Quorum::Entries(entries) = &spec.quorum else {
        return;
    };
    for e in entries {
        let who = match &e.approver {
            Approver::Email(m) => m.clone(),
            Approver::Group(g) => config
                .approver_groups
                .get(g)
                .map(|m| m.join(", "))
                .unwrap_or_default(),
            Approver::PagerDuty(s) => format!("on call in PagerDuty schedule {s}"),
        };
        out.fact(
            "quorum entry",
            format!("{} needs {} of: {who}", e.approver, e.count),
        );
    }
}

/// Without a caller: say which rules could apply and what that depends on.
fn without_token(out: &mut Report, policy: &PolicySet, req: &RequestFacts<'_>) {
    let mut depends = Vec::new();
    for rule in &policy.rules {
        if let Err(why) = rule.shape_mismatch(req) {
            out.fact(
                "skipped",
                format!("{}: {}", rule_ref(rule), shape_reason(rule, req, &why)),
            );
            continue;
        }
        let claims: Vec<String> = rule
            .claims
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if rule.mode == Mode::Shadow {
            if claims.is_empty() {
                out.shadow(rule);
            } else {
                out.fact(
                    "shadow candidate",
                    format!(
                        "{} if the token has {}: would have {}; recorded only, not enforced",
                        rule_ref(rule),
                        claims.join(" "),
                        would_have(rule.action)
                    ),
                );
            }
            continue;
        }
        if rule.action == Action::Public && rule.claims.is_empty() {
            out.fact("rule", format!("{} matches", rule_ref(rule)));
            out.rule = Some(rule.name.clone());
            out.fact("action", "public");
            out.outcome(Outcome::Public, "public: forwarded, no token needed");
            return;
        }
        let mut line = rule_ref(rule);
        if !claims.is_empty() {
            let _ = write!(line, " if the token has {}", claims.join(" "));
            depends.extend(rule.claims.iter().map(|(k, _)| format!("claim {k}")));
        }
        let _ = write!(line, ": {}", rule.action.as_str());
        if !rule.require.is_empty() {
            let _ = write!(line, ", requires {}", requirements(&rule.require));
            depends.push("scope, acr and auth_time".to_owned());
        }
        if claims.is_empty() {
            out.fact("rule", line);
            return finish_without_token(out, &depends);
        }
        out.fact("candidate", line);
    }
    out.fact(
        "rule",
        format!(
            "otherwise [policy] default = {}",
            policy.default_decision().action.as_str()
        ),
    );
    finish_without_token(out, &depends);
}

/// The closing lines when no token was given.
fn finish_without_token(out: &mut Report, depends: &[String]) {
    let mut seen: Vec<&str> = Vec::new();
    for d in depends {
        if !seen.contains(&d.as_str()) {
            seen.push(d);
        }
    }
    out.fact("depends on", list_or(&seen, ", ", "only a valid token"));
    // Refused for want of a token, the request reaches no decision: the proxy records no
    // shadow match for it (with a valid token, the shadow lines above would be recorded).
    out.shadow.clear();
    out.outcome(
        Outcome::TokenRequired,
        "token required: 401 without a valid bearer token",
    );
}

/// Items joined by `sep`, or `empty` when there are none.
fn list_or<S: AsRef<str>>(items: &[S], sep: &str, empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(sep)
    }
}
