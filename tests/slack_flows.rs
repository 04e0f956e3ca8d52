//! Slack approval flows at the library level: a real [`Broker`] over a [`MemoryStore`], the
//! [`SlackNotifier`], and the `/slack/interactions` router served on 127.0.0.1, all talking to
//! the fake Slack Web API in `tests/common/fake_slack.rs`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::approval_fixture::rule;
use common::fake_slack::{FakeSlack, Fault, Message, BOT_TOKEN};
use common::RecordingAudit;
use countersign::approval::*;
use countersign::chat::slack::{self, signature, RetryPolicy, SlackApp, SlackNotifier};
use countersign::clock::{SharedClock, SystemClock};
use countersign::identity::Principal;
use countersign::policy::{ApprovalSpec, ApproveVia, NotifyTarget, Quorum};
use countersign::secret::Secret;
use serde_json::json;

const SIGNING_SECRET: &str = "test-signing-secret";
const CHANNEL: &str = "C0PRODAPPR";

struct Harness {
    slack: FakeSlack,
    app: SlackApp,
    broker: Broker,
    audit: Arc<RecordingAudit>,
    interactions_url: String,
    http: reqwest::Client,
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(5),
    }
}

async fn harness() -> Harness {
    harness_with_state(Arc::new(store::MemoryChatState::new())).await
}

