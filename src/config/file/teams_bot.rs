//! `[teams]` in bot mode: a section with `app_id` (or any other bot key) is a Bot Framework bot;
//! otherwise it is the Workflows webhook of [`super::teams`]. The two modes do not mix.

use std::path::Path;

use toml::de::DeTable;
use url::Url;

use super::super::walk::{FileCheck, Val};
use super::super::{TeamsBot, TeamsConversation};
use super::{issuer_url, req_secret};

/// Keys of `[teams]` in bot mode.
const BOT_KEYS: &[&str] = &[
    "app_id",
    "app_password",
    "tenant_id",
    "conversations",
    "openid_metadata_url",
    "token_url",
];

/// The Bot Framework's OpenID metadata (SPEC: overridable for tests).
pub(crate) const BOT_FRAMEWORK_OPENID_METADATA: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";

/// Whether `[teams]` configures a bot (any bot key present) rather than a webhook.
pub(crate) fn is_bot_mode(value: &Val<'_>) -> bool {
    match value.get_ref() {
        toml::de::DeValue::Table(t) => BOT_KEYS.iter().any(|k| t.contains_key(*k)),
        _ => false,
    }
}

/// `[teams]` with `app_id`, `app_password`, `tenant_id`, `conversations` and the two URLs.
pub(crate) fn teams_bot(ck: &mut FileCheck, value: &Val<'_>, dir: &Path) -> Option<TeamsBot> {
    let t = ck.as_table(value, "[teams]")?;
    let header = value.span();
    if let Some(key) = t.keys().find(|k| *k.get_ref() == "webhook_url") {
        ck.err(
            &key.span(),
            "\"webhook_url\" cannot be combined with \"app_id\": [teams] is either a Workflows webhook or a bot",
        );
    }
    let others: Vec<&str> = BOT_KEYS.iter().copied().chain(["webhook_url"]).collect();
    ck.unknown_keys(t, "in [teams]", &others);
    let app_id = guid(ck, t, &header, "app_id");
    let app_password = req_secret(ck, t, &header, "[teams]", "app_password", dir);
    let tenant_id = guid(ck, t, &header, "tenant_id");
    let conversations = conversations(ck, t);
    let openid_metadata_url = match ck.opt_str(t, "openid_metadata_url") {
        Some((s, span)) => issuer_url(ck, "openid_metadata_url", s, &span),
        None => Url::parse(BOT_FRAMEWORK_OPENID_METADATA).ok(),
    };
    let token_url = match ck.opt_str(t, "token_url") {
        Some((s, span)) => issuer_url(ck, "token_url", s, &span),
        None => tenant_id.as_ref().and_then(|tenant| {
            Url::parse(&format!(
                "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
            ))
            .ok()
        }),
    };
    Some(TeamsBot {
        app_id: app_id?,
        app_password: app_password?,
        tenant_id: tenant_id?,
        conversations,
        openid_metadata_url: openid_metadata_url?,
        token_url: token_url?,
    })
}

/// A required GUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), lowercased.
fn guid(
    ck: &mut FileCheck,
    t: &DeTable<'_>,
    header: &std::ops::Range<usize>,
    key: &str,
) -> Option<String> {
    let (s, span) = ck.req_str(t, header, "in [teams]", key)?;
    let groups: Vec<&str> = s.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    if shape && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
        Some(s.to_ascii_lowercase())
    } else {
        ck.err(
            &span,
            format!("{key:?} must be a GUID like \"00000000-0000-0000-0000-000000000000\" (Azure portal: the bot's Microsoft App ID / the Directory (tenant) ID), not {s:?}"),
        );
        None
    }
}

