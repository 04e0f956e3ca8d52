//! `quorum` in `[rule.approval]` (SPEC 4, 9): a number, or a table of approver entries with
//! counts, `quorum = { "group:dba" = 1, "group:security" = 1 }`, checked with file:line:col.
//!
//! The table's keys are approver entries (`group:NAME` or an email). Without `approvers`, the
//! keys are the approvers; with `approvers`, every key must be among them (a group listed
//! there, or an email listed there or in a listed group). Someone in `approvers` but in no
//! entry may still vote: a deny denies, an approval fills no entry. Errors: an unknown group,
//! a count below 1, a count above the group's members (or above 1 for an email), a key not
//! among `approvers`, and entries that distinct people could never meet at once.
//!
//! Owns parsing only; the compiled type and the counting rule are [`crate::policy::quorum`]'s.

use toml::de::{DeTable, DeValue};

use super::file::email;
use super::refs::Refs;
use super::walk::{closest, type_error, FileCheck, Val};
use crate::policy::{quorum, Approver, Quorum, QuorumEntry};

/// Whether `quorum` is a table and `approvers` is absent: then the table's keys name the
/// approvers, and a missing `approvers` is no error.
pub(super) fn names_approvers(t: &DeTable<'_>) -> bool {
    !t.contains_key("approvers")
        && matches!(
            t.get("quorum").map(|v| v.get_ref()),
            Some(DeValue::Table(_))
        )
}

/// `quorum` with the approvers it goes with. `listed` is the parsed `approvers`: `Some(None)`
/// when [`names_approvers`], `None` when `approvers` had problems (already reported). Returns
/// the approvers (the table's keys when none were listed) and the quorum; `None` for either
/// means a problem was reported.
pub(super) fn quorum(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    listed: Option<Option<Vec<Approver>>>,
    refs: Refs<'_>,
) -> (Option<Vec<Approver>>, Option<Quorum>) {
    let Some(value) = t.get("quorum") else {
        return (listed.flatten(), Some(Quorum::default()));
    };
    let DeValue::Table(table) = value.get_ref() else {
        return (listed.flatten(), count(ck, t, value).map(Quorum::Count));
    };
    let entries = entries(ck, value, table, refs);
    let Some(entries) = entries else {
        return (listed.flatten(), None);
    };
    let approvers = match listed {
        Some(Some(list)) => {
            let ok = keys_are_approvers(ck, table, &entries, &list, refs);
            ok.then_some(list)
        }
        Some(None) => Some(entries.iter().map(|e| e.approver.clone()).collect()),
        None => None,
    };
    let met = satisfiable(&entries, refs);
    if !met {
        ck.err(
            &value.span(),
            "no set of distinct approvers can meet every quorum entry at once (one person counts toward one entry only)",
        );
    }
    let quorum = met.then_some(Quorum::Entries(entries));
    (approvers, quorum)
}

/// `quorum = N`: at least 1 (the same check and message as before the table form existed).
fn count(ck: &mut FileCheck, t: &DeTable<'_>, value: &Val<'_>) -> Option<u32> {
    if !matches!(value.get_ref(), DeValue::Integer(_)) {
        ck.err(
            &value.span(),
            type_error(
                "\"quorum\"",
                "an integer or a table like { \"group:dba\" = 1 }",
                value.get_ref(),
            ),
        );
        return None;
    }
    let n = ck.opt_int(t, "quorum", 1)?;
    let n = u32::try_from(n).ok();
    if n.is_none() {
        ck.err(&value.span(), "\"quorum\" is too large");
    }
    n
}

