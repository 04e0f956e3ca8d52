//! Teams bot mode through the real binary (issue 15): a held request posts an Adaptive Card with
//! `Action.Execute` buttons to a Teams channel through the fake Bot Framework; approvers click in
//! "Teams" (the fake's client: automatic refresh to their own view, then a click), every copy
//! is updated, and every inbound activity's Bot Framework token is checked.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::fake_botframework::{
    execute_buttons, input_ids, At, FakeBotFramework, Fault, User, APP_ID, APP_PASSWORD,
    OTHER_TENANT, TENANT, WAIT,
};
use common::{http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::{json, Value};

const AUD: &str = "https://deploy.example.com";
const TEAM: &str = "19:team-platform@thread.tacv2";
const CHANNEL: &str = "19:prod-approvals@thread.tacv2";
const CHAT: &str = "19:release-chat@thread.v2";

struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    bf: FakeBotFramework,
    proxy: Proxy,
    alice: User,
    bob: User,
    dev: User,
    mallory: User,
}

fn policy(quorum: u32) -> String {
    format!(
        r#"[[rule]]
name = "prod-deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com", "bob@example.com", "dev@example.com"]
quorum = {quorum}
notify = ["teams"]
hold = "40s"
expires = "10m"
"#
    )
}

impl Env {
    /// The proxy with `[teams]` in bot mode posting to the channel (and the chat when
    /// `with_chat`), and the fake Bot Framework with the team's members.
    async fn start(quorum: u32, with_chat: bool) -> Env {
        Env::start_with(&policy(quorum), with_chat).await
    }

    /// Like [`Env::start`], with its own policy text.
    async fn start_with(policy_text: &str, with_chat: bool) -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        let bf = FakeBotFramework::start().await;
        let alice = User::new("alice", "alice@example.com");
        let bob = User::new("bob", "bob@example.com");
        let dev = User::new("dev", "dev@example.com");
        let mallory = User::new("mallory", "mallory@example.com");
        bf.add_team(TEAM, CHANNEL, &[&alice, &bob, &dev, &mallory]);
        bf.add_chat(CHAT, &[&alice, &bob]);
        dir.write("policies/teams.toml", policy_text);
        dir.write("teams-app-password", APP_PASSWORD);
        let mut conversations = format!(
            "{{ service_url = \"{}\", id = \"{CHANNEL}\" }}",
            bf.service_url()
        );
        if with_chat {
            conversations.push_str(&format!(
                ", {{ service_url = \"{}\", id = \"{CHAT}\" }}",
                bf.service_url()
            ));
        }
        let config = format!(
            "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n[teams]\napp_id = \"{APP_ID}\"\napp_password = \"file:teams-app-password\"\ntenant_id = \"{TENANT}\"\nopenid_metadata_url = \"{}\"\ntoken_url = \"{}\"\nconversations = [{conversations}]\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            bf.metadata_url(),
            bf.token_url(),
        );
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        Env {
            dir,
            issuer,
            echo,
            bf,
            proxy,
            alice,
            bob,
            dev,
            mallory,
        }
    }

    fn endpoint(&self) -> String {
        format!("{}/teams/messages", self.proxy.control_url())
    }

    /// dev@example.com POSTs a deploy; the task resolves when the proxy answers.
    fn hold(&self) -> tokio::task::JoinHandle<reqwest::Response> {
        let caller = self
            .issuer
            .token("dev", AUD, json!({"email": "dev@example.com"}));
        let url = format!("{}/deploy/prod", self.proxy.data_url());
        tokio::spawn(async move {
            http_client()
                .post(url)
                .bearer_auth(caller)
                .body("{\"version\":\"2\"}")
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("held request")
        })
    }

    /// Waits for the card in `conversation` and returns its activity id.
    async fn card_in(&self, conversation: &str) -> String {
        wait_for("the approval card", || {
            !self.bf.posted_in(conversation).is_empty()
        })
        .await;
        self.bf.posted_in(conversation)[0].id.clone()
    }

    fn base(&self, conversation: &str, id: &str) -> Value {
        self.bf
            .posted(conversation, id)
            .expect("posted card")
            .card()
    }

    fn audit(&self, event: &str) -> Vec<Value> {
        self.dir
            .read("audit.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// A hand-made approve/deny invoke (not through a button the user sees).
    fn crafted(&self, user: &User, at: At<'_>, verb: &str, id: &str) -> Value {
        self.bf
            .invoke(user, at, verb, json!({"approval_id": id}), "manual")
    }
}

fn channel(id: &str) -> At<'_> {
    At {
        team: Some(TEAM),
        conversation: CHANNEL,
        activity_id: id,
    }
}

