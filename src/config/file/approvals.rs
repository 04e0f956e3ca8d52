//! `[policy]`, `[approvals]` and `[approvers]`: where policies live, the approval store and the approver groups.
//!
//! Owns the parsing of these sections only; every problem goes to the shared [`FileCheck`]. Must
//! not read other sections or build the final [`Config`](super::super::Config).

use super::*;

/// `[policy]`: globs resolved against the config folder, and the default action.
pub fn policy(
    ck: &mut FileCheck,
    value: Option<&Val<'_>>,
    dir: &Path,
) -> (PolicyFiles, Vec<GlobAt>) {
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
pub fn approvals(ck: &mut FileCheck, value: Option<&Val<'_>>, dir: &Path) -> Approvals {
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
            _ if s.starts_with(crate::approval::store::redis::SENTINEL_SCHEME) => {
                match crate::approval::store::redis::SentinelUrl::parse(s) {
                    Ok(u) => out.store = StoreUrl::Sentinel(u),
                    Err(e) => ck.err(&span, format!("\"store\": {e}")),
                }
            }
            _ => match Url::parse(s) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some() => {
                    out.store = StoreUrl::Redis(u)
                }
                _ => ck.err(
                    &span,
                    format!("\"store\" must be \"memory\", a redis://host or rediss://host URL, or redis+sentinel://HOST:PORT,.../MASTER, not {s:?}"),
                ),
            },
        }
    }
    if let Some((s, _)) = ck.opt_str(t, "audit_log") {
        out.audit_log = dir.join(s);
    }
    out.signing_key = secret(ck, t, "signing_key", dir);
    if out.store.is_shared() && t.get("signing_key").is_none() {
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
                "\"store_password\" needs a redis://, rediss:// or redis+sentinel:// \"store\"",
            );
        }
    }
    out
}

/// `[approvers]` with its one sub-table `groups`.
/// Returns the groups and the (line, column) of each group's name, for the coverage lint.
#[allow(clippy::type_complexity)]
pub fn approver_groups(
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
