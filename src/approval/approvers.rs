//! Who may approve a request: the rule's approver entries (emails, `group:NAME`,
//! `pagerduty:SCHEDULE_ID`) expanded to lowercase emails when the request is created (and when
//! an escalation happens). Pure functions; owns the expansion only, must not resolve anything
//! over the network (on-call answers come in as `on_call`).

/// Expands `group:` entries with `groups`, lowercases, and deduplicates (first occurrence
/// wins). Unknown groups expand to nobody (config validation reports them; at run time fewer
/// approvers is the fail-closed choice). `pagerduty:` entries expand to nobody here: see
/// [`expand_approvers_with`].
pub fn expand_approvers(
    approvers: &[crate::policy::Approver],
    groups: &std::collections::BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    expand_approvers_with(approvers, groups, &std::collections::BTreeMap::new())
}

/// Like [`expand_approvers`], with `on_call` (schedule id -> emails of whoever is on call,
/// resolved when the request is created) for `pagerduty:` entries. A schedule missing from
/// `on_call` (its resolution failed) expands to nobody: fail closed.
pub fn expand_approvers_with(
    approvers: &[crate::policy::Approver],
    groups: &std::collections::BTreeMap<String, Vec<String>>,
    on_call: &std::collections::BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    use crate::policy::Approver;
    let mut out: Vec<String> = Vec::new();
    let mut add = |email: &str| {
        let e = email.trim().to_lowercase();
        if !e.is_empty() && !out.contains(&e) {
            out.push(e);
        }
    };
    for a in approvers {
        match a {
            Approver::Email(e) => add(e),
            Approver::Group(g) => {
                for e in groups.get(g).map(Vec::as_slice).unwrap_or_default() {
                    add(e);
                }
            }
            Approver::PagerDuty(s) => {
                for e in on_call.get(s).map(Vec::as_slice).unwrap_or_default() {
                    add(e);
                }
            }
        }
    }
    out
}
