//! The config file (SPEC section 3): one function per section, each recording every problem it
//! finds and returning a value (with placeholders where a value was bad, since the whole
//! [`Config`] is thrown away when any problem was found).
//!
//! This module walks the document and owns the shared helpers for `[[array]]` sections; each
//! section's parser lives in a submodule named for what it configures.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;
use url::Url;

mod approvals;
mod integrations;
mod issuer;
mod listen;
mod pagerduty;
mod teams_bot;
mod values;

use approvals::*;
use integrations::*;
use issuer::*;
use listen::*;
use values::*;

pub(crate) use approvals::email;
pub(crate) use listen::prefix;
pub(crate) use pagerduty::on_call_approver;

use super::walk::{array_of_tables, closest, FileCheck, Val};
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
    "pagerduty",
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
    /// Whether `[pagerduty]` is present (even if broken).
    pub pagerduty: bool,
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
    let pagerduty = doc
        .get("pagerduty")
        .and_then(|v| pagerduty::pagerduty(ck, v, &dir));
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
        pagerduty,
    });
    Parsed {
        config,
        globs,
        groups,
        present,
        pagerduty: doc.contains_key("pagerduty"),
    }
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
