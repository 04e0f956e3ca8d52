//! Unit tests: signature v0 against Slack's documented example, and message rendering.

use serde_json::Value;
use url::Url;

use super::blocks::{self, ACTION_APPROVE, ACTION_DENY};
use super::signature::{sign, verify, SignatureError};
use crate::approval::{
    Approval, ApprovalId, Channel, Decision, Execution, NotifyEvent, Requester, Status, Vote,
};
use crate::notify::{ApproveVia, NotifyTarget};

const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const TS: &str = "1531420618";
const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const EXPECTED: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn signs_slacks_documented_example() {
    assert_eq!(sign(SECRET, TS, BODY), EXPECTED);
}

#[test]
fn verifies_slacks_documented_example_within_the_window() {
    let ts: u64 = TS.parse().unwrap();
    assert_eq!(verify(SECRET, TS, EXPECTED, BODY, ts), Ok(()));
    assert_eq!(verify(SECRET, TS, EXPECTED, BODY, ts + 299), Ok(()));
    assert_eq!(verify(SECRET, TS, EXPECTED, BODY, ts - 299), Ok(()));
}

#[test]
fn rejects_stale_and_future_timestamps() {
    let ts: u64 = TS.parse().unwrap();
    assert_eq!(
        verify(SECRET, TS, EXPECTED, BODY, ts + 301),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        verify(SECRET, TS, EXPECTED, BODY, ts - 301),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        verify(SECRET, "yesterday", EXPECTED, BODY, ts),
        Err(SignatureError::BadTimestamp)
    );
}

#[test]
fn rejects_tampered_body_wrong_secret_and_malformed_signatures() {
    let ts: u64 = TS.parse().unwrap();
    let mut tampered = BODY.to_vec();
    tampered[10] ^= 1;
    assert_eq!(
        verify(SECRET, TS, EXPECTED, &tampered, ts),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify(b"another-secret", TS, EXPECTED, BODY, ts),
        Err(SignatureError::Mismatch)
    );
    // The signature must cover the timestamp too: same body, other (fresh) timestamp.
    let other_ts = (ts + 1).to_string();
    assert_eq!(
        verify(SECRET, &other_ts, EXPECTED, BODY, ts),
        Err(SignatureError::Mismatch)
    );
    for bad in [
        "",
        "v0=",
        "v1=a2114d57",
        &EXPECTED[3..],
        "v0=zz",
        &EXPECTED[..EXPECTED.len() - 2],
    ] {
        assert_eq!(
            verify(SECRET, TS, bad, BODY, ts),
            Err(SignatureError::Mismatch),
            "{bad:?}"
        );
    }
}

fn approval(via: ApproveVia) -> Approval {
    Approval {
        id: ApprovalId::generate(),
        rule: "prod-deploy".into(),
        requester: Requester {
            iss: "https://idp.example.com".into(),
            sub: "user-dev".into(),
            email: Some("dev@example.com".into()),
        },
        method: "POST".into(),
        host: "deploy.example.com".into(),
        path: "/v1/deployments/production".into(),
        query: Some("force=1".into()),
        request_hash: "00".into(),
        reason: Some("ship <it> & go".into()),
        body_preview: r#"{"version":"1.2.3","token":"[redacted]","note":"```"}"#.into(),
        body_len: 40,
        approvers: vec!["alice@example.com".into(), "bob@example.com".into()],
        quorum: 2,
        self_approval: false,
        approve_via: via,
        notify: vec![NotifyTarget::SlackChannel("prod-approvals".into())],
        created_at: 1_700_000_000_000,
        expires_at: 1_700_003_600_000,
        votes: vec![],
        status: Status::Pending,
        decided_by: None,
        decision_reason: None,
        decided_at: None,
        held: true,
        execution: Execution::NotStarted,
        audit_pending: false,
    }
}

fn public_url() -> Url {
    Url::parse("https://countersign.example.com/").unwrap()
}

