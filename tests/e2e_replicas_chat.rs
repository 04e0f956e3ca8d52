//! Chat state shared by replicas (issue 13 item 2, issue 15): two replicas of the real binary
//! on one real `redis-server`, with Slack (the fake of `tests/common/fake_slack.rs`) or the
//! Teams bot (the fake Bot Framework). A message posted by replica A is updated by replica B
//! when B handles the click (every copy), and a click or activity replayed to the other
//! replica is a no-op.
//!
//! The votes are a quorum of two so that the first vote is notified by B alone: A neither
//! holds a decision nor executes anything then, so copies showing that vote prove B found
//! them in the shared store.

mod common;

use std::time::{Duration, Instant};

use common::fake_botframework::{
    At, FakeBotFramework, Fault as BfFault, User, APP_ID, APP_PASSWORD, TENANT,
};
use common::fake_slack::{Click, FakeSlack, Fault, Message, BOT_TOKEN};
use common::{http_client, EchoUpstream, LocalIssuer, Proxy, RedisServer, TestDir};
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_CHANNEL: &str = "C0PROD";
const TEAM: &str = "19:team-platform@thread.tacv2";
const TEAMS_CHANNEL: &str = "19:prod-approvals@thread.tacv2";
const TEAMS_CHAT: &str = "19:release-chat@thread.v2";

fn policy(notify: &str) -> String {
    format!(
        r#"[[rule]]
name = "prod-deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com"]
quorum = 2
notify = [{notify}]
hold = "40s"
expires = "10m"
"#
    )
}

/// Two replicas sharing one Redis, one signing key and one chat fake; each has its own audit
/// log (`audit-a.jsonl`, `audit-b.jsonl`).
struct Replicas {
    _redis: RedisServer,
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    a: Proxy,
    b: Proxy,
}

impl Replicas {
    /// `chat` is appended to the config (the `[slack]` or `[teams]` table); `files` are
    /// written first.
    async fn start(
        issuer: LocalIssuer,
        notify: &str,
        chat: &str,
        files: &[(&str, &str)],
    ) -> Replicas {
        let redis = RedisServer::start();
        let dir = TestDir::new();
        let echo = EchoUpstream::start().await;
        dir.write("policies/chat.toml", policy(notify));
        dir.write("signing.pem", common::signing_key_pem());
        for (name, contents) in files {
            dir.write(name, contents);
        }
        let config = format!(
            "{}\n[approvals]\nstore = \"{}\"\naudit_log = \"{{{{dir}}}}/audit-@NAME@.jsonl\"\nsigning_key = \"file:signing.pem\"\n\n{chat}\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            redis.url(),
        );
        let mut replicas = Vec::new();
        for name in ["a", "b"] {
            let text = config.replace("@NAME@", name);
            let mut p = Proxy::start_named(&dir, &format!("{name}.toml"), &text).await;
            p.wait_ready().await;
            replicas.push(p);
        }
        let b = replicas.pop().expect("replica b");
        let a = replicas.pop().expect("replica a");
        Replicas {
            _redis: redis,
            dir,
            issuer,
            echo,
            a,
            b,
        }
    }

    /// dev@example.com sends a deploy to replica A, which holds it.
    fn hold_on_a(&self) -> tokio::task::JoinHandle<reqwest::Response> {
        let token = self
            .issuer
            .token("dev", AUD, json!({ "email": "dev@example.com" }));
        let url = format!("{}/deploy/prod", self.a.data_url());
        tokio::spawn(async move {
            http_client()
                .post(url)
                .bearer_auth(token)
                .body("{\"version\":\"2\"}")
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("held request")
        })
    }

    /// Audit events `event` written by replica `name`.
    fn audit(&self, name: &str, event: &str) -> usize {
        self.dir
            .read(format!("audit-{name}.jsonl"))
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == event)
            .count()
    }
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn released(held: tokio::task::JoinHandle<reqwest::Response>) -> u16 {
    tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("held request released")
        .expect("held task")
        .status()
        .as_u16()
}

// ----- Slack ---------------------------------------------------------------------------------

const CAROL: &str = "UCAROL";

