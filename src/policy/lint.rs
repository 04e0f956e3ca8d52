//! The coverage lint (SPEC 8): gaps in routes and rules that an attacker could use, found
//! without sending a request. `countersign check` prints them as `warning:` lines (`--strict`
//! fails on them); `run` logs and counts them at start and on every reload.
//!
//! Pure: works on compiled routes and rules. Must not decide requests; it only reads the
//! same matchers the data plane uses ([`HostPattern`], [`PathMatch`], [`segment_prefix`]).

use std::collections::{BTreeMap, BTreeSet};

use super::route::RouteEntry;
use super::{
    segment_prefix, Action, Approver, HostPattern, Mode, Origin, PathMatch, PolicySet, Rule,
};

/// One gap, at the rule it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's `[[rule]]` header.
    pub at: Origin,
    /// What is wrong and how to close it, for a person.
    pub message: String,
}

/// What the lint reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Routes in order.
    pub routes: &'a [RouteEntry],
    /// How to name each route for a person (`route #2 (countersign.toml:19)`).
    pub route_labels: &'a [String],
    /// Upstream names by index.
    pub upstream_names: &'a [String],
    /// Rules.
    pub policy: &'a PolicySet,
    /// `[approvers.groups]`.
    pub groups: &'a BTreeMap<String, Vec<String>>,
}

/// Every finding for the rules, in rule order.
///
/// Shadow rules (`mode = "shadow"`) protect nothing, so they are no coverage: an earlier shadow
/// rule never hides a later rule, and a host-scoped shadow rule opens no bypass. A shadow rule
/// that can never be reached is reported whatever its action, since it would record nothing
/// and so suggest that enforcing it changes nothing.
pub fn lint(input: &Input<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let rules = &input.policy.rules;
    for (i, rule) in rules.iter().enumerate() {
        let shadow = rule.mode == Mode::Shadow;
        if !shadow && !matches!(rule.action, Action::Approve | Action::Deny) {
            continue;
        }
        let mut enforced_before = rules[..i].iter().filter(|e| e.mode == Mode::Enforce);
        if let Some(earlier) = enforced_before.find(|e| shadows(e, rule)) {
            let (kind, effect) = if shadow {
                ("shadow rule", ", so it records nothing")
            } else {
                ("rule", "")
            };
            out.push(Finding {
                at: rule.origin.clone(),
                message: format!(
                    "{kind} {:?} ({}) can never match{effect}: rule {:?} ({}:{}) matches every request it would, first",
                    rule.name,
                    rule.action.as_str(),
                    earlier.name,
                    earlier.origin.file.display(),
                    earlier.origin.line
                ),
            });
        }
        if let Some(host) = rule.host.as_ref().filter(|_| !shadow) {
            host_bypass(input, rule, host, &mut out);
        }
        if let Some(spec) = &rule.approval {
            let voters = distinct_voters(&spec.approvers, input.groups);
            let quorum = spec.quorum.total();
            if usize::try_from(quorum).map_or(true, |q| q > voters) {
                out.push(Finding {
                    at: rule.origin.clone(),
                    message: format!(
                        "rule {:?}: quorum {quorum} is more than the {voters} distinct approvers who could ever vote; no request can be approved",
                        rule.name
                    ),
                });
            }
        }
    }
    out
}

/// A host-scoped rule whose upstream is also reachable through a route for other hosts,
/// where the rule does not apply.
fn host_bypass(input: &Input<'_>, rule: &Rule, host: &HostPattern, out: &mut Vec<Finding>) {
    let reach = rule_reach(rule);
    // The upstreams that serve the rule's own host, first match first: a route that takes
    // every such request ends the search.
    let mut guarded = BTreeSet::new();
    for r in input.routes {
        if host_intersects(host, r.host.as_ref()) && paths_overlap(&r.prefix, &reach) {
            guarded.insert(r.upstream);
            let takes_all_hosts = r.host.as_ref().is_none_or(|rh| match host {
                HostPattern::Exact(h) => rh.matches(h),
                HostPattern::Suffix(_) => host_covers(rh, Some(host)),
            });
            if takes_all_hosts && segment_prefix(&r.prefix, &reach, false) {
                break;
            }
        }
    }
    for (j, route) in input.routes.iter().enumerate() {
        if !guarded.contains(&route.upstream)
            || host_covers(host, route.host.as_ref())
            || !paths_overlap(&route.prefix, &reach)
        {
            continue;
        }
        let route_host = route
            .host
            .as_ref()
            .map_or("any host".to_owned(), |h| format!("host {h}"));
        out.push(Finding {
            at: rule.origin.clone(),
            message: format!(
                "rule {:?} ({}) applies only to host {host}, but its upstream {:?} is also reachable through {} ({route_host}), where this rule does not apply; remove the rule's host or that route",
                rule.name,
                rule.action.as_str(),
                input.upstream_names.get(route.upstream).map_or("?", String::as_str),
                input.route_labels.get(j).map_or("a route", String::as_str),
            ),
        });
    }
}

