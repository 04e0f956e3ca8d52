//! Reminders and escalation (SPEC 9): the pure rules for when they are due and how one is
//! claimed ([`remind`], [`escalate`]); the record field they work on is
//! [`super::nudges::Nudges`]. No I/O, no clock (time comes in as `now`, unix ms), no store.
//!
//! Exactly once across replicas: a reminder or the escalation is *claimed* by running
//! [`remind`] / [`escalate`] through the store's one compare-and-set
//! ([`super::store::ApprovalStore::update`]); only the replica whose write lands sends it, and
//! the loser re-reads a record on which the step is no longer due. All of it stops at the
//! decision: nothing is due unless the approval is pending and before `expires_at`.
//!
//! Owns these rules. Must not touch storage, audit, notification, chat rendering or the
//! resolution of groups (the broker resolves the escalation's approvers and hands the result
//! in).

use super::record::{Approval, Status};

/// Whether reminders and escalation still apply to `a` at `now`: pending and not expired.
fn live(a: &Approval, now: u64) -> bool {
    a.status == Status::Pending && now < a.expires_at
}

/// When the background must next look at `a` for a reminder or the escalation (unix ms), or
/// `None` when neither will happen (decided, or nothing configured). Due times at or after
/// `expires_at` are dropped: the approval expires first.
pub fn next_due(a: &Approval) -> Option<u64> {
    if a.status != Status::Pending {
        return None;
    }
    let n = &a.nudges;
    [n.next_reminder(a.created_at), n.escalation_due()]
        .into_iter()
        .flatten()
        .filter(|t| *t < a.expires_at)
        .min()
}

/// Whether a reminder is due on `a` at `now`.
pub fn reminder_due(a: &Approval, now: u64) -> bool {
    live(a, now)
        && a.nudges
            .next_reminder(a.created_at)
            .is_some_and(|t| now >= t)
}

/// Whether the escalation is due on `a` at `now`.
pub fn escalation_due(a: &Approval, now: u64) -> bool {
    live(a, now) && a.nudges.escalation_due().is_some_and(|t| now >= t)
}

/// Whether anything is due on `a` at `now`.
pub fn due(a: &Approval, now: u64) -> bool {
    reminder_due(a, now) || escalation_due(a, now)
}

/// Claims the reminder due at `now` and counts it. The next one is due one interval after
/// this one was *due* (sweeps run about every second, so counting from `now` would drift to
/// the next sweep every time); a sweep later than a whole interval sends one reminder, not a
/// burst, and the interval restarts from `now`. Returns whether it claimed one; the caller
/// sends it only then.
pub fn remind(a: &mut Approval, now: u64) -> bool {
    let Some(due_at) = a.nudges.next_reminder(a.created_at) else {
        return false;
    };
    let due = reminder_due(a, now);
    if due {
        let late = now.saturating_sub(due_at) >= a.nudges.remind_every;
        a.nudges.reminders = a.nudges.reminders.saturating_add(1);
        a.nudges.reminded_at = Some(if late { now } else { due_at });
    }
    due
}