/// Replicas with `[slack]` on the fake; the rule posts to the channel and DMs carol.
async fn slack_replicas() -> (Replicas, FakeSlack) {
    let slack = FakeSlack::start().await;
    slack.add_channel("prod-approvals", SLACK_CHANNEL);
    for (id, email) in [
        ("UALICE", "alice@example.com"),
        ("UBOB", "bob@example.com"),
        (CAROL, "carol@example.com"),
    ] {
        slack.add_user(id, email);
    }
    let chat = format!(
        "[slack]\nbot_token = \"file:slack-bot-token\"\nsigning_secret = \"file:slack-signing-secret\"\napi_url = \"{}\"\n",
        slack.api_url()
    );
    let replicas = Replicas::start(
        LocalIssuer::start().await,
        "\"slack:#prod-approvals\", \"slack:@carol@example.com\"",
        &chat,
        &[
            ("slack-bot-token", BOT_TOKEN),
            ("slack-signing-secret", SIGNING_SECRET),
        ],
    )
    .await;
    (replicas, slack)
}

/// Every copy of the request message: the channel's and carol's DM, once both are posted.
async fn slack_copies(slack: &FakeSlack) -> Vec<Message> {
    let dm = FakeSlack::dm_of(CAROL);
    wait_for("both copies posted", || {
        !slack.messages_in(SLACK_CHANNEL).is_empty() && !slack.messages_in(&dm).is_empty()
    })
    .await;
    let mut copies = slack.messages_in(SLACK_CHANNEL);
    copies.extend(slack.messages_in(&dm));
    copies
}

/// The copies as they stand now.
fn slack_now(slack: &FakeSlack, copies: &[Message]) -> Vec<Message> {
    copies
        .iter()
        .map(|m| slack.message(&m.channel, &m.ts).expect("copy still there"))
        .collect()
}

#[tokio::test]
async fn slack_copies_posted_by_a_are_all_updated_by_a_click_on_b() {
    let (r, slack) = slack_replicas().await;
    let held = r.hold_on_a();
    let copies = slack_copies(&slack).await;
    let top_level_posts = slack
        .calls_of("chat.postMessage")
        .iter()
        .filter(|c| c.args["thread_ts"].is_null())
        .count();
    assert!(!copies.is_empty());
    assert_eq!(
        copies.len(),
        top_level_posts,
        "every posted copy is counted"
    );
    assert_eq!(copies.len(), 2);
    let id = copies[0].approval_id();

    let first = &copies[0];
    let alice = Click {
        user: "UALICE",
        action: "approve",
        approval: &id,
        channel: &first.channel,
        ts: &first.ts,
        trigger: "trigger-alice",
        response_url: &slack.response_url("alice"),
    };
    assert_eq!(
        alice
            .signed(SIGNING_SECRET)
            .deliver(&r.b.control_url())
            .await,
        200
    );
    wait_for(
        "every copy to show alice's vote (only B notified it)",
        || {
            slack_now(&slack, &copies)
                .iter()
                .all(|m| m.rendered().contains("1 of 2 approvals: alice@example.com"))
        },
    )
    .await;
    assert!(!held.is_finished(), "one approval of two keeps holding");

    let bob = Click {
        user: "UBOB",
        trigger: "trigger-bob",
        response_url: &slack.response_url("bob"),
        ..alice
    };
    assert_eq!(
        bob.signed(SIGNING_SECRET).deliver(&r.b.control_url()).await,
        200
    );
    assert_eq!(released(held).await, 200, "A's held caller is released");
    assert_eq!(r.echo.count(), 1);
    wait_for("every copy to show the outcome", || {
        slack_now(&slack, &copies).iter().all(|m| {
            let text = m.rendered();
            text.contains("Approved by alice@example.com, bob@example.com")
                && text.contains("Upstream answered *200*")
                && m.buttons().is_empty()
        })
    })
    .await;
    for m in &copies {
        let thread = slack.thread(&m.channel, &m.ts);
        assert!(
            thread.iter().any(|reply| reply
                .text
                .contains("Approved by alice@example.com, bob@example.com")),
            "B replied in the thread of {}: {thread:?}",
            m.channel
        );
    }
    assert_eq!(r.audit("b", "vote.cast"), 2);
    assert_eq!(r.audit("a", "vote.cast"), 0);
    assert!(slack.all_ephemeral_replies().is_empty(), "no refusals");
}

