//! `POST /teams/messages`: the bot's messaging endpoint (every activity Teams sends it).
//!
//! Order matters: without a bearer token nothing is read; the activity is parsed only to learn
//! the `serviceUrl` and `channelId` its token must be checked against; then the token, the
//! tenant and replays are checked before anything is acted on.
//!
//! | cause | answer |
//! |---|---|
//! | no `Authorization: Bearer` | 401 |
//! | body is not an activity | 400 |
//! | token refused ([`AuthError`] other than keys unavailable) | 401 |
//! | Bot Framework keys unavailable | 503 (Teams retries; nothing accepted) |
//! | activity from another tenant | 403 |
//! | invoke without an activity id | 400 |
//! | bot memory unavailable (replay check) | 503 |
//! | replayed activity (handled before by any replica sharing the store) | 200; an invoke says "already received", nothing changes |
//! | `adaptiveCard/action` invoke | 200 with an invoke response (card or message) |
//! | anything else | 200, empty |

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::auth::AuthError;
use super::cards::{self, View, DATA_ID, REASON_INPUT, REASON_MAX_CHARS};
use super::{Member, TeamsBot, INVOKE_BUDGET};
use crate::approval::{
    Approval, ApprovalId, ApproverIdentity, Broker, Channel, DecideError, Decision,
};
use crate::chat::Button;

/// Issuer recorded for votes cast in Teams (the subject is `{tenant}/{Entra object id}`).
const TEAMS_ISSUER: &str = "https://teams.microsoft.com";

/// The parts of an activity we use (Teams sends many more).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activity {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    service_url: String,
    channel_id: String,
    #[serde(default)]
    from: Option<From>,
    #[serde(default)]
    conversation: Option<Conversation>,
    #[serde(default)]
    channel_data: Value,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct From {
    id: String,
    #[serde(default)]
    aad_object_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conversation {
    id: String,
    #[serde(default)]
    tenant_id: Option<String>,
}

impl Activity {
    /// The tenant the activity comes from (`channelData.tenant.id`, else the conversation's).
    fn tenant(&self) -> Option<&str> {
        self.channel_data["tenant"]["id"]
            .as_str()
            .or_else(|| self.conversation.as_ref()?.tenant_id.as_deref())
    }

    /// The conversation whose roster knows the sender: the team for a channel, else the chat
    /// (a channel thread's id carries `;messageid=...`, which the roster does not).
    fn roster_conversation(&self) -> Option<&str> {
        self.channel_data["team"]["id"].as_str().or_else(|| {
            let id = self.conversation.as_ref()?.id.as_str();
            Some(id.split(";messageid=").next().unwrap_or(id))
        })
    }
}

/// A router serving `POST /teams/messages`, for the control plane to merge.
pub fn router(bot: TeamsBot, broker: Broker) -> axum::Router {
    axum::Router::new().route(
        "/teams/messages",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (bot, broker) = (bot.clone(), broker.clone());
            async move { messages(&bot, &broker, &headers, body).await }
        }),
    )
}

