//! `countersign test [--config FILE] FILE...` (SPEC 9): runs the `[[case]]`s of policy test
//! files against a config's policies, prints one line per case and then `N passed, M failed`.
//!
//! Owns running cases and reporting them. The file format belongs to
//! [`crate::config::parse_test_file`]. Every case is judged by [`Report::verdict`] of the
//! very walk `explain` prints, which is the proxy's own
//! [`crate::policy::PolicySet::evaluate_traced`]: there is no second evaluator to drift.
//! Cases judge the enforcing outcome only; shadow rules that matched are shown, never judged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Problem, TestCase};
use crate::explain::{caller_from_claims, explain, Report, Verdict};
use crate::policy::{Action, PolicySet};

/// The result of running every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// One line per case, in file order, then `N passed, M failed`.
    pub lines: Vec<String>,
    /// Cases whose outcome (and rule, when given) was as expected.
    pub failed: usize,
}

/// `countersign test`: exit 0 when every case passes; 1 on a failing case, or on any problem in
/// the config, the policies or a test file (printed as `file:line:col: message`, no case run).
pub fn main(config: &Path, files: &[PathBuf]) -> ExitCode {
    let (config, policy) = match crate::config::load(config) {
        Ok(v) => v,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!("countersign: the config or its policies have problems; no case was run");
            return ExitCode::FAILURE;
        }
    };
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match crate::config::load_test_file(file) {
            Ok(c) => cases.extend(c),
            Err(p) => problems.extend(p),
        }
    }
    let run = if problems.is_empty() {
        run(&config, &policy, &cases, SystemClock.unix())
    } else {
        Err(problems)
    };
    match run {
        Ok(run) => {
            for line in &run.lines {
                println!("{line}");
            }
            if run.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "countersign: {} problem(s) in the test files; no case was run",
                problems.len()
            );
            ExitCode::FAILURE
        }
    }
}

/// Judges every case at `now` (unix seconds). Cases that cannot be judged (a `rule` the policy
/// does not have, claims that make no caller) are problems: nothing is reported as passed or
/// failed then, since the file itself is wrong.
pub fn run(
    config: &Config,
    policy: &PolicySet,
    cases: &[TestCase],
    now: u64,
) -> Result<Run, Vec<Problem>> {
    let mut problems = crate::config::check_case_rules(cases, policy);
    let mut verdicts = Vec::new();
    for case in cases {
        match verdict(config, policy, case, now) {
            Ok(v) => verdicts.push(v),
            Err(m) => problems.push(case.at.problem(m)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut lines = Vec::with_capacity(cases.len() + 1);
    let mut failed = 0;
    for (case, verdict) in cases.iter().zip(&verdicts) {
        let (ok, line) = judged(case, verdict);
        failed += usize::from(!ok);
        lines.push(line);
    }
    lines.push(format!("{} passed, {failed} failed", cases.len() - failed));
    Ok(Run { lines, failed })
}

/// What Countersign would do with the case's request.
fn verdict(
    config: &Config,
    policy: &PolicySet,
    case: &TestCase,
    now: u64,
) -> Result<Verdict, String> {
    let who = match &case.claims {
        None => None,
        Some(claims) => {
            let mut claims = claims.clone();
            if let Some(age) = case.auth_age {
                let at = now.saturating_sub(age.as_secs());
                claims.insert("auth_time".into(), at.into());
            }
            Some(caller_from_claims(config, claims, now).map_err(|e| format!("claims: {e}"))?)
        }
    };
    explain(config, policy, &case.method, &case.url, who.as_ref(), now).and_then(Report::verdict)
}

/// `(passed, line)` for one case.
fn judged(case: &TestCase, v: &Verdict) -> (bool, String) {
    let rule_ok = case
        .rule
        .as_ref()
        .is_none_or(|(want, _)| v.rule.as_deref() == Some(want.as_str()));
    let got = describe(v.outcome.as_str(), v.rule.as_deref(), &v.shadow);
    if case.expect == v.outcome && rule_ok {
        return (true, format!("ok   {}: {got}", case.label()));
    }
    let want = match &case.rule {
        Some((rule, _)) => format!("{} (rule {rule})", case.expect),
        None => case.expect.to_string(),
    };
    let at = format!("{}:{}", case.at.file.display(), case.at.line);
    (
        false,
        format!("FAIL {} ({at}): expected {want}, got {got}", case.label()),
    )
}

/// `approve (rule prod-deploy; shadow: watch)`.
fn describe(outcome: &str, rule: Option<&str>, shadow: &[(String, Action)]) -> String {
    let mut notes = Vec::new();
    if let Some(rule) = rule {
        notes.push(format!("rule {rule}"));
    }
    if !shadow.is_empty() {
        let names: Vec<&str> = shadow.iter().map(|(n, _)| n.as_str()).collect();
        notes.push(format!("shadow: {}", names.join(", ")));
    }
    if notes.is_empty() {
        outcome.to_owned()
    } else {
        format!("{outcome} ({})", notes.join("; "))
    }
}