#[tokio::test]
async fn a_slack_click_replayed_to_the_other_replica_changes_nothing() {
    let (r, slack) = slack_replicas().await;
    let held = r.hold_on_a();
    let copies = slack_copies(&slack).await;
    let id = copies[0].approval_id();
    let click = Click {
        user: "UALICE",
        action: "approve",
        approval: &id,
        channel: &copies[0].channel,
        ts: &copies[0].ts,
        trigger: "trigger-once",
        response_url: &slack.response_url("alice"),
    }
    .signed(SIGNING_SECRET);

    assert_eq!(click.deliver(&r.a.control_url()).await, 200);
    wait_for("every copy to show the vote", || {
        slack_now(&slack, &copies)
            .iter()
            .all(|m| m.rendered().contains("1 of 2 approvals"))
    })
    .await;
    let updates = slack.calls_of("chat.update").len();
    let posts = slack.calls_of("chat.postMessage").len();

    // The very same signed request, to the other replica.
    assert_eq!(click.deliver(&r.b.control_url()).await, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(r.audit("a", "vote.cast") + r.audit("b", "vote.cast"), 1);
    assert_eq!(slack.calls_of("chat.update").len(), updates, "no update");
    assert_eq!(
        slack.calls_of("chat.postMessage").len(),
        posts,
        "no thread reply"
    );
    assert!(
        slack.ephemeral_replies("alice").is_empty(),
        "not even a refusal: the replay is not acted on at all"
    );
    assert!(!held.is_finished());
}

#[tokio::test]
async fn a_slack_copy_still_being_posted_by_a_catches_up_with_a_click_on_b() {
    let (r, slack) = slack_replicas().await;
    // Carol's DM is rate limited for 3 s; the channel copy goes out at once.
    slack.queue_faults("conversations.open", [Fault::RateLimited(3)]);
    let held = r.hold_on_a();
    wait_for("the channel copy", || {
        !slack.messages_in(SLACK_CHANNEL).is_empty()
    })
    .await;
    let channel_copy = slack.messages_in(SLACK_CHANNEL)[0].clone();
    let id = channel_copy.approval_id();
    let alice = Click {
        user: "UALICE",
        action: "approve",
        approval: &id,
        channel: &channel_copy.channel,
        ts: &channel_copy.ts,
        trigger: "trigger-early",
        response_url: &slack.response_url("alice"),
    };
    assert_eq!(
        alice
            .signed(SIGNING_SECRET)
            .deliver(&r.b.control_url())
            .await,
        200
    );
    wait_for("B to update the channel copy", || {
        slack_now(&slack, std::slice::from_ref(&channel_copy))[0]
            .rendered()
            .contains("1 of 2 approvals: alice@example.com")
    })
    .await;
    let dm = FakeSlack::dm_of(CAROL);
    assert!(
        slack.messages_in(&dm).is_empty(),
        "the DM copy must still be on its way for this test to mean anything"
    );
    // A posts the DM with the state it had, then brings it up to B's.
    wait_for("the DM copy to show alice's vote", || {
        slack
            .messages_in(&dm)
            .first()
            .is_some_and(|m| m.rendered().contains("1 of 2 approvals: alice@example.com"))
    })
    .await;
    assert!(!held.is_finished());
    assert_eq!(
        r.audit("a", "notify.failed") + r.audit("b", "notify.failed"),
        0
    );
}

/// Issue 13: replica A posts the messages, holds the caller and is killed. B's sweep cancels
/// the request (`holder_lost`) and updates every copy A posted (found in the shared store),
/// with a thread reply under each; nothing reaches the upstream.
#[tokio::test]
async fn a_holder_killed_after_posting_gets_every_slack_copy_updated_by_b() {
    let (mut r, slack) = slack_replicas().await;
    let token = r
        .issuer
        .token("dev", AUD, json!({ "email": "dev@example.com" }));
    let request = http_client()
        .post(format!("{}/deploy/prod", r.a.data_url()))
        .bearer_auth(token)
        .body("{\"version\":\"2\"}")
        .timeout(Duration::from_secs(60))
        .send();
    let held = tokio::spawn(request);
    let copies = slack_copies(&slack).await;
    // Past A's first renewal of the hold (it starts once approvers were told).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!held.is_finished(), "still held by A");
    r.a.send_signal("KILL");
    r.a.wait_exit(Duration::from_secs(5));
    let lost = tokio::time::timeout(Duration::from_secs(10), held).await;
    assert!(
        lost.expect("caller answered").expect("task").is_err(),
        "A's caller lost its connection"
    );
    wait_for("every copy to say cancelled, holder lost", || {
        slack_now(&slack, &copies).iter().all(|m| {
            m.rendered()
                .contains("Cancelled by countersign*: holder_lost")
                && m.buttons().is_empty()
        })
    })
    .await;
    for m in &copies {
        let thread = slack.thread(&m.channel, &m.ts);
        assert!(
            thread
                .iter()
                .any(|reply| reply.text.contains("Cancelled by countersign: holder_lost")),
            "B replied in the thread of {}: {thread:?}",
            m.channel
        );
    }
    assert_eq!(r.audit("b", "approval.cancelled"), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.echo.count(), 0, "never executed");
}

// ----- Teams bot -----------------------------------------------------------------------------

struct TeamsSetup {
    r: Replicas,
    bf: FakeBotFramework,
    alice: User,
    bob: User,
}

/// Replicas with `[teams]` in bot mode posting to a channel and a chat.
async fn teams_replicas() -> TeamsSetup {
    let bf = FakeBotFramework::start().await;
    let alice = User::new("alice", "alice@example.com");
    let bob = User::new("bob", "bob@example.com");
    let dev = User::new("dev", "dev@example.com");
    bf.add_team(TEAM, TEAMS_CHANNEL, &[&alice, &bob, &dev]);
    bf.add_chat(TEAMS_CHAT, &[&alice, &bob]);
    let chat = format!(
        "[teams]\napp_id = \"{APP_ID}\"\napp_password = \"file:teams-app-password\"\ntenant_id = \"{TENANT}\"\nopenid_metadata_url = \"{}\"\ntoken_url = \"{}\"\nconversations = [{{ service_url = \"{su}\", id = \"{TEAMS_CHANNEL}\" }}, {{ service_url = \"{su}\", id = \"{TEAMS_CHAT}\" }}]\n",
        bf.metadata_url(),
        bf.token_url(),
        su = bf.service_url(),
    );
    let r = Replicas::start(
        LocalIssuer::start().await,
        "\"teams\"",
        &chat,
        &[("teams-app-password", APP_PASSWORD)],
    )
    .await;
    TeamsSetup { r, bf, alice, bob }
}

impl TeamsSetup {
    fn endpoint(&self, p: &Proxy) -> String {
        format!("{}/teams/messages", p.control_url())
    }

    /// Every posted card: (conversation, activity id), once both are posted.
    async fn cards(&self) -> Vec<(&'static str, String)> {
        wait_for("both cards posted", || {
            !self.bf.posted_in(TEAMS_CHANNEL).is_empty()
                && !self.bf.posted_in(TEAMS_CHAT).is_empty()
        })
        .await;
        [TEAMS_CHANNEL, TEAMS_CHAT]
            .into_iter()
            .flat_map(|c| self.bf.posted_in(c).into_iter().map(move |p| (c, p.id)))
            .collect()
    }

    fn card_text(&self, conversation: &str, id: &str) -> String {
        self.bf
            .posted(conversation, id)
            .expect("posted card")
            .card()
            .to_string()
    }

    fn updates(&self, cards: &[(&str, String)]) -> usize {
        cards
            .iter()
            .map(|(c, id)| self.bf.posted(c, id).expect("posted card").updates)
            .sum()
    }
}

fn in_channel(id: &str) -> At<'_> {
    At {
        team: Some(TEAM),
        conversation: TEAMS_CHANNEL,
        activity_id: id,
    }
}

