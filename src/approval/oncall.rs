//! On-call approver entries at creation (SPEC 9): each distinct `pagerduty:SCHEDULE_ID` in a
//! rule's approvers is asked of the [`OnCallResolver`] once, when a request is created, and the
//! emails found are fixed in the approval like a group's members.
//!
//! Fail closed: an entry whose resolution fails, finds nobody, or takes longer than
//! [`RESOLVE_BOUND`] counts nobody, and `approvers.unresolved` is audited (awaited: a failure
//! that cannot be recorded fails the submit). The request goes on with the other approvers;
//! with too few left, the broker's quorum check refuses it. Owns only that; must not speak
//! HTTP (that is `crate::oncall`) nor decide a quorum.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ports::{AuditError, AuditEvent, AuditSink, OnCallResolver};
use crate::policy::Approver;

/// Longest the broker waits for all of a rule's schedules together, whatever the resolver's
/// own timeout (a guard against a resolver that never answers).
pub const RESOLVE_BOUND: Duration = Duration::from_secs(5);

/// Schedule id -> emails of whoever is on call, for every `pagerduty:` entry in `approvers`
/// that resolved to someone; the others are audited as `approvers.unresolved` and left out.
pub(super) async fn resolve(
    resolver: Option<&dyn OnCallResolver>,
    audit: &dyn AuditSink,
    rule: &str,
    approvers: &[Approver],
    request_id: Option<&str>,
) -> Result<BTreeMap<String, Vec<String>>, AuditError> {
    let mut schedules: Vec<&str> = Vec::new();
    for a in approvers {
        if let Approver::PagerDuty(s) = a {
            if !schedules.contains(&s.as_str()) {
                schedules.push(s);
            }
        }
    }
    let mut out = BTreeMap::new();
    if schedules.is_empty() {
        return Ok(out);
    }
    let answers: Vec<Result<Vec<String>, String>> = match resolver {
        None => schedules
            .iter()
            .map(|_| Err("no [pagerduty] section is configured".to_owned()))
            .collect(),
        Some(r) => {
            let asks = schedules.iter().map(|s| r.on_call(s));
            match tokio::time::timeout(RESOLVE_BOUND, futures::future::join_all(asks)).await {
                Ok(answers) => answers.into_iter().map(|a| a.map_err(|e| e.0)).collect(),
                Err(_) => schedules
                    .iter()
                    .map(|_| Err(format!("no answer within {}s", RESOLVE_BOUND.as_secs())))
                    .collect(),
            }
        }
    };
    for (schedule, answer) in schedules.into_iter().zip(answers) {
        let error = match answer {
            Ok(emails) if !emails.is_empty() => {
                out.insert(schedule.to_owned(), emails);
                continue;
            }
            Ok(_) => "nobody is on call in the schedule".to_owned(),
            Err(e) => e,
        };
        tracing::warn!(rule, schedule, error = %error, "on-call approvers unresolved; the entry counts nobody");
        let entry = format!("pagerduty:{schedule}");
        audit
            .record(AuditEvent::ApproversUnresolved {
                rule,
                entry: &entry,
                error: &error,
                request_id,
            })
            .await?;
    }
    Ok(out)
}

#[cfg(test)]
#[path = "oncall_tests.rs"]
mod tests;