fn chat(id: &str) -> At<'_> {
    At {
        team: None,
        conversation: CHAT,
        activity_id: id,
    }
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn approval_id(card: &Value) -> String {
    card["refresh"]["action"]["data"]["approval_id"]
        .as_str()
        .expect("a pending card names its approval")
        .to_owned()
}

fn user_ids(card: &Value) -> Vec<String> {
    card["refresh"]["userIds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn verbs(card: &Value) -> Vec<String> {
    execute_buttons(card)
        .iter()
        .map(|b| b["verb"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The invoke response body, asserting HTTP 200.
async fn invoke_answer(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("invoke response JSON")
}

/// The text of an invoke response that shows a message to the clicking user only.
fn message(answer: &Value) -> String {
    assert_eq!(
        answer["type"], "application/vnd.microsoft.activity.message",
        "{answer}"
    );
    answer["value"].as_str().unwrap_or("").to_owned()
}

/// The card of an invoke response that replaces the clicking user's card.
fn card(answer: &Value) -> Value {
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(
        answer["type"], "application/vnd.microsoft.card.adaptive",
        "{answer}"
    );
    answer["value"].clone()
}

#[tokio::test]
async fn an_approve_click_in_teams_releases_the_held_request() {
    let env = Env::start(1, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let base = env.base(CHANNEL, &id);
    // Everyone sees the status; the approvers (and only they) get their own view.
    assert!(verbs(&base).is_empty(), "{base}");
    let mut expected = vec![env.alice.id.clone(), env.bob.id.clone(), env.dev.id.clone()];
    expected.sort();
    let mut got = user_ids(&base);
    got.sort();
    assert_eq!(got, expected);
    assert!(base.to_string().contains("prod-deploy"));

    let view = env.bf.view(&env.endpoint(), &env.alice, channel(&id)).await;
    assert_eq!(verbs(&view), ["approve", "deny"]);
    assert_eq!(input_ids(&view), ["reason"]);
    let answer = invoke_answer(
        env.bf
            .click(
                &env.endpoint(),
                &env.alice,
                channel(&id),
                &view,
                "approve",
                &[],
            )
            .await,
    )
    .await;
    let mine = card(&answer);
    assert!(
        mine.to_string().contains("You approved this request."),
        "{mine}"
    );
    assert!(verbs(&mine).is_empty(), "no button after the vote: {mine}");

    let resp = held.await.expect("held task");
    assert_eq!(resp.status(), 200);
    assert_eq!(env.echo.count(), 1);
    wait_for("the card to say approved", || {
        let c = env.base(CHANNEL, &id).to_string();
        c.contains("Approved: prod-deploy") && c.contains("alice@example.com")
    })
    .await;
    let last = env.base(CHANNEL, &id);
    assert!(
        last.get("refresh").is_none(),
        "a decided card refreshes nobody: {last}"
    );
    let votes = env.audit("vote.cast");
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0]["details"]["via"], "teams");
    assert_eq!(votes[0]["actor"], "alice@example.com");
    assert_eq!(
        votes[0]["details"]["approver_sub"],
        format!("{TENANT}/{}", env.alice.aad)
    );
    // One client-credentials token served every Bot Connector call.
    assert_eq!(env.bf.calls_of("token").len(), 1);
    assert!(env.bf.calls_of("update").len() + env.bf.calls_of("member").len() >= 2);
    assert!(!env.proxy.stderr().contains(APP_PASSWORD));
}

#[tokio::test]
async fn a_deny_with_a_reason_answers_403_with_who_and_why() {
    let env = Env::start(1, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let view = env.bf.view(&env.endpoint(), &env.bob, channel(&id)).await;
    let answer = invoke_answer(
        env.bf
            .click(
                &env.endpoint(),
                &env.bob,
                channel(&id),
                &view,
                "deny",
                &[("reason", "not during the freeze")],
            )
            .await,
    )
    .await;
    assert!(card(&answer)
        .to_string()
        .contains("You denied this request."));
    let resp = held.await.expect("held task");
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "approval_denied");
    let description = body["error_description"].as_str().unwrap_or("");
    assert!(
        description.contains("bob@example.com") && description.contains("not during the freeze"),
        "{description}"
    );
    assert_eq!(env.echo.count(), 0);
    wait_for("the card to say denied, by whom and why", || {
        let c = env.base(CHANNEL, &id).to_string();
        c.contains("Denied: prod-deploy")
            && c.contains("bob@example.com")
            && c.contains("not during the freeze")
    })
    .await;
}

#[tokio::test]
async fn a_quorum_of_two_updates_every_copy_at_each_vote() {
    let env = Env::start(2, true).await;
    let held = env.hold();
    let in_channel = env.card_in(CHANNEL).await;
    let in_chat = env.card_in(CHAT).await;
    // The chat's roster has alice and bob only.
    let mut chat_users = user_ids(&env.base(CHAT, &in_chat));
    chat_users.sort();
    let mut expected = vec![env.alice.id.clone(), env.bob.id.clone()];
    expected.sort();
    assert_eq!(chat_users, expected);

    let view = env
        .bf
        .view(&env.endpoint(), &env.alice, channel(&in_channel))
        .await;
    env.bf
        .click(
            &env.endpoint(),
            &env.alice,
            channel(&in_channel),
            &view,
            "approve",
            &[],
        )
        .await;
    for (conversation, id) in [(CHANNEL, &in_channel), (CHAT, &in_chat)] {
        wait_for("both copies to show the first vote", || {
            let c = env.base(conversation, id);
            let text = c.to_string();
            text.contains("1 of 2 approvals")
                && text.contains("alice@example.com")
                && !user_ids(&c).contains(&env.alice.id)
        })
        .await;
    }
    // Alice no longer gets buttons; her own view says what she did.
    let alice_now = env
        .bf
        .view(&env.endpoint(), &env.alice, chat(&in_chat))
        .await;
    assert!(verbs(&alice_now).is_empty());
    assert!(!held.is_finished(), "one approval of two must keep holding");

    // Bob approves in the chat copy: quorum reached.
    let view = env.bf.view(&env.endpoint(), &env.bob, chat(&in_chat)).await;
    assert_eq!(verbs(&view), ["approve", "deny"]);
    env.bf
        .click(
            &env.endpoint(),
            &env.bob,
            chat(&in_chat),
            &view,
            "approve",
            &[],
        )
        .await;
    let resp = held.await.expect("held task");
    assert_eq!(resp.status(), 200);
    assert_eq!(env.echo.count(), 1);
    for (conversation, id) in [(CHANNEL, &in_channel), (CHAT, &in_chat)] {
        wait_for("both copies to show the outcome", || {
            let c = env.base(conversation, id).to_string();
            c.contains("Approved: prod-deploy")
                && c.contains("alice@example.com, bob@example.com")
                && c.contains("upstream answered 200")
        })
        .await;
    }
    assert_eq!(env.audit("vote.cast").len(), 2);
}

#[tokio::test]
async fn an_outsiders_click_changes_nothing() {
    let env = Env::start(1, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let approval = approval_id(&env.base(CHANNEL, &id));
    // A team member who is not an approver sees the status only.
    let seen = env
        .bf
        .view(&env.endpoint(), &env.mallory, channel(&id))
        .await;
    assert!(verbs(&seen).is_empty());
    // Clicking anyway (a crafted invoke) is refused to them alone.
    let crafted = env.crafted(&env.mallory, channel(&id), "approve", &approval);
    let answer = invoke_answer(
        env.bf
            .send(&env.endpoint(), &crafted, Some(&env.bf.channel_token()))
            .await,
    )
    .await;
    assert_eq!(
        message(&answer),
        "You are not an approver of this request; nothing changed."
    );
    // Someone the conversation does not know at all.
    let stranger = User::new("eve", "alice@example.com");
    let crafted = env.crafted(&stranger, channel(&id), "approve", &approval);
    let answer = invoke_answer(
        env.bf
            .send(&env.endpoint(), &crafted, Some(&env.bf.channel_token()))
            .await,
    )
    .await;
    assert!(message(&answer).contains("cannot find you"), "{answer}");
    // Alice's Teams identity with another user's object id does not pass either.
    let mut impostor = env.alice.clone();
    impostor.aad = env.mallory.aad.clone();
    let crafted = env.crafted(&impostor, channel(&id), "approve", &approval);
    let answer = invoke_answer(
        env.bf
            .send(&env.endpoint(), &crafted, Some(&env.bf.channel_token()))
            .await,
    )
    .await;
    assert!(message(&answer).contains("not counted"), "{answer}");
    // A user of another tenant is refused before anything is looked at.
    let mut foreign = env.alice.clone();
    foreign.tenant = OTHER_TENANT.to_owned();
    let crafted = env.crafted(&foreign, channel(&id), "approve", &approval);
    let resp = env
        .bf
        .send(&env.endpoint(), &crafted, Some(&env.bf.channel_token()))
        .await;
    assert_eq!(resp.status(), 403);

    assert!(env.audit("vote.cast").is_empty());
    assert_eq!(env.bf.posted(CHANNEL, &id).unwrap().updates, 0);
    assert!(!held.is_finished());
    assert_eq!(env.echo.count(), 0);
}

#[tokio::test]
async fn the_requester_cannot_approve_their_own_request_from_teams() {
    let env = Env::start(1, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let approval = approval_id(&env.base(CHANNEL, &id));
    // dev@example.com is an approver of the rule and the requester: Deny only.
    let view = env.bf.view(&env.endpoint(), &env.dev, channel(&id)).await;
    assert_eq!(verbs(&view), ["deny"], "{view}");
    assert!(view.to_string().contains("your own request"));
    let crafted = env.crafted(&env.dev, channel(&id), "approve", &approval);
    let answer = invoke_answer(
        env.bf
            .send(&env.endpoint(), &crafted, Some(&env.bf.channel_token()))
            .await,
    )
    .await;
    assert_eq!(
        message(&answer),
        "You cannot approve your own request; nothing changed."
    );
    assert!(env.audit("vote.cast").is_empty());
    assert!(!held.is_finished());
    assert_eq!(env.echo.count(), 0);
}

#[tokio::test]
async fn forged_expired_misaddressed_and_missing_tokens_are_refused() {
    let env = Env::start(1, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let approval = approval_id(&env.base(CHANNEL, &id));
    let click = env.crafted(&env.alice, channel(&id), "approve", &approval);
    let service_url = env.bf.service_url();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let good = env.bf.claims(&service_url);
    let mut expired = good.clone();
    expired["exp"] = json!(now - 600);
    expired["nbf"] = json!(now - 4000);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("00000000-1111-4222-8333-444444444444");
    let mut wrong_service = good.clone();
    wrong_service["serviceUrl"] = json!("https://smba.trafficmanager.net/emea/");
    let mut wrong_issuer = good.clone();
    wrong_issuer["iss"] = json!("https://sts.windows.net/evil/");
    let mut no_service = good.clone();
    no_service.as_object_mut().unwrap().remove("serviceUrl");
    let cases = [
        ("forged with another key", Some(env.bf.forge(&good))),
        ("expired", Some(env.bf.sign(&expired))),
        ("wrong audience", Some(env.bf.sign(&wrong_aud))),
        (
            "serviceUrl of another region",
            Some(env.bf.sign(&wrong_service)),
        ),
        ("wrong issuer", Some(env.bf.sign(&wrong_issuer))),
        ("no serviceUrl claim", Some(env.bf.sign(&no_service))),
        ("no token", None),
        ("not a JWT", Some("not.a.jwt".to_owned())),
    ];
    for (what, token) in cases {
        let resp = env.bf.send(&env.endpoint(), &click, token.as_deref()).await;
        assert_eq!(resp.status(), 401, "{what}");
    }
    // The activity claims another service URL than its token: refused too.
    let mut moved = click.clone();
    moved["serviceUrl"] = json!("https://smba.trafficmanager.net/emea/");
    let resp = env
        .bf
        .send(&env.endpoint(), &moved, Some(&env.bf.channel_token()))
        .await;
    assert_eq!(
        resp.status(),
        401,
        "activity serviceUrl differs from the claim"
    );
    assert!(
        env.bf.calls_of("member").is_empty(),
        "nothing was looked up"
    );
    assert!(env.audit("vote.cast").is_empty());
    assert!(!held.is_finished());

    // The same click with a good token counts.
    let answer = invoke_answer(
        env.bf
            .send(&env.endpoint(), &click, Some(&env.bf.channel_token()))
            .await,
    )
    .await;
    assert!(card(&answer).to_string().contains("You approved"));
    assert_eq!(held.await.expect("held").status(), 200);
}

#[tokio::test]
async fn a_replayed_activity_is_not_acted_on_twice() {
    let env = Env::start(2, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let approval = approval_id(&env.base(CHANNEL, &id));
    let click = env.crafted(&env.alice, channel(&id), "approve", &approval);
    let first = invoke_answer(
        env.bf
            .send(&env.endpoint(), &click, Some(&env.bf.channel_token()))
            .await,
    )
    .await;
    assert!(card(&first).to_string().contains("You approved"));
    wait_for("the card to show the vote", || {
        env.base(CHANNEL, &id).to_string().contains("1 of 2")
    })
    .await;
    let updates = env.bf.posted(CHANNEL, &id).unwrap().updates;
    // The same activity again, even with a fresh valid token.
    let again = invoke_answer(
        env.bf
            .send(&env.endpoint(), &click, Some(&env.bf.channel_token()))
            .await,
    )
    .await;
    assert_eq!(
        message(&again),
        "This action was already received; nothing changed."
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.audit("vote.cast").len(), 1);
    assert_eq!(env.bf.posted(CHANNEL, &id).unwrap().updates, updates);
    assert!(!held.is_finished());
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_and_the_request_still_goes_through() {
    let env = Env::start(1, false).await;
    // The first card: the roster and the post are rate limited, the post also fails once.
    env.bf
        .queue_faults("members", [Fault::RateLimited(1), Fault::RateLimited(1)]);
    env.bf.queue_faults(
        "create",
        [
            Fault::RateLimited(1),
            Fault::Http(503),
            Fault::RateLimited(1),
        ],
    );
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    assert_eq!(
        env.bf
            .calls_of("create")
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        [429, 503, 429, 201]
    );
    assert_eq!(
        user_ids(&env.base(CHANNEL, &id)).len(),
        3,
        "roster read after the 429s"
    );
    // The updates after the vote are rate limited too.
    env.bf
        .queue_faults("update", [Fault::RateLimited(1), Fault::RateLimited(1)]);
    let view = env.bf.view(&env.endpoint(), &env.alice, channel(&id)).await;
    let answer = invoke_answer(
        env.bf
            .click(
                &env.endpoint(),
                &env.alice,
                channel(&id),
                &view,
                "approve",
                &[],
            )
            .await,
    )
    .await;
    // Either the vote was recorded in time or the user is told it is being recorded.
    let mine = card(&answer).to_string();
    assert!(
        mine.contains("You approved") || mine.contains("being recorded"),
        "{mine}"
    );
    assert_eq!(held.await.expect("held").status(), 200);
    wait_for("the card to say approved after the storm", || {
        env.base(CHANNEL, &id)
            .to_string()
            .contains("Approved: prod-deploy")
    })
    .await;
    assert!(
        env.audit("notify.failed").is_empty(),
        "{:?}",
        env.audit("notify.failed")
    );
    let statuses: Vec<u16> = env.bf.calls_of("update").iter().map(|c| c.status).collect();
    assert_eq!(&statuses[..3], [429, 429, 200]);
}

#[tokio::test]
async fn installing_the_bot_logs_the_conversation_reference_to_configure() {
    let env = Env::start(1, false).await;
    let activity = json!({
        "type": "conversationUpdate",
        "id": "f:install-1",
        "channelId": "msteams",
        "serviceUrl": env.bf.service_url(),
        "from": {"id": env.alice.id, "aadObjectId": env.alice.aad},
        "conversation": {"isGroup": true, "conversationType": "channel", "tenantId": TENANT,
                         "id": "19:new-channel@thread.tacv2"},
        "recipient": {"id": format!("28:{APP_ID}")},
        "membersAdded": [{"id": format!("28:{APP_ID}")}],
        "channelData": {"tenant": {"id": TENANT}, "team": {"id": TEAM},
                        "channel": {"id": "19:new-channel@thread.tacv2"},
                        "eventType": "teamMemberAdded"},
    });
    let resp = env
        .bf
        .send(&env.endpoint(), &activity, Some(&env.bf.channel_token()))
        .await;
    assert_eq!(resp.status(), 200);
    let hint = format!(
        "conversations = [{{ service_url = \"{}\", id = \"19:new-channel@thread.tacv2\" }}]",
        env.bf.service_url()
    );
    wait_for("the hint in the log", || env.proxy.stderr().contains(&hint)).await;
}

/// Runs `node tests/adaptivecards/parse.mjs` (Microsoft's `adaptivecards` parser, as
/// tests/teams_cards.rs does) on a card or message activity; returns (success, output).
fn parse_with_adaptivecards(card: &Value) -> (bool, String) {
    let dir = common::repo_root().join("tests/adaptivecards");
    assert!(
        dir.join("node_modules/adaptivecards").is_dir(),
        "tests/adaptivecards/node_modules is missing: run `scripts/test-setup.sh` first"
    );
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(card.to_string().as_bytes())
        .expect("write card");
    let out = std::process::Command::new("node")
        .arg("parse.mjs")
        .arg(file.path())
        .current_dir(&dir)
        .output()
        .expect("run node (scripts/test-setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn every_card_the_bot_sends_is_accepted_by_the_adaptivecards_parser() {
    let env = Env::start(2, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let mut cards = vec![(
        "posted activity",
        env.bf.posted(CHANNEL, &id).unwrap().activity,
    )];
    let own = env.bf.view(&env.endpoint(), &env.dev, channel(&id)).await;
    cards.push(("requester's view", own));
    let view = env.bf.view(&env.endpoint(), &env.alice, channel(&id)).await;
    cards.push(("approver's view", view.clone()));
    let answer = invoke_answer(
        env.bf
            .click(
                &env.endpoint(),
                &env.alice,
                channel(&id),
                &view,
                "approve",
                &[],
            )
            .await,
    )
    .await;
    cards.push(("after the vote", card(&answer)));
    let view = env.bf.view(&env.endpoint(), &env.bob, channel(&id)).await;
    env.bf
        .click(
            &env.endpoint(),
            &env.bob,
            channel(&id),
            &view,
            "deny",
            &[("reason", "**no** [link](https://evil.example)")],
        )
        .await;
    assert_eq!(held.await.expect("held").status(), 403);
    wait_for("the final card", || {
        env.base(CHANNEL, &id).to_string().contains("Denied")
    })
    .await;
    cards.push(("final", env.bf.posted(CHANNEL, &id).unwrap().activity));
    // `countersign demo --teams-card` shows the same cards.
    let out = common::countersign(&["demo", "--teams-card"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo: Value = serde_json::from_slice(&out.stdout).expect("demo prints JSON");
    assert_eq!(verbs(&demo["approver_view"]), ["approve", "deny"]);
    cards.push(("demo activity", demo["posted_activity"].clone()));
    cards.push(("demo approver view", demo["approver_view"].clone()));
    for (what, c) in &cards {
        let (ok, output) = parse_with_adaptivecards(c);
        assert!(ok, "adaptivecards rejected the {what}: {c}\n{output}");
    }
    let final_text = cards[4].1.to_string();
    assert!(
        !final_text.contains("]("),
        "the deny reason's link is defused: {final_text}"
    );
}

#[tokio::test]
async fn refused_app_credentials_are_audited_and_the_request_can_still_be_decided_elsewhere() {
    let env = Env::start(1, false).await;
    // The identity platform refuses the app (e.g. an expired client secret).
    env.bf.queue_faults("token", [Fault::Http(401); 8]);
    let held = env.hold();
    wait_for("notify.failed in the audit log", || {
        !env.audit("notify.failed").is_empty()
    })
    .await;
    assert!(env.bf.posted_in(CHANNEL).is_empty());
    let failed = env.audit("notify.failed").remove(0).to_string();
    assert!(failed.contains("teams"), "{failed}");
    assert!(!failed.contains(APP_PASSWORD) && !env.proxy.stderr().contains(APP_PASSWORD));
    // Nothing was approved by the failure; an approver decides through the API instead.
    assert!(!held.is_finished());
    let id = env.audit("approval.requested")[0]["approval_id"]
        .as_str()
        .expect("approval id")
        .to_owned();
    let token = env
        .issuer
        .token("alice", AUD, json!({"email": "alice@example.com"}));
    let resp = http_client()
        .post(format!(
            "{}/approvals/{id}/decision",
            env.proxy.control_url()
        ))
        .bearer_auth(token)
        .json(&json!({"decision": "deny", "reason": "teams is down"}))
        .send()
        .await
        .expect("decision");
    assert_eq!(resp.status(), 200);
    assert_eq!(held.await.expect("held").status(), 403);
    assert_eq!(env.echo.count(), 0);
}

/// "Approve for 15 min" on a rule with `grant` (SPEC 9): the card offers it beside "Approve
/// once", the click makes a grant, and the requester's same request then passes at once.
#[tokio::test]
async fn approve_for_15_min_in_teams_makes_a_grant() {
    let text = policy(1).replace("expires = \"10m\"", "expires = \"10m\"\ngrant = \"15m\"");
    let env = Env::start_with(&text, false).await;
    let held = env.hold();
    let id = env.card_in(CHANNEL).await;
    let view = env.bf.view(&env.endpoint(), &env.alice, channel(&id)).await;
    assert_eq!(verbs(&view), ["approve", "approve_grant", "deny"]);
    let titles = view.to_string();
    assert!(
        titles.contains("Approve once") && titles.contains("Approve for 15 min"),
        "{titles}"
    );
    let (ok, output) = parse_with_adaptivecards(&view);
    assert!(
        ok,
        "adaptivecards rejected the grant view: {view}\n{output}"
    );
    let answer = invoke_answer(
        env.bf
            .click(
                &env.endpoint(),
                &env.alice,
                channel(&id),
                &view,
                "approve_grant",
                &[],
            )
            .await,
    )
    .await;
    assert!(
        card(&answer).to_string().contains("You approved"),
        "{answer}"
    );
    assert_eq!(held.await.expect("held task").status(), 200);

    let again = env.hold().await.expect("second request");
    assert_eq!(again.status(), 200, "passes under the grant");
    assert!(again
        .headers()
        .get("countersign-grant-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|g| g.starts_with("gr_")));
    assert_eq!(env.echo.count(), 2);
    let votes = env.audit("vote.cast");
    assert_eq!(votes[0]["details"]["grant"], true);
    assert_eq!(env.audit("grant.created").len(), 1);
}
