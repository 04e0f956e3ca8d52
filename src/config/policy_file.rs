//! Policy files (SPEC section 4): `[[rule]]` tables compiled into [`Rule`]s, with every
//! reference (approver groups, Slack, Teams, approver login) checked against the config.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;

use super::file::prefix;
use super::refs::{approvers, notify, Refs};
use super::walk::{array_of_tables, closest, FileCheck, Val};
use crate::policy::{
    Action, ApprovalSpec, ApproveVia, GrantSpec, HostPattern, Mode, Origin, PathMatch,
    PathTemplate, Requirements, Rule, UnidentifiedRequester,
};

/// Rule names seen so far (across files), with where each was defined.
pub(crate) type Names = BTreeMap<String, Origin>;

/// Keys of a `[[rule]]`.
const RULE_KEYS: &[&str] = &[
    "name",
    "methods",
    "host",
    "path",
    "path_prefix",
    "params",
    "claims",
    "action",
    "require",
    "approval",
    "mode",
];

/// Compiles every `[[rule]]` of one parsed policy file.
pub(crate) fn parse(
    ck: &mut FileCheck,
    doc: &DeTable<'_>,
    refs: Refs<'_>,
    names: &mut Names,
) -> Vec<Rule> {
    ck.unknown_keys(doc, "at the top level of a policy file", &["rule"]);
    let rules = array_of_tables(ck, doc, "rule", |ck, t, header| {
        rule(ck, t, header, refs, names)
    });
    rules.into_iter().map(|(rule, _)| rule).collect()
}

/// One `[[rule]]`.
fn rule(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    refs: Refs<'_>,
    names: &mut Names,
) -> Option<Rule> {
    ck.unknown_keys(t, "in [[rule]]", RULE_KEYS);
    let origin = Origin {
        file: ck.file.clone(),
        line: ck.position(header.start).0,
    };
    let name = ck
        .req_str(t, header, "in [[rule]]", "name")
        .and_then(|(s, span)| rule_name(ck, s, &span, &origin, names));
    let methods = methods(ck, t);
    let host = match ck.opt_str(t, "host") {
        Some((s, span)) => HostPattern::parse(s)
            .map(Some)
            .map_err(|e| ck.err(&span, e))
            .ok(),
        None => Some(None),
    };
    let path = path(ck, t);
    let params = path.as_ref().and_then(|p| params(ck, t, p));
    let claims = string_map(ck, t, "claims");
    let action = ck
        .req_str(t, header, "in [[rule]]", "action")
        .and_then(|(s, span)| action(ck, s, &span));
    let require = match t.get("require") {
        Some(v) => require(ck, v),
        None => Some(Requirements::default()),
    };
    let approval = approval_for(ck, t, header, action, refs);
    let mode = mode(ck, t);
    if action == Some(Action::Public) {
        for key in ["require", "claims"] {
            if let Some((k, _)) = t.get_key_value(key) {
                ck.err(
                    &k.span(),
                    format!("a public rule cannot have {key:?}: public requests carry no token"),
                );
            }
        }
    }
    Some(Rule {
        name: name?,
        origin,
        methods: methods?,
        host: host?,
        path: path?,
        params: params?,
        claims: claims?,
        action: action?,
        require: require?,
        approval: approval?,
        mode: mode?,
    })
}

/// `mode = "enforce" | "shadow"` (default enforce).
fn mode(ck: &mut FileCheck, t: &DeTable<'_>) -> Option<Mode> {
    let Some((s, span)) = ck.opt_str(t, "mode") else {
        return (!t.contains_key("mode")).then_some(Mode::Enforce);
    };
    match s {
        "enforce" => Some(Mode::Enforce),
        "shadow" => Some(Mode::Shadow),
        other => {
            let mut m = format!("\"mode\" must be \"enforce\" or \"shadow\", not {other:?}");
            if let Some(best) = closest(other, &["enforce", "shadow"]) {
                m.push_str(&format!("; did you mean {best:?}?"));
            }
            ck.err(&span, m);
            None
        }
    }
}

/// A rule name, unique across all policy files.
fn rule_name(
    ck: &mut FileCheck,
    s: &str,
    span: &Range<usize>,
    origin: &Origin,
    names: &mut Names,
) -> Option<String> {
    if s.trim().is_empty() {
        ck.err(span, "\"name\" must not be empty");
        return None;
    }
    if let Some(first) = names.get(s) {
        let at = format!("{}:{}", first.file.display(), first.line);
        ck.err(
            span,
            format!("duplicate rule name {s:?} (first defined at {at})"),
        );
        return None;
    }
    names.insert(s.to_owned(), origin.clone());
    Some(s.to_owned())
}

