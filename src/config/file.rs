//! The config file (SPEC section 3): one function per section, each recording every problem it
//! finds and returning a value (with placeholders where a value was bad, since the whole
//! [`Config`] is thrown away when any problem was found).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;
use url::Url;

mod teams_bot;

use super::walk::{closest, FileCheck, Val};
use super::{
    Algorithm, Approvals, ApproverLogin, AuditWebhook, Config, Issuer, PolicyFiles, Route, Server,
    Slack, StoreUrl, Teams, Telemetry, TlsFiles, Upstream,
};
use crate::policy::{normalize_path, DefaultAction, HostPattern};
use crate::secret::Secret;

/// Top-level keys of the config file.
const TOP: &[&str] = &[
    "server",
    "upstream",
    "route",
    "issuer",
    "policy",
    "approvals",
    "approvers",
    "slack",
    "teams",
    "approver_login",
    "telemetry",
    "audit",
];

/// The default policy glob, used when `[policy] files` is not given.
pub(crate) const DEFAULT_POLICY_GLOB: &str = "policies/*.toml";

/// A policy glob with where it was written (`None` = the default).
#[derive(Debug, Clone)]
pub(crate) struct GlobAt {
    /// Pattern resolved against the config folder.
    pub pattern: String,
    /// Span of the value in the config file, when written there.
    pub span: Option<Range<usize>>,
}

/// What the config file says, plus where the policy globs were written.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The config (meaningful only when no problem was found; `None` without `[server]`).
    pub config: Option<Config>,
    /// `[policy] files`, with spans for problems.
    pub globs: Vec<GlobAt>,
    /// `[approvers.groups]` as far as it parsed (policy files are checked against it even when
    /// another section is broken, so one mistake does not cascade).
    pub groups: BTreeMap<String, Vec<String>>,
    /// Which of `[slack]`, `[teams]`, `[approver_login]` are present (even if broken).
    pub present: [bool; 3],
}

/// Walks the whole config document.
pub(crate) fn parse(ck: &mut FileCheck, doc: &DeTable<'_>, path: &Path) -> Parsed {
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    ck.unknown_keys(doc, "at the top level", TOP);
    let whole = 0..0;
    let server = match doc.get("server") {
        Some(v) => server(ck, v, &dir),
        None => {
            ck.err(&whole, "missing required section [server]");
            None
        }
    };
    let upstreams = array_of_tables(ck, doc, "upstream", |ck, t, h| upstream(ck, t, h, &dir));
    unique(ck, doc, "upstream", "name");
    // Routes refer to upstreams by the names as written, so a route is not blamed for a
    // problem in the upstream it names. When every upstream is valid (the only case in which
    // the config is used) these indexes are those of `Config::upstreams`.
    let names = raw_names(doc, "upstream", "name");
    let routes = array_of_tables(ck, doc, "route", |ck, t, h| route(ck, t, h, &names));
    let issuers = array_of_tables(ck, doc, "issuer", issuer);
    unique(ck, doc, "issuer", "issuer");
    let (policy, globs) = policy(ck, doc.get("policy"), &dir);
    let approvals = approvals(ck, doc.get("approvals"), &dir);
    let (approver_groups, approver_group_lines) = approver_groups(ck, doc.get("approvers"));
    let slack = doc.get("slack").and_then(|v| slack(ck, v, &dir));
    let bot_mode = doc.get("teams").is_some_and(teams_bot::is_bot_mode);
    let teams = doc
        .get("teams")
        .filter(|_| !bot_mode)
        .and_then(|v| teams(ck, v, &dir));
    let teams_bot = doc
        .get("teams")
        .filter(|_| bot_mode)
        .and_then(|v| teams_bot::teams_bot(ck, v, &dir));
    let approver_login = doc
        .get("approver_login")
        .and_then(|v| approver_login(ck, v, &dir));
    let telemetry = doc.get("telemetry").and_then(|v| telemetry(ck, v));
    let audit_webhook = doc.get("audit").and_then(|v| audit_webhook(ck, v, &dir));
    let present = ["slack", "teams", "approver_login"].map(|k| doc.contains_key(k));
    let groups = approver_groups.clone();
    let config = server.map(|server| Config {
        path: path.to_path_buf(),
        server,
        upstreams: upstreams.into_iter().map(|(u, _)| u).collect(),
        routes: routes.into_iter().map(|(r, _)| r).collect(),
        issuers: issuers.into_iter().map(|(i, _)| i).collect(),
        policy,
        approvals,
        approver_groups,
        approver_group_lines,
        slack,
        teams,
        teams_bot,
        approver_login,
        telemetry,
        audit_webhook,
    });
    Parsed {
        config,
        globs,
        groups,
        present,
    }
}

