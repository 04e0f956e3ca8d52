//! Reminders and escalation end to end (SPEC 9, issue 11 item 4), through the real
//! `countersign` binary with the fake Slack (`tests/common/fake_slack.rs`), the fake Teams
//! webhook and, for two replicas, a real `redis-server`:
//! - `remind` re-notifies pending requests as a thread reply under the posted Slack message
//!   (never a new top-level post) and as a new Teams card, and stops at the decision;
//! - `escalate` adds approvers after `after` (refused before, counted after), posts the
//!   request in the escalation's channel and audits `approval.escalated`, once;
//! - two replicas sharing Redis send each reminder once, not once per replica.

mod common;

use std::time::{Duration, Instant};

use common::fake_slack::{FakeSlack, Message, BOT_TOKEN};
use common::fake_teams::FakeTeams;
use common::{assert_error_body, http_client, EchoUpstream, LocalIssuer, Proxy, RedisServer};
use common::{basic_config, TestDir};
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";
const PROD: &str = "C0PROD";
const ESC: &str = "C0ESC";

/// The rule under test; `extra` goes into `[rule.approval]`.
fn policy(notify: &str, extra: &str) -> String {
    format!(
        r#"[[rule]]
name = "prod-deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
notify = [{notify}]
hold = "40s"
expires = "10m"
{extra}
"#
    )
}

/// One or two replicas (two share a Redis), a local issuer, an echo upstream, the fakes.
struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    slack: FakeSlack,
    teams: FakeTeams,
    replicas: Vec<Proxy>,
    _redis: Option<RedisServer>,
}

