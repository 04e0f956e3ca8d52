//! Microsoft Teams delivery (issue 4 item 5): the Adaptive Cards a Workflows webhook receives,
//! outcome follow-ups, retries, markdown defusing, secrecy of the webhook URL, and acceptance
//! of every card by Microsoft's `adaptivecards` parser (Node, `tests/adaptivecards`).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use countersign::approval::{
    Approval, ApprovalId, Channel, Decision, Execution, Notifier, NotifyEvent, Requester, Status,
    Vote,
};
use countersign::chat::teams::{RetryPolicy, TeamsNotifier};
use countersign::policy::{ApproveVia, NotifyTarget};
use countersign::secret::Secret;
use serde_json::Value;

use common::fake_teams::FakeTeams;

const PUBLIC_URL: &str = "https://countersign.example.com";
const SIG: &str = "s1gS3cretCapab1lity";

/// 2026-11-28T17:00:00Z in unix milliseconds.
const EXPIRES_MS: u64 = 1_795_885_200_000;

fn approval() -> Approval {
    Approval {
        id: ApprovalId::generate(),
        rule: "prod-deploy".into(),
        requester: Requester {
            iss: "https://idp.example.com".into(),
            sub: "u-42".into(),
            email: Some("dev@example.com".into()),
        },
        method: "POST".into(),
        host: "deploy.example.com".into(),
        path: "/v1/deployments/production".into(),
        query: Some("dry=0".into()),
        request_hash: "00".into(),
        reason: Some("release 1.2.3".into()),
        body_preview: r#"{"image":"app:1.2.3","password":"[redacted]"}"#.into(),
        body_len: 64,
        body_preview_cut: false,
        body_sha256: String::new(),
        headers: Vec::new(),
        approvers: vec!["alice@example.com".into(), "bob@example.com".into()],
        quorum: 2,
        quorum_entries: Vec::new(),
        self_approval: false,
        approve_via: ApproveVia::Button,
        notify: vec![
            NotifyTarget::SlackChannel("#prod".into()),
            NotifyTarget::Teams,
        ],
        created_at: EXPIRES_MS - 3_600_000,
        expires_at: EXPIRES_MS,
        votes: vec![],
        status: Status::Pending,
        decided_by: None,
        decision_reason: None,
        decided_at: None,
        held: true,
        held_until: None,
        holder: None,
        execution: Execution::NotStarted,
        audit_pending: false,
        nudges: Default::default(),
        break_glass: None,
        grant_offer: None,
        granted: None,
    }
}

fn vote(who: &str, decision: Decision, reason: Option<&str>) -> Vote {
    Vote {
        approver: who.into(),
        decision,
        reason: reason.map(str::to_owned),
        at: EXPIRES_MS - 60_000,
        via: Channel::Teams,
        self_approval: false,
        grant: false,
    }
}

/// Short waits so retry tests take milliseconds (Retry-After is still honoured as sent).
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
    }
}

fn notifier(url: &str) -> TeamsNotifier {
    TeamsNotifier::new(Secret::new(url), PUBLIC_URL, common::http_client()).with_retry(fast_retry())
}

/// The Adaptive Card inside a posted envelope.
fn card_of(message: &Value) -> &Value {
    &message["attachments"][0]["content"]
}

