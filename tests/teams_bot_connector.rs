//! The Teams bot's outbound client against the fake Bot Framework (`tests/common`): the
//! client-credentials token is fetched once and reused, renewed after a 401, and Bot Connector
//! calls ride out 429 `Retry-After` and 5xx answers like Slack's client.

mod common;

use std::time::{Duration, Instant};

use common::fake_botframework::{FakeBotFramework, Fault, User, APP_ID, APP_PASSWORD, TENANT};
use countersign::chat::slack::RetryPolicy;
use countersign::chat::teams_bot::{Connector, ConnectorError};
use countersign::secret::Secret;
use serde_json::json;

const CHAT: &str = "19:chat-ops@thread.v2";

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(5),
    }
}

fn connector(bf: &FakeBotFramework, password: &str) -> Connector {
    Connector::new(
        common::http_client(),
        bf.token_url().parse().unwrap(),
        APP_ID.to_owned(),
        Secret::new(password),
        retry(),
    )
}

fn activity(text: &str) -> serde_json::Value {
    json!({"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": text}]},
    }]})
}

#[tokio::test]
async fn the_token_is_fetched_once_and_reused() {
    let bf = FakeBotFramework::start().await;
    let alice = User::new("alice", "alice@example.com");
    bf.add_chat(CHAT, &[&alice]);
    let c = connector(&bf, APP_PASSWORD);
    let service = bf.service_url().parse().unwrap();
    let id = c
        .create_activity(&service, CHAT, &activity("one"))
        .await
        .unwrap();
    c.update_activity(&service, CHAT, &id, &activity("two"))
        .await
        .unwrap();
    let members = c.members(&service, CHAT).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(
        members[0].aad_object_id.as_deref(),
        Some(alice.aad.as_str())
    );
    assert_eq!(members[0].tenant_id.as_deref(), Some(TENANT));
    let me = c.member(&service, CHAT, &alice.id).await.unwrap().unwrap();
    assert_eq!(me.addresses(), ["alice@example.com"]);
    assert_eq!(c.member(&service, CHAT, "29:nobody").await.unwrap(), None);
    assert_eq!(bf.calls_of("token").len(), 1, "one token for five calls");
    let posted = bf.posted(CHAT, &id).unwrap();
    assert_eq!(posted.updates, 1);
    assert_eq!(posted.card()["body"][0]["text"], "two");
}

#[tokio::test]
async fn a_refused_token_is_renewed_once() {
    let bf = FakeBotFramework::start().await;
    bf.add_chat(CHAT, &[]);
    let c = connector(&bf, APP_PASSWORD);
    let service = bf.service_url().parse().unwrap();
    c.create_activity(&service, CHAT, &activity("a"))
        .await
        .unwrap();
    bf.revoke_tokens();
    c.create_activity(&service, CHAT, &activity("b"))
        .await
        .unwrap();
    assert_eq!(bf.calls_of("token").len(), 2);
    assert_eq!(
        bf.calls_of("create")
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        [201, 401, 201]
    );
}

#[tokio::test]
async fn wrong_credentials_fail_without_leaking_the_password() {
    let bf = FakeBotFramework::start().await;
    bf.add_chat(CHAT, &[]);
    let c = connector(&bf, "not-the-password");
    let service = bf.service_url().parse().unwrap();
    let err = c
        .create_activity(&service, CHAT, &activity("a"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectorError::Token(_)), "{text}");
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains("not-the-password") && !format!("{c:?}").contains("not-the-password"));
    assert_eq!(bf.calls_of("create").len(), 0);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let bf = FakeBotFramework::start().await;
    bf.add_chat(CHAT, &[]);
    let c = connector(&bf, APP_PASSWORD);
    let service = bf.service_url().parse().unwrap();
    bf.queue_faults("token", [Fault::Http(503)]);
    bf.queue_faults(
        "create",
        [
            Fault::RateLimited(1),
            Fault::Http(502),
            Fault::RateLimited(1),
        ],
    );
    let started = Instant::now();
    c.create_activity(&service, CHAT, &activity("a"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );
    assert_eq!(
        bf.calls_of("create")
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        [429, 502, 429, 201]
    );
    // Four 429s exhaust the attempts; a Retry-After above the limit fails at once.
    bf.queue_faults("create", [Fault::RateLimited(0); 4]);
    let err = c
        .create_activity(&service, CHAT, &activity("b"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ConnectorError::RateLimited {
            op: "create activity"
        }
    );
    bf.queue_faults("create", [Fault::RateLimited(60)]);
    let started = Instant::now();
    assert!(c
        .create_activity(&service, CHAT, &activity("c"))
        .await
        .is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn unknown_conversations_and_activities_are_not_retried() {
    let bf = FakeBotFramework::start().await;
    bf.add_chat(CHAT, &[]);
    let c = connector(&bf, APP_PASSWORD);
    let service = bf.service_url().parse().unwrap();
    let err = c
        .create_activity(&service, "19:gone@thread.v2", &activity("a"))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("ConversationNotFound"), "{err}");
    let err = c
        .update_activity(&service, CHAT, "999", &activity("a"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ActivityNotFoundInConversation"),
        "{err}"
    );
    assert_eq!(bf.calls_of("create").len() + bf.calls_of("update").len(), 2);
}