impl Env {
    async fn start(notify: &str, extra: &str, replicas: usize) -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        let slack = FakeSlack::start().await;
        let teams = FakeTeams::start().await;
        slack.add_channel("prod-approvals", PROD);
        slack.add_channel("esc", ESC);
        slack.add_user("UALICE", "alice@example.com");
        slack.add_user("UCAROL", "carol@example.com");
        dir.write("policies/deploy.toml", policy(notify, extra));
        dir.write("slack-bot-token", BOT_TOKEN);
        dir.write("slack-signing-secret", "8f742231b10e8888abcd99yyyzzz85a5");
        dir.write("teams-webhook", teams.webhook_url("s3cr3t-sig"));
        dir.write("signing.pem", common::signing_key_pem());
        let redis = (replicas > 1).then(RedisServer::start);
        let store = redis
            .as_ref()
            .map(|r| format!("store = \"{}\"\n", r.url()))
            .unwrap_or_default();
        let config = format!(
            "{}\n[approvals]\n{store}audit_log = \"{{{{dir}}}}/audit-@NAME@.jsonl\"\n\
             signing_key = \"file:signing.pem\"\n\n\
             [slack]\nbot_token = \"file:slack-bot-token\"\n\
             signing_secret = \"file:slack-signing-secret\"\napi_url = \"{}\"\n\n\
             [teams]\nwebhook_url = \"file:teams-webhook\"\n",
            basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            slack.api_url(),
        );
        let mut started = Vec::new();
        for name in ["a", "b"].into_iter().take(replicas) {
            let text = config.replace("@NAME@", name);
            let mut p = Proxy::start_named(&dir, &format!("{name}.toml"), &text).await;
            p.wait_ready().await;
            started.push(p);
        }
        Env {
            dir,
            issuer,
            echo,
            slack,
            teams,
            replicas: started,
            _redis: redis,
        }
    }

    /// dev@example.com sends a deploy to the first replica, which holds it.
    fn hold(&self) -> tokio::task::JoinHandle<u16> {
        let token = self
            .issuer
            .token("dev", AUD, json!({ "email": "dev@example.com" }));
        let url = format!("{}/deploy/prod", self.replicas[0].data_url());
        tokio::spawn(async move {
            let resp = http_client()
                .post(url)
                .bearer_auth(token)
                .body("{\"version\":\"2\"}")
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("held request");
            resp.status().as_u16()
        })
    }

    /// `name@example.com` votes approve on `id` through the API of the last replica.
    async fn approve(&self, id: &str, name: &str) -> reqwest::Response {
        let control = self.replicas.last().expect("a replica").control_url();
        let token = self
            .issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }));
        http_client()
            .post(format!("{control}/approvals/{id}/decision"))
            .bearer_auth(token)
            .json(&json!({ "decision": "approve" }))
            .send()
            .await
            .expect("POST decision")
    }

    /// The one top-level request message in `channel`, once posted.
    async fn posted(&self, channel: &str) -> Message {
        wait_for(&format!("the request in {channel}"), || {
            !self.slack.messages_in(channel).is_empty()
        })
        .await;
        self.slack.messages_in(channel)[0].clone()
    }

    /// Texts of the replies under `message` that contain `what`.
    fn replies(&self, message: &Message, what: &str) -> Vec<String> {
        self.slack
            .thread(&message.channel, &message.ts)
            .into_iter()
            .map(|m| m.text)
            .filter(|t| t.contains(what))
            .collect()
    }

    /// Audit lines of kind `event`, from every replica.
    fn audit(&self, event: &str) -> Vec<Value> {
        ["a", "b"]
            .into_iter()
            .take(self.replicas.len())
            .flat_map(|name| {
                let log = self.dir.read(format!("audit-{name}.jsonl"));
                log.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// Every replica's stderr, for failure messages.
    fn stderr(&self) -> String {
        self.replicas.iter().map(Proxy::stderr).collect()
    }
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the held caller's answer.
async fn released(held: tokio::task::JoinHandle<u16>) -> u16 {
    tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("held request released")
        .expect("held task")
}

/// The `N` of every "Reminder N: ..." text.
fn reminder_numbers(texts: &[String]) -> Vec<u32> {
    texts
        .iter()
        .filter_map(|t| t.strip_prefix("Reminder ")?.split(':').next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn slack_reminders_are_thread_replies_while_pending_and_stop_at_the_decision() {
    let env = Env::start("\"slack:#prod-approvals\"", "remind = \"1s\"", 1).await;
    let held = env.hold();
    let message = env.posted(PROD).await;
    let id = message.approval_id();

    wait_for("two reminders in the thread", || {
        env.replies(&message, "Reminder").len() >= 2
    })
    .await;
    let reminders = env.replies(&message, "Reminder");
    assert_eq!(reminder_numbers(&reminders)[..2], [1, 2], "{reminders:?}");
    assert!(
        reminders[0].contains("still waiting for approval (0 of 1 approvals)"),
        "{reminders:?}"
    );
    assert_eq!(
        env.slack.messages_in(PROD).len(),
        1,
        "a reminder is a thread reply, never a new top-level post"
    );
    for call in env.slack.calls_of("chat.postMessage") {
        if call.args["text"]
            .as_str()
            .unwrap_or("")
            .contains("Reminder")
        {
            assert_eq!(
                call.args["thread_ts"],
                message.ts.as_str(),
                "{:?}",
                call.args
            );
        }
    }
    let sent = env.audit("notify.sent");
    assert!(
        sent.iter()
            .any(|e| e["details"]["notify_event"] == "reminder"),
        "each reminder is audited: {sent:?}"
    );

    let resp = env.approve(&id, "alice").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(released(held).await, 200);
    assert_eq!(env.echo.count(), 1);
    wait_for("the decision in the thread", || {
        !env.replies(&message, "Approved by").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_decision = env.replies(&message, "Reminder").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.replies(&message, "Reminder").len(),
        at_decision,
        "no reminder after the decision"
    );
}

#[tokio::test]
async fn escalation_adds_carol_after_after_and_her_vote_approves() {
    let extra = r#"escalate = { after = "2s", approvers = ["carol@example.com"], notify = ["slack:#esc"] }"#;
    let env = Env::start("\"slack:#prod-approvals\"", extra, 1).await;
    let held = env.hold();
    let message = env.posted(PROD).await;
    let id = message.approval_id();

    // Before `after`: carol is nobody here.
    let early = env.approve(&id, "carol").await;
    assert_eq!(early.status(), 403, "{}", env.stderr());
    assert_error_body(early, "not_an_approver").await;
    assert!(env.slack.messages_in(ESC).is_empty(), "not escalated yet");

    // After it: the request is posted in #esc, with buttons, and said so in both threads.
    let escalated = env.posted(ESC).await;
    assert_eq!(escalated.approval_id(), id);
    wait_for("the escalation notices", || {
        !env.replies(&escalated, "Escalated").is_empty()
            && !env.replies(&message, "Escalated").is_empty()
    })
    .await;
    let notice = &env.replies(&message, "Escalated")[0];
    assert!(notice.contains("carol@example.com"), "{notice}");
    let audited = env.audit("approval.escalated");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(
        audited[0]["details"]["added_approvers"],
        "carol@example.com"
    );

    let resp = env.approve(&id, "carol").await;
    assert_eq!(resp.status(), 200, "{}", env.stderr());
    assert_eq!(released(held).await, 200);
    assert_eq!(env.echo.count(), 1, "the upstream runs the request once");
    wait_for("the #esc copy to show the decision", || {
        env.slack
            .message(ESC, &escalated.ts)
            .is_some_and(|m| m.updates > 0 && m.rendered().contains("carol@example.com"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.slack.messages_in(ESC).len(), 1, "escalated once");
    assert_eq!(env.audit("approval.escalated").len(), 1, "escalated once");
    assert_eq!(env.echo.count(), 1);
}

#[tokio::test]
async fn teams_reminders_are_new_cards_until_the_decision() {
    let env = Env::start("\"teams\"", "remind = \"1s\"", 1).await;
    let held = env.hold();
    let reminders = || {
        env.teams
            .delivered()
            .iter()
            .filter(|c| c.to_string().contains("Reminder: approval needed"))
            .count()
    };
    wait_for("two reminder cards", || reminders() >= 2).await;
    let first = env.teams.delivered()[0].to_string();
    assert!(first.contains("Approval needed"), "{first}");
    let open = env.teams.delivered()[0]["attachments"][0]["content"]["actions"][0]["url"]
        .as_str()
        .expect("the card links the approval page")
        .to_owned();
    let id = open.rsplit('/').next().expect("id").to_owned();
    assert_eq!(env.approve(&id, "alice").await.status(), 200);
    assert_eq!(released(held).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_decision = reminders();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        reminders(),
        at_decision,
        "no reminder card after the decision"
    );
}

#[tokio::test]
async fn two_replicas_on_redis_send_each_reminder_once() {
    let env = Env::start("\"slack:#prod-approvals\"", "remind = \"2s\"", 2).await;
    let held = env.hold();
    let message = env.posted(PROD).await;
    let id = message.approval_id();

    // Both replicas sweep every second; ~9 s is four intervals.
    wait_for("three reminders", || {
        env.replies(&message, "Reminder").len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let texts = env.replies(&message, "Reminder");
    let numbers = reminder_numbers(&texts);
    let expected: Vec<u32> = (1..=u32::try_from(numbers.len()).expect("few")).collect();
    assert_eq!(numbers, expected, "each reminder once, in order: {texts:?}");
    let audited = env
        .audit("notify.sent")
        .into_iter()
        .filter(|e| e["details"]["notify_event"] == "reminder")
        .count();
    assert_eq!(audited, numbers.len(), "one audit line per reminder sent");

    assert_eq!(env.approve(&id, "alice").await.status(), 200);
    assert_eq!(released(held).await, 200);
    assert_eq!(env.echo.count(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_decision = env.replies(&message, "Reminder").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.replies(&message, "Reminder").len(), at_decision);
}

#[tokio::test]
async fn two_replicas_on_redis_escalate_once_and_the_added_approver_decides_on_either() {
    let extra = r#"escalate = { after = "2s", approvers = ["carol@example.com"], notify = ["slack:#esc"] }"#;
    let env = Env::start("\"slack:#prod-approvals\"", extra, 2).await;
    let held = env.hold();
    let message = env.posted(PROD).await;
    let id = message.approval_id();

    let escalated = env.posted(ESC).await;
    assert_eq!(escalated.approval_id(), id);
    // Give both replicas' sweeps time to try again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.slack.messages_in(ESC).len(), 1, "posted once in #esc");
    assert_eq!(
        env.replies(&message, "Escalated").len(),
        1,
        "one notice in the first thread"
    );
    assert_eq!(env.audit("approval.escalated").len(), 1, "{}", env.stderr());

    // Held on replica A, decided by carol on replica B.
    let resp = env.approve(&id, "carol").await;
    assert_eq!(resp.status(), 200, "{}", env.stderr());
    assert_eq!(released(held).await, 200);
    assert_eq!(env.echo.count(), 1);
}
