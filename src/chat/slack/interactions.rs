//! `POST /slack/interactions`: Slack's button callbacks.
//!
//! Order matters: the signature is checked on the raw body before anything is parsed; the
//! answer (200, empty) goes back at once because Slack gives up after 3 seconds; the vote is
//! cast afterwards in a spawned task, and anything the clicking user should know (not an
//! approver, own request, already decided) is told to them alone via `response_url`.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::blocks::REASON_INPUT;
use super::SlackApp;
use crate::approval::{ApprovalId, ApproverIdentity, Broker, Channel, Decision};
use crate::chat::Button;

/// Issuer recorded for votes cast in Slack (the subject is `{team}/{user}`).
const SLACK_ISSUER: &str = "https://slack.com";

/// The parts of a `block_actions` payload we use (Slack sends many more fields).
#[derive(Debug, Deserialize)]
pub(super) struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    team: Option<Team>,
    #[serde(default)]
    trigger_id: Option<String>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    state: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Team {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    action_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Form {
    payload: String,
}

/// A vote to cast, taken from a verified payload.
#[derive(Debug)]
pub(super) struct Click {
    pub(super) user: String,
    /// `team.id`: the workspace the click came from.
    pub(super) team: Option<String>,
    /// `user.team_id`, when Slack sends it.
    pub(super) user_team: Option<String>,
    pub(super) approval: Option<ApprovalId>,
    pub(super) decision: Decision,
    /// The Acknowledge button of a break-glass request under review (`decision` unused).
    pub(super) acknowledge: bool,
    /// "Approve for 15 min": an approval that also asks for a grant (SPEC 9).
    pub(super) grant: bool,
    pub(super) reason: Option<String>,
    pub(super) response_url: Option<String>,
    /// Identifies this click across Slack's retries and replays.
    pub(super) key: String,
}

/// How long a click's answer waits for its vote to be cast: it normally takes milliseconds,
/// and Slack gives up on an interaction after 3 s.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one `POST /slack/interactions`: 401 unless Slack signed it within five minutes,
/// 400 for a payload we cannot read, 200 and nothing else for a click already handled (by any
/// replica sharing the store), 200 and an ephemeral "not recorded" when that cannot be
/// checked, otherwise 200 once the vote is cast (and `vote.cast` is in
/// the audit log), or after 2 s with the vote still being cast in the background: Slack wants
/// an answer within 3 s (SPEC 8).
pub async fn interactions(
    slack: &SlackApp,
    broker: &Broker,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = slack.verify(headers, &body) {
        tracing::warn!(error = %e, "slack interaction refused");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let payload = match parse(&body) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(why, "unreadable slack interaction");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let Some(click) = click_of(payload) else {
        // Link buttons (Open, login-only Approve/Deny) and other interactions change nothing.
        return StatusCode::OK.into_response();
    };
    let (slack, broker) = (slack.clone(), broker.clone());
    let vote = match slack.first_click(&click.key).await {
        Ok(true) => tokio::spawn(async move { cast(&slack, &broker, click).await }),
        Ok(false) => {
            tracing::info!(user = %click.user, "replayed slack click ignored");
            return StatusCode::OK.into_response();
        }
        Err(e) => {
            // Fail closed: a click that might be a replay is not counted.
            tracing::error!(user = %click.user, error = %e, "slack: cannot check the click for a replay; vote not cast");
            tokio::spawn(async move {
                let url = click.response_url.as_deref();
                slack.ephemeral(url, crate::chat::NOT_RECORDED).await
            })
        }
    };
    // Dropping the handle on timeout detaches the task; it is not cancelled.
    let _ = tokio::time::timeout(ACK_WAIT, vote).await;
    StatusCode::OK.into_response()
}

/// A router serving `POST /slack/interactions`, for the control plane to merge.
pub fn router(slack: SlackApp, broker: Broker) -> axum::Router {
    axum::Router::new().route(
        "/slack/interactions",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (slack, broker) = (slack.clone(), broker.clone());
            async move { interactions(&slack, &broker, &headers, body).await }
        }),
    )
}