/// The path every request a rule matches starts with (on segments).
fn rule_reach(rule: &Rule) -> String {
    match &rule.path {
        PathMatch::Any => "/".to_owned(),
        PathMatch::Prefix(p) => p.clone(),
        PathMatch::Template(t) => t.literal_prefix(),
    }
}

/// Whether some path lies under both prefixes.
fn paths_overlap(a: &str, b: &str) -> bool {
    segment_prefix(a, b, true) || segment_prefix(b, a, true)
}

/// Whether some host matches both (`None` = any host).
fn host_intersects(rule: &HostPattern, route: Option<&HostPattern>) -> bool {
    let Some(route) = route else {
        return true;
    };
    match (rule, route) {
        (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
        (HostPattern::Exact(h), pattern @ HostPattern::Suffix(_))
        | (pattern @ HostPattern::Suffix(_), HostPattern::Exact(h)) => pattern.matches(h),
        (HostPattern::Suffix(a), HostPattern::Suffix(b)) => {
            a.ends_with(b.as_str()) || b.ends_with(a.as_str())
        }
    }
}

/// Whether every host `route` admits is matched by `rule` (`None` = any host).
fn host_covers(rule: &HostPattern, route: Option<&HostPattern>) -> bool {
    match (rule, route) {
        (_, None) => false,
        (_, Some(HostPattern::Exact(h))) => rule.matches(h),
        (HostPattern::Exact(_), Some(HostPattern::Suffix(_))) => false,
        (HostPattern::Suffix(a), Some(HostPattern::Suffix(b))) => b.ends_with(a.as_str()),
    }
}

/// Whether `earlier` matches every request `later` matches (so `later` never applies).
/// Conservative: `claims` conditions on `earlier` can fail, so such a rule shadows nothing.
fn shadows(earlier: &Rule, later: &Rule) -> bool {
    if !earlier.claims.is_empty() {
        return false;
    }
    let methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    };
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(e), l) => host_covers(e, l.as_ref()),
    };
    let params = earlier.params.is_empty()
        || (matches!((&earlier.path, &later.path), (PathMatch::Template(e), PathMatch::Template(l)) if e.same_shape(l))
            && earlier.params.iter().all(|p| later.params.contains(p)));
    let path = match (&earlier.path, &later.path) {
        (PathMatch::Any, _) => true,
        (PathMatch::Prefix(_), PathMatch::Any) => false,
        (PathMatch::Prefix(e), PathMatch::Prefix(l)) => segment_prefix(e, l, false),
        (PathMatch::Prefix(e), PathMatch::Template(l)) => {
            segment_prefix(e, &l.literal_prefix(), false)
        }
        (PathMatch::Template(e), PathMatch::Template(l)) => e.same_shape(l),
        (PathMatch::Template(_), _) => false,
    };
    methods && host && params && path
}

/// How many different people could vote (groups expanded; unbounded with an on-call entry).
fn distinct_voters(approvers: &[Approver], groups: &BTreeMap<String, Vec<String>>) -> usize {
    let mut people = BTreeSet::new();
    for a in approvers {
        match a {
            Approver::Email(e) => {
                people.insert(e.as_str());
            }
            Approver::Group(g) => {
                people.extend(groups.get(g).into_iter().flatten().map(String::as_str));
            }
            // Who is on call is known only when a request is created: no finding.
            Approver::PagerDuty(_) => return usize::MAX,
        }
    }
    people.len()
}
