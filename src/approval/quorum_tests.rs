//! Unit tests of the table quorum as the lifecycle applies it: votes through
//! [`crate::approval::transition::vote`] on a record whose entries were resolved at creation.

use std::collections::BTreeMap;

use super::*;
use crate::approval::record::{Decision, Status};
use crate::approval::tests::{approval, vote};
use crate::approval::transition::{vote as apply, VoteResultKind};
use crate::policy::QuorumEntry as PolicyEntry;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAN: &str = "dan@example.com";

/// dba = alice, carol, dan; security = alice, bob.
fn groups() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        (
            "dba".to_owned(),
            vec![ALICE.into(), CAROL.into(), DAN.into()],
        ),
        (
            "security".to_owned(),
            vec![ALICE.into(), "Bob@Example.com".into()],
        ),
    ])
}

fn table(entries: &[(&str, u32)]) -> Quorum {
    Quorum::Entries(
        entries
            .iter()
            .map(|(g, n)| PolicyEntry {
                approver: Approver::Group((*g).to_owned()),
                count: *n,
            })
            .collect(),
    )
}

/// A pending approval with `quorum` resolved against [`groups`], everyone an approver.
fn pending(quorum: &Quorum) -> Approval {
    let mut a = approval(quorum.total());
    a.quorum_entries = resolve(quorum, &groups());
    a.approvers = vec![ALICE.into(), BOB.into(), CAROL.into(), DAN.into()];
    a
}

fn approve_all(a: &mut Approval, who: &[&str]) -> Vec<VoteResultKind> {
    who.iter()
        .map(|w| apply(a, vote(w, Decision::Approve), 3_000))
        .collect()
}

#[test]
fn one_person_in_both_groups_cannot_meet_both_entries_alone() {
    let mut a = pending(&table(&[("dba", 1), ("security", 1)]));
    assert_eq!(approve_all(&mut a, &[ALICE]), [VoteResultKind::Recorded]);
    assert_eq!(a.status, Status::Pending);
    assert!(!a.quorum_met());
    assert_eq!(a.approvals_missing(), 1);
    assert_eq!(a.quorum_summary().as_deref(), Some("dba 1/1, security 0/1"));
}

#[test]
fn a_second_person_lets_the_first_take_the_other_entry() {
    // alice (dba + security) then bob (security only): alice -> dba, bob -> security.
    let mut a = pending(&table(&[("dba", 1), ("security", 1)]));
    assert_eq!(
        approve_all(&mut a, &[ALICE, BOB]),
        [VoteResultKind::Recorded, VoteResultKind::Approved]
    );
    assert_eq!(a.status, Status::Approved);
    let p = a.quorum_progress();
    assert_eq!(p[0].by, [ALICE]);
    assert_eq!(p[1].by, [BOB]);
    assert_eq!(a.quorum_summary().as_deref(), Some("dba 1/1, security 1/1"));
}

#[test]
fn an_earlier_assignment_is_moved_when_a_later_vote_needs_its_slot() {
    // alice (dba + security) takes dba, the first entry she can fill; carol (dba only) then
    // needs that slot, so alice moves over to security.
    let mut a = pending(&table(&[("dba", 1), ("security", 1)]));
    approve_all(&mut a, &[ALICE]);
    assert_eq!(a.quorum_summary().as_deref(), Some("dba 1/1, security 0/1"));
    assert_eq!(approve_all(&mut a, &[CAROL]), [VoteResultKind::Approved]);
    let p = a.quorum_progress();
    assert_eq!(p[0].by, [CAROL]);
    assert_eq!(p[1].by, [ALICE]);
}

#[test]
fn the_order_of_votes_does_not_matter() {
    let q = table(&[("dba", 1), ("security", 1)]);
    for order in [[ALICE, BOB], [BOB, ALICE]] {
        let mut a = pending(&q);
        let got = approve_all(&mut a, &order);
        assert_eq!(got[1], VoteResultKind::Approved, "{order:?}");
    }
    // Two people who can only fill dba never meet security, in any order.
    for order in [[CAROL, DAN], [DAN, CAROL]] {
        let mut a = pending(&q);
        approve_all(&mut a, &order);
        assert_eq!(a.status, Status::Pending, "{order:?}");
        assert_eq!(a.quorum_summary().as_deref(), Some("dba 1/1, security 0/1"));
    }
}