fn elements(blocks: &Value) -> Vec<Value> {
    blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn pending_message_has_approve_deny_with_confirm_and_open_link() {
    let a = approval(ApproveVia::Button);
    let blocks = blocks::message_blocks(&a, &public_url());
    let buttons = elements(&blocks);
    let approve = buttons
        .iter()
        .find(|b| b["action_id"] == ACTION_APPROVE)
        .unwrap();
    assert_eq!(approve["style"], "primary");
    assert_eq!(approve["value"], a.id.as_str());
    let deny = buttons
        .iter()
        .find(|b| b["action_id"] == ACTION_DENY)
        .unwrap();
    assert_eq!(deny["style"], "danger");
    assert_eq!(deny["value"], a.id.as_str());
    assert!(deny["confirm"]["title"]["text"].is_string());
    let url = format!("https://countersign.example.com/approvals/{}", a.id);
    assert!(buttons.iter().any(|b| b["url"] == url.as_str()));
    let text = blocks.to_string();
    for shown in [
        "prod-deploy",
        "dev@example.com",
        "POST",
        "deploy.example.com",
        "/v1/deployments/production?force=1",
        "0 of 2",
    ] {
        assert!(text.contains(shown), "{shown} missing from {text}");
    }
    // Slack's control characters are escaped, and the preview cannot end its code block early.
    assert!(text.contains("ship &lt;it&gt; &amp; go"));
    assert!(text.contains("[redacted]"));
    assert_eq!(text.matches("```").count(), 2, "{text}");
}

#[test]
fn login_rules_get_link_buttons_that_cast_no_vote() {
    let a = approval(ApproveVia::Login);
    let buttons = elements(&blocks::message_blocks(&a, &public_url()));
    assert_eq!(buttons.len(), 3);
    for b in &buttons {
        assert!(b["url"].as_str().unwrap().ends_with(a.id.as_str()));
        assert_ne!(b["action_id"], ACTION_APPROVE);
        assert_ne!(b["action_id"], ACTION_DENY);
    }
}

#[test]
fn final_messages_have_no_buttons_and_say_who_decided() {
    let mut a = approval(ApproveVia::Button);
    a.status = Status::Denied;
    a.decided_by = Some("bob@example.com".into());
    a.decision_reason = Some("not on a Friday".into());
    a.votes.push(Vote {
        approver: "bob@example.com".into(),
        decision: Decision::Deny,
        reason: Some("not on a Friday".into()),
        at: 1_700_000_100_000,
        via: Channel::Slack,
        self_approval: false,
    });
    let blocks = blocks::message_blocks(&a, &public_url());
    assert!(elements(&blocks).is_empty());
    let text = blocks.to_string();
    assert!(text.contains("Denied by bob@example.com"), "{text}");
    assert!(text.contains("not on a Friday"));
    assert_eq!(
        blocks::event_text(&a, &NotifyEvent::Denied),
        "Denied by bob@example.com: not on a Friday"
    );
    let dm = blocks::requester_outcome(&a, &NotifyEvent::Denied, &public_url()).unwrap();
    assert!(dm.contains("Denied by bob@example.com"));
    assert!(blocks::requester_outcome(&a, &NotifyEvent::VoteCast, &public_url()).is_none());
}

#[test]
fn executed_message_shows_upstream_status() {
    let mut a = approval(ApproveVia::Button);
    a.status = Status::Approved;
    a.execution = Execution::Done { status: 201 };
    let text = blocks::message_blocks(&a, &public_url()).to_string();
    assert!(text.contains("Upstream answered *201*"), "{text}");
}

#[test]
fn huge_requests_stay_within_slack_block_limits() {
    let mut a = approval(ApproveVia::Button);
    a.path = format!("/{}", "p".repeat(8000));
    a.reason = Some("<&>".repeat(2000));
    a.body_preview = "&".repeat(2048);
    a.rule = "r".repeat(300);
    let blocks = blocks::message_blocks(&a, &public_url());
    for b in blocks.as_array().unwrap() {
        let text = |v: &Value| v["text"].as_str().map(|t| t.chars().count()).unwrap_or(0);
        match b["type"].as_str().unwrap() {
            "header" => assert!(text(&b["text"]) <= 150),
            "section" => {
                assert!(text(&b["text"]) <= 3000, "{}", text(&b["text"]));
                for f in b["fields"].as_array().into_iter().flatten() {
                    assert!(text(f) <= 2000, "{}", text(f));
                }
            }
            "actions" => {
                for e in b["elements"].as_array().unwrap() {
                    if let Some(c) = e.get("confirm") {
                        assert!(text(&c["text"]) <= 300);
                    }
                }
            }
            _ => {}
        }
    }
}