/// `title -> value` of the card's first FactSet.
fn facts(card: &Value) -> Vec<(String, String)> {
    card["body"]
        .as_array()
        .expect("card body")
        .iter()
        .find(|e| e["type"] == "FactSet")
        .expect("a FactSet")["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .map(|f| {
            (
                f["title"].as_str().expect("title").to_owned(),
                f["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

fn fact(card: &Value, title: &str) -> String {
    facts(card)
        .into_iter()
        .find(|(t, _)| t == title)
        .unwrap_or_else(|| panic!("no fact {title:?} in {card}"))
        .1
}

/// Every string in `v` under a key other than `url` (what an approver reads), joined.
fn visible_text(v: &Value) -> String {
    let mut out = String::new();
    fn walk(v: &Value, key: &str, out: &mut String) {
        match v {
            Value::String(s) if key != "url" && key != "$schema" => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, key, out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, k, out)),
            _ => {}
        }
    }
    walk(v, "", &mut out);
    out
}

/// Texts of the card: (markdown-processed strings, `TextRun` strings which are never markdown).
fn text_strings(card: &Value) -> (Vec<String>, Vec<String>) {
    fn walk(v: &Value, md: &mut Vec<String>, plain: &mut Vec<String>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, md, plain)),
            Value::Object(map) => {
                let run = map.get("type").is_some_and(|t| t == "TextRun");
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("text" | "value" | "title", Value::String(s)) if run => {
                            plain.push(s.clone())
                        }
                        ("text" | "value" | "title", Value::String(s)) => md.push(s.clone()),
                        _ => walk(v, md, plain),
                    }
                }
            }
            _ => {}
        }
    }
    let (mut md, mut plain) = (Vec::new(), Vec::new());
    walk(&card["body"], &mut md, &mut plain);
    (md, plain)
}