/// `methods = [...]`: HTTP method tokens, uppercased; `Some(None)` when absent.
fn methods(ck: &mut FileCheck, t: &DeTable<'_>) -> Option<Option<Vec<http::Method>>> {
    let Some((list, span)) = ck.opt_str_list(t, "methods") else {
        return if t.get("methods").is_some() {
            None
        } else {
            Some(None)
        };
    };
    if list.is_empty() {
        ck.err(
            &span,
            "\"methods\" must name at least one method (omit it to match any)",
        );
        return None;
    }
    let mut out: Vec<http::Method> = Vec::new();
    let mut ok = true;
    for (m, span) in list {
        match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if !m.is_empty() => {
                if !out.contains(&method) {
                    out.push(method);
                }
            }
            _ => {
                ok = false;
                ck.err(&span, format!("{m:?} is not an HTTP method"));
            }
        }
    }
    ok.then_some(Some(out))
}

/// `path` (template) or `path_prefix`, not both.
fn path(ck: &mut FileCheck, t: &DeTable<'_>) -> Option<PathMatch> {
    let template = ck.opt_str(t, "path");
    let pfx = ck.opt_str(t, "path_prefix");
    match (template, pfx) {
        (Some(_), Some((_, span))) => {
            ck.err(
                &span,
                "a rule has either \"path\" or \"path_prefix\", not both",
            );
            None
        }
        (Some((s, span)), None) => match PathTemplate::parse(s) {
            Ok(tpl) => Some(PathMatch::Template(tpl)),
            Err(e) => {
                ck.err(&span, e);
                None
            }
        },
        (None, Some((s, span))) => prefix(ck, "path_prefix", s, &span).map(PathMatch::Prefix),
        (None, None) => {
            let bad = t.contains_key("path") || t.contains_key("path_prefix");
            (!bad).then_some(PathMatch::Any)
        }
    }
}

/// `params = { name = "value" }`: every name must be a parameter of the path template.
fn params(ck: &mut FileCheck, t: &DeTable<'_>, path: &PathMatch) -> Option<Vec<(String, String)>> {
    let Some((k, _)) = t.get_key_value("params") else {
        return Some(Vec::new());
    };
    let pairs = string_map(ck, t, "params")?;
    let names = match path {
        PathMatch::Template(tpl) => tpl.param_names(),
        PathMatch::Any | PathMatch::Prefix(_) => {
            ck.err(
                &k.span(),
                "\"params\" needs a \"path\" template with {parameters}",
            );
            return None;
        }
    };
    let mut ok = true;
    if let Some(toml::de::DeValue::Table(table)) = t.get("params").map(|v| v.get_ref()) {
        for key in table.keys() {
            let key_name: &str = key.get_ref();
            if !names.contains(&key_name) {
                ok = false;
                let mut m = format!("{key_name:?} is not a parameter of the path template");
                if let Some(best) = closest(key_name, &names) {
                    m.push_str(&format!("; did you mean {best:?}?"));
                }
                ck.err(&key.span(), m);
            }
        }
    }
    ok.then_some(pairs)
}

