//! Unit tests: signature v0 against Slack's documented example, and message rendering.

use serde_json::Value;
use url::Url;

use super::blocks;
use super::signature::{sign, verify, SignatureError};
use crate::approval::{Approval, Channel, Execution, NotifyEvent, Status};
use crate::chat::Button;
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
        query: Some("force=1".into()),
        reason: Some("ship <it> & go".into()),
        body_preview: r#"{"version":"1.2.3","token":"[redacted]","note":"```"}"#.into(),
        body_len: 40,
        approve_via: via,
        notify: vec![NotifyTarget::SlackChannel("prod-approvals".into())],
        ..crate::chat::sample_approval()
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
    let [approve, deny] = [Button::Approve.name(), Button::Deny.name()]
        .map(|id| buttons.iter().find(|b| b["action_id"] == id).unwrap());
    assert_eq!(approve["style"], "primary");
    assert_eq!(approve["value"], a.id.as_str());
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
        assert_ne!(b["action_id"], Button::Approve.name());
        assert_ne!(b["action_id"], Button::Deny.name());
    }
}

#[test]
fn final_messages_have_no_buttons_and_say_who_decided() {
    let mut a = approval(ApproveVia::Button);
    crate::chat::deny(
        &mut a,
        "bob@example.com",
        "not on a Friday",
        Channel::Slack,
        1_700_000_100_000,
    );
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

// ----- hardening (issue 10, SPEC 8) -----

#[test]
fn fallback_text_escapes_request_derived_text() {
    let mut a = approval(ApproveVia::Button);
    a.path = "/deploy/<!channel>".into();
    a.query = Some("to=<https://evil.example|click>&x=&lt;".into());
    a.rule = "r<@U1>".into();
    let text = blocks::fallback_text(&a);
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(!text.contains("<https://evil.example|click>"), "{text}");
    assert!(!text.contains("<@U1>"), "{text}");
    assert!(text.contains("/deploy/&lt;!channel&gt;"), "{text}");
    assert!(
        text.contains("&lt;https://evil.example|click&gt;&amp;x=&amp;lt;"),
        "{text}"
    );
    assert!(text.contains("r&lt;@U1&gt;"), "{text}");
}

#[test]
fn a_workspace_is_checked_only_when_team_id_is_set() {
    use super::same_workspace;
    assert!(same_workspace(None, None, None));
    assert!(same_workspace(None, Some("T2"), Some("T3")));
    assert!(same_workspace(Some("T1"), Some("T1"), None));
    assert!(same_workspace(Some("T1"), Some("T1"), Some("T1")));
    assert!(!same_workspace(Some("T1"), Some("T2"), None));
    assert!(!same_workspace(Some("T1"), Some("T1"), Some("T2")));
    assert!(!same_workspace(Some("T1"), None, Some("T1")));
    assert!(!same_workspace(Some("T1"), None, None));
    assert!(!same_workspace(Some("T1"), Some("t1"), None));
}

#[test]
fn response_urls_are_slacks_or_api_urls_origin_only() {
    use super::response_url_allowed;
    let api = Url::parse("http://127.0.0.1:4000/api").unwrap().origin();
    let allowed = |u: &str| response_url_allowed(&Url::parse(u).unwrap(), &api);
    assert!(allowed("https://hooks.slack.com/actions/T1/2/abc"));
    assert!(allowed("https://HOOKS.slack.com:443/actions/T1/2/abc"));
    assert!(allowed("http://127.0.0.1:4000/response/x"));
    for bad in [
        "http://hooks.slack.com/actions/T1/2/abc",
        "https://hooks.slack.com:8443/actions",
        "https://hooks.slack.com.evil.example/actions",
        "https://evil.example/hooks.slack.com",
        "https://hooks.slack.com@evil.example/x",
        "https://user:pw@hooks.slack.com/x",
        "http://127.0.0.1:4001/response/x",
        "https://127.0.0.1:4000/response/x",
        "http://localhost:4000/response/x",
        "file:///etc/passwd",
        "data:text/plain,hello",
    ] {
        assert!(!allowed(bad), "{bad}");
    }
    // Slack's real api_url does not open any other slack.com host but its own.
    let real = Url::parse("https://slack.com/api").unwrap().origin();
    assert!(response_url_allowed(
        &Url::parse("https://slack.com/x").unwrap(),
        &real
    ));
    assert!(!response_url_allowed(
        &Url::parse("https://files.slack.com/x").unwrap(),
        &real
    ));
}

// ----- property tests (PROPTEST_CASES raises the case count) -----

mod prop {
    use proptest::prelude::*;

    use super::super::interactions::{click_of, parse};
    use super::super::signature::{verify, verify_headers, SignatureError, MAX_SKEW};
    use super::super::{response_url_allowed, same_workspace};
    use super::{SECRET, TS};

    /// The reference signature, computed with another HMAC implementation (ring).
    fn reference_mac(secret: &[u8], ts: &str, body: &[u8]) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(b"v0:");
        ctx.update(ts.as_bytes());
        ctx.update(b":");
        ctx.update(body);
        ctx.sign().as_ref().to_vec()
    }

    /// Slack's rule: the timestamp is unix seconds within five minutes of now, and the
    /// signature is `v0=` + hex HMAC-SHA256 over `v0:{ts}:{body}`.
    fn reference_accepts(secret: &[u8], ts: &str, sig: &str, body: &[u8], now: u64) -> bool {
        let Ok(t) = ts.trim().parse::<u64>() else {
            return false;
        };
        if t.abs_diff(now) > MAX_SKEW.as_secs() {
            return false;
        }
        let want = hex::encode(reference_mac(secret, ts.trim(), body));
        sig.strip_prefix("v0=")
            .is_some_and(|h| h.to_ascii_lowercase() == want)
    }

    fn timestamp() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(TS.to_owned()),
            (0u64..=600).prop_map(|d| (1_531_420_618u64 - 300 + d).to_string()),
            Just(format!(" {TS} ")),
            Just(format!("+{TS}")),
            Just("-1".to_owned()),
            Just(String::new()),
            Just("18446744073709551615".to_owned()),
            Just("18446744073709551616".to_owned()),
            "[ -~]{0,24}",
        ]
    }

    /// A signature: random, or the right one, or the right one slightly off.
    fn signature(ts: String, body: Vec<u8>) -> impl Strategy<Value = String> {
        let right = hex::encode(reference_mac(SECRET, ts.trim(), &body));
        prop_oneof![
            Just(format!("v0={right}")),
            Just(format!("v0={}", right.to_ascii_uppercase())),
            Just(format!("V0={right}")),
            Just(format!("v0={right}0")),
            Just(format!("v0={}", &right[..62])),
            (0usize..64, "[0-9a-f]").prop_map(move |(i, c)| {
                let mut s = right.clone();
                s.replace_range(i..i + 1, &c);
                format!("v0={s}")
            }),
            "v0=[0-9a-f]{64}",
            "[ -~]{0,80}",
        ]
    }

    fn case() -> impl Strategy<Value = (String, Vec<u8>, String, u64)> {
        (
            timestamp(),
            proptest::collection::vec(any::<u8>(), 0..200),
            prop_oneof![
                Just(1_531_420_618u64),
                1_531_420_000u64..1_531_421_300,
                any::<u64>()
            ],
        )
            .prop_flat_map(|(ts, body, now)| {
                signature(ts.clone(), body.clone())
                    .prop_map(move |sig| (ts.clone(), body.clone(), sig, now))
            })
    }

    /// Mutations of a byte string: flip bits, insert, delete, truncate, append.
    fn mutated(original: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = original.len();
        (
            0usize..5,
            any::<prop::sample::Index>(),
            any::<u8>(),
            1u8..=255,
        )
            .prop_map(move |(how, at, byte, flip)| {
                let mut m = original.clone();
                let i = if len == 0 { 0 } else { at.index(len) };
                match how {
                    0 if len > 0 => m[i] ^= flip,
                    1 => m.insert(if len == 0 { 0 } else { at.index(len + 1) }, byte),
                    2 if len > 0 => {
                        m.remove(i);
                    }
                    3 => m.truncate(i),
                    _ => m.push(byte),
                }
                m
            })
    }

    proptest! {
        /// The signature check never panics and accepts exactly what Slack's rule accepts.
        #[test]
        fn signature_check_matches_the_reference((ts, body, sig, now) in case()) {
            let got = verify(SECRET, &ts, &sig, &body, now);
            prop_assert_eq!(got.is_ok(), reference_accepts(SECRET, &ts, &sig, &body, now),
                "{:?}", got);
        }

        /// Any change to a signed body fails the check.
        #[test]
        fn any_change_to_a_signed_body_fails(
            (body, changed) in proptest::collection::vec(any::<u8>(), 0..300)
                .prop_flat_map(|b| (Just(b.clone()), mutated(b)))
        ) {
            let now: u64 = TS.parse().unwrap();
            let sig = super::super::signature::sign(SECRET, TS, &body);
            prop_assert_eq!(verify(SECRET, TS, &sig, &body, now), Ok(()));
            if changed != body {
                prop_assert_eq!(
                    verify(SECRET, TS, &sig, &changed, now),
                    Err(SignatureError::Mismatch)
                );
            }
        }

        /// Arbitrary header bytes never panic.
        #[test]
        fn signature_headers_never_panic(
            ts in proptest::collection::vec(any::<u8>(), 0..40),
            sig in proptest::collection::vec(any::<u8>(), 0..90),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            now in any::<u64>(),
        ) {
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_bytes(&ts) {
                headers.insert("x-slack-request-timestamp", v);
            }
            if let Ok(v) = http::HeaderValue::from_bytes(&sig) {
                headers.insert("x-slack-signature", v);
            }
            let _ = verify_headers(SECRET, &headers, &body, now);
        }

        /// Arbitrary bodies never panic the interaction parser.
        #[test]
        fn payload_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(p) = parse(&body) {
                let _ = click_of(p);
            }
        }

        /// Structured payloads: a vote comes out only for a `block_actions` click whose first
        /// action is Approve or Deny, and it carries the payload's user, team and approval.
        #[test]
        fn only_approve_and_deny_clicks_become_votes(
            kind in prop_oneof![
                Just("block_actions".to_owned()),
                Just("view_submission".to_owned()),
                Just("shortcut".to_owned()),
                "[a-z_]{0,12}",
            ],
            actions in proptest::collection::vec(
                prop_oneof![
                    Just("approve".to_owned()),
                    Just("deny".to_owned()),
                    Just("open".to_owned()),
                    Just("open_approve".to_owned()),
                    Just("reason".to_owned()),
                    "[a-z]{0,8}",
                ],
                0..3),
            user in "[A-Z0-9]{1,10}",
            team in proptest::option::of("T[A-Z0-9]{1,8}"),
            user_team in proptest::option::of("T[A-Z0-9]{1,8}"),
            value in "[ -~]{0,40}",
            noise in "[ -~]{0,20}",
        ) {
            let mut payload = serde_json::json!({
                "type": kind,
                "user": {"id": user, "name": noise},
                "actions": actions.iter().map(|a| serde_json::json!({"action_id": a, "value": value})).collect::<Vec<_>>(),
                "response_url": "https://hooks.slack.com/actions/x",
            });
            if let Some(t) = &team {
                payload["team"] = serde_json::json!({"id": t});
            }
            if let Some(t) = &user_team {
                payload["user"]["team_id"] = serde_json::json!(t);
            }
            let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
            let click = parse(body.as_bytes()).ok().and_then(click_of);
            let first = actions.first().map(String::as_str);
            let is_vote = kind == "block_actions" && matches!(first, Some("approve" | "deny"));
            prop_assert_eq!(click.is_some(), is_vote);
            if let Some(c) = click {
                prop_assert_eq!(&c.user, &user);
                prop_assert_eq!(&c.team, &team);
                prop_assert_eq!(&c.user_team, &user_team);
                prop_assert_eq!(c.decision == crate::approval::Decision::Approve, first == Some("approve"));
                if let Some(id) = &c.approval {
                    prop_assert_eq!(id.as_str(), value.as_str());
                }
            }
        }

        /// With `team_id` set, a click counts only when every team id it names is that one.
        #[test]
        fn workspace_check_matches_the_reference(
            expected in proptest::option::of(prop_oneof![Just("T1".to_owned()), "T[0-9]{0,2}"]),
            team in proptest::option::of(prop_oneof![Just("T1".to_owned()), "T[0-9]{0,2}"]),
            user_team in proptest::option::of(prop_oneof![Just("T1".to_owned()), "T[0-9]{0,2}"]),
        ) {
            let got = same_workspace(expected.as_deref(), team.as_deref(), user_team.as_deref());
            let want = match &expected {
                None => true,
                Some(e) => team.as_ref() == Some(e) && user_team.as_ref().is_none_or(|u| u == e),
            };
            prop_assert_eq!(got, want);
        }

        /// A response_url is allowed only on Slack's hooks host over HTTPS or on api_url's
        /// exact origin, whatever its spelling.
        #[test]
        fn response_url_check_never_allows_another_host(
            scheme in prop_oneof![Just("https"), Just("http"), Just("ftp"), Just("HTTPS")],
            userinfo in prop_oneof![Just(""), Just("u@"), Just("hooks.slack.com@"), Just("u:p@")],
            host in prop_oneof![
                Just("hooks.slack.com".to_owned()), Just("HOOKS.Slack.com".to_owned()), Just("hooks.slack.com.".to_owned()),
                Just("hooks.slack.com.evil.example".to_owned()), Just("evilhooks.slack.com".to_owned()),
                Just("127.0.0.1".to_owned()), Just("localhost".to_owned()), Just("[::1]".to_owned()), Just("2130706433".to_owned()),
                "[a-z0-9.-]{1,20}"],
            port in proptest::option::of(prop_oneof![Just(443u16), Just(4000u16), any::<u16>()]),
            path in "(/[ -~]{0,20})?",
        ) {
            let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
            let raw = format!("{scheme}://{userinfo}{host}{port_part}{path}");
            let api = url::Url::parse("http://127.0.0.1:4000/api").unwrap().origin();
            if let Ok(u) = url::Url::parse(&raw) {
                if response_url_allowed(&u, &api) {
                    prop_assert!(u.username().is_empty() && u.password().is_none(), "{}", raw);
                    let slack = u.scheme() == "https"
                        && u.host_str() == Some("hooks.slack.com")
                        && u.port_or_known_default() == Some(443);
                    let ours = u.scheme() == "http"
                        && u.host_str() == Some("127.0.0.1")
                        && u.port() == Some(4000);
                    prop_assert!(slack || ours, "{}", raw);
                }
            }
        }
    }
}

#[test]
fn reminder_and_escalation_replies_say_what_happened_and_need_no_dm() {
    let mut a = approval(ApproveVia::Button);
    a.nudges.reminders = 2;
    assert_eq!(
        blocks::event_text(&a, &NotifyEvent::Reminder),
        format!(
            "Reminder 2: still waiting for approval (0 of {} approvals)",
            a.quorum
        )
    );
    a.nudges.escalation = Some(crate::approval::nudges::Escalation {
        at: 0,
        approvers: vec!["group:managers".into()],
        notify: vec![NotifyTarget::SlackChannel("esc".into())],
        done: true,
        added: vec!["mia@example.com".into(), "max@example.com".into()],
    });
    assert_eq!(
        blocks::event_text(&a, &NotifyEvent::Escalated),
        "Escalated: still pending, so mia@example.com, max@example.com may now approve"
    );
    a.nudges.escalation.as_mut().unwrap().added.clear();
    assert!(blocks::event_text(&a, &NotifyEvent::Escalated).contains("nobody new"));
    for event in [NotifyEvent::Reminder, NotifyEvent::Escalated] {
        assert_eq!(
            blocks::requester_outcome(&a, &event, &public_url()),
            None,
            "the requester hears only of decisions"
        );
    }
}
