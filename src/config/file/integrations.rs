//! `[slack]`, `[teams]`, `[approver_login]`, `[telemetry]` and `[audit]`: the outside services Countersign talks to.
//!
//! Owns the parsing of these sections only; every problem goes to the shared [`FileCheck`]. Must
//! not read other sections or build the final [`Config`](super::super::Config).

use super::*;

/// `[slack]`.
pub fn slack(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<Slack> {
    let t = ck.as_table(value, "[slack]")?;
    let header = value.span();
    ck.unknown_keys(
        t,
        "in [slack]",
        &["bot_token", "signing_secret", "api_url", "team_id"],
    );
    let bot_token = req_secret(ck, t, &header, "[slack]", "bot_token", dir);
    let signing_secret = req_secret(ck, t, &header, "[slack]", "signing_secret", dir);
    let api_url = match ck.opt_str(t, "api_url") {
        Some((s, span)) => http_url(ck, "api_url", s, &span),
        None => Url::parse("https://slack.com/api").ok(),
    };
    let team_id = match ck.opt_str(t, "team_id") {
        Some((s, _)) if slack_team_id_ok(s) => Some(Some(s.to_owned())),
        Some((s, span)) => {
            ck.err(
                &span,
                format!(
                    "\"team_id\" must be a Slack workspace id such as \"T0123ABCD\", not {s:?}"
                ),
            );
            None
        }
        None => Some(None),
    };
    Some(Slack {
        bot_token: bot_token?,
        signing_secret: signing_secret?,
        api_url: api_url?,
        team_id: team_id?,
    })
}

/// A Slack workspace id: `T` and uppercase letters or digits, as Slack shows it in `team.id`.
pub fn slack_team_id_ok(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 32
        && s.starts_with('T')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `[teams]`.
pub fn teams(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<Teams> {
    let t = ck.as_table(value, "[teams]")?;
    ck.unknown_keys(t, "in [teams]", &["webhook_url"]);
    let webhook_url = req_secret(ck, t, &value.span(), "[teams]", "webhook_url", dir)?;
    Some(Teams { webhook_url })
}

/// `[approver_login]`.
pub fn approver_login(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<ApproverLogin> {
    let t = ck.as_table(value, "[approver_login]")?;
    let header = value.span();
    ck.unknown_keys(
        t,
        "in [approver_login]",
        &["issuer", "client_id", "client_secret"],
    );
    let issuer = ck
        .req_str(t, &header, "in [approver_login]", "issuer")
        .and_then(|(s, span)| issuer_url(ck, "issuer", s, &span).map(|_| s.to_owned()));
    let client_id = ck
        .req_str(t, &header, "in [approver_login]", "client_id")
        .map(|(s, _)| s.to_owned());
    let client_secret = secret(ck, t, "client_secret", dir);
    Some(ApproverLogin {
        issuer: issuer?,
        client_id: client_id?,
        client_secret,
    })
}

/// `[telemetry]`: `otlp_endpoint` (required, http or https) and `service_name`.
pub fn telemetry(ck: &mut FileCheck, value: &Val<'_>) -> Option<Telemetry> {
    let t = ck.as_table(value, "[telemetry]")?;
    ck.unknown_keys(t, "in [telemetry]", &["otlp_endpoint", "service_name"]);
    let endpoint = ck
        .req_str(t, &value.span(), "in [telemetry]", "otlp_endpoint")
        .and_then(|(s, span)| http_url(ck, "otlp_endpoint", s, &span));
    let service_name = non_blank_or(
        ck,
        t,
        "service_name",
        "countersign",
        "\"service_name\" must not be empty",
    );
    Some(Telemetry {
        otlp_endpoint: endpoint?,
        service_name: service_name?,
    })
}

/// `[audit]`: `webhook` (https, or http on loopback) and its required `webhook_secret`.
pub fn audit_webhook(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<AuditWebhook> {
    let t = ck.as_table(value, "[audit]")?;
    let header = value.span();
    ck.unknown_keys(t, "in [audit]", &["webhook", "webhook_secret"]);
    let url = match ck.opt_str(t, "webhook") {
        Some((s, span)) => issuer_url(ck, "webhook", s, &span),
        None => {
            if let Some((_, span)) = ck.opt_str(t, "webhook_secret") {
                ck.err(&span, "\"webhook_secret\" needs a \"webhook\"");
            }
            return None;
        }
    };
    // Unsigned evidence proves nothing to the receiver: the secret is required.
    let secret = req_secret(ck, t, &header, "[audit]", "webhook_secret", dir);
    Some(AuditWebhook {
        url: url?,
        secret: secret?,
    })
}