/// What an approver sees once the invisible word joiners and markdown escapes are rendered.
fn rendered(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{2060}' => {}
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[tokio::test]
async fn requested_card_has_the_facts_and_three_buttons_to_the_approval_page() {
    let teams = FakeTeams::start().await;
    let a = approval();
    notifier(&teams.webhook_url(SIG))
        .notify(&a, &NotifyEvent::Requested)
        .await
        .expect("delivered");

    let posts = teams.posts();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].uri.contains(&format!("sig={SIG}")),
        "{}",
        posts[0].uri
    );
    assert_eq!(posts[0].content_type.as_deref(), Some("application/json"));

    let message = &posts[0].json;
    assert_eq!(message["type"], "message");
    let attachments = message["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert!(attachments[0]["contentUrl"].is_null());

    let card = card_of(message);
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(
        rendered(card["body"][0]["text"].as_str().expect("title")),
        "Approval needed: prod-deploy"
    );

    let shown: Vec<(String, String)> = facts(card)
        .into_iter()
        .map(|(t, v)| (t, rendered(&v)))
        .collect();
    let expect = |t: &str, v: &str| (t.to_owned(), v.to_owned());
    assert_eq!(
        shown,
        vec![
            expect("Requester", "dev@example.com"),
            expect("Method", "POST"),
            expect("Host", "deploy.example.com"),
            expect("Path", "/v1/deployments/production?dry=0"),
            expect("Reason", "release 1.2.3"),
            expect("Expires", "2026-11-28T17:00:00Z"),
            expect("Votes", "0 of 2 approvals"),
        ]
    );

    // The redacted body preview is shown as sent.
    let text = visible_text(card);
    assert!(
        text.contains(r#"{"image":"app:1.2.3","password":"[redacted]"}"#),
        "{text}"
    );

    let page = format!("{PUBLIC_URL}/approvals/{}", a.id);
    let actions = card["actions"].as_array().expect("actions");
    let buttons: Vec<(&str, &str, &str)> = actions
        .iter()
        .map(|b| {
            (
                b["type"].as_str().expect("type"),
                b["title"].as_str().expect("title"),
                b["url"].as_str().expect("url"),
            )
        })
        .collect();
    assert_eq!(
        buttons,
        vec![
            ("Action.OpenUrl", "Approve", page.as_str()),
            ("Action.OpenUrl", "Deny", page.as_str()),
            ("Action.OpenUrl", "Open", page.as_str()),
        ]
    );
}

#[tokio::test]
async fn approvals_without_a_teams_target_post_nothing() {
    let teams = FakeTeams::start().await;
    let mut a = approval();
    a.notify = vec![NotifyTarget::SlackChannel("#prod".into())];
    notifier(&teams.webhook_url(SIG))
        .notify(&a, &NotifyEvent::Requested)
        .await
        .expect("nothing to do is fine");
    assert!(teams.posts().is_empty());
}

#[tokio::test]
async fn a_vote_posts_the_progress() {
    let teams = FakeTeams::start().await;
    let mut a = approval();
    a.votes
        .push(vote("alice@example.com", Decision::Approve, None));
    notifier(&teams.webhook_url(SIG))
        .notify(&a, &NotifyEvent::VoteCast)
        .await
        .expect("delivered");
    let delivered = teams.delivered();
    assert_eq!(delivered.len(), 1);
    let card = card_of(&delivered[0]);
    assert_eq!(
        rendered(&fact(card, "Votes")),
        "1 of 2 approvals (alice@example.com)"
    );
}

/// Posts `event` for `a` and returns the card the channel got.
async fn outcome(a: &Approval, event: NotifyEvent) -> Value {
    let teams = FakeTeams::start().await;
    notifier(&teams.webhook_url(SIG))
        .notify(a, &event)
        .await
        .expect("delivered");
    let delivered = teams.delivered();
    assert_eq!(delivered.len(), 1, "one follow-up card for {event:?}");
    let card = card_of(&delivered[0]).clone();
    let page = format!("{PUBLIC_URL}/approvals/{}", a.id);
    assert_eq!(card["actions"][0]["url"], page.as_str());
    card
}

fn title(card: &Value) -> String {
    rendered(card["body"][0]["text"].as_str().expect("title"))
}

#[tokio::test]
async fn final_events_post_the_outcome() {
    let mut approved = approval();
    approved.votes = vec![
        vote("alice@example.com", Decision::Approve, None),
        vote("bob@example.com", Decision::Approve, None),
    ];
    approved.status = Status::Approved;
    approved.decided_by = Some("bob@example.com".into());
    let card = outcome(&approved, NotifyEvent::Approved).await;
    assert_eq!(title(&card), "Approved: prod-deploy");
    assert_eq!(
        rendered(&fact(&card, "Approved by")),
        "alice@example.com, bob@example.com"
    );

    let mut denied = approval();
    denied.votes = vec![vote(
        "bob@example.com",
        Decision::Deny,
        Some("not during the freeze"),
    )];
    denied.status = Status::Denied;
    denied.decided_by = Some("bob@example.com".into());
    denied.decision_reason = Some("not during the freeze".into());
    let card = outcome(&denied, NotifyEvent::Denied).await;
    assert_eq!(title(&card), "Denied: prod-deploy");
    assert_eq!(rendered(&fact(&card, "Denied by")), "bob@example.com");
    assert_eq!(rendered(&fact(&card, "Reason")), "not during the freeze");

    let mut expired = approval();
    expired.status = Status::Expired;
    let card = outcome(&expired, NotifyEvent::Expired).await;
    assert_eq!(title(&card), "Expired: prod-deploy");
    assert!(rendered(&fact(&card, "Outcome")).contains("Nobody decided in time"));

    let mut cancelled = approval();
    cancelled.status = Status::Cancelled;
    let card = outcome(&cancelled, NotifyEvent::Cancelled).await;
    assert_eq!(title(&card), "Cancelled: prod-deploy");
    assert!(rendered(&fact(&card, "Outcome")).contains("Cancelled by the caller"));

    approved.execution = Execution::Done { status: 201 };
    let card = outcome(&approved, NotifyEvent::Executed { status: 201 }).await;
    assert_eq!(title(&card), "Executed: prod-deploy");
    assert_eq!(rendered(&fact(&card, "Upstream status")), "201");

    let card = outcome(&approved, NotifyEvent::ExecutionFailed).await;
    assert_eq!(title(&card), "Not delivered: prod-deploy");
    assert!(rendered(&fact(&card, "Outcome")).contains("could not be reached"));
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured_and_delivers_once() {
    let teams = FakeTeams::start().await;
    teams.fail_next(1, 429, Some(1));
    let started = Instant::now();
    notifier(&teams.webhook_url(SIG))
        .notify(&approval(), &NotifyEvent::Requested)
        .await
        .expect("delivered after the wait");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    let answers: Vec<u16> = teams.posts().iter().map(|p| p.answered).collect();
    assert_eq!(answers, vec![429, 202]);
    assert_eq!(teams.delivered().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let teams = FakeTeams::start().await;
    teams.fail_next(2, 503, None);
    notifier(&teams.webhook_url(SIG))
        .notify(&approval(), &NotifyEvent::Requested)
        .await
        .expect("delivered on the third try");
    let answers: Vec<u16> = teams.posts().iter().map(|p| p.answered).collect();
    assert_eq!(answers, vec![503, 503, 202]);
}

#[tokio::test]
async fn persistent_500s_return_an_error_after_bounded_tries() {
    let teams = FakeTeams::start().await;
    teams.fail_always(500);
    let err = notifier(&teams.webhook_url(SIG))
        .notify(&approval(), &NotifyEvent::Requested)
        .await
        .expect_err("never delivered");
    assert_eq!(teams.posts().len(), 4, "exactly the configured tries");
    let msg = err.to_string();
    assert!(msg.contains("500"), "{msg}");
    assert!(msg.contains("4 tries"), "{msg}");
}

#[tokio::test]
async fn a_client_error_is_permanent_and_not_retried() {
    let teams = FakeTeams::start().await;
    teams.fail_always(400);
    let err = notifier(&teams.webhook_url(SIG))
        .notify(&approval(), &NotifyEvent::Requested)
        .await
        .expect_err("bad request");
    assert_eq!(teams.posts().len(), 1);
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_fails_at_once() {
    let teams = FakeTeams::start().await;
    teams.fail_next(1, 429, Some(3600));
    let started = Instant::now();
    let err = notifier(&teams.webhook_url(SIG))
        .notify(&approval(), &NotifyEvent::Requested)
        .await
        .expect_err("will not block for an hour");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(teams.posts().len(), 1);
    assert!(err.to_string().contains("3600"), "{err}");
}

#[tokio::test]
async fn markdown_and_links_from_the_requester_are_neutralised() {
    let teams = FakeTeams::start().await;
    let mut a = approval();
    a.path = "/v1/[Approve](https://evil.example/phish)".into();
    a.query = None;
    a.host = "www.evil.example".into();
    a.reason = Some("**URGENT** [click here](http://evil.example/x)\n\n- approve now".into());
    a.requester.email = Some("[boss](https://evil.example)@example.com".into());
    a.body_preview = r#"{"note":"[Approve](https://evil.example/b)"}"#.into();
    notifier(&teams.webhook_url(SIG))
        .notify(&a, &NotifyEvent::Requested)
        .await
        .expect("delivered");
    let card = card_of(&teams.delivered()[0]).clone();

    // The only links are the three buttons, all to our own approval page.
    let page = format!("{PUBLIC_URL}/approvals/{}", a.id);
    let actions = card["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 3);
    assert!(actions.iter().all(|b| b["url"] == page.as_str()));

    // No markdown link, emphasis or list, no URL a renderer could linkify, no line break.
    let (markdown, plain) = text_strings(&card);
    for s in &markdown {
        for bad in ["](", "**", "://", "www.", "\n"] {
            assert!(!s.contains(bad), "{bad:?} survives in markdown text {s:?}");
        }
        assert!(!s.starts_with("- "), "a list in {s:?}");
    }
    // TextRun text is never markdown, but a bare URL could still be linkified.
    assert!(!plain.is_empty(), "the body preview is a TextRun");
    for s in &plain {
        assert!(!s.contains("://"), "a URL survives in {s:?}");
    }
    // ... and yet the approver reads exactly what was sent.
    assert_eq!(
        rendered(&fact(&card, "Path")),
        "/v1/[Approve](https://evil.example/phish)"
    );
    assert_eq!(rendered(&fact(&card, "Host")), "www.evil.example");
    assert_eq!(
        rendered(&fact(&card, "Reason")),
        "**URGENT** [click here](http://evil.example/x)  - approve now"
    );
    assert_eq!(
        plain.iter().map(|s| rendered(s)).collect::<Vec<_>>(),
        vec![r#"{"note":"[Approve](https://evil.example/b)"}"#]
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

#[tokio::test]
async fn the_webhook_url_never_appears_in_logs_or_errors() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // reqwest logs through the `log` crate: forward it here as the binary does (tracing-log).
    let _ = tracing_log::LogTracer::init();

    // Nothing listens on this port: every try is a network error.
    let dead = format!(
        "http://{}/workflows/D3adPathS3cret/triggers/manual/paths/invoke?sig={SIG}",
        common::DEAD_ADDR
    );
    let teams = FakeTeams::start().await;
    teams.fail_always(500);
    let failing = teams.webhook_url(SIG);
    let mut errors = Vec::new();
    for url in [dead.as_str(), failing.as_str()] {
        let n = notifier(url);
        assert!(!format!("{n:?}").contains(SIG));
        let err = n
            .notify(&approval(), &NotifyEvent::Requested)
            .await
            .expect_err("undeliverable");
        errors.push(err.to_string());
    }
    assert!(errors[0].contains("gave up after 4 tries"), "{}", errors[0]);

    let logs = logs.text();
    assert!(
        logs.contains("teams webhook: retrying"),
        "retries are logged: {logs}"
    );
    for secret in [SIG, "D3adPathS3cret", "/workflows/"] {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
        for e in &errors {
            assert!(!e.contains(secret), "{secret} in error: {e}");
        }
    }
}

// ----- the real Adaptive Cards parser -----------------------------------------------------

/// Runs `node tests/adaptivecards/parse.mjs` on `message`; returns (success, stdout+stderr).
fn parse_with_adaptivecards(message: &Value) -> (bool, String) {
    let dir = common::repo_root().join("tests/adaptivecards");
    if !dir.join("node_modules/adaptivecards").is_dir() {
        panic!(
            "tests/adaptivecards/node_modules is missing: run `scripts/test-setup.sh` (or \
             `npm ci` in tests/adaptivecards) first"
        );
    }
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(message.to_string().as_bytes())
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
async fn every_card_is_accepted_by_the_adaptivecards_parser() {
    let teams = FakeTeams::start().await;
    let n = notifier(&teams.webhook_url(SIG));
    let mut a = approval();
    a.self_approval = true;
    a.reason = Some("**x** [y](https://evil.example)".into());
    n.notify(&a, &NotifyEvent::Requested)
        .await
        .expect("requested");
    a.votes
        .push(vote("alice@example.com", Decision::Approve, None));
    n.notify(&a, &NotifyEvent::VoteCast).await.expect("vote");
    for event in [
        NotifyEvent::Approved,
        NotifyEvent::Denied,
        NotifyEvent::Expired,
        NotifyEvent::Cancelled,
        NotifyEvent::Executed { status: 500 },
        NotifyEvent::ExecutionFailed,
    ] {
        n.notify(&a, &event).await.expect("outcome");
    }
    let delivered = teams.delivered();
    assert_eq!(delivered.len(), 8);
    for message in &delivered {
        let (ok, output) = parse_with_adaptivecards(message);
        assert!(ok, "adaptivecards rejected {message}:\n{output}");
        assert!(output.starts_with("ok 1.4"), "{output}");
    }
}

#[test]
fn the_parser_check_rejects_broken_cards() {
    let good = serde_json::json!({
        "type": "AdaptiveCard", "version": "1.4",
        "body": [{ "type": "TextBlock", "text": "hi" }],
    });
    assert!(parse_with_adaptivecards(&good).0, "baseline card must pass");

    let mut unknown_element = good.clone();
    unknown_element["body"][0]["type"] = "TextBlok".into();
    let mut old_version = good.clone();
    old_version["version"] = "1.2".into();
    let mut typo = good.clone();
    typo["body"][0]["wrapp"] = true.into();
    let wrong_envelope = serde_json::json!({
        "type": "message",
        "attachments": [{ "contentType": "application/json", "content": good }],
    });
    for (what, card) in [
        ("unknown element type", unknown_element),
        ("version below 1.4", old_version),
        ("unknown property", typo),
        ("wrong attachment content type", wrong_envelope),
    ] {
        let (ok, output) = parse_with_adaptivecards(&card);
        assert!(!ok, "{what} was accepted: {output}");
    }
}