fn in_chat(id: &str) -> At<'_> {
    At {
        team: None,
        conversation: TEAMS_CHAT,
        activity_id: id,
    }
}

#[tokio::test]
async fn teams_cards_posted_by_a_are_all_updated_by_an_invoke_on_b() {
    let t = teams_replicas().await;
    let held = t.r.hold_on_a();
    let cards = t.cards().await;
    assert!(!cards.is_empty());
    assert_eq!(
        cards.len(),
        t.bf.calls_of("create")
            .iter()
            .filter(|c| c.status < 300)
            .count(),
        "every posted card is counted"
    );
    assert_eq!(cards.len(), 2);
    let (channel_card, chat_card) = (&cards[0].1, &cards[1].1);
    let b = t.endpoint(&t.r.b);

    let view = t.bf.view(&b, &t.alice, in_channel(channel_card)).await;
    let answer =
        t.bf.click(
            &b,
            &t.alice,
            in_channel(channel_card),
            &view,
            "approve",
            &[],
        )
        .await;
    assert_eq!(answer.status(), 200);
    for (conversation, id) in &cards {
        wait_for(
            "every card to show alice's vote (only B notified it)",
            || {
                let text = t.card_text(conversation, id);
                text.contains("1 of 2 approvals") && text.contains("alice@example.com")
            },
        )
        .await;
    }
    assert!(!held.is_finished(), "one approval of two keeps holding");

    let view = t.bf.view(&b, &t.bob, in_chat(chat_card)).await;
    let answer =
        t.bf.click(&b, &t.bob, in_chat(chat_card), &view, "approve", &[])
            .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(released(held).await, 200, "A's held caller is released");
    assert_eq!(t.r.echo.count(), 1);
    for (conversation, id) in &cards {
        wait_for("every card to show the outcome", || {
            let text = t.card_text(conversation, id);
            text.contains("Approved: prod-deploy")
                && text.contains("alice@example.com, bob@example.com")
                && text.contains("upstream answered 200")
        })
        .await;
    }
    assert_eq!(t.r.audit("b", "vote.cast"), 2);
    assert_eq!(t.r.audit("a", "vote.cast"), 0);
}