/// An inline table of strings (`params`, `claims`), in key order.
fn string_map(ck: &mut FileCheck, t: &DeTable<'_>, key: &str) -> Option<Vec<(String, String)>> {
    let Some(value) = t.get(key) else {
        return Some(Vec::new());
    };
    let table = ck.as_table(value, &format!("{key:?}"))?;
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in table.iter() {
        let k: &str = k.get_ref();
        match ck.as_str(v, &format!("{key}.{k}")) {
            Some(s) => out.push((k.to_owned(), s.to_owned())),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `action = "..."`.
fn action(ck: &mut FileCheck, s: &str, span: &Range<usize>) -> Option<Action> {
    Some(match s {
        "public" => Action::Public,
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "approve" => Action::Approve,
        other => {
            let mut m = format!("\"action\" must be public, allow, deny or approve, not {other:?}");
            if let Some(best) = closest(other, &["public", "allow", "deny", "approve"]) {
                m.push_str(&format!("; did you mean {best:?}?"));
            }
            ck.err(span, m);
            return None;
        }
    })
}

/// `require = { scopes, acr, max_age }`.
fn require(ck: &mut FileCheck, value: &Val<'_>) -> Option<Requirements> {
    let t = ck.as_table(value, "\"require\"")?;
    ck.unknown_keys(t, "in [rule.require]", &["scopes", "acr", "max_age"]);
    let list = |ck: &mut FileCheck, key: &str| -> Option<Vec<String>> {
        match ck.opt_str_list(t, key) {
            Some((l, _)) => Some(l.into_iter().map(|(s, _)| s.to_owned()).collect()),
            None => (!t.contains_key(key)).then(Vec::new),
        }
    };
    let scopes = list(ck, "scopes");
    let acr = list(ck, "acr");
    let max_age = match t.get("max_age") {
        Some(_) => Some(Some(ck.opt_duration(t, "max_age", Duration::ZERO)?)),
        None => Some(None),
    };
    Some(Requirements {
        scopes: scopes?,
        acr: acr?,
        max_age: max_age?,
    })
}

/// `[rule.approval]`: required for `approve`, refused otherwise. `Some(None)` = correctly absent.
fn approval_for(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    action: Option<Action>,
    refs: Refs<'_>,
) -> Option<Option<ApprovalSpec>> {
    match (t.get_key_value("approval"), action) {
        (Some((_, v)), Some(Action::Approve)) => approval(ck, v, refs).map(Some),
        (None, Some(Action::Approve)) => {
            ck.err(header, "action \"approve\" needs a [rule.approval] table");
            None
        }
        (Some((k, _)), Some(a)) => {
            ck.err(
                &k.span(),
                format!(
                    "[rule.approval] is only for action \"approve\", not {:?}",
                    a.as_str()
                ),
            );
            None
        }
        (_, None) => None,
        (None, Some(_)) => Some(None),
    }
}

/// The body of `[rule.approval]`.
fn approval(ck: &mut FileCheck, value: &Val<'_>, refs: Refs<'_>) -> Option<ApprovalSpec> {
    const KEYS: &[&str] = &[
        "approvers",
        "quorum",
        "notify",
        "hold",
        "expires",
        "self_approval",
        "approve_via",
        "reason_required",
        "redact",
        "unidentified_requester",
        "break_glass",
        "break_glass_cooldown",
        "grant",
        "grant_uses",
    ];
    let t = ck.as_table(value, "[rule.approval]")?;
    let header = value.span();
    let keys: Vec<&str> = KEYS.iter().chain(super::nudge::KEYS).copied().collect();
    ck.unknown_keys(t, "in [rule.approval]", &keys);
    // A table `quorum` without `approvers` names the approvers by its keys (`config::quorum`).
    let listed = if super::quorum::names_approvers(t) {
        Some(None)
    } else {
        approvers(ck, t, &header, refs).map(Some)
    };
    // A quorum larger than the possible voters fails closed (nothing can be approved); the
    // coverage lint warns about it (`policy::lint`).
    let (approvers, quorum) = super::quorum::quorum(ck, t, listed, refs);
    let notify = notify(ck, t, refs);
    let hold = ck.opt_duration(t, "hold", Duration::ZERO);
    let expires = ck.opt_duration(t, "expires", Duration::from_secs(1));
    let (hold_d, expires_d) = (
        hold.unwrap_or(Duration::from_secs(55)),
        expires.unwrap_or(Duration::from_secs(3600)),
    );
    if hold_d > expires_d {
        let span = t
            .get("hold")
            .or(t.get("expires"))
            .map_or(header.clone(), |v| v.span());
        ck.err(
            &span,
            format!(
                "\"hold\" ({}) must not be longer than \"expires\" ({})",
                humantime::format_duration(hold_d),
                humantime::format_duration(expires_d)
            ),
        );
    }
    let approve_via = approve_via(ck, t, refs);
    let grant = grant(ck, t);
    let redact = redact(ck, t);
    let nudge = super::nudge::nudge(ck, t, expires_d, refs);
    let unidentified_requester = match ck.opt_str(t, "unidentified_requester") {
        None => Some(UnidentifiedRequester::Refuse),
        Some(("refuse", _)) => Some(UnidentifiedRequester::Refuse),
        Some(("hold", _)) => Some(UnidentifiedRequester::Hold),
        Some((other, span)) => {
            ck.err(
                &span,
                format!(
                    "\"unidentified_requester\" must be \"refuse\" or \"hold\", found {other:?}"
                ),
            );
            None
        }
    };
    Some(ApprovalSpec {
        approvers: approvers?,
        quorum: quorum?,
        notify: notify?,
        hold: hold_d,
        expires: expires_d,
        self_approval: ck.opt_bool(t, "self_approval").unwrap_or(false),
        approve_via: approve_via?,
        reason_required: ck.opt_bool(t, "reason_required").unwrap_or(false),
        redact: redact?,
        unidentified_requester: unidentified_requester?,
        nudge: nudge?,
        break_glass: ck.opt_bool(t, "break_glass").unwrap_or(false),
        break_glass_cooldown: ck.opt_duration(t, "break_glass_cooldown", Duration::from_secs(1)),
        grant: grant?,
    })
}

/// The longest `grant` accepted (24h): a grant is a short reuse of one decision, not standing
/// access.
pub const MAX_GRANT: Duration = Duration::from_secs(24 * 3600);

/// `grant = "15m"` and `grant_uses = N` (default [`crate::approval::grant::DEFAULT_USES`]).
/// `Some(None)`: no grants on this rule; `None`: an error was reported.
fn grant(ck: &mut FileCheck, t: &DeTable<'_>) -> Option<Option<GrantSpec>> {
    let ttl = ck.opt_duration(t, "grant", Duration::from_secs(1));
    let uses = ck.opt_int(t, "grant_uses", 1);
    if (ttl.is_none() && t.contains_key("grant"))
        || (uses.is_none() && t.contains_key("grant_uses"))
    {
        return None; // reported
    }
    match (ttl, uses) {
        (None, None) => Some(None),
        (None, Some(_)) => {
            let span = t.get("grant_uses").map(|v| v.span()).unwrap_or_default();
            ck.err(
                &span,
                "\"grant_uses\" needs \"grant\" (how long a grant lasts)",
            );
            None
        }
        (Some(ttl), _) if ttl > MAX_GRANT => {
            let span = t.get("grant").map(|v| v.span()).unwrap_or_default();
            ck.err(
                &span,
                format!(
                    "\"grant\" ({}) must be at most 24h (a grant reuses one decision briefly)",
                    humantime::format_duration(ttl),
                ),
            );
            None
        }
        (Some(ttl), uses) => Some(Some(GrantSpec {
            ttl,
            uses: uses.map_or(crate::approval::grant::DEFAULT_USES, |n| {
                u32::try_from(n).unwrap_or(u32::MAX)
            }),
        })),
    }
}

/// `approve_via = "button" | "login"` (login needs `[approver_login]`).
fn approve_via(ck: &mut FileCheck, t: &DeTable<'_>, refs: Refs<'_>) -> Option<ApproveVia> {
    let Some((s, span)) = ck.opt_str(t, "approve_via") else {
        return (!t.contains_key("approve_via")).then_some(ApproveVia::Button);
    };
    match s {
        "button" => Some(ApproveVia::Button),
        "login" if refs.login => Some(ApproveVia::Login),
        "login" => {
            ck.err(
                &span,
                "approve_via \"login\" needs an [approver_login] section in the config",
            );
            None
        }
        other => {
            ck.err(
                &span,
                format!("\"approve_via\" must be \"button\" or \"login\", not {other:?}"),
            );
            None
        }
    }
}

/// `redact = [...]`: JSON pointers (RFC 6901).
fn redact(ck: &mut FileCheck, t: &DeTable<'_>) -> Option<Vec<String>> {
    let Some((list, _)) = ck.opt_str_list(t, "redact") else {
        return (!t.contains_key("redact")).then(Vec::new);
    };
    let mut ok = true;
    let mut out = Vec::new();
    for (s, span) in list {
        if json_pointer_ok(s) {
            out.push(s.to_owned());
        } else {
            ok = false;
            ck.err(&span, format!("redact {s:?} must be a JSON pointer like \"/password\" (starts with \"/\", ~ only as ~0 or ~1)"));
        }
    }
    ok.then_some(out)
}

/// RFC 6901: starts with `/`, and `~` only as `~0` or `~1`.
fn json_pointer_ok(s: &str) -> bool {
    s.starts_with('/')
        && s.match_indices('~')
            .all(|(i, _)| matches!(s.as_bytes().get(i + 1), Some(b'0' | b'1')))
}

/// Reads and compiles one policy file's text.
pub(crate) fn parse_text(
    path: &Path,
    text: &str,
    refs: Refs<'_>,
    names: &mut Names,
) -> (Vec<Rule>, Vec<super::Problem>) {
    let mut ck = FileCheck::new(path, text);
    let (doc, errors) = toml::de::DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        super::syntax_problems(&mut ck, &errors);
        return (Vec::new(), ck.into_problems());
    }
    let rules = parse(&mut ck, doc.get_ref(), refs, names);
    (rules, ck.into_problems())
}

#[cfg(test)]
mod tests;
