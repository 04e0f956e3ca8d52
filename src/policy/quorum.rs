//! `quorum` in `[rule.approval]` (SPEC 4, 9): a number of distinct approvers, or a table of
//! approver entries (`group:NAME` or an email) with how many approvals each needs.
//!
//! Owns the compiled shape and the one counting rule of the table form, [`assign`]: a bipartite
//! matching of approvers to entry slots, found with augmenting paths (Kuhn's algorithm; a rule
//! has a handful of entries and voters, so its O(V * E) is nothing). Parsing and its
//! file:line:col errors are `config::quorum`'s; resolving groups when a request is created
//! and applying votes are `approval::quorum`'s.

use std::fmt;

use super::Approver;

/// How many approvals a rule needs, and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quorum {
    /// `quorum = N`: that many distinct approvers, whoever they are.
    Count(u32),
    /// `quorum = { "group:dba" = 1, "group:security" = 1 }`: every entry met at once, and one
    /// person's vote fills one slot of one entry only (even when they are in several groups).
    Entries(Vec<QuorumEntry>),
}

/// One entry of the table form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumEntry {
    /// The approver entry as it names people: a group or an email.
    pub approver: Approver,
    /// Approvals it needs (at least 1).
    pub count: u32,
}

impl Quorum {
    /// Distinct approvals needed overall: the number, or the sum of the entries' counts.
    pub fn total(&self) -> u32 {
        match self {
            Quorum::Count(n) => *n,
            Quorum::Entries(entries) => entries
                .iter()
                .fold(0u32, |sum, e| sum.saturating_add(e.count)),
        }
    }
}

impl Default for Quorum {
    /// One approver (SPEC 4 default).
    fn default() -> Self {
        Quorum::Count(1)
    }
}

impl fmt::Display for Approver {
    /// As written in a policy: `group:NAME` or the email.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::Email(e) => f.write_str(e),
            Approver::Group(g) => write!(f, "group:{g}"),
            Approver::PagerDuty(s) => write!(f, "pagerduty:{s}"),
        }
    }
}

impl fmt::Display for Quorum {
    /// `2`, or `group:dba = 1, group:security = 1 (one entry per approver)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Count(n) => write!(f, "{n}"),
            Quorum::Entries(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} = {}", e.approver, e.count)?;
                }
                f.write_str(" (all at once; each approver counts toward one entry)")
            }
        }
    }
}

/// A largest assignment of `voters` to entry slots. `entries[i]` is (approvals needed, who may
/// fill them); each voter fills at most one slot of one entry. Returns, per entry, the indexes
/// of the voters assigned to it, ascending. Earlier voters and earlier entries are tried
/// first, so the same votes always give the same assignment. Emails compare case-insensitively.
pub fn assign(entries: &[(u32, &[String])], voters: &[String]) -> Vec<Vec<usize>> {
    // One slot per approval an entry needs; `owner[s]` is the voter filling slot `s`. An entry
    // never gets more slots than it has members: the rest could never be filled anyway.
    let slots: Vec<usize> = entries
        .iter()
        .enumerate()
        .flat_map(|(i, (need, members))| {
            std::iter::repeat_n(i, (*need as usize).min(members.len()))
        })
        .collect();
    let may_fill = |v: usize, s: usize| {
        entries[slots[s]]
            .1
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&voters[v]))
    };
    let mut owner: Vec<Option<usize>> = vec![None; slots.len()];
    for v in 0..voters.len() {
        let mut seen = vec![false; slots.len()];
        augment(v, &may_fill, &mut owner, &mut seen);
    }
    let mut out = vec![Vec::new(); entries.len()];
    for (s, o) in owner.iter().enumerate() {
        if let Some(v) = o {
            out[slots[s]].push(*v);
        }
    }
    for by in &mut out {
        by.sort_unstable();
    }
    out
}

/// Kuhn's augmenting path from voter `v`: takes a free slot `v` may fill, or moves that slot's
/// owner to another slot it may fill. `seen` marks slots already tried on this path.
fn augment(
    v: usize,
    may_fill: &dyn Fn(usize, usize) -> bool,
    owner: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for s in 0..owner.len() {
        if seen[s] || !may_fill(v, s) {
            continue;
        }
        seen[s] = true;
        let free = match owner[s] {
            None => true,
            Some(other) => augment(other, may_fill, owner, seen),
        };
        if free {
            owner[s] = Some(v);
            return true;
        }
    }
    false
}

/// Whether `voters` can meet every entry of `entries` at once (see [`assign`]).
pub fn met(entries: &[(u32, &[String])], voters: &[String]) -> bool {
    assign(entries, voters)
        .iter()
        .zip(entries)
        .all(|(by, (need, _))| by.len() >= *need as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_display() {
        assert_eq!(Quorum::Count(2).total(), 2);
        assert_eq!(Quorum::Count(2).to_string(), "2");
        let q = Quorum::Entries(vec![
            QuorumEntry {
                approver: Approver::Group("dba".into()),
                count: 1,
            },
            QuorumEntry {
                approver: Approver::Email("carol@example.com".into()),
                count: 1,
            },
        ]);
        assert_eq!(q.total(), 2);
        assert_eq!(
            q.to_string(),
            "group:dba = 1, carol@example.com = 1 (all at once; each approver counts toward one entry)"
        );
    }

    fn people(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn assign_is_a_matching_not_a_sum() {
        let dba = people(&["alice@x", "carol@x"]);
        let sec = people(&["ALICE@x", "bob@x"]);
        let needs = [(1, dba.as_slice()), (1, sec.as_slice())];
        assert!(!met(&needs, &people(&["alice@x"])));
        assert_eq!(assign(&needs, &people(&["alice@x"])), [vec![0], vec![]]);
        assert!(met(&needs, &people(&["alice@x", "bob@x"])));
        assert!(met(&needs, &people(&["bob@x", "alice@x"])));
        // carol after alice: alice is moved from dba to security.
        assert_eq!(
            assign(&needs, &people(&["alice@x", "carol@x"])),
            [vec![1], vec![0]]
        );
        // Counts of 2; a count above the members never fills, and never allocates past them.
        let two = [(2, dba.as_slice())];
        assert!(!met(&two, &people(&["alice@x"])));
        assert!(met(&two, &people(&["carol@x", "alice@x"])));
        assert!(!met(&[(u32::MAX, dba.as_slice())], &dba));
        assert!(met(&[], &[]));
    }
}