/// The entries of a table quorum, in the file's key order.
fn entries(
    ck: &mut FileCheck,
    value: &Val<'_>,
    table: &DeTable<'_>,
    refs: Refs<'_>,
) -> Option<Vec<QuorumEntry>> {
    if table.is_empty() {
        ck.err(
            &value.span(),
            "\"quorum\" table must name at least one approver entry, like { \"group:dba\" = 1 }",
        );
        return None;
    }
    let mut out: Vec<QuorumEntry> = Vec::new();
    let mut ok = true;
    for (k, v) in table.iter() {
        let key: &str = k.get_ref();
        let approver = entry_key(ck, key, &k.span(), refs);
        let n = entry_count(ck, key, v);
        match (approver, n) {
            (Some(approver), Some(n)) => {
                if out.iter().any(|e| e.approver == approver) {
                    ck.err(&k.span(), format!("quorum entry {key:?} is named twice"));
                    ok = false;
                } else if let Some(max) = members(&approver, refs).filter(|&m| n > m) {
                    ck.err(
                        &v.span(),
                        match &approver {
                            Approver::Group(g) => format!(
                                "quorum for {key:?} is {n} but group {g:?} has only {max} member(s)"
                            ),
                            Approver::Email(_) | Approver::PagerDuty(_) => {
                                format!("quorum for {key:?} must be 1: one person approves once")
                            }
                        },
                    );
                    ok = false;
                } else {
                    out.push(QuorumEntry { approver, count: n });
                }
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// A key: `group:NAME` of a defined group, or an email (lowercased).
fn entry_key(
    ck: &mut FileCheck,
    key: &str,
    span: &std::ops::Range<usize>,
    refs: Refs<'_>,
) -> Option<Approver> {
    if let Some(group) = key.strip_prefix("group:") {
        if refs.groups.contains_key(group) {
            return Some(Approver::Group(group.to_owned()));
        }
        let names: Vec<&str> = refs.groups.keys().map(String::as_str).collect();
        let mut m = format!(
            "quorum entry {key:?}: approver group {group:?} is not defined in [approvers.groups]"
        );
        if let Some(best) = closest(group, &names) {
            m.push_str(&format!("; did you mean \"group:{best}\"?"));
        }
        ck.err(span, m);
        return None;
    }
    if let Some(e) = email(key) {
        return Some(Approver::Email(e));
    }
    if key.starts_with("pagerduty:") {
        ck.err(
            span,
            format!("quorum entry {key:?}: an on-call schedule cannot be a quorum entry (who is on call is known only when a request is created); list it in \"approvers\" and use a number"),
        );
        return None;
    }
    ck.err(
        span,
        format!("quorum entry {key:?} must be an email address or group:NAME"),
    );
    None
}

/// An entry's count: an integer of at least 1.
fn entry_count(ck: &mut FileCheck, key: &str, v: &Val<'_>) -> Option<u32> {
    let n = ck.as_int_at_least(v, &format!("quorum for {key:?}"), 1)?;
    Some(u32::try_from(n).unwrap_or(u32::MAX))
}

/// How many people an entry names: a group's distinct members, or 1 for an email.
fn members(approver: &Approver, refs: Refs<'_>) -> Option<u32> {
    let n = match approver {
        Approver::Email(_) => 1,
        Approver::Group(g) => distinct(refs.groups.get(g)?).len(),
        Approver::PagerDuty(_) => return None,
    };
    Some(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Emails lowercased and deduplicated.
fn distinct(people: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in people {
        let p = p.trim().to_lowercase();
        if !p.is_empty() && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// With `approvers` listed, every key must be among them: a listed group, or an email listed
/// or in a listed group.
fn keys_are_approvers(
    ck: &mut FileCheck,
    table: &DeTable<'_>,
    entries: &[QuorumEntry],
    listed: &[Approver],
    refs: Refs<'_>,
) -> bool {
    let mut ok = true;
    // Called only when every key parsed, so `entries` follows the table's keys one to one.
    for ((k, _), entry) in table.iter().zip(entries) {
        let key: &str = k.get_ref();
        let among = match &entry.approver {
            Approver::Group(_) | Approver::PagerDuty(_) => listed.contains(&entry.approver),
            Approver::Email(e) => listed.iter().any(|a| match a {
                Approver::Email(l) => l == e,
                Approver::PagerDuty(_) => false,
                Approver::Group(g) => refs
                    .groups
                    .get(g)
                    .is_some_and(|m| m.iter().any(|m| m.eq_ignore_ascii_case(e))),
            }),
        };
        if !among {
            ok = false;
            ck.err(
                &k.span(),
                format!("quorum entry {key:?} is not among \"approvers\"; list it there, or leave \"approvers\" out to let the quorum's keys name the approvers"),
            );
        }
    }
    ok
}

/// Whether distinct people could meet every entry at once (with every member voting).
fn satisfiable(entries: &[QuorumEntry], refs: Refs<'_>) -> bool {
    let people: Vec<Vec<String>> = entries
        .iter()
        .map(|e| match &e.approver {
            Approver::Email(m) => vec![m.clone()],
            Approver::Group(g) => refs.groups.get(g).map(|m| distinct(m)).unwrap_or_default(),
            Approver::PagerDuty(_) => Vec::new(),
        })
        .collect();
    let needs: Vec<(u32, &[String])> = entries
        .iter()
        .zip(&people)
        .map(|(e, p)| (e.count, p.as_slice()))
        .collect();
    let mut everyone: Vec<String> = Vec::new();
    for p in people.iter().flatten() {
        if !everyone.contains(p) {
            everyone.push(p.clone());
        }
    }
    quorum::met(&needs, &everyone)
}

#[cfg(test)]
#[path = "quorum_tests.rs"]
mod tests;