#[tokio::test]
async fn a_teams_activity_replayed_to_the_other_replica_changes_nothing() {
    let t = teams_replicas().await;
    let held = t.r.hold_on_a();
    let cards = t.cards().await;
    let channel_card = &cards[0].1;
    let card =
        t.bf.posted(TEAMS_CHANNEL, channel_card)
            .expect("posted card")
            .card();
    let approval = card["refresh"]["action"]["data"]["approval_id"]
        .as_str()
        .expect("a pending card names its approval")
        .to_owned();
    let activity = t.bf.invoke(
        &t.alice,
        in_channel(channel_card),
        "approve",
        json!({ "approval_id": approval }),
        "manual",
    );

    let first =
        t.bf.send(&t.endpoint(&t.r.a), &activity, Some(&t.bf.channel_token()))
            .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("invoke response");
    assert!(first.to_string().contains("You approved"), "{first}");
    for (conversation, id) in &cards {
        wait_for("every card to show the vote", || {
            t.card_text(conversation, id).contains("1 of 2 approvals")
        })
        .await;
    }
    let updates = t.updates(&cards);

    // The same activity to the other replica, with a fresh valid token.
    let again =
        t.bf.send(&t.endpoint(&t.r.b), &activity, Some(&t.bf.channel_token()))
            .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("invoke response");
    assert_eq!(
        again["value"], "This action was already received; nothing changed.",
        "{again}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(t.r.audit("a", "vote.cast") + t.r.audit("b", "vote.cast"), 1);
    assert_eq!(t.updates(&cards), updates, "no card updated again");
    assert!(!held.is_finished());
}

#[tokio::test]
async fn a_teams_card_still_being_posted_by_a_catches_up_with_an_invoke_on_b() {
    let t = teams_replicas().await;
    // The first card post is rate limited for 3 s; the other goes out at once.
    t.bf.queue_faults("create", [BfFault::RateLimited(3)]);
    let held = t.r.hold_on_a();
    wait_for("one card", || {
        !t.bf.posted_in(TEAMS_CHANNEL).is_empty() || !t.bf.posted_in(TEAMS_CHAT).is_empty()
    })
    .await;
    let (first, late) = if t.bf.posted_in(TEAMS_CHANNEL).is_empty() {
        (TEAMS_CHAT, TEAMS_CHANNEL)
    } else {
        (TEAMS_CHANNEL, TEAMS_CHAT)
    };
    let first_id = t.bf.posted_in(first)[0].id.clone();
    let at = if first == TEAMS_CHANNEL {
        in_channel(&first_id)
    } else {
        in_chat(&first_id)
    };
    let b = t.endpoint(&t.r.b);
    let view = t.bf.view(&b, &t.alice, at).await;
    let answer = t.bf.click(&b, &t.alice, at, &view, "approve", &[]).await;
    assert_eq!(answer.status(), 200);
    wait_for("B to update the first card", || {
        t.card_text(first, &first_id).contains("1 of 2 approvals")
    })
    .await;
    assert!(
        t.bf.posted_in(late).is_empty(),
        "the other card must still be on its way for this test to mean anything"
    );
    wait_for("the late card to show alice's vote", || {
        t.bf.posted_in(late).first().is_some_and(|p| {
            let text = p.card().to_string();
            text.contains("1 of 2 approvals") && text.contains("alice@example.com")
        })
    })
    .await;
    assert!(!held.is_finished());
    assert_eq!(
        t.r.audit("a", "notify.failed") + t.r.audit("b", "notify.failed"),
        0
    );
}