pub(super) fn parse(body: &[u8]) -> Result<Payload, &'static str> {
    let form: Form = serde_urlencoded::from_bytes(body).map_err(|_| "no payload field")?;
    serde_json::from_str(&form.payload).map_err(|_| "payload is not the expected JSON")
}

/// The vote in a `block_actions` payload, or `None` if it is not an Approve/Deny click.
pub(super) fn click_of(p: Payload) -> Option<Click> {
    if p.kind != "block_actions" {
        return None;
    }
    let action = p.actions.first()?;
    let button = Button::named(&action.action_id)?;
    let decision = button.decision();
    let (acknowledge, grant) = (
        button == Button::Acknowledge,
        button == Button::ApproveGrant,
    );
    let occurrence = p
        .trigger_id
        .clone()
        .or_else(|| action.action_ts.clone())
        .unwrap_or_default();
    let reason = p
        .state
        .as_ref()
        .and_then(|s| s["values"][REASON_INPUT][REASON_INPUT]["value"].as_str())
        .map(str::to_owned);
    Some(Click {
        key: format!("{}:{occurrence}", p.user.id),
        team: p.team.map(|t| t.id),
        user_team: p.user.team_id,
        user: p.user.id,
        approval: action.value.as_deref().and_then(ApprovalId::parse),
        decision,
        acknowledge,
        grant,
        reason,
        response_url: p.response_url,
    })
}

/// Maps the user to an email and asks the broker to count the vote.
async fn cast(slack: &SlackApp, broker: &Broker, click: Click) {
    let reply = |text: String| {
        let url = click.response_url.clone();
        async move { slack.ephemeral(url.as_deref(), &text).await }
    };
    if !slack.click_team_allowed(click.team.as_deref(), click.user_team.as_deref()) {
        tracing::warn!(
            user = %click.user,
            team = click.team.as_deref().unwrap_or("-"),
            user_team = click.user_team.as_deref().unwrap_or("-"),
            approval_id = click.approval.as_ref().map(ApprovalId::as_str).unwrap_or("-"),
            "slack vote refused: the click comes from another workspace than [slack] team_id"
        );
        return reply(
            "This Countersign counts clicks only from its own Slack workspace; nothing changed."
                .into(),
        )
        .await;
    }
    let Some(id) = click.approval.clone() else {
        return reply("This button does not belong to a Countersign request.".into()).await;
    };
    let email = match slack.email_of(&click.user).await {
        Ok(Some(email)) => email,
        Ok(None) => {
            return reply("Countersign cannot see your email address in Slack, so it cannot tell whether you may approve. Use the approval page.".into()).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "slack users.info failed; vote not cast");
            return reply("Countersign could not look you up in Slack; your vote was not counted. Try again.".into()).await;
        }
    };
    let voter = ApproverIdentity {
        email: email.clone(),
        iss: Some(SLACK_ISSUER.to_owned()),
        sub: Some(format!(
            "{}/{}",
            click
                .team
                .as_deref()
                .or(click.user_team.as_deref())
                .unwrap_or("-"),
            click.user
        )),
        via: Channel::Slack,
    };
    let reason = click.reason.clone();
    let (done, what) = if click.acknowledge {
        (broker.acknowledge(&id, voter).await, "acknowledge")
    } else {
        let done = broker
            .decide_granting(&id, voter, click.decision, reason, click.grant)
            .await;
        (done, click.decision.as_str())
    };
    match done {
        Ok(_) => {
            tracing::info!(approval_id = %id, approver = %email, decision = what, "slack vote counted")
        }
        Err(e) => {
            tracing::info!(approval_id = %id, approver = %email, error = %e, "slack vote refused");
            let page = format!(
                "{}/approvals/{id}",
                slack.public_url().as_str().trim_end_matches('/')
            );
            reply(crate::chat::refusal(&e, &page)).await
        }
    }
}