#[test]
fn counts_of_two_need_two_distinct_people_per_entry() {
    let q = table(&[("dba", 2), ("security", 1)]);
    let mut a = pending(&q);
    // alice can fill either; carol only dba. Two approvals, three slots.
    approve_all(&mut a, &[ALICE, CAROL]);
    assert_eq!(a.status, Status::Pending);
    assert_eq!(a.approvals_missing(), 1);
    // bob fills security, which lets alice and carol hold both dba slots.
    assert_eq!(approve_all(&mut a, &[BOB]), [VoteResultKind::Approved]);
    let p = a.quorum_progress();
    assert_eq!(p[0].by, [ALICE, CAROL]);
    assert_eq!(p[1].by, [BOB]);

    // dan + carol fill dba 2/2 but security stays empty until alice comes; then alice must go
    // to security (dba is full without her).
    let mut a = pending(&q);
    approve_all(&mut a, &[DAN, CAROL]);
    assert_eq!(a.quorum_summary().as_deref(), Some("dba 2/2, security 0/1"));
    assert_eq!(approve_all(&mut a, &[ALICE]), [VoteResultKind::Approved]);
}

#[test]
fn an_approver_in_no_entry_fills_nothing_and_a_deny_still_denies() {
    let q = table(&[("dba", 1)]);
    let mut a = pending(&q);
    a.approvers.push("eve@example.com".into());
    assert_eq!(
        approve_all(&mut a, &["eve@example.com"]),
        [VoteResultKind::Recorded]
    );
    assert_eq!(a.quorum_summary().as_deref(), Some("dba 0/1"));
    assert_eq!(
        apply(&mut a, vote(BOB, Decision::Deny), 3_000),
        VoteResultKind::Denied
    );
}

#[test]
fn entries_are_fixed_by_resolution_not_by_later_groups() {
    let q = table(&[("dba", 1)]);
    let a = pending(&q);
    assert_eq!(a.quorum_entries[0].members, [ALICE, CAROL, DAN]);
    // Resolving again with other groups makes a different record; this one keeps its members.
    let later = resolve(
        &q,
        &BTreeMap::from([("dba".to_owned(), vec![BOB.to_owned()])]),
    );
    assert_eq!(later[0].members, [BOB]);
    assert_eq!(a.quorum_entries[0].members, [ALICE, CAROL, DAN]);
    // Members are lowercased and deduplicated; an unknown group resolves to nobody.
    let sec = resolve(&table(&[("security", 1), ("nope", 1)]), &groups());
    assert_eq!(sec[0].members, [ALICE, BOB]);
    assert!(sec[1].members.is_empty());
}

#[test]
fn reachable_needs_every_entry_coverable_by_distinct_eligible_people() {
    let q = table(&[("dba", 1), ("security", 1)]);
    let entries = resolve(&q, &groups());
    assert!(reachable(2, &entries, &[ALICE.into(), BOB.into()]));
    // Only alice is eligible (bob is the requester, say): one person, two entries.
    assert!(!reachable(2, &entries, &[ALICE.into(), CAROL.into()][..1]));
    assert!(!reachable(2, &entries, &[CAROL.into(), DAN.into()]));
    assert!(reachable(1, &[], &[CAROL.into()]));
    assert!(!reachable(0, &[], &[CAROL.into()]));
}

#[test]
fn numeric_quorum_keeps_its_meaning_and_old_records_load() {
    let mut a = approval(2);
    assert!(a.quorum_entries.is_empty());
    assert_eq!(a.quorum_summary(), None);
    apply(&mut a, vote("a@example.com", Decision::Approve), 3_000);
    assert_eq!(a.approvals_missing(), 1);
    assert_eq!(
        apply(&mut a, vote("b@example.com", Decision::Approve), 3_000),
        VoteResultKind::Approved
    );
    // A record written before `quorum_entries` existed still deserializes (serde default).
    let mut json = serde_json::to_value(approval(1)).unwrap();
    json.as_object_mut().unwrap().remove("quorum_entries");
    let old: Approval = serde_json::from_value(json).unwrap();
    assert!(old.quorum_entries.is_empty());
    // And the entries survive a round trip, as the stores keep them.
    let with = pending(&table(&[("dba", 1)]));
    let back: Approval = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
    assert_eq!(back.quorum_entries, with.quorum_entries);
}