/// Serves one `POST /teams/messages` (see the module's table).
pub async fn messages(
    bot: &TeamsBot,
    broker: &Broker,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let Some(authorization) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        tracing::warn!("teams activity without a bearer token refused");
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let activity: Activity = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(_) => {
            tracing::warn!("unreadable teams activity");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let verified = bot
        .inner
        .auth
        .verify(
            Some(authorization),
            &activity.service_url,
            &activity.channel_id,
        )
        .await;
    match verified {
        Ok(_) => {}
        Err(AuthError::KeysUnavailable(why)) => {
            tracing::error!(
                why,
                "teams activity not checked: Bot Framework keys unavailable"
            );
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "teams activity refused");
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    if activity.tenant() != Some(bot.inner.tenant_id.as_str()) {
        tracing::warn!(tenant = ?activity.tenant(), "teams activity from another tenant refused");
        return StatusCode::FORBIDDEN.into_response();
    }
    let is_action =
        activity.kind == "invoke" && activity.name.as_deref() == Some("adaptiveCard/action");
    let Some(activity_id) = activity.id.as_deref() else {
        if is_action {
            return StatusCode::BAD_REQUEST.into_response();
        }
        return StatusCode::OK.into_response();
    };
    let conversation = activity.conversation.as_ref().map_or("", |c| c.id.as_str());
    let key = format!("{}|{conversation}|{activity_id}", activity.service_url);
    match bot.memory().first_seen(&key).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(activity_id, "replayed teams activity ignored");
            if is_action {
                let answer =
                    cards::invoke_message("This action was already received; nothing changed.");
                return axum::Json(answer).into_response();
            }
            return StatusCode::OK.into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "teams: cannot check for replays; activity refused");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    match activity.kind.as_str() {
        "invoke" if is_action => axum::Json(action(bot, broker, &activity).await).into_response(),
        "conversationUpdate" | "installationUpdate" => {
            log_reference(&activity);
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

/// Tells the operator how to post cards in a conversation the bot was just added to.
fn log_reference(activity: &Activity) {
    let id = activity.channel_data["channel"]["id"]
        .as_str()
        .or_else(|| activity.roster_conversation())
        .unwrap_or("");
    tracing::info!(
        "teams: the bot is in conversation {id:?}; to post approval cards there, add to [teams]: conversations = [{{ service_url = {:?}, id = {id:?} }}]",
        activity.service_url
    );
}

/// Handles an `Action.Execute` click or refresh; returns the invoke response.
async fn action(bot: &TeamsBot, broker: &Broker, activity: &Activity) -> Value {
    let action = &activity.value["action"];
    if action["type"] != "Action.Execute" {
        return cards::invoke_error(400, "BadRequest", "Only Action.Execute is supported.");
    }
    let verb = action["verb"].as_str().unwrap_or("");
    // Teams cards have no Acknowledge button (break-glass reviews are acknowledged on the page).
    let button = match Button::named(verb) {
        Some(Button::Acknowledge) => None,
        named => named,
    };
    let decision = match button {
        Some(b) => Some(b.decision()),
        None if verb == cards::VERB_REFRESH => None,
        None => return cards::invoke_error(400, "BadRequest", "Unknown action."),
    };
    let grant = button == Some(Button::ApproveGrant);
    let Some(id) = action["data"][DATA_ID].as_str().and_then(ApprovalId::parse) else {
        return cards::invoke_message("This card does not belong to a Countersign request.");
    };
    let approval = match broker.get(&id).await {
        Ok(Some(a)) => a,
        Ok(None) => return cards::invoke_message("This request no longer exists."),
        Err(e) => {
            tracing::error!(approval_id = %id, error = %e, "teams: store unavailable");
            return cards::invoke_error(
                500,
                "InternalError",
                "Countersign is unavailable; try again.",
            );
        }
    };
    let Ok(service_url) = Url::parse(&activity.service_url) else {
        return cards::invoke_error(400, "BadRequest", "Bad serviceUrl.");
    };
    let voters = match activity.roster_conversation() {
        Some(c) => bot.voters_in(&service_url, c, &approval).await,
        None => Vec::new(),
    };
    let page = bot.page(&id);
    let voter = match identify(bot, &service_url, activity, &approval).await {
        Ok(v) => v,
        Err(text) => {
            return match decision {
                // A refresh that cannot tell who is looking shows the status.
                None => cards::invoke_card(cards::card(&approval, &page, &voters, View::Status)),
                Some(_) => cards::invoke_message(&text),
            };
        }
    };
    match decision {
        None => {
            let (view, note) = view_for(broker, &approval, &voter);
            let view = match (view, note.as_deref()) {
                (ViewKind::Vote { approve }, note) => View::Vote { approve, note },
                (ViewKind::Status, Some(note)) => View::Note(note),
                (ViewKind::Status, None) => View::Status,
            };
            cards::invoke_card(cards::card(&approval, &page, &voters, view))
        }
        Some(decision) => {
            let reason = action["data"][REASON_INPUT]
                .as_str()
                .map(|r| r.trim().chars().take(REASON_MAX_CHARS).collect::<String>())
                .filter(|r| !r.is_empty());
            let ballot = Ballot {
                decision,
                grant,
                reason,
            };
            vote(bot, broker, &approval, voter, ballot, &voters).await
        }
    }
}

/// Who clicked, as an approver identity. `Err` holds what to tell them.
async fn identify(
    bot: &TeamsBot,
    service_url: &Url,
    activity: &Activity,
    approval: &Approval,
) -> Result<ApproverIdentity, String> {
    const LOOKUP_FAILED: &str =
        "Countersign could not look you up in Teams; your vote was not counted. Try again or use the approval page.";
    let (Some(from), Some(conversation)) = (&activity.from, activity.roster_conversation()) else {
        return Err(LOOKUP_FAILED.into());
    };
    let member = match bot.member(service_url, conversation, &from.id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err("Countersign cannot find you in this conversation; nothing changed.".into())
        }
        Err(e) => {
            tracing::warn!(error = %e, "teams member lookup failed; vote not cast");
            return Err(LOOKUP_FAILED.into());
        }
    };
    let tenant = bot.inner.tenant_id.as_str();
    let Some(object_id) = checked_object_id(&member, from, tenant) else {
        tracing::warn!(member = %member.id, "teams member does not match the activity (object id or tenant); vote not cast");
        return Err(LOOKUP_FAILED.into());
    };
    let addresses = member.addresses();
    let Some(first) = addresses.first() else {
        return Err("Countersign cannot see your sign-in name or email address in Teams, so it cannot tell whether you may approve. Use the approval page.".into());
    };
    // The UPN, unless the approver list names the user by their email instead.
    let email = addresses
        .iter()
        .find(|a| approval.approvers.contains(a))
        .unwrap_or(first)
        .clone();
    Ok(ApproverIdentity {
        email,
        iss: Some(TEAMS_ISSUER.to_owned()),
        sub: Some(format!("{tenant}/{object_id}")),
        via: Channel::Teams,
    })
}

/// The member's Entra object id when it matches the activity's sender and tenant.
fn checked_object_id(member: &Member, from: &From, tenant: &str) -> Option<String> {
    let object_id = member.aad_object_id.as_deref()?.to_ascii_lowercase();
    let same_object = from
        .aad_object_id
        .as_deref()
        .is_none_or(|o| o.eq_ignore_ascii_case(&object_id));
    let same_tenant = member
        .tenant_id
        .as_deref()
        .is_none_or(|t| t.eq_ignore_ascii_case(tenant));
    (same_object && same_tenant && member.id == from.id).then_some(object_id)
}

/// A view without borrowed text.
enum ViewKind {
    Status,
    Vote { approve: bool },
}

/// What `voter` may do on `a` now, and a line telling them why not.
fn view_for(broker: &Broker, a: &Approval, voter: &ApproverIdentity) -> (ViewKind, Option<String>) {
    match broker.check_voter(a, voter, Decision::Approve) {
        Ok(_) | Err(DecideError::LoginRequired) => (ViewKind::Vote { approve: true }, None),
        Err(DecideError::OwnRequest) => match broker.check_voter(a, voter, Decision::Deny) {
            Ok(_) => (
                ViewKind::Vote { approve: false },
                Some(
                    "This is your own request: you cannot approve it, but you may deny it.".into(),
                ),
            ),
            Err(_) => (ViewKind::Status, None),
        },
        Err(DecideError::AlreadyVoted) => (ViewKind::Status, Some(your_vote(a, &voter.email))),
        Err(
            DecideError::NotFound
            | DecideError::NotAnApprover
            | DecideError::AlreadyDecided(_)
            | DecideError::Expired
            | DecideError::GrantNotAllowed
            | DecideError::Store(_)
            | DecideError::Audit(_),
        ) => (ViewKind::Status, None),
    }
}

/// "You approved this request." / "You denied this request."
fn your_vote(a: &Approval, email: &str) -> String {
    let decision = a
        .votes
        .iter()
        .find(|v| v.approver.eq_ignore_ascii_case(email))
        .map(|v| v.decision);
    match decision {
        Some(Decision::Approve) => "You approved this request.".into(),
        Some(Decision::Deny) => "You denied this request.".into(),
        None => "You already voted on this request.".into(),
    }
}

/// What a clicking approver chose on the card.
struct Ballot {
    decision: Decision,
    /// "Approve for 15 min" (SPEC 9).
    grant: bool,
    reason: Option<String>,
}

/// Casts the vote through the broker and answers with the clicking user's refreshed card, or
/// tells them alone why nothing changed.
async fn vote(
    bot: &TeamsBot,
    broker: &Broker,
    approval: &Approval,
    voter: ApproverIdentity,
    ballot: Ballot,
    voters: &[String],
) -> Value {
    let Ballot {
        decision,
        grant,
        reason,
    } = ballot;
    let id = approval.id.clone();
    let email = voter.email.clone();
    let page = bot.page(&id);
    let task = {
        let (broker, id) = (broker.clone(), id.clone());
        tokio::spawn(async move {
            broker
                .decide_granting(&id, voter, decision, reason, grant)
                .await
        })
    };
    let decided = match tokio::time::timeout(INVOKE_BUDGET, task).await {
        Ok(Ok(decided)) => decided,
        Ok(Err(join)) => {
            tracing::error!(approval_id = %id, error = %join, "teams vote task failed");
            return cards::invoke_error(
                500,
                "InternalError",
                "Countersign could not record your vote; try again.",
            );
        }
        Err(_) => {
            // Still recording (slow audit or Bot Connector): show what is known now.
            tracing::info!(approval_id = %id, "teams vote still being recorded; answering with the current state");
            let current = broker.get(&id).await.ok().flatten();
            let current = current.as_ref().unwrap_or(approval);
            let note = "Your vote is being recorded.";
            return cards::invoke_card(cards::card(current, &page, voters, View::Note(note)));
        }
    };
    match decided {
        Ok(a) => {
            tracing::info!(approval_id = %id, approver = %email, decision = decision.as_str(), "teams vote counted");
            let voters: Vec<String> = voters.to_vec();
            let note = your_vote(&a, &email);
            cards::invoke_card(cards::card(&a, &page, &voters, View::Note(&note)))
        }
        Err(e) => {
            tracing::info!(approval_id = %id, approver = %email, error = %e, "teams vote refused");
            cards::invoke_message(&crate::chat::refusal(&e, &page))
        }
    }
}