/// [`harness`] with the Slack app remembering copies and clicks in `state`.
async fn harness_with_state(state: Arc<dyn store::ChatState>) -> Harness {
    let slack = FakeSlack::start().await;
    slack.add_channel("prod-approvals", CHANNEL);
    for (id, email) in [
        ("UALICE", "alice@example.com"),
        ("UBOB", "bob@example.com"),
        ("UCAROL", "carol@example.com"),
        ("UDEV", "dev@example.com"),
        ("UMALLORY", "mallory@example.com"),
    ] {
        slack.add_user(id, email);
    }
    let config = countersign::config::Slack {
        bot_token: Secret::new(BOT_TOKEN),
        signing_secret: Secret::new(SIGNING_SECRET),
        api_url: slack.api_url().parse().unwrap(),
        team_id: None,
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let app = SlackApp::with_state(
        &config,
        "https://countersign.example.com".parse().unwrap(),
        clock.clone(),
        fast_retry(),
        state,
    )
    .unwrap();
    let audit = Arc::new(RecordingAudit::default());
    let mut groups = BTreeMap::new();
    groups.insert(
        "sre-leads".to_owned(),
        vec!["alice@example.com".to_owned(), "bob@example.com".to_owned()],
    );
    let broker = Broker::new(
        Arc::new(MemoryStore::new()),
        Arc::new(SlackNotifier::new(app.clone())),
        audit.clone(),
        clock,
        Arc::new(ApprovalSigner::generate().unwrap()),
        Arc::new(Executor::new(Duration::from_secs(5))),
        groups,
    )
    .with_settings(BrokerSettings {
        notify_timeout: Duration::from_secs(15),
        ..BrokerSettings::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = slack::router(app.clone(), broker.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Harness {
        slack,
        app,
        broker,
        audit,
        interactions_url: format!("http://{addr}/slack/interactions"),
        http: reqwest::Client::new(),
    }
}

fn spec(quorum: u32) -> ApprovalSpec {
    ApprovalSpec {
        quorum: Quorum::Count(quorum),
        notify: vec![
            NotifyTarget::SlackChannel("prod-approvals".into()),
            NotifyTarget::SlackUser("carol@example.com".into()),
        ],
        ..common::approval_fixture::spec()
    }
}

fn requester() -> Principal {
    let claims = json!({
        "iss": "https://idp.example.com",
        "sub": "user-dev",
        "email": "dev@example.com",
        "exp": 4_000_000_000u64,
    });
    Principal::from_claims(claims.as_object().unwrap().clone()).unwrap()
}

fn stored() -> StoredRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    StoredRequest::new(
        &http::Method::POST,
        "deploy.example.com",
        "/v1/deployments/production",
        None,
        &headers,
        br#"{"version":"1.2.3","token":"s3cr3t"}"#.to_vec(),
        "deploy-api",
        "user-dev",
    )
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A click as Slack would send it.
struct Click<'a> {
    user: &'a str,
    action: &'a str,
    approval: &'a ApprovalId,
    trigger: &'a str,
    reason: Option<&'a str>,
}

impl Harness {
    async fn submit(&self, spec: ApprovalSpec) -> Approval {
        self.broker
            .submit(&rule(spec), &requester(), stored(), Some("ship it".into()))
            .await
            .unwrap()
    }

    fn click_body(&self, c: &Click<'_>) -> Vec<u8> {
        let mut state = json!({"values": {}});
        if let Some(r) = c.reason {
            state["values"]["reason"]["reason"] = json!({"type": "plain_text_input", "value": r});
        }
        let payload = json!({
            "type": "block_actions",
            "user": {"id": c.user, "username": c.user.to_lowercase(), "team_id": "T0TEST"},
            "team": {"id": "T0TEST", "domain": "test"},
            "api_app_id": "A0TEST",
            "trigger_id": c.trigger,
            "response_url": self.slack.response_url(c.trigger),
            "container": {"type": "message", "channel_id": CHANNEL, "message_ts": "1.000001"},
            "actions": [{
                "type": "button",
                "action_id": c.action,
                "block_id": "decision",
                "value": c.approval.as_str(),
                "action_ts": format!("{}.000100", now_unix()),
            }],
            "state": state,
        });
        serde_urlencoded::to_string([("payload", payload.to_string())])
            .unwrap()
            .into_bytes()
    }

    /// Posts `body` signed with `secret` at `timestamp`; returns the HTTP status.
    async fn post_signed(&self, body: Vec<u8>, secret: &str, timestamp: u64) -> u16 {
        let ts = timestamp.to_string();
        let sig = signature::sign(secret.as_bytes(), &ts, &body);
        self.post_raw(body, &ts, &sig).await
    }

    async fn post_raw(&self, body: Vec<u8>, ts: &str, sig: &str) -> u16 {
        let started = Instant::now();
        let status = self
            .http
            .post(&self.interactions_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "Slack needs an answer within 3 s"
        );
        status
    }

    async fn click(&self, c: Click<'_>) -> u16 {
        let body = self.click_body(&c);
        self.post_signed(body, SIGNING_SECRET, now_unix()).await
    }

    /// Top-level messages posted so far (thread replies not counted).
    fn copies_posted(&self) -> usize {
        self.slack
            .calls_of("chat.postMessage")
            .iter()
            .filter(|c| c.args["thread_ts"].is_null())
            .count()
    }

    async fn status_of(&self, id: &ApprovalId) -> Status {
        self.broker.get(id).await.unwrap().unwrap().status
    }

    /// The channel copy and the DM copy of the request message, as they stand now. Exactly
    /// two (the `spec()` targets), so an "every copy" check cannot pass on none.
    async fn copies(&self, id: &ApprovalId) -> Vec<Message> {
        let posted = self.app.posted(id).await.unwrap();
        assert_eq!(posted.len(), 2, "one copy per notify target: {posted:?}");
        posted
            .iter()
            .map(|p| self.slack.message(&p.channel, &p.ts).unwrap())
            .collect()
    }

    /// DMs to the requester (dev, UDEV) that are not request copies.
    fn requester_dms(&self) -> Vec<Message> {
        self.slack.messages_in(&FakeSlack::dm_of("UDEV"))
    }
}

/// Polls `check` until it holds (the click is handled after the 200).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn action_ids(m: &Message) -> Vec<String> {
    m.buttons()
        .iter()
        .map(|b| b["action_id"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn click_on_approve_approves_and_every_copy_says_so() {
    let h = harness().await;
    let a = h.submit(spec(1)).await;

    // Posted to the channel and as a DM to carol, each with both buttons carrying the id.
    let posted = h.app.posted(&a.id).await.unwrap();
    assert_eq!(posted.len(), 2, "{posted:?}");
    // Each copy is recorded as soon as it is posted: in the order the posts finished.
    let mut channels: Vec<&str> = posted.iter().map(|p| p.channel.as_str()).collect();
    channels.sort();
    let dm = FakeSlack::dm_of("UCAROL");
    let mut expected = vec![CHANNEL, dm.as_str()];
    expected.sort();
    assert_eq!(channels, expected);
    for m in h.copies(&a.id).await {
        assert_eq!(action_ids(&m), ["approve", "deny", "open"]);
        assert!(m
            .buttons()
            .iter()
            .take(2)
            .all(|b| b["value"] == a.id.as_str()));
        let text = m.rendered();
        assert!(
            text.contains("prod-deploy") && text.contains("dev@example.com"),
            "{text}"
        );
        assert!(text.contains("/v1/deployments/production") && text.contains("ship it"));
        assert!(
            text.contains("[redacted]") && !text.contains("s3cr3t"),
            "{text}"
        );
    }
    // Writes go as JSON with the bot token; carol's DM needed lookupByEmail + conversations.open.
    let calls = h.slack.calls();
    assert!(calls.iter().all(|c| c.authorized));
    assert!(h
        .slack
        .calls_of("chat.postMessage")
        .iter()
        .all(|c| c.encoding == "json"));
    assert_eq!(
        h.slack.calls_of("users.lookupByEmail")[0].args["email"],
        "carol@example.com"
    );
    assert_eq!(
        h.slack.calls_of("conversations.open")[0].args["users"],
        "UCAROL"
    );

    let status = h
        .click(Click {
            user: "UALICE",
            action: "approve",
            approval: &a.id,
            trigger: "t-alice",
            reason: None,
        })
        .await;
    assert_eq!(status, 200);
    eventually("approved", || async {
        h.status_of(&a.id).await == Status::Approved
    })
    .await;
    let after = h.broker.get(&a.id).await.unwrap().unwrap();
    assert_eq!(after.votes[0].via, Channel::Slack);
    assert_eq!(after.votes[0].approver, "alice@example.com");
    assert_eq!(h.slack.calls_of("users.info")[0].args["user"], "UALICE");
    assert_eq!(h.slack.calls_of("users.info")[0].encoding, "form");

    eventually("every copy updated", || async {
        h.copies(&a.id)
            .await
            .iter()
            .all(|m| m.rendered().contains("Approved by alice@example.com"))
    })
    .await;
    for (copy, m) in h
        .app
        .posted(&a.id)
        .await
        .unwrap()
        .iter()
        .zip(h.copies(&a.id).await)
    {
        assert!(
            m.buttons().is_empty(),
            "buttons must go once decided: {:?}",
            m.blocks
        );
        let thread = h.slack.thread(&copy.channel, &copy.ts);
        assert!(
            thread
                .iter()
                .any(|r| r.text == "Approved by alice@example.com"),
            "{thread:?}"
        );
    }
    // The requester hears the outcome by DM.
    let dms = h.requester_dms();
    assert_eq!(dms.len(), 1, "{dms:?}");
    assert!(
        dms[0].text.contains("Approved by alice@example.com"),
        "{}",
        dms[0].text
    );
    assert!(h.slack.all_ephemeral_replies().is_empty());

    // After execution every copy shows the upstream status, with a thread reply saying so.
    let mut executed = h.broker.get(&a.id).await.unwrap().unwrap();
    executed.execution = Execution::Done { status: 201 };
    SlackNotifier::new(h.app.clone())
        .notify(&executed, &NotifyEvent::Executed { status: 201 })
        .await
        .unwrap();
    for (copy, m) in h
        .app
        .posted(&a.id)
        .await
        .unwrap()
        .iter()
        .zip(h.copies(&a.id).await)
    {
        assert!(
            m.rendered().contains("Upstream answered *201*"),
            "{}",
            m.rendered()
        );
        assert!(h
            .slack
            .thread(&copy.channel, &copy.ts)
            .iter()
            .any(|r| r.text == "Sent upstream; it answered 201"));
    }
    assert_eq!(h.requester_dms().len(), 1, "the outcome DM is sent once");
}

#[tokio::test]
async fn deny_with_a_reason_is_shown_everywhere() {
    let h = harness().await;
    let a = h.submit(spec(1)).await;
    let status = h
        .click(Click {
            user: "UBOB",
            action: "deny",
            approval: &a.id,
            trigger: "t-bob",
            reason: Some("not on a Friday"),
        })
        .await;
    assert_eq!(status, 200);
    eventually("denied", || async {
        h.status_of(&a.id).await == Status::Denied
    })
    .await;
    let after = h.broker.get(&a.id).await.unwrap().unwrap();
    assert_eq!(after.decided_by.as_deref(), Some("bob@example.com"));
    assert_eq!(after.decision_reason.as_deref(), Some("not on a Friday"));
    eventually("copies say denied", || async {
        h.copies(&a.id).await.iter().all(|m| {
            m.rendered()
                .contains("Denied by bob@example.com*: not on a Friday")
                && m.buttons().is_empty()
        })
    })
    .await;
    let dms = h.requester_dms();
    assert_eq!(dms.len(), 1);
    assert!(
        dms[0]
            .text
            .contains("Denied by bob@example.com: not on a Friday"),
        "{}",
        dms[0].text
    );
}

#[tokio::test]
async fn quorum_of_two_needs_two_distinct_slack_approvers() {
    let h = harness().await;
    let a = h.submit(spec(2)).await;
    h.click(Click {
        user: "UALICE",
        action: "approve",
        approval: &a.id,
        trigger: "t-1",
        reason: None,
    })
    .await;
    eventually("first vote", || async {
        h.broker.get(&a.id).await.unwrap().unwrap().votes.len() == 1
    })
    .await;
    assert_eq!(h.status_of(&a.id).await, Status::Pending);
    eventually("copies show 1 of 2", || async {
        h.copies(&a.id)
            .await
            .iter()
            .all(|m| m.rendered().contains("1 of 2 approvals: alice@example.com"))
    })
    .await;
    for m in h.copies(&a.id).await {
        assert_eq!(
            action_ids(&m),
            ["approve", "deny", "open"],
            "still pending: buttons stay"
        );
    }
    let copy = &h.app.posted(&a.id).await.unwrap()[0];
    assert!(h
        .slack
        .thread(&copy.channel, &copy.ts)
        .iter()
        .any(|r| r.text == "alice@example.com approved (1 of 2)"));
    assert!(h.requester_dms().is_empty(), "no outcome yet");

    h.click(Click {
        user: "UCAROL",
        action: "approve",
        approval: &a.id,
        trigger: "t-2",
        reason: None,
    })
    .await;
    eventually("approved", || async {
        h.status_of(&a.id).await == Status::Approved
    })
    .await;
    eventually("copies approved", || async {
        h.copies(&a.id).await.iter().all(|m| {
            m.rendered()
                .contains("Approved by alice@example.com, carol@example.com")
        })
    })
    .await;
    // A notification that lost a race (an older snapshot, delivered late) must not bring the
    // buttons back: it only adds its thread reply.
    let mut stale = a.clone();
    stale.votes = h.broker.get(&a.id).await.unwrap().unwrap().votes[..1].to_vec();
    SlackNotifier::new(h.app.clone())
        .notify(&stale, &NotifyEvent::VoteCast)
        .await
        .unwrap();
    for m in h.copies(&a.id).await {
        assert!(m
            .rendered()
            .contains("Approved by alice@example.com, carol@example.com"));
        assert!(m.buttons().is_empty());
    }
}

#[tokio::test]
async fn outsider_requester_forged_stale_and_replayed_clicks_change_nothing() {
    let h = harness().await;
    let a = h.submit(spec(2)).await;

    // Outsider: signed, so told privately; nothing changes.
    h.click(Click {
        user: "UMALLORY",
        action: "approve",
        approval: &a.id,
        trigger: "t-mallory",
        reason: None,
    })
    .await;
    eventually("outsider told", || async {
        !h.slack.ephemeral_replies("t-mallory").is_empty()
    })
    .await;
    let reply = &h.slack.ephemeral_replies("t-mallory")[0];
    assert_eq!(reply["response_type"], "ephemeral");
    assert_eq!(reply["replace_original"], false);
    assert!(
        reply["text"].as_str().unwrap().contains("not an approver"),
        "{reply}"
    );

    // Asking again is answered again, from the cached users.info lookup.
    h.click(Click {
        user: "UMALLORY",
        action: "deny",
        approval: &a.id,
        trigger: "t-mallory-2",
        reason: None,
    })
    .await;
    eventually("outsider told twice", || async {
        !h.slack.ephemeral_replies("t-mallory-2").is_empty()
    })
    .await;
    let lookups = h.slack.calls_of("users.info");
    assert_eq!(
        lookups
            .iter()
            .filter(|c| c.args["user"] == "UMALLORY")
            .count(),
        1
    );

    // The requester (an approver by group, but it is their own request).
    h.click(Click {
        user: "UDEV",
        action: "approve",
        approval: &a.id,
        trigger: "t-dev",
        reason: None,
    })
    .await;
    eventually("requester told", || async {
        !h.slack.ephemeral_replies("t-dev").is_empty()
    })
    .await;
    assert!(h.slack.ephemeral_replies("t-dev")[0]["text"]
        .as_str()
        .unwrap()
        .contains("your own request"));

    // Forged (wrong secret) and stale (signed 6 minutes ago) clicks: 401, never looked at.
    let users_info_before = h.slack.calls_of("users.info").len();
    let forged = h.click_body(&Click {
        user: "UALICE",
        action: "approve",
        approval: &a.id,
        trigger: "t-forged",
        reason: None,
    });
    assert_eq!(
        h.post_signed(forged, "not-the-secret", now_unix()).await,
        401
    );
    let stale = h.click_body(&Click {
        user: "UALICE",
        action: "approve",
        approval: &a.id,
        trigger: "t-stale",
        reason: None,
    });
    assert_eq!(
        h.post_signed(stale, SIGNING_SECRET, now_unix() - 360).await,
        401
    );
    let unsigned = h.click_body(&Click {
        user: "UALICE",
        action: "approve",
        approval: &a.id,
        trigger: "t-unsigned",
        reason: None,
    });
    let tampered_sig = signature::sign(
        SIGNING_SECRET.as_bytes(),
        &now_unix().to_string(),
        b"payload=%7B%7D",
    );
    assert_eq!(
        h.post_raw(unsigned, &now_unix().to_string(), &tampered_sig)
            .await,
        401
    );

    // A click on the Open link button is reported by Slack too; it is not a vote.
    let status = h
        .click(Click {
            user: "UALICE",
            action: "open",
            approval: &a.id,
            trigger: "t-open",
            reason: None,
        })
        .await;
    assert_eq!(status, 200);

    // A real click, then the same signed request replayed: counted once, replay not answered.
    let body = h.click_body(&Click {
        user: "UALICE",
        action: "approve",
        approval: &a.id,
        trigger: "t-replay",
        reason: None,
    });
    let ts = now_unix();
    assert_eq!(h.post_signed(body.clone(), SIGNING_SECRET, ts).await, 200);
    eventually("alice counted", || async {
        h.broker.get(&a.id).await.unwrap().unwrap().votes.len() == 1
    })
    .await;
    assert_eq!(h.post_signed(body.clone(), SIGNING_SECRET, ts).await, 200);
    assert_eq!(h.post_signed(body, SIGNING_SECRET, ts + 1).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let after = h.broker.get(&a.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Pending);
    assert_eq!(after.votes.len(), 1, "{:?}", after.votes);
    assert_eq!(after.votes[0].approver, "alice@example.com");
    assert!(
        h.slack.ephemeral_replies("t-replay").is_empty(),
        "a replay is ignored silently"
    );
    for t in ["t-forged", "t-stale", "t-unsigned", "t-open"] {
        assert!(h.slack.ephemeral_replies(t).is_empty());
    }
    // Only the one real alice click looked her up (forged ones were never parsed).
    assert_eq!(h.slack.calls_of("users.info").len(), users_info_before + 1);
    assert!(h.audit.find(&a.id, "approval.approved").is_empty());

    // Once decided, a late click is told so and changes nothing.
    h.click(Click {
        user: "UBOB",
        action: "deny",
        approval: &a.id,
        trigger: "t-bob-deny",
        reason: None,
    })
    .await;
    eventually("denied by bob", || async {
        h.status_of(&a.id).await == Status::Denied
    })
    .await;
    h.click(Click {
        user: "UCAROL",
        action: "approve",
        approval: &a.id,
        trigger: "t-late",
        reason: None,
    })
    .await;
    eventually("late click told", || async {
        !h.slack.ephemeral_replies("t-late").is_empty()
    })
    .await;
    assert!(h.slack.ephemeral_replies("t-late")[0]["text"]
        .as_str()
        .unwrap()
        .contains("already denied"));
    assert_eq!(h.status_of(&a.id).await, Status::Denied);
}

#[tokio::test]
async fn cancelled_and_login_only_requests() {
    let h = harness().await;
    let a = h.submit(spec(1)).await;
    h.broker
        .cancel(&a.id, "dev@example.com", "caller hung up")
        .await
        .unwrap();
    for m in h.copies(&a.id).await {
        assert!(
            m.rendered()
                .contains("Cancelled by dev@example.com*: caller hung up"),
            "{}",
            m.rendered()
        );
        assert!(m.buttons().is_empty());
    }

    // approve_via = "login": link buttons only, and a crafted Approve click is refused.
    let mut login = spec(1);
    login.approve_via = ApproveVia::Login;
    let b = h.submit(login).await;
    for m in h.copies(&b.id).await {
        assert!(m
            .buttons()
            .iter()
            .all(|x| x["url"].as_str().unwrap().ends_with(b.id.as_str())));
    }
    h.click(Click {
        user: "UALICE",
        action: "approve",
        approval: &b.id,
        trigger: "t-login",
        reason: None,
    })
    .await;
    eventually("told to log in", || async {
        !h.slack.ephemeral_replies("t-login").is_empty()
    })
    .await;
    assert!(h.slack.ephemeral_replies("t-login")[0]["text"]
        .as_str()
        .unwrap()
        .contains(&format!(
            "https://countersign.example.com/approvals/{}",
            b.id
        )));
    assert_eq!(h.status_of(&b.id).await, Status::Pending);
}

#[tokio::test]
async fn a_429_storm_delays_the_post_but_does_not_lose_it() {
    let h = harness().await;
    // One target, so the faults hit its post in order: 429, 429, 503, then success.
    let mut channel_only = spec(1);
    channel_only.notify = vec![NotifyTarget::SlackChannel("prod-approvals".into())];
    h.slack.queue_faults(
        "chat.postMessage",
        [
            Fault::RateLimited(1),
            Fault::RateLimited(1),
            Fault::Http(503),
        ],
    );
    let started = Instant::now();
    let a = h.submit(channel_only).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After must be honoured, took {:?}",
        started.elapsed()
    );
    assert_eq!(h.app.posted(&a.id).await.unwrap().len(), 1);
    assert_eq!(h.slack.calls_of("chat.postMessage").len(), 4);
    assert_eq!(h.slack.messages_in(CHANNEL).len(), 1, "posted exactly once");
    assert_eq!(h.audit.find(&a.id, "notify.sent").len(), 1);
    assert!(h.audit.find(&a.id, "notify.failed").is_empty());

    // Slack's other way of saying it, HTTP 200 `ok: false, error: ratelimited`, is retried
    // too: the click still counts.
    h.slack
        .queue_faults("users.info", [Fault::Error("ratelimited")]);
    h.click(Click {
        user: "UALICE",
        action: "approve",
        approval: &a.id,
        trigger: "t-a",
        reason: None,
    })
    .await;
    eventually("approved", || async {
        h.status_of(&a.id).await == Status::Approved
    })
    .await;
    assert_eq!(h.slack.calls_of("users.info").len(), 2);
}

#[tokio::test]
async fn slack_errors_are_not_retried_and_a_dead_slack_is_audited_but_harmless() {
    let h = harness().await;
    // ok:false (other than ratelimited) is final: one call, no retry.
    h.slack
        .queue_faults("chat.postMessage", [Fault::Error("channel_not_found")]);
    let a = h.submit(spec(1)).await;
    assert_eq!(
        h.app.posted(&a.id).await.unwrap().len(),
        1,
        "the DM copy still went out"
    );
    let failed = h.audit.find(&a.id, "notify.failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("channel_not_found"),
        "{failed:?}"
    );
    assert_eq!(h.slack.calls_of("chat.postMessage").len(), 2);

    // Slack down for good: notify fails (bounded retries), the request still waits, and an
    // approver can decide through the API.
    h.slack.fail_always("*", Fault::Http(500));
    let notifier = SlackNotifier::new(h.app.clone());
    let b = h.submit(spec(1)).await;
    let err = notifier
        .notify(&b, &NotifyEvent::Requested)
        .await
        .unwrap_err();
    assert!(err.0.contains("HTTP 500"), "{err}");
    assert_eq!(h.audit.find(&b.id, "notify.failed").len(), 1);
    assert_eq!(h.status_of(&b.id).await, Status::Pending);
    let api_vote = ApproverIdentity {
        email: "bob@example.com".into(),
        iss: Some("https://idp.example.com".into()),
        sub: Some("sub-bob".into()),
        via: Channel::Api,
    };
    let decided = h
        .broker
        .decide(&b.id, api_vote, Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(decided.status, Status::Approved);
    // Four attempts per call, no more (bounded).
    let posts_for_b = h.slack.calls_of("chat.postMessage").len() - 2;
    assert_eq!(posts_for_b % 4, 0, "{posts_for_b}");
}

#[tokio::test]
async fn approvals_without_a_slack_target_are_left_alone() {
    let h = harness().await;
    let mut teams_only = spec(1);
    teams_only.notify = vec![NotifyTarget::Teams];
    let a = h.submit(teams_only).await;
    assert!(h.slack.calls().is_empty());
    assert_eq!(h.audit.find(&a.id, "notify.sent").len(), 1);
}

/// Chat state whose backend is down: every call fails as an unreachable store does.
#[derive(Debug)]
struct DownChatState;

#[async_trait::async_trait]
impl store::ChatState for DownChatState {
    async fn add_copy(
        &self,
        _scope: &str,
        _id: &ApprovalId,
        _copy: &str,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("redis add chat copy: timed out"))
    }

    async fn copies(&self, _scope: &str, _id: &ApprovalId) -> Result<Vec<String>, StoreError> {
        Err(StoreError::unavailable("redis chat copies: timed out"))
    }

    async fn first_seen(
        &self,
        _scope: &str,
        _key: &str,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Err(StoreError::unavailable("redis chat event: timed out"))
    }
}

#[tokio::test]
async fn without_its_chat_state_slack_fails_closed() {
    let h = harness_with_state(Arc::new(DownChatState)).await;
    let a = h.submit(spec(1)).await;
    // Both copies went out but cannot be remembered: the notification counts as failed.
    assert_eq!(h.copies_posted(), 2);
    let failed = h.audit.find(&a.id, "notify.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("posted but not remembered"),
        "{failed:?}"
    );

    // A click that cannot be checked for a replay is not counted; the clicker is told.
    let status = h
        .click(Click {
            user: "UALICE",
            action: "approve",
            approval: &a.id,
            trigger: "t-down",
            reason: None,
        })
        .await;
    assert_eq!(status, 200);
    eventually("told it was not recorded", || async {
        !h.slack.ephemeral_replies("t-down").is_empty()
    })
    .await;
    assert!(h.slack.ephemeral_replies("t-down")[0]["text"]
        .as_str()
        .unwrap()
        .contains("could not record your vote"));
    assert_eq!(h.status_of(&a.id).await, Status::Pending);
    assert!(h.audit.find(&a.id, "vote.cast").is_empty());
    assert!(
        h.slack.calls_of("users.info").is_empty(),
        "not even looked up"
    );
}