/// Claims the escalation due at `now`: adds `resolved` (lowercase emails, the escalation's
/// approvers as resolved now) to the approver set, keeping order and skipping those already
/// there, and marks it done. Returns whether it claimed it (once per approval, ever).
pub fn escalate(a: &mut Approval, resolved: &[String], now: u64) -> bool {
    if !escalation_due(a, now) {
        return false;
    }
    let mut added = Vec::new();
    for email in resolved {
        let e = email.trim().to_lowercase();
        if !e.is_empty() && !a.approvers.contains(&e) {
            a.approvers.push(e.clone());
            added.push(e);
        }
    }
    if let Some(esc) = a.nudges.escalation.as_mut() {
        esc.done = true;
        esc.added = added;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::nudges::{approvers_of, Escalation, Nudges};
    use crate::approval::record::Decision;
    use crate::approval::tests::approval;
    use crate::approval::transition;
    use crate::notify::NotifyTarget;
    use crate::policy::{Approver, NudgeSpec};

    const T0: u64 = 1_700_000_000_000;

    fn nudged() -> Approval {
        let mut a = approval(1);
        a.created_at = T0;
        a.expires_at = T0 + 60_000;
        a.nudges = Nudges {
            remind_every: 10_000,
            escalation: Some(Escalation {
                at: T0 + 25_000,
                approvers: vec!["carol@example.com".into()],
                notify: vec![NotifyTarget::SlackChannel("esc".into())],
                done: false,
                added: Vec::new(),
            }),
            ..Nudges::default()
        };
        a
    }

    fn vote(a: &mut Approval, who: &str, decision: Decision, now: u64) {
        let v = crate::approval::record::Vote {
            approver: who.into(),
            decision,
            reason: None,
            at: now,
            via: crate::approval::record::Channel::Api,
            self_approval: false,
            grant: false,
        };
        transition::vote(a, v, now);
    }

    #[test]
    fn plan_copies_the_rule_and_entries_round_trip() {
        let spec = NudgeSpec {
            remind: Some(std::time::Duration::from_secs(600)),
            escalate: Some(crate::policy::EscalateSpec {
                after: std::time::Duration::from_secs(1800),
                approvers: vec![
                    Approver::Group("managers".into()),
                    Approver::Email("carol@example.com".into()),
                ],
                notify: vec![NotifyTarget::Teams],
            }),
        };
        let n = Nudges::plan(&spec, T0);
        assert_eq!(n.remind_every, 600_000);
        let esc = n.escalation.unwrap();
        assert_eq!(esc.at, T0 + 1_800_000);
        assert_eq!(esc.approvers, ["group:managers", "carol@example.com"]);
        assert_eq!(
            approvers_of(&esc.approvers),
            spec.escalate.unwrap().approvers
        );
        assert_eq!(Nudges::plan(&NudgeSpec::default(), T0), Nudges::default());
    }

    #[test]
    fn nothing_configured_is_never_due() {
        let a = approval(1);
        assert_eq!(next_due(&a), None);
        assert!(!due(&a, u64::MAX - 1));
    }

    #[test]
    fn first_reminder_is_due_one_interval_after_creation_then_every_interval() {
        let mut a = nudged();
        assert_eq!(next_due(&a), Some(T0 + 10_000));
        assert!(!remind(&mut a, T0 + 9_999), "not due yet");
        assert!(remind(&mut a, T0 + 10_400));
        assert!(
            !remind(&mut a, T0 + 10_401),
            "claimed once: a second replica declines"
        );
        assert_eq!(a.nudges.reminders, 1);
        assert_eq!(
            next_due(&a),
            Some(T0 + 20_000),
            "the cadence does not drift"
        );
        assert!(remind(&mut a, T0 + 20_900));
        assert_eq!(a.nudges.reminders, 2);
        assert_eq!(next_due(&a), Some(T0 + 25_000), "the escalation is sooner");
        a.nudges.escalation = None;
        assert_eq!(next_due(&a), Some(T0 + 30_000));
        // A sweep late by more than an interval sends one reminder and restarts from then.
        assert!(remind(&mut a, T0 + 45_000));
        assert!(!remind(&mut a, T0 + 45_001), "no burst");
        assert_eq!(a.nudges.reminders, 3);
        assert_eq!(next_due(&a), Some(T0 + 55_000));
    }

    #[test]
    fn escalation_adds_resolved_approvers_once() {
        let mut a = nudged();
        let carol = vec!["Carol@Example.com".to_owned(), "a@example.com".to_owned()];
        assert!(!escalate(&mut a, &carol, T0 + 24_999), "not due yet");
        assert!(escalate(&mut a, &carol, T0 + 25_000));
        assert_eq!(
            a.approvers,
            ["a@example.com", "b@example.com", "carol@example.com"]
        );
        let esc = a.nudges.escalation.as_ref().unwrap();
        assert!(esc.done);
        assert_eq!(
            esc.added,
            ["carol@example.com"],
            "a@ was an approver already"
        );
        assert!(!escalate(&mut a, &carol, T0 + 26_000), "happens once");
        assert!(!escalation_due(&a, T0 + 59_000));
    }

    #[test]
    fn escalation_to_nobody_still_happens_once() {
        let mut a = nudged();
        assert!(escalate(&mut a, &[], T0 + 25_000));
        assert_eq!(a.approvers.len(), 2);
        assert!(!escalate(&mut a, &[], T0 + 25_001));
    }

    #[test]
    fn everything_stops_at_the_decision() {
        for decide in [
            |a: &mut Approval| vote(a, "a@example.com", Decision::Approve, T0 + 1),
            |a: &mut Approval| vote(a, "a@example.com", Decision::Deny, T0 + 1),
            |a: &mut Approval| assert!(transition::cancel(a, "dev", "withdrawn", T0 + 1)),
            |a: &mut Approval| assert!(transition::expire(a, T0 + 60_000)),
        ] {
            let mut a = nudged();
            decide(&mut a);
            assert_ne!(a.status, Status::Pending);
            assert_eq!(next_due(&a), None);
            assert!(!remind(&mut a, T0 + 30_000));
            assert!(!escalate(
                &mut a,
                &["carol@example.com".into()],
                T0 + 30_000
            ));
            assert_eq!(a.nudges.reminders, 0);
            assert!(!a.approvers.contains(&"carol@example.com".to_owned()));
        }
    }

    #[test]
    fn nothing_is_due_at_or_after_expiry() {
        let mut a = nudged();
        a.expires_at = T0 + 10_000;
        a.nudges.escalation.as_mut().unwrap().at = T0 + 10_000;
        assert_eq!(next_due(&a), None, "it expires first");
        assert!(!remind(&mut a, T0 + 10_000));
        assert!(!escalate(&mut a, &[], T0 + 10_000));
    }

    #[test]
    fn old_records_without_nudges_deserialize() {
        let a = nudged();
        let mut json = serde_json::to_value(&a).unwrap();
        json.as_object_mut().unwrap().remove("nudges");
        let back: Approval = serde_json::from_value(json).unwrap();
        assert_eq!(back.nudges, Nudges::default());
        let round: Approval = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(round, a);
    }
}
