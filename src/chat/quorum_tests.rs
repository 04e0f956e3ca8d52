//! Per-entry quorum progress in chat (SPEC 9): Slack messages and thread replies, and the
//! `Votes` fact both kinds of Teams card share, say "dba 1/1, security 0/1" for a table
//! quorum; a numeric quorum keeps "1 of 2 approvals".

use super::adaptive::votes;
use super::sample_approval;
use super::slack::blocks::{event_text, message_blocks};
use super::teams_bot::cards::{card, View};
use crate::approval::{transition, Approval, Channel, Decision, NotifyEvent, QuorumEntry, Vote};

fn approve(a: &mut Approval, who: &str) {
    let v = Vote {
        approver: who.into(),
        decision: Decision::Approve,
        reason: None,
        at: a.created_at + 1,
        via: Channel::Api,
        self_approval: false,
        grant: false,
    };
    transition::vote(a, v, a.created_at + 1);
}

/// `{dba: 1, security: 1}`; alice is in dba only, so her approval fills dba.
fn table_quorum() -> Approval {
    let mut a = sample_approval();
    let entry = |name: &str, members: &[&str]| QuorumEntry {
        entry: format!("group:{name}"),
        need: 1,
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    };
    a.quorum_entries = vec![
        entry("dba", &["alice@example.com"]),
        entry("security", &["bob@example.com"]),
    ];
    approve(&mut a, "alice@example.com");
    a
}

#[test]
fn slack_shows_each_entry() {
    let a = table_quorum();
    let url = url::Url::parse("https://countersign.example.com/").unwrap();
    let blocks = message_blocks(&a, &url).to_string();
    assert!(blocks.contains("dba 1/1, security 0/1"), "{blocks}");
    assert!(
        blocks.contains("Waiting for 1 more approval(s)."),
        "{blocks}"
    );
    assert_eq!(
        event_text(&a, &NotifyEvent::VoteCast),
        "alice@example.com approved (dba 1/1, security 0/1)"
    );
}

#[test]
fn teams_cards_show_each_entry() {
    let a = table_quorum();
    assert_eq!(votes(&a), "dba 1/1, security 0/1 (alice@example.com)");
    let card = card(&a, "https://c.example/approvals/x", &[], View::Status).to_string();
    assert!(card.contains("dba 1/1, security 0/1"), "{card}");
}

#[test]
fn a_numeric_quorum_keeps_its_text() {
    let mut a = sample_approval();
    approve(&mut a, "alice@example.com");
    assert_eq!(votes(&a), "1 of 2 approvals (alice@example.com)");
    assert_eq!(
        event_text(&a, &NotifyEvent::VoteCast),
        "alice@example.com approved (1 of 2)"
    );
    let url = url::Url::parse("https://countersign.example.com/").unwrap();
    let blocks = message_blocks(&a, &url).to_string();
    assert!(blocks.contains("1 of 2 approvals"), "{blocks}");
}
