use serde_json::Value;

use super::cards::{self, View, MAX_REFRESH_USERS};
use crate::approval::{Approval, Channel, Requester};
use crate::policy::{ApproveVia, NotifyTarget};

fn approval() -> Approval {
    let base = crate::chat::sample_approval();
    Approval {
        requester: Requester {
            sub: "u-42".into(),
            ..base.requester.clone()
        },
        reason: Some("[Approve](https://evil.example)".into()),
        notify: vec![NotifyTarget::Teams],
        ..base
    }
}

fn verbs(card: &Value) -> Vec<String> {
    card["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "Action.Execute")
        .map(|a| a["verb"].as_str().unwrap().to_owned())
        .collect()
}

/// `a`'s card as an approver who may approve sees it; `user_ids` refresh automatically.
fn approver_card(a: &Approval, user_ids: &[String]) -> Value {
    let view = View::Vote {
        approve: true,
        note: None,
    };
    cards::card(a, "p", user_ids, view)
}

#[test]
fn the_base_card_has_no_buttons_and_refreshes_the_voters() {
    let a = approval();
    let users = vec!["29:alice".to_owned(), "29:bob".to_owned()];
    let card = cards::card(&a, "https://c.example/approvals/x", &users, View::Status);
    assert_eq!(card["version"], "1.5");
    assert!(verbs(&card).is_empty(), "{card}");
    assert_eq!(card["refresh"]["userIds"], serde_json::json!(users));
    assert_eq!(card["refresh"]["action"]["verb"], "refresh");
    assert_eq!(
        card["refresh"]["action"]["data"]["approval_id"],
        a.id.as_str()
    );
    // The requester's markdown link does not survive.
    assert!(!card.to_string().contains("]("), "{card}");
}

#[test]
fn an_approver_view_has_the_reason_input_and_both_buttons() {
    let a = approval();
    let card = approver_card(&a, &[]);
    assert_eq!(verbs(&card), ["approve", "deny"]);
    let input = card["body"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "Input.Text")
        .expect("reason input");
    assert_eq!(input["id"], "reason");
    let own = cards::card(
        &a,
        "p",
        &[],
        View::Vote {
            approve: false,
            note: Some("own"),
        },
    );
    assert_eq!(verbs(&own), ["deny"]);
}

#[test]
fn login_only_rules_get_no_buttons_in_teams() {
    let mut a = approval();
    a.approve_via = ApproveVia::Login;
    let card = approver_card(&a, &[]);
    assert!(verbs(&card).is_empty(), "{card}");
    assert!(card.to_string().contains("fresh sign-in"));
}

#[test]
fn a_decided_card_has_no_refresh_and_no_buttons_for_anyone() {
    let mut a = approval();
    crate::chat::deny(&mut a, "bob@example.com", "not today", Channel::Teams, 1);
    let card = approver_card(&a, &["29:x".into()]);
    assert!(card.get("refresh").is_none(), "{card}");
    assert!(verbs(&card).is_empty());
    let text = card.to_string();
    assert!(
        text.contains("not today") && text.contains("bob@example.com"),
        "{text}"
    );
}

#[test]
fn refresh_names_at_most_sixty_users() {
    let a = approval();
    let users: Vec<String> = (0..75).map(|i| format!("29:{i}")).collect();
    let card = cards::card(&a, "p", &users, View::Status);
    assert_eq!(
        card["refresh"]["userIds"].as_array().unwrap().len(),
        MAX_REFRESH_USERS
    );
}

#[test]
fn invoke_responses_have_the_documented_shapes() {
    let c = cards::invoke_card(serde_json::json!({"type": "AdaptiveCard"}));
    assert_eq!(c["statusCode"], 200);
    assert_eq!(c["type"], "application/vnd.microsoft.card.adaptive");
    let m = cards::invoke_message("hi");
    assert_eq!(m["type"], "application/vnd.microsoft.activity.message");
    assert_eq!(m["value"], "hi");
    let e = cards::invoke_error(400, "BadRequest", "no");
    assert_eq!(e["value"]["code"], "BadRequest");
}

#[test]
fn members_offer_upn_then_email_lowercased_once() {
    let m: super::Member = serde_json::from_value(serde_json::json!({
        "id": "29:1", "aadObjectId": "o", "email": "Alice@Example.com",
        "userPrincipalName": "ALICE@example.com"
    }))
    .unwrap();
    assert_eq!(m.addresses(), ["alice@example.com"]);
    let m: super::Member = serde_json::from_value(serde_json::json!({
        "id": "29:1", "email": "al@example.com", "userPrincipalName": "alice@corp.example"
    }))
    .unwrap();
    assert_eq!(m.addresses(), ["alice@corp.example", "al@example.com"]);
}

#[test]
fn conversation_ids_are_one_encoded_path_segment() {
    let base: url::Url = "https://smba.trafficmanager.net/emea/".parse().unwrap();
    let url =
        super::connector::conversation_url(&base, "19:abc@thread.tacv2;messageid=1", "activities");
    assert_eq!(
        url,
        "https://smba.trafficmanager.net/emea/v3/conversations/19%3Aabc%40thread.tacv2%3Bmessageid%3D1/activities"
    );
}