/// `conversations = [{ service_url = "...", id = "19:..." }, ...]`.
fn conversations(ck: &mut FileCheck, t: &DeTable<'_>) -> Vec<TeamsConversation> {
    let Some(value) = t.get("conversations") else {
        return Vec::new();
    };
    let Some(list) = ck.as_array(value, "\"conversations\"") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in list.iter() {
        let Some(c) = ck.as_table(item, "each item of \"conversations\"") else {
            continue;
        };
        let span = item.span();
        ck.unknown_keys(c, "in a [teams] conversation", &["service_url", "id"]);
        let service_url = ck
            .req_str(c, &span, "in a [teams] conversation", "service_url")
            .and_then(|(s, span)| issuer_url(ck, "service_url", s, &span));
        let id = ck
            .req_str(c, &span, "in a [teams] conversation", "id")
            .and_then(|(s, span)| {
                let ok = !s.trim().is_empty()
                    && s.len() <= 512
                    && !s.chars().any(|c| c.is_whitespace() || c.is_control());
                if !ok {
                    ck.err(
                        &span,
                        format!("\"id\" is not a Teams conversation id: {s:?}"),
                    );
                }
                ok.then(|| s.to_owned())
            });
        if let (Some(service_url), Some(conversation_id)) = (service_url, id) {
            out.push(TeamsConversation {
                service_url,
                conversation_id,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::{folder, load_folder, minimal_with};
    use crate::config::Config;
    use crate::policy::NotifyTarget;

    const POLICY: &str = "[[rule]]\nname = \"r\"\naction = \"approve\"\n[rule.approval]\napprovers = [\"a@example.com\"]\nnotify = [\"teams\"]\n";
    const APP: &str = "8d0b5d0e-1a2b-4c3d-9e8f-0123456789ab";
    const TENANT: &str = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";

    /// A folder with the minimal config + `teams` (from line 14), the policy and the app
    /// password.
    fn folder_with(teams: &str) -> tempfile::TempDir {
        folder(&[
            ("policies/p.toml", POLICY),
            ("app-password", "p4ss\n"),
            ("countersign.toml", &minimal_with(teams)),
        ])
    }

    fn load_with(teams: &str) -> Result<Config, Vec<String>> {
        load_folder(&folder_with(teams)).map(|(c, _)| c)
    }

    #[test]
    fn bot_mode_loads_with_defaults_and_conversations() {
        let config = load_with(&format!(
            "[teams]\napp_id = \"{APP}\"\napp_password = \"file:app-password\"\ntenant_id = \"{TENANT}\"\nconversations = [{{ service_url = \"https://smba.trafficmanager.net/emea/\", id = \"19:abc@thread.tacv2\" }}]\n"
        ))
        .unwrap();
        assert!(config.teams.is_none());
        let bot = config.teams_bot.unwrap();
        assert_eq!(bot.app_id, APP);
        assert_eq!(bot.app_password.expose(), "p4ss");
        assert_eq!(bot.tenant_id, TENANT.to_ascii_lowercase());
        assert_eq!(
            bot.token_url.as_str(),
            format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                TENANT.to_ascii_lowercase()
            )
        );
        assert_eq!(
            bot.openid_metadata_url.as_str(),
            "https://login.botframework.com/v1/.well-known/openidconfiguration"
        );
        assert_eq!(bot.conversations.len(), 1);
        assert_eq!(bot.conversations[0].conversation_id, "19:abc@thread.tacv2");
        assert!(!format!("{:?}", bot.app_password).contains("p4ss"));
    }

    #[test]
    fn notify_teams_is_accepted_on_policy_reload_in_bot_mode() {
        let dir = folder_with(&format!(
            "[teams]\napp_id = \"{APP}\"\napp_password = \"file:app-password\"\ntenant_id = \"{TENANT}\"\n"
        ));
        let (config, _) = load_folder(&dir).unwrap();
        // Hot reload checks the policy against the loaded config, not the file.
        let policy = crate::config::load_policies(&config).unwrap();
        let spec = policy.rules[0].approval.as_ref().unwrap();
        assert_eq!(spec.notify, vec![NotifyTarget::Teams]);
    }

    #[test]
    fn every_mistake_is_reported_at_its_place() {
        let problems = load_with(&format!(
            "[teams]\napp_id = \"my-bot\"\napp_password = \"inline\"\ntenant_id = \"{TENANT}\"\nwebhook_url = \"env:X\"\ntoken_url = \"http://login.example.com/t\"\nconversations = [{{ service_url = \"https://smba.trafficmanager.net/emea/\", id = \"19:x\", channel = \"general\" }}, {{ id = \"19:y\" }}]\napp_secret = \"x\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "countersign.toml:15:10: \"app_id\" must be a GUID like \"00000000-0000-0000-0000-000000000000\" (Azure portal: the bot's Microsoft App ID / the Directory (tenant) ID), not \"my-bot\"",
                "countersign.toml:16:16: \"app_password\": secrets must be given as env:NAME or file:PATH, never inline",
                "countersign.toml:18:1: \"webhook_url\" cannot be combined with \"app_id\": [teams] is either a Workflows webhook or a bot",
                "countersign.toml:19:13: \"token_url\" must use https:// (http:// is only accepted for 127.0.0.1 or localhost), not \"http://login.example.com/t\"",
                "countersign.toml:20:88: unknown key \"channel\" in a [teams] conversation",
                "countersign.toml:20:111: missing required key \"service_url\" in a [teams] conversation",
                "countersign.toml:21:1: unknown key \"app_secret\" in [teams]",
            ]
        );
    }

    #[test]
    fn the_webhook_mode_is_unchanged() {
        std::env::set_var("COUNTERSIGN_TEAMS_BOT_TEST_HOOK", "https://hook.example/x");
        let config =
            load_with("[teams]\nwebhook_url = \"env:COUNTERSIGN_TEAMS_BOT_TEST_HOOK\"\n").unwrap();
        assert!(config.teams_bot.is_none());
        assert_eq!(
            config.teams.unwrap().webhook_url.expose(),
            "https://hook.example/x"
        );
    }
}
