//! Slack hardening through the real binary (issue 10, SPEC 8): clicks from another workspace
//! are refused when `[slack] team_id` is set, a payload's `response_url` is contacted only on
//! Slack's host or `api_url`'s, and request-derived text cannot inject mentions or links into
//! the posted message. Slack is the faithful local fake of `tests/common/fake_slack.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_slack::{FakeSlack, Message, BOT_TOKEN};
use common::{http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUD: &str = "https://deploy.example.com";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const CHANNEL: &str = "C0PROD";
const TEAM: &str = "T0TEST";

const POLICY: &str = r#"
[[rule]]
name = "slack-deploy"
path_prefix = "/deploy"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
notify = ["slack:#prod-approvals"]
hold = "30s"
expires = "5m"
"#;

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binary with `[slack]` pointed at the fake, an echo upstream and a local issuer.
struct Setup {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    slack: FakeSlack,
    proxy: Proxy,
}

impl Setup {
    /// `slack_extra` is appended to the `[slack]` table (e.g. `team_id = "T0TEST"`).
    async fn start(slack_extra: &str) -> Setup {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        let slack = FakeSlack::start().await;
        slack.add_channel("prod-approvals", CHANNEL);
        slack.add_user("UALICE", "alice@example.com");
        slack.add_user("UMALLORY", "mallory@example.com");
        dir.write("policies/slack.toml", POLICY);
        dir.write("slack-bot-token", BOT_TOKEN);
        dir.write("slack-signing-secret", SIGNING_SECRET);
        let config = format!(
            "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n\n[slack]\nbot_token = \"file:slack-bot-token\"\nsigning_secret = \"file:slack-signing-secret\"\napi_url = \"{}\"\n{slack_extra}\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            slack.api_url(),
        );
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        Setup {
            dir,
            issuer,
            echo,
            slack,
            proxy,
        }
    }

    fn caller_token(&self) -> String {
        self.issuer.token(
            "svc-deployer",
            AUD,
            json!({ "email": "svc-deployer@example.com" }),
        )
    }

    /// Sends a request that the rule holds, in the background.
    fn hold(&self) -> tokio::task::JoinHandle<reqwest::Response> {
        let url = format!("{}/deploy/prod", self.proxy.data_url());
        let token = self.caller_token();
        tokio::spawn(async move {
            http_client()
                .post(url)
                .bearer_auth(token)
                .body("{}")
                .timeout(Duration::from_secs(40))
                .send()
                .await
                .expect("held request")
        })
    }

    /// The first message posted in the approvals channel.
    async fn message(&self) -> Message {
        wait_for("the Slack message", || {
            !self.slack.messages_in(CHANNEL).is_empty()
        })
        .await;
        self.slack.messages_in(CHANNEL)[0].clone()
    }

    /// Sends a signed Approve click for `message` as `user` and returns the HTTP status.
    async fn click(
        &self,
        message: &Message,
        user: &str,
        team: Option<&str>,
        user_team: Option<&str>,
        response_url: &str,
        trigger: &str,
    ) -> u16 {
        let id = message.approval_id();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string();
        let mut user_json = json!({"id": user, "username": user.to_lowercase()});
        if let Some(t) = user_team {
            user_json["team_id"] = json!(t);
        }
        let mut payload = json!({
            "type": "block_actions",
            "user": user_json,
            "trigger_id": trigger,
            "response_url": response_url,
            "container": {"type": "message", "channel_id": CHANNEL, "message_ts": message.ts},
            "actions": [{"type": "button", "action_id": "approve", "block_id": "decision",
                         "value": id, "action_ts": format!("{now}.000100")}],
            "state": {"values": {}},
        });
        if let Some(t) = team {
            payload["team"] = json!({"id": t, "domain": "test"});
        }
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form");
        let sig = countersign::chat::slack::signature::sign(
            SIGNING_SECRET.as_bytes(),
            &now,
            body.as_bytes(),
        );
        http_client()
            .post(format!("{}/slack/interactions", self.proxy.control_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", now)
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .expect("click")
            .status()
            .as_u16()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.jsonl")).unwrap_or_default()
    }

    fn votes_in_audit(&self) -> usize {
        self.audit()
            .lines()
            .filter(|l| l.contains("\"event\":\"vote.cast\""))
            .count()
    }
}

fn reply_text(replies: &[Value]) -> String {
    replies
        .iter()
        .map(|r| r["text"].as_str().unwrap_or("").to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_click_from_another_workspace_is_refused_when_team_id_is_set() {
    let s = Setup::start(&format!("team_id = \"{TEAM}\"")).await;
    let held = s.hold();
    let message = s.message().await;

    // A real approver, correctly signed, but the payload names another workspace.
    let status = s
        .click(
            &message,
            "UALICE",
            Some("T0EVIL"),
            Some("T0EVIL"),
            &s.slack.response_url("evil-team"),
            "1.1.1",
        )
        .await;
    assert_eq!(status, 200, "Slack is acked; the vote is judged afterwards");
    wait_for("the refusal told to the clicking user", || {
        !s.slack.ephemeral_replies("evil-team").is_empty()
    })
    .await;
    let told = reply_text(&s.slack.ephemeral_replies("evil-team"));
    assert!(told.contains("workspace"), "{told}");
    assert!(told.contains("nothing changed"), "{told}");

    // The workspace matches but the user belongs to another one (a shared channel).
    s.click(
        &message,
        "UALICE",
        Some(TEAM),
        Some("T0EVIL"),
        &s.slack.response_url("evil-user-team"),
        "1.1.2",
    )
    .await;
    // No team at all: fails closed.
    s.click(
        &message,
        "UALICE",
        None,
        None,
        &s.slack.response_url("no-team"),
        "1.1.3",
    )
    .await;
    wait_for("both refusals", || {
        !s.slack.ephemeral_replies("evil-user-team").is_empty()
            && !s.slack.ephemeral_replies("no-team").is_empty()
    })
    .await;
    for key in ["evil-user-team", "no-team"] {
        let told = reply_text(&s.slack.ephemeral_replies(key));
        assert!(told.contains("workspace"), "{key}: {told}");
    }

    // Nothing changed: no vote, nothing forwarded, the message still asks for approval, and
    // the email of the foreign user was never even looked up.
    assert_eq!(s.votes_in_audit(), 0, "{}", s.audit());
    assert_eq!(s.echo.count(), 0);
    assert!(!held.is_finished());
    let now = s.slack.message(CHANNEL, &message.ts).expect("message");
    assert!(now.rendered().contains("Approval needed"), "{}", now.text);
    assert!(s.slack.calls_of("users.info").is_empty());
    assert!(
        s.proxy.stderr().contains("another workspace"),
        "the refusal is logged: {}",
        s.proxy.stderr()
    );

    // Positive control: the same approver from the configured workspace releases it.
    s.click(
        &message,
        "UALICE",
        Some(TEAM),
        Some(TEAM),
        &s.slack.response_url("ok"),
        "1.1.4",
    )
    .await;
    let resp = held.await.expect("held task");
    assert_eq!(resp.status(), 200);
    assert_eq!(s.echo.count(), 1);
    assert_eq!(s.votes_in_audit(), 1);
}

#[tokio::test]
async fn team_id_must_look_like_a_slack_workspace_id() {
    let dir = TestDir::new();
    dir.write("slack-bot-token", BOT_TOKEN);
    dir.write("slack-signing-secret", SIGNING_SECRET);
    dir.write(
        "countersign.toml",
        "[slack]\nbot_token = \"file:slack-bot-token\"\nsigning_secret = \"file:slack-signing-secret\"\nteam_id = \"acme\"\nteam = \"T1\"\n",
    );
    let path = dir.join("countersign.toml");
    let out = common::countersign(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stderr.contains("countersign.toml:4:11: \"team_id\" must be a Slack workspace id"),
        "{stderr}"
    );
    assert!(
        stderr.contains("countersign.toml:5:1: unknown key \"team\" in [slack]"),
        "{stderr}"
    );
}

/// A plain TCP listener that counts connections and never answers.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn a_response_url_off_slack_and_off_api_url_is_never_contacted() {
    let s = Setup::start("").await;
    let _held = s.hold();
    let message = s.message().await;
    let (elsewhere, hits) = counting_listener().await;

    // Mallory is not an approver, so Countersign answers the click through response_url:
    // pointed elsewhere (another port of the same loopback host, another host, a userinfo
    // trick, a non-HTTP scheme), that answer must not be sent.
    let evil_urls = [
        format!("{elsewhere}/response/x"),
        format!("{elsewhere}/hooks.slack.com/services/x"),
        format!(
            "http://hooks.slack.com@{}/x",
            elsewhere.trim_start_matches("http://")
        ),
        format!(
            "{}@{}/x",
            s.slack.api_url().trim_end_matches("/api"),
            elsewhere.trim_start_matches("http://")
        ),
        "file:///etc/passwd".to_owned(),
    ];
    for (i, url) in evil_urls.iter().enumerate() {
        let status = s
            .click(
                &message,
                "UMALLORY",
                Some(TEAM),
                Some(TEAM),
                url,
                &format!("2.0.{i}"),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Positive control, sent last: the same refusal to a response_url on api_url's host
    // arrives, so the earlier clicks have been handled too.
    s.click(
        &message,
        "UMALLORY",
        Some(TEAM),
        Some(TEAM),
        &s.slack.response_url("control"),
        "2.1.0",
    )
    .await;
    wait_for("the control reply", || {
        !s.slack.ephemeral_replies("control").is_empty()
    })
    .await;
    assert!(reply_text(&s.slack.ephemeral_replies("control")).contains("not an approver"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a response_url outside Slack and api_url was contacted"
    );
    assert_eq!(s.slack.all_ephemeral_replies().len(), 1);
    assert!(
        s.proxy.stderr().contains("not contacted"),
        "the skipped reply is logged: {}",
        s.proxy.stderr()
    );
    assert_eq!(s.echo.count(), 0);
}

/// Sends a raw HTTP/1.1 request (reqwest would re-encode parts of the target) and leaves the
/// connection open while it is held.
async fn raw_request(proxy: &Proxy, target: &str, token: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(proxy.listen())
        .await
        .expect("connect");
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: deploy.example.com\r\nAuthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    stream
}

#[tokio::test]
async fn request_text_cannot_inject_mentions_or_links_into_the_slack_message() {
    let s = Setup::start("").await;
    // Raw `<`, `>` and `|` never get past the HTTP parser or the canonical path (they are
    // percent-encoded there), but `&` does, and a token's claims are any text at all.
    let token = s.issuer.token(
        "svc-deployer",
        AUD,
        json!({ "email": "mallory<!channel><https://evil.example|click>@example.com" }),
    );
    // (`;` is refused in a path, so entities can only come through the query.)
    let target = "/deploy/a&b?note=&lt;!here&gt;&x=1";
    let mut stream = raw_request(&s.proxy, target, &token).await;
    let message = s.message().await;

    let blocks = message.blocks.to_string();
    for rendered in [&message.text, &blocks] {
        for live in [
            "<!channel>",
            "<https://evil.example|click>",
            "=&lt;!here&gt;",
        ] {
            assert!(
                !rendered.contains(live),
                "{live} reached Slack unescaped: {rendered}"
            );
        }
        // What the approver reads is what was sent: the control characters are escaped, not
        // dropped, so the posted text shows `<!channel>` and `&lt;` literally.
        for escaped in [
            "mallory&lt;!channel&gt;&lt;https://evil.example|click&gt;@example.com",
            "/deploy/a&amp;b?note=&amp;lt;!here&amp;gt;&amp;x=1",
        ] {
            assert!(rendered.contains(escaped), "{escaped} missing: {rendered}");
        }
    }
    let _ = stream.shutdown().await;
}