/// Parses `[[name]]` items with `item`, keeping each value with its header span.
fn array_of_tables<T>(
    ck: &mut FileCheck,
    doc: &DeTable<'_>,
    name: &str,
    mut item: impl FnMut(&mut FileCheck, &DeTable<'_>, &Range<usize>) -> Option<T>,
) -> Vec<(T, Range<usize>)> {
    let Some(value) = doc.get(name) else {
        return Vec::new();
    };
    let Some(array) = ck.as_array(value, &format!("[[{name}]]")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in array.iter() {
        let span = entry.span();
        if let Some(table) = ck.as_table(entry, &format!("each [[{name}]]")) {
            if let Some(v) = item(ck, table, &span) {
                out.push((v, span));
            }
        }
    }
    out
}

/// The `key` string of every `[[section]]` table, in file order (`""` where missing).
fn raw_names<'t>(doc: &'t DeTable<'_>, section: &str, key: &str) -> Vec<&'t str> {
    let Some(toml::de::DeValue::Array(items)) = doc.get(section).map(|v| v.get_ref()) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| match item.get_ref() {
            toml::de::DeValue::Table(t) => t.get(key).and_then(|v| v.get_ref().as_str()),
            _ => None,
        })
        .map(|n| n.unwrap_or_default())
        .collect()
}

/// Reports the second and later `[[section]]` tables whose `key` string repeats an earlier
/// one. Reads the raw tables, so a duplicate is found even when either item has other problems.
fn unique(ck: &mut FileCheck, doc: &DeTable<'_>, section: &str, key: &str) {
    let Some(toml::de::DeValue::Array(items)) = doc.get(section).map(|v| v.get_ref()) else {
        return;
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items.iter() {
        let toml::de::DeValue::Table(t) = item.get_ref() else {
            continue;
        };
        let Some(k) = t.get(key).and_then(|v| v.get_ref().as_str()) else {
            continue;
        };
        let span = item.span();
        if let Some(first) = seen.get(k) {
            let (line, _) = ck.position(*first);
            ck.err(
                &span,
                format!("duplicate {section} {k:?} (first defined on line {line})"),
            );
        } else {
            seen.insert(k, span.start);
        }
    }
}

/// `[server]`.
fn server(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<Server> {
    const KEYS: &[&str] = &["listen", "tls", "control_listen", "public_url", "threads"];
    let t = ck.as_table(value, "[server]")?;
    let header = value.span();
    ck.unknown_keys(t, "in [server]", KEYS);
    let listen = ck
        .req_str(t, &header, "in [server]", "listen")
        .and_then(|(s, span)| socket_addr(ck, "listen", s, &span));
    let tls = t.get("tls").and_then(|v| tls(ck, v, dir));
    let default_control = SocketAddr::from((Ipv4Addr::LOCALHOST, 9090));
    let control_listen = match ck.opt_str(t, "control_listen") {
        Some((s, span)) => {
            let addr = socket_addr(ck, "control_listen", s, &span);
            if addr.is_some() && addr == listen {
                ck.err(&span, "\"control_listen\" must differ from \"listen\" (the control plane never shares the data port)");
            }
            addr
        }
        None => {
            if listen == Some(default_control) {
                ck.err(&header, "\"listen\" is the default \"control_listen\" 127.0.0.1:9090; set \"control_listen\" to another address");
            }
            Some(default_control)
        }
    };
    let public_url = match ck.opt_str(t, "public_url") {
        Some((s, span)) => http_url(ck, "public_url", s, &span),
        None => control_listen.and_then(|a| Url::parse(&format!("http://{a}")).ok()),
    };
    let threads = ck.opt_int(t, "threads", 1).unwrap_or(2);
    Some(Server {
        listen: listen?,
        tls,
        control_listen: control_listen?,
        public_url: public_url?,
        threads: usize::try_from(threads).unwrap_or(2),
    })
}

/// `tls = { cert, key }`.
fn tls(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<TlsFiles> {
    let t = ck.as_table(value, "\"tls\"")?;
    let header = value.span();
    ck.unknown_keys(t, "in [server.tls]", &["cert", "key"]);
    let cert = ck
        .req_str(t, &header, "in [server.tls]", "cert")
        .and_then(|(s, span)| existing_file(ck, "cert", s, &span, dir));
    let key = ck
        .req_str(t, &header, "in [server.tls]", "key")
        .and_then(|(s, span)| existing_file(ck, "key", s, &span, dir));
    Some(TlsFiles {
        cert: cert?,
        key: key?,
    })
}

/// `[[upstream]]`.
fn upstream(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    dir: &Path,
) -> Option<Upstream> {
    ck.unknown_keys(
        t,
        "in [[upstream]]",
        &["name", "url", "ca", "case_insensitive_paths"],
    );
    let name = ck
        .req_str(t, header, "in [[upstream]]", "name")
        .map(|(s, _)| s.to_owned());
    let url = ck
        .req_str(t, header, "in [[upstream]]", "url")
        .and_then(|(s, span)| upstream_url(ck, s, &span));
    let ca = match ck.opt_str(t, "ca") {
        Some((s, span)) => {
            if url.as_ref().is_some_and(|u| u.scheme() != "https") {
                ck.err(&span, "\"ca\" is only used with an https:// upstream url");
            }
            Some(existing_file(ck, "ca", s, &span, dir)?)
        }
        None => None,
    };
    let case_insensitive_paths = ck.opt_bool(t, "case_insensitive_paths").unwrap_or(false);
    Some(Upstream {
        name: name?,
        url: url?,
        ca,
        case_insensitive_paths,
    })
}

/// An upstream origin: http(s), a host, no path beyond `/`, no query or fragment.
fn upstream_url(ck: &mut FileCheck, s: &str, span: &Range<usize>) -> Option<Url> {
    let url = http_url(ck, "url", s, span)?;
    let problem = if url.path() != "/" {
        Some("must not have a path (routes keep the request path as sent)")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("must not have a query or fragment")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not carry credentials")
    } else {
        None
    };
    match problem {
        Some(p) => {
            ck.err(span, format!("upstream \"url\" {s:?} {p}"));
            None
        }
        None => Some(url),
    }
}

/// `[[route]]`.
fn route(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    upstreams: &[&str],
) -> Option<Route> {
    const KEYS: &[&str] = &[
        "host",
        "path_prefix",
        "upstream",
        "allow_semicolons",
        "allow_method_override",
    ];
    ck.unknown_keys(t, "in [[route]]", KEYS);
    let host = match ck.opt_str(t, "host") {
        Some((s, span)) => match HostPattern::parse(s) {
            Ok(h) => Some(Some(h)),
            Err(e) => {
                ck.err(&span, e);
                None
            }
        },
        None => Some(None),
    };
    let path_prefix = match ck.opt_str(t, "path_prefix") {
        Some((s, span)) => prefix(ck, "path_prefix", s, &span),
        None => Some("/".to_owned()),
    };
    let upstream = ck
        .req_str(t, header, "in [[route]]", "upstream")
        .and_then(|(s, span)| {
            let found = upstreams.iter().position(|u| *u == s);
            if found.is_none() {
                let mut m = format!("no [[upstream]] is named {s:?}");
                if let Some(best) = closest(s, upstreams) {
                    m.push_str(&format!("; did you mean {best:?}?"));
                }
                ck.err(&span, m);
            }
            found
        });
    let allow_semicolons = ck.opt_bool(t, "allow_semicolons").unwrap_or(false);
    let allow_method_override = ck.opt_bool(t, "allow_method_override").unwrap_or(false);
    Some(Route {
        host: host?,
        path_prefix: path_prefix?,
        upstream: upstream?,
        allow_semicolons,
        allow_method_override,
        line: ck.position(header.start).0,
    })
}

/// A path prefix in [`normalize_path`] form.
pub(crate) fn prefix(
    ck: &mut FileCheck,
    key: &str,
    s: &str,
    span: &Range<usize>,
) -> Option<String> {
    if !s.starts_with('/') {
        ck.err(span, format!("{key:?} must start with \"/\""));
        return None;
    }
    match normalize_path(s) {
        Ok(p) => Some(p),
        Err(e) => {
            ck.err(span, format!("{key:?} {s:?}: {e}"));
            None
        }
    }
}

/// `[[issuer]]`.
fn issuer(ck: &mut FileCheck, t: &DeTable<'_>, header: &Range<usize>) -> Option<Issuer> {
    const KEYS: &[&str] = &[
        "issuer",
        "audiences",
        "jwks_uri",
        "algorithms",
        "leeway",
        "require_typ",
        "refresh",
        "identity_claim",
        "approvers",
    ];
    ck.unknown_keys(t, "in [[issuer]]", KEYS);
    let issuer = ck
        .req_str(t, header, "in [[issuer]]", "issuer")
        .and_then(|(s, span)| issuer_url(ck, "issuer", s, &span).map(|_| s.to_owned()));
    let audiences = match ck.opt_str_list(t, "audiences") {
        Some((list, span)) if list.is_empty() => {
            ck.err(&span, "\"audiences\" must name at least one audience");
            None
        }
        Some((list, _)) => Some(list.into_iter().map(|(s, _)| s.to_owned()).collect()),
        None => {
            if t.get("audiences").is_none() {
                ck.err(header, "missing required key \"audiences\" in [[issuer]]");
            }
            None
        }
    };
    let jwks_uri = match ck.opt_str(t, "jwks_uri") {
        Some((s, span)) => Some(Some(http_url(ck, "jwks_uri", s, &span)?)),
        None => Some(None),
    };
    let algorithms = match ck.opt_str_list(t, "algorithms") {
        Some((list, span)) => algorithms(ck, &list, &span),
        None => Some(Algorithm::defaults()),
    };
    let leeway = ck.opt_duration(t, "leeway", Duration::ZERO);
    let refresh = ck.opt_duration(t, "refresh", Duration::from_secs(1));
    let require_typ = ck.opt_str(t, "require_typ").map(|(s, _)| s.to_owned());
    let identity_claim = match ck.opt_str(t, "identity_claim") {
        Some((s, span)) if s.trim().is_empty() => {
            ck.err(&span, "\"identity_claim\" must name a claim");
            None
        }
        Some((s, _)) => Some(s.to_owned()),
        None => Some("email".to_owned()),
    };
    let approvers = ck.opt_bool(t, "approvers").unwrap_or(false);
    Some(Issuer {
        issuer: issuer?,
        audiences: audiences?,
        jwks_uri: jwks_uri?,
        algorithms: algorithms?,
        leeway: leeway.unwrap_or(Duration::from_secs(60)),
        require_typ,
        refresh: refresh.unwrap_or(Duration::from_secs(300)),
        identity_claim: identity_claim?,
        approvers,
    })
}

/// `algorithms = [...]`: known JOSE names, never `none` or HMAC.
fn algorithms(
    ck: &mut FileCheck,
    list: &[(&str, Range<usize>)],
    span: &Range<usize>,
) -> Option<Vec<Algorithm>> {
    if list.is_empty() {
        ck.err(span, "\"algorithms\" must allow at least one algorithm");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (name, span) in list {
        if let Some(a) = Algorithm::from_jose(name) {
            if !out.contains(&a) {
                out.push(a);
            }
            continue;
        }
        ok = false;
        let upper = name.to_ascii_uppercase();
        let message = if upper == "NONE" {
            format!("algorithm {name:?} is never allowed: unsigned tokens prove nothing")
        } else if upper.starts_with("HS") {
            format!("algorithm {name:?} is never allowed: HMAC needs a secret shared with the issuer, and a public key would be accepted as that secret")
        } else {
            let all = [
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
            ];
            let mut m = format!(
                "unknown algorithm {name:?}; expected one of {}",
                all.join(", ")
            );
            if let Some(exact) = all.iter().find(|a| a.eq_ignore_ascii_case(name)) {
                m = format!("unknown algorithm {name:?}; JOSE names are case-sensitive: did you mean {exact:?}?");
            }
            m
        };
        ck.err(span, message);
    }
    ok.then_some(out)
}

/// `[policy]`: globs resolved against the config folder, and the default action.
fn policy(ck: &mut FileCheck, value: Option<&Val<'_>>, dir: &Path) -> (PolicyFiles, Vec<GlobAt>) {
    let resolve = |g: &str| resolve_glob(dir, g);
    let default_globs = vec![GlobAt {
        pattern: resolve(DEFAULT_POLICY_GLOB),
        span: None,
    }];
    let mut files = PolicyFiles {
        files: vec![resolve(DEFAULT_POLICY_GLOB)],
        default: DefaultAction::Allow,
    };
    let Some(t) = value.and_then(|v| ck.as_table(v, "[policy]")) else {
        return (files, default_globs);
    };
    ck.unknown_keys(t, "in [policy]", &["files", "default"]);
    let mut globs = default_globs;
    // `files = []` is allowed on purpose: an authentication-only proxy needs no rules.
    if let Some((list, _span)) = ck.opt_str_list(t, "files") {
        globs = list
            .into_iter()
            .map(|(g, span)| GlobAt {
                pattern: resolve(g),
                span: Some(span),
            })
            .collect();
    }
    if let Some((s, span)) = ck.opt_str(t, "default") {
        match s {
            "allow" => files.default = DefaultAction::Allow,
            "deny" => files.default = DefaultAction::Deny,
            other => ck.err(
                &span,
                format!("\"default\" must be \"allow\" or \"deny\", not {other:?}"),
            ),
        }
    }
    files.files = globs.iter().map(|g| g.pattern.clone()).collect();
    (files, globs)
}

/// A glob relative to the config folder (the folder's own glob characters escaped).
pub(crate) fn resolve_glob(dir: &Path, pattern: &str) -> String {
    if Path::new(pattern).is_absolute() || dir.as_os_str().is_empty() {
        return pattern.to_owned();
    }
    let base = glob::Pattern::escape(&dir.to_string_lossy());
    format!("{base}/{pattern}")
}

/// `[approvals]`.
fn approvals(ck: &mut FileCheck, value: Option<&Val<'_>>, dir: &Path) -> Approvals {
    let mut out = Approvals {
        store: StoreUrl::Memory,
        audit_log: dir.join("audit.jsonl"),
        signing_key: None,
        store_password: None,
        store_ca: None,
        max_pending_per_requester: 20,
        recheck: Duration::from_secs(10),
    };
    let Some(t) = value.and_then(|v| ck.as_table(v, "[approvals]")) else {
        return out;
    };
    ck.unknown_keys(
        t,
        "in [approvals]",
        &[
            "store",
            "audit_log",
            "signing_key",
            "store_password",
            "store_ca",
            "max_pending_per_requester",
            "recheck",
        ],
    );
    if let Some(d) = ck.opt_duration(t, "recheck", Duration::from_millis(100)) {
        out.recheck = d;
    }
    if let Some(n) = ck.opt_int(t, "max_pending_per_requester", 1) {
        out.max_pending_per_requester = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some((s, span)) = ck.opt_str(t, "store") {
        match s {
            "memory" => {}
            _ => match Url::parse(s) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some() => {
                    out.store = StoreUrl::Redis(u)
                }
                _ => ck.err(
                    &span,
                    format!("\"store\" must be \"memory\" or a redis://host or rediss://host URL, not {s:?}"),
                ),
            },
        }
    }
    if let Some((s, _)) = ck.opt_str(t, "audit_log") {
        out.audit_log = dir.join(s);
    }
    out.signing_key = secret(ck, t, "signing_key", dir);
    if matches!(out.store, StoreUrl::Redis(_)) && t.get("signing_key").is_none() {
        // SPEC 8: records in a shared store carry a MAC keyed from the signing key.
        if let Some((_, span)) = ck.opt_str(t, "store") {
            ck.err(
                &span,
                "a redis \"store\" needs \"signing_key\": shared records are sealed with keys derived from it",
            );
        }
    }
    out.store_password = secret(ck, t, "store_password", dir);
    if let Some((s, span)) = ck.opt_str(t, "store_ca") {
        if matches!(&out.store, StoreUrl::Redis(u) if u.scheme() == "rediss") {
            out.store_ca = Some(dir.join(s));
        } else {
            ck.err(&span, "\"store_ca\" needs a rediss:// \"store\"");
        }
    }
    if out.store_password.is_some() && out.store == StoreUrl::Memory {
        if let Some((_, span)) = ck.opt_str(t, "store_password") {
            ck.err(
                &span,
                "\"store_password\" needs a redis:// or rediss:// \"store\"",
            );
        }
    }
    out
}

/// `[approvers]` with its one sub-table `groups`.
/// Returns the groups and the (line, column) of each group's name, for the coverage lint.
#[allow(clippy::type_complexity)]
fn approver_groups(
    ck: &mut FileCheck,
    value: Option<&Val<'_>>,
) -> (
    BTreeMap<String, Vec<String>>,
    BTreeMap<String, (usize, usize)>,
) {
    let mut out = BTreeMap::new();
    let mut lines = BTreeMap::new();
    let Some(t) = value.and_then(|v| ck.as_table(v, "[approvers]")) else {
        return (out, lines);
    };
    ck.unknown_keys(t, "in [approvers]", &["groups"]);
    let Some(groups) = t
        .get("groups")
        .and_then(|v| ck.as_table(v, "[approvers.groups]"))
    else {
        return (out, lines);
    };
    for (name, members) in groups.iter() {
        lines.insert(name.get_ref().to_string(), ck.position(name.span().start));
        let name: &str = name.get_ref();
        let Some(list) = ck.as_array(members, &format!("group {name:?}")) else {
            continue;
        };
        let mut emails = Vec::new();
        for item in list.iter() {
            let Some(s) = ck.as_str(item, &format!("each member of group {name:?}")) else {
                continue;
            };
            match email(s) {
                Some(e) => emails.push(e),
                None => ck.err(&item.span(), format!("{s:?} is not an email address")),
            }
        }
        out.insert(name.to_owned(), emails);
    }
    (out, lines)
}

/// A lowercase email address, or `None` when `s` does not look like one.
pub(crate) fn email(s: &str) -> Option<String> {
    let (local, domain) = s.rsplit_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| s.to_lowercase())
}

/// `[slack]`.
fn slack(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<Slack> {
    let t = ck.as_table(value, "[slack]")?;
    let header = value.span();
    ck.unknown_keys(
        t,
        "in [slack]",
        &["bot_token", "signing_secret", "api_url", "team_id"],
    );
    let bot_token = req_secret(ck, t, &header, "[slack]", "bot_token", dir);
    let signing_secret = req_secret(ck, t, &header, "[slack]", "signing_secret", dir);
    let api_url = match ck.opt_str(t, "api_url") {
        Some((s, span)) => http_url(ck, "api_url", s, &span),
        None => Url::parse("https://slack.com/api").ok(),
    };
    let team_id = match ck.opt_str(t, "team_id") {
        Some((s, _)) if slack_team_id_ok(s) => Some(Some(s.to_owned())),
        Some((s, span)) => {
            ck.err(
                &span,
                format!(
                    "\"team_id\" must be a Slack workspace id such as \"T0123ABCD\", not {s:?}"
                ),
            );
            None
        }
        None => Some(None),
    };
    Some(Slack {
        bot_token: bot_token?,
        signing_secret: signing_secret?,
        api_url: api_url?,
        team_id: team_id?,
    })
}

/// A Slack workspace id: `T` and uppercase letters or digits, as Slack shows it in `team.id`.
fn slack_team_id_ok(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 32
        && s.starts_with('T')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `[teams]`.
fn teams(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<Teams> {
    let t = ck.as_table(value, "[teams]")?;
    ck.unknown_keys(t, "in [teams]", &["webhook_url"]);
    let webhook_url = req_secret(ck, t, &value.span(), "[teams]", "webhook_url", dir)?;
    Some(Teams { webhook_url })
}

/// `[approver_login]`.
fn approver_login(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<ApproverLogin> {
    let t = ck.as_table(value, "[approver_login]")?;
    let header = value.span();
    ck.unknown_keys(
        t,
        "in [approver_login]",
        &["issuer", "client_id", "client_secret"],
    );
    let issuer = ck
        .req_str(t, &header, "in [approver_login]", "issuer")
        .and_then(|(s, span)| issuer_url(ck, "issuer", s, &span).map(|_| s.to_owned()));
    let client_id = ck
        .req_str(t, &header, "in [approver_login]", "client_id")
        .map(|(s, _)| s.to_owned());
    let client_secret = secret(ck, t, "client_secret", dir);
    Some(ApproverLogin {
        issuer: issuer?,
        client_id: client_id?,
        client_secret,
    })
}

/// `[telemetry]`: `otlp_endpoint` (required, http or https) and `service_name`.
fn telemetry(ck: &mut FileCheck, value: &Val<'_>) -> Option<Telemetry> {
    let t = ck.as_table(value, "[telemetry]")?;
    ck.unknown_keys(t, "in [telemetry]", &["otlp_endpoint", "service_name"]);
    let endpoint = ck
        .req_str(t, &value.span(), "in [telemetry]", "otlp_endpoint")
        .and_then(|(s, span)| http_url(ck, "otlp_endpoint", s, &span));
    let service_name = match ck.opt_str(t, "service_name") {
        Some((s, span)) if s.trim().is_empty() => {
            ck.err(&span, "\"service_name\" must not be empty");
            None
        }
        Some((s, _)) => Some(s.to_owned()),
        None => Some("countersign".to_owned()),
    };
    Some(Telemetry {
        otlp_endpoint: endpoint?,
        service_name: service_name?,
    })
}

/// `[audit]`: `webhook` (https, or http on loopback) and its required `webhook_secret`.
fn audit_webhook(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<AuditWebhook> {
    let t = ck.as_table(value, "[audit]")?;
    let header = value.span();
    ck.unknown_keys(t, "in [audit]", &["webhook", "webhook_secret"]);
    let url = match ck.opt_str(t, "webhook") {
        Some((s, span)) => issuer_url(ck, "webhook", s, &span),
        None => {
            if let Some((_, span)) = ck.opt_str(t, "webhook_secret") {
                ck.err(&span, "\"webhook_secret\" needs a \"webhook\"");
            }
            return None;
        }
    };
    // Unsigned evidence proves nothing to the receiver: the secret is required.
    let secret = req_secret(ck, t, &header, "[audit]", "webhook_secret", dir);
    Some(AuditWebhook {
        url: url?,
        secret: secret?,
    })
}

/// A required secret.
fn req_secret(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &Range<usize>,
    section: &str,
    key: &str,
    dir: &Path,
) -> Option<Secret> {
    if t.get(key).is_none() {
        ck.err(header, format!("missing required key {key:?} in {section}"));
        return None;
    }
    secret(ck, t, key, dir)
}

/// An optional secret: `env:NAME` or `file:PATH` (relative to the config folder, one trailing
/// newline trimmed). Inline values are refused so secrets never sit in config files.
fn secret(ck: &mut FileCheck, t: &DeTable<'_>, key: &str, dir: &Path) -> Option<Secret> {
    let (s, span) = ck.opt_str(t, key)?;
    match read_secret(s, dir) {
        Ok(v) => Some(Secret::new(v)),
        Err(e) => {
            ck.err(&span, format!("{key:?}: {e}"));
            None
        }
    }
}

/// Reads the value a secret reference points at.
pub(crate) fn read_secret(reference: &str, dir: &Path) -> Result<String, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable {name} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("environment variable {name} is not valid UTF-8"))
            }
        };
    }
    if let Some(file) = reference.strip_prefix("file:") {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if value.is_empty() {
            return Err(format!("secret file {} is empty", path.display()));
        }
        return Ok(value.to_owned());
    }
    Err("secrets must be given as env:NAME or file:PATH, never inline".into())
}

/// A socket address `host:port` (IP literal).
fn socket_addr(ck: &mut FileCheck, key: &str, s: &str, span: &Range<usize>) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            let hint = if s.starts_with("localhost") {
                " (use 127.0.0.1)"
            } else {
                ""
            };
            ck.err(span, format!("{key:?} must be an IP address and port like \"127.0.0.1:8080\", not {s:?}{hint}"));
            None
        }
    }
}

/// An absolute http(s) URL with a host.
fn http_url(ck: &mut FileCheck, key: &str, s: &str, span: &Range<usize>) -> Option<Url> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            ck.err(
                span,
                format!("{key:?} must be an http:// or https:// URL, not {s:?}"),
            );
            None
        }
        Err(e) => {
            ck.err(span, format!("{key:?} is not a valid URL ({e}): {s:?}"));
            None
        }
    }
}

/// An issuer URL: https, or http only on loopback (development).
fn issuer_url(ck: &mut FileCheck, key: &str, s: &str, span: &Range<usize>) -> Option<Url> {
    let url = http_url(ck, key, s, span)?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        ck.err(span, format!("{key:?} must use https:// (http:// is only accepted for 127.0.0.1 or localhost), not {s:?}"));
        return None;
    }
    Some(url)
}

/// A file path (relative to the config folder) that must exist.
fn existing_file(
    ck: &mut FileCheck,
    key: &str,
    s: &str,
    span: &Range<usize>,
    dir: &Path,
) -> Option<PathBuf> {
    let path = dir.join(s);
    if path.is_file() {
        Some(path)
    } else {
        ck.err(
            span,
            format!("{key:?}: file {} does not exist", path.display()),
        );
        None
    }
}
