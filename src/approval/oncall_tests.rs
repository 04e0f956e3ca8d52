//! On-call entries at creation: resolved ones are kept, failed ones audited and left out.

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::approval::ports::OnCallError;

/// Answers from a table; counts questions.
#[derive(Debug, Default)]
struct Table {
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl OnCallResolver for Table {
    async fn on_call(&self, schedule: &str) -> Result<Vec<String>, OnCallError> {
        self.asked.lock().unwrap().push(schedule.to_owned());
        match schedule {
            "S1" => Ok(vec!["alice@example.com".into()]),
            "EMPTY" => Ok(Vec::new()),
            "SLOW" => {
                tokio::time::sleep(RESOLVE_BOUND * 2).await;
                Ok(vec!["late@example.com".into()])
            }
            _ => Err(OnCallError("PagerDuty answered 500".into())),
        }
    }
}

/// Keeps every event as its flat JSON.
#[derive(Debug, Default)]
struct Events(Mutex<Vec<serde_json::Value>>);

#[async_trait]
impl AuditSink for Events {
    async fn record(&self, event: AuditEvent<'_>) -> Result<(), AuditError> {
        let mut json = event.to_event().to_flat_json();
        json["event"] = event.kind().into();
        self.0.lock().unwrap().push(json);
        Ok(())
    }
}

fn pd(s: &str) -> Approver {
    Approver::PagerDuty(s.into())
}

#[tokio::test]
async fn resolved_entries_are_kept_and_failures_audited_once_per_schedule() {
    let table = Table::default();
    let audit = Events::default();
    let approvers = [
        pd("S1"),
        pd("DOWN"),
        Approver::Email("bob@example.com".into()),
        pd("EMPTY"),
        pd("S1"),
    ];
    let got = resolve(Some(&table), &audit, "deploy", &approvers, Some("req-1"))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got["S1"], vec!["alice@example.com".to_owned()]);
    assert_eq!(*table.asked.lock().unwrap(), ["S1", "DOWN", "EMPTY"]);
    let events = audit.0.lock().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for (e, (entry, error)) in events.iter().zip([
        ("pagerduty:DOWN", "PagerDuty answered 500"),
        ("pagerduty:EMPTY", "nobody is on call in the schedule"),
    ]) {
        assert_eq!(e["event"], "approvers.unresolved", "{e}");
        assert_eq!(e["rule"], "deploy", "{e}");
        assert_eq!(e["request_id"], "req-1", "{e}");
        assert_eq!(e["entry"], entry, "{e}");
        assert_eq!(e["error"], error, "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_resolver_that_never_answers_counts_nobody_after_the_bound() {
    let audit = Events::default();
    let got = resolve(Some(&Table::default()), &audit, "r", &[pd("SLOW")], None)
        .await
        .unwrap();
    assert!(got.is_empty());
    let events = audit.0.lock().unwrap();
    assert_eq!(events[0]["entry"], "pagerduty:SLOW");
    assert_eq!(events[0]["error"], "no answer within 5s");
}

#[tokio::test]
async fn without_a_resolver_every_entry_counts_nobody_and_without_entries_nothing_is_asked() {
    let audit = Events::default();
    let got = resolve(None, &audit, "r", &[pd("S1")], None).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(
        audit.0.lock().unwrap()[0]["error"],
        "no [pagerduty] section is configured"
    );
    let table = Table::default();
    let audit = Events::default();
    let got = resolve(
        Some(&table),
        &audit,
        "r",
        &[Approver::Email("a@example.com".into())],
        None,
    )
    .await
    .unwrap();
    assert!(got.is_empty());
    assert!(table.asked.lock().unwrap().is_empty());
    assert!(audit.0.lock().unwrap().is_empty());
}

#[test]
fn expansion_puts_on_call_people_where_the_entry_stands() {
    let on_call = BTreeMap::from([("S1".to_owned(), vec!["Alice@Example.com".to_owned()])]);
    let got = crate::approval::record::expand_approvers_with(
        &[
            Approver::Email("bob@example.com".into()),
            pd("S1"),
            pd("DOWN"),
            Approver::Email("alice@example.com".into()),
        ],
        &BTreeMap::new(),
        &on_call,
    );
    assert_eq!(got, ["bob@example.com", "alice@example.com"]);
}

/// Refuses every event.
#[derive(Debug)]
struct Broken;

#[async_trait]
impl AuditSink for Broken {
    async fn record(&self, _: AuditEvent<'_>) -> Result<(), AuditError> {
        Err(AuditError("disk full".into()))
    }
}

#[tokio::test]
async fn an_unresolved_entry_that_cannot_be_audited_fails_the_resolution() {
    let got = resolve(Some(&Table::default()), &Broken, "r", &[pd("DOWN")], None).await;
    assert_eq!(got, Err(AuditError("disk full".into())));
    // Nothing to record, nothing to fail.
    let got = resolve(Some(&Table::default()), &Broken, "r", &[pd("S1")], None).await;
    assert_eq!(got.unwrap()["S1"], ["alice@example.com"]);
}
