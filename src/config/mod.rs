//! Config and policy files -> validated, typed configuration.
//!
//! Owns the file formats (SPEC sections 3 and 4): every problem in every file is reported at
//! once as `file:line:col: message`. Owns nothing at run time: the proxy receives a [`Config`]
//! and a compiled [`crate::policy::PolicySet`] and never sees TOML.

mod file;
#[cfg(test)]
mod fixture;
mod nudge;
mod policy_file;
mod quorum;
mod refs;
mod test_file;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::policy::{DefaultAction, HostPattern, PolicySet, RouteEntry, RouteTable};
use crate::secret::Secret;

use file::GlobAt;
use refs::Refs;
pub use test_file::{check_case_rules, load_test_file, parse_test_file, At, TestCase};
use walk::FileCheck;

/// One problem found in a config or policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File the problem is in (as the user named it / as the glob found it).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, for a person.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// All the problems found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from.
    pub path: PathBuf,
    /// `[server]`.
    pub server: Server,
    /// `[[upstream]]`, in file order.
    pub upstreams: Vec<Upstream>,
    /// `[[route]]`, in file order (first match wins).
    pub routes: Vec<Route>,
    /// `[[issuer]]`, in file order.
    pub issuers: Vec<Issuer>,
    /// `[policy]`.
    pub policy: PolicyFiles,
    /// `[approvals]` (defaults when absent).
    pub approvals: Approvals,
    /// `[approvers.groups]`: group name -> member emails.
    pub approver_groups: BTreeMap<String, Vec<String>>,
    /// Where each group is written in the config file (line, column), for the lint.
    pub approver_group_lines: BTreeMap<String, (usize, usize)>,
    /// `[slack]`.
    pub slack: Option<Slack>,
    /// `[teams]` in Workflows webhook mode (`webhook_url`).
    pub teams: Option<Teams>,
    /// `[teams]` in bot mode (`app_id`): cards with real Approve/Deny buttons.
    pub teams_bot: Option<TeamsBot>,
    /// `[approver_login]`.
    pub approver_login: Option<ApproverLogin>,
    /// `[telemetry]`: OpenTelemetry trace export (SPEC 10); `None` = no export.
    pub telemetry: Option<Telemetry>,
    /// `[audit]`: delivery of audit events to a webhook (SPEC 10); `None` = no delivery.
    pub audit_webhook: Option<AuditWebhook>,
    /// `[pagerduty]`: resolves `pagerduty:SCHEDULE_ID` approvers (SPEC 9); `None` = none.
    pub pagerduty: Option<PagerDuty>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Data-plane listener.
    pub listen: SocketAddr,
    /// TLS on the data-plane listener.
    pub tls: Option<TlsFiles>,
    /// Control-plane listener (never the data port).
    pub control_listen: SocketAddr,
    /// How Slack, Teams and approvers reach the control plane.
    pub public_url: Url,
    /// Data-plane worker threads.
    pub threads: usize,
}

/// A certificate chain and its private key, PEM files (paths already resolved).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain PEM.
    pub cert: PathBuf,
    /// Private key PEM.
    pub key: PathBuf,
}

/// `[[upstream]]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Unique name, referenced by routes.
    pub name: String,
    /// `http://` or `https://` origin (no path beyond `/`, no query).
    pub url: Url,
    /// CA bundle to pin for `https://` upstreams (path resolved).
    pub ca: Option<PathBuf>,
    /// `case_insensitive_paths = true`: the upstream routes `/Admin` like `/admin`, so route
    /// and rule paths for it match in any ASCII case (SPEC 8).
    pub case_insensitive_paths: bool,
}

/// `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Host condition; `None` = any host.
    pub host: Option<HostPattern>,
    /// Path prefix (default `/`).
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// `allow_semicolons = true`: `;` (matrix parameters) accepted in paths (SPEC 8).
    pub allow_semicolons: bool,
    /// `allow_method_override = true`: method-override headers accepted; policy judges the
    /// overridden method (SPEC 8).
    pub allow_method_override: bool,
    /// Line of the `[[route]]` header in the config file.
    pub line: usize,
}

impl Config {
    /// The compiled route table the data plane and `explain` resolve requests with.
    pub fn route_table(&self) -> RouteTable {
        RouteTable::new(
            self.routes
                .iter()
                .map(|r| RouteEntry {
                    host: r.host.clone(),
                    prefix: r.path_prefix.clone(),
                    upstream: r.upstream,
                    allow_semicolons: r.allow_semicolons,
                    allow_method_override: r.allow_method_override,
                    case_insensitive: self
                        .upstreams
                        .get(r.upstream)
                        .is_some_and(|u| u.case_insensitive_paths),
                })
                .collect(),
        )
    }

    /// The coverage lint (SPEC 8) of this config with `policy`: one [`Problem`] per gap, in
    /// file order. `check` prints them as `warning:` lines; `run` logs and counts them.
    pub fn lint(&self, policy: &PolicySet) -> Vec<Problem> {
        let table = self.route_table();
        let labels: Vec<String> = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| format!("route #{} ({}:{})", i + 1, self.path.display(), r.line))
            .collect();
        let upstream_names: Vec<String> = self.upstreams.iter().map(|u| u.name.clone()).collect();
        let mut out: Vec<Problem> = crate::policy::lint::lint(&crate::policy::lint::Input {
            routes: table.entries(),
            route_labels: &labels,
            upstream_names: &upstream_names,
            policy,
            groups: &self.approver_groups,
        })
        .into_iter()
        .map(|f| Problem {
            file: f.at.file,
            line: f.at.line,
            col: 1,
            message: f.message,
        })
        .collect();
        for (name, members) in &self.approver_groups {
            if members.is_empty() {
                let (line, col) = self
                    .approver_group_lines
                    .get(name)
                    .copied()
                    .unwrap_or((1, 1));
                out.push(Problem {
                    file: self.path.clone(),
                    line,
                    col,
                    message: format!(
                        "approver group {name:?} is empty: nobody in it can approve anything"
                    ),
                });
            }
        }
        out
    }
}

/// A JWS algorithm Countersign accepts for bearer tokens (never `none` or HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// The JOSE name (`"RS256"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE name exactly (case-sensitive, as RFC 7515 requires).
    pub fn from_jose(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            _ => return None,
        })
    }

    /// The default allow-list: RS256, PS256, ES256, EdDSA.
    pub fn defaults() -> Vec<Algorithm> {
        vec![
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ]
    }
}

/// `[[issuer]]`.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// `iss` value, compared exactly.
    pub issuer: String,
    /// Accepted `aud` values (a token must name at least one).
    pub audiences: Vec<String>,
    /// JWKS location; `None` = OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<Url>,
    /// Allowed algorithms (default [`Algorithm::defaults`]).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on exp/nbf/iat (default 60 s).
    pub leeway: Duration,
    /// Required `typ` header (RFC 9068 `at+jwt`), compared case-insensitively, with or without
    /// the `application/` prefix.
    pub require_typ: Option<String>,
    /// JWKS refetched at least this often (default 5 m).
    pub refresh: Duration,
    /// `identity_claim` (default `email`): the claim that names the person behind a token
    /// (Entra: `preferred_username` or `upn`). SPEC 8.
    pub identity_claim: String,
    /// `approvers = true`: this issuer's bearer tokens may cast API votes (default false; the
    /// approver login always identifies). SPEC 8.
    pub approvers: bool,
}

/// `[policy]`.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    /// Glob patterns, already resolved against the config file's folder.
    pub files: Vec<String>,
    /// What happens when no rule matches.
    pub default: DefaultAction,
}

/// Where approval state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// In this process only.
    Memory,
    /// A Redis server (`redis://` or `rediss://`).
    Redis(Url),
    /// The master a set of Redis Sentinels names (`redis+sentinel://`).
    Sentinel(crate::approval::store::redis::SentinelUrl),
}

impl StoreUrl {
    /// Whether replicas share it (Redis, directly or through Sentinel).
    pub fn is_shared(&self) -> bool {
        !matches!(self, Self::Memory)
    }
}

/// `[approvals]`.
#[derive(Debug, Clone)]
pub struct Approvals {
    /// Store for approval state.
    pub store: StoreUrl,
    /// Audit log path (resolved), default `audit.jsonl` beside the config.
    pub audit_log: PathBuf,
    /// P-256 PKCS#8 PEM key that signs approval tokens.
    pub signing_key: Option<Secret>,
    /// Password for a Redis store (`store_password = "env:..."` or `"file:..."`), kept out of
    /// the URL so it never shows up where the URL is printed. Overrides a password in the URL.
    pub store_password: Option<Secret>,
    /// PEM CA certificates a `rediss://` store's certificate is checked against instead of the
    /// web PKI roots (`store_ca = "redis-ca.pem"`, resolved beside the config).
    pub store_ca: Option<PathBuf>,
    /// `max_pending_per_requester` (default 20): more pending approvals from one requester are
    /// refused with 429 `too_many_pending` (SPEC 8).
    pub max_pending_per_requester: u32,
    /// `recheck` (default 10 s, at least 100 ms): a held caller that no change notification
    /// woke re-reads its approval after about this long (jittered +-25%): the bound on how
    /// late a decision whose notification was lost reaches its holder.
    pub recheck: std::time::Duration,
}

/// `[slack]`.
#[derive(Debug, Clone)]
pub struct Slack {
    /// Bot token (xoxb-...).
    pub bot_token: Secret,
    /// Signing secret for inbound interaction callbacks.
    pub signing_secret: Secret,
    /// Web API base URL (default `https://slack.com/api`).
    pub api_url: Url,
    /// `team_id = "T..."`: only clicks from this workspace count (SPEC 8); `None` accepts any
    /// workspace whose requests carry the signing secret.
    pub team_id: Option<String>,
}

/// `[teams]`.
#[derive(Debug, Clone)]
pub struct Teams {
    /// Workflows webhook URL (a secret: it is a bearer capability).
    pub webhook_url: Secret,
}

/// `[teams]` in bot mode: a Bot Framework bot (Azure Bot resource) posts Adaptive Cards with
/// `Action.Execute` Approve/Deny buttons and receives the clicks on `POST /teams/messages`.
#[derive(Debug, Clone)]
pub struct TeamsBot {
    /// Microsoft App ID of the bot's app registration (a GUID): the client id of outbound
    /// calls and the audience inbound Bot Framework tokens must carry.
    pub app_id: String,
    /// Client secret of that app registration (`env:` / `file:` only).
    pub app_password: Secret,
    /// Microsoft Entra tenant id (a GUID, lowercase): the bot's tenant. Tokens are requested
    /// from it, and activities from any other tenant are refused.
    pub tenant_id: String,
    /// Where approval cards for `notify = ["teams"]` are posted, in file order.
    pub conversations: Vec<TeamsConversation>,
    /// Bot Framework OpenID metadata (issuer and JWKS of inbound tokens). Default
    /// `https://login.botframework.com/v1/.well-known/openidconfiguration`.
    pub openid_metadata_url: Url,
    /// Microsoft identity platform token endpoint for the client-credentials grant. Default
    /// `https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token`.
    pub token_url: Url,
}

/// A Teams conversation (channel or chat) the bot posts to: a conversation reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsConversation {
    /// The Bot Connector endpoint for the conversation's region, as Teams sent it in the
    /// activity's `serviceUrl` (e.g. `https://smba.trafficmanager.net/emea/`).
    pub service_url: Url,
    /// Channel id (`19:...@thread.tacv2`) or chat id (`19:...@thread.v2`, `a:...`).
    pub conversation_id: String,
}

/// `[approver_login]`.
#[derive(Debug, Clone)]
pub struct ApproverLogin {
    /// OIDC issuer for approver login.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: Option<Secret>,
}

/// `[telemetry]`.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// OTLP/HTTP collector base URL (`http://collector:4318`); traces go to `{url}/v1/traces`.
    pub otlp_endpoint: Url,
    /// `service.name` resource attribute (default `countersign`).
    pub service_name: String,
}

/// `[audit] webhook` and `webhook_secret`.
#[derive(Debug, Clone)]
pub struct AuditWebhook {
    /// Where every audit event is POSTed as a CloudEvent.
    pub url: Url,
    /// HMAC-SHA256 key of the `Countersign-Signature` header.
    pub secret: Secret,
}

/// `[pagerduty]`: PagerDuty's REST API v2, for on-call approvers.
#[derive(Debug, Clone)]
pub struct PagerDuty {
    /// REST API key (`Authorization: Token token=...`).
    pub api_token: Secret,
    /// API base URL (default `https://api.pagerduty.com`).
    pub api_url: Url,
    /// How long a schedule's on-call answer is reused (default 1 min; zero = not cached).
    pub cache: Duration,
}

/// Loads and validates a config file and every policy file it names.
///
/// Returns every problem found (syntax, unknown keys, bad values, dangling references, secrets
/// that cannot be read, policy file problems), each with `file:line:col`: the config file's
/// problems first, then each policy file's in sorted path order, each file's sorted by position.
pub fn load(path: &Path) -> Result<(Config, PolicySet), Problems> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(Problems(vec![whole_file(
                path,
                format!("cannot read config file: {e}"),
            )]))
        }
    };
    let mut ck = FileCheck::new(path, &text);
    let (doc, errors) = toml::de::DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        // A document that did not parse cannot be trusted for anything else.
        syntax_problems(&mut ck, &errors);
        return Err(Problems(ck.into_problems()));
    }
    let parsed = file::parse(&mut ck, doc.get_ref(), path);
    let files = expand_globs(&mut ck, &parsed.globs);
    let mut problems = ck.into_problems();
    let refs = Refs {
        groups: &parsed.groups,
        slack: parsed.present[0],
        teams: parsed.present[1],
        login: parsed.present[2],
        pagerduty: parsed.pagerduty,
    };
    let default = parsed
        .config
        .as_ref()
        .map_or(DefaultAction::Allow, |c| c.policy.default);
    let policy = policies(&files, refs, default, &mut problems);
    match parsed.config {
        Some(config) if problems.is_empty() => Ok((config, policy)),
        _ => Err(Problems(problems)),
    }
}

/// Loads only the policy files named by `config.policy` (for hot reload), checking their
/// references against `config`. A glob that matches nothing is reported at the config file's
/// first line, since the config's positions are no longer known.
pub fn load_policies(config: &Config) -> Result<PolicySet, Problems> {
    let globs: Vec<GlobAt> = config
        .policy
        .files
        .iter()
        .map(|g| GlobAt {
            pattern: g.clone(),
            span: Some(0..0),
        })
        .collect();
    let mut ck = FileCheck::new(&config.path, "");
    let files = expand_globs(&mut ck, &globs);
    let mut problems = ck.into_problems();
    let policy = policies(
        &files,
        Refs::of(config),
        config.policy.default,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(Problems(problems))
    }
}

/// Parses every policy file in order, appending problems.
fn policies(
    files: &[PathBuf],
    refs: Refs<'_>,
    default: DefaultAction,
    problems: &mut Vec<Problem>,
) -> PolicySet {
    let mut names = policy_file::Names::new();
    let mut rules = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let (mut r, p) = policy_file::parse_text(file, &text, refs, &mut names);
                rules.append(&mut r);
                problems.extend(p);
            }
            Err(e) => problems.push(whole_file(file, format!("cannot read policy file: {e}"))),
        }
    }
    PolicySet { rules, default }
}

/// Expands every glob, reporting those that match nothing (except the implicit default) and
/// returning all matched files sorted and without duplicates.
fn expand_globs(ck: &mut FileCheck, globs: &[GlobAt]) -> Vec<PathBuf> {
    let mut files = BTreeSet::new();
    for g in globs {
        let at = g.span.clone().unwrap_or(0..0);
        let paths = match glob::glob(&g.pattern) {
            Ok(paths) => paths,
            Err(e) => {
                ck.err(&at, format!("invalid glob {:?}: {e}", g.pattern));
                continue;
            }
        };
        let mut matched = false;
        for entry in paths {
            match entry {
                Ok(p) if p.is_file() => {
                    matched = true;
                    files.insert(p);
                }
                Ok(_) => {}
                Err(e) => ck.err(
                    &at,
                    format!("cannot read {}: {}", e.path().display(), e.error()),
                ),
            }
        }
        if !matched && g.span.is_some() {
            ck.err(&at, format!("policy glob {:?} matches no file", g.pattern));
        }
    }
    files.into_iter().collect()
}

/// A problem about a whole file (reported at 1:1).
fn whole_file(path: &Path, message: String) -> Problem {
    Problem {
        file: path.to_path_buf(),
        line: 1,
        col: 1,
        message,
    }
}

/// Records TOML syntax errors.
pub(crate) fn syntax_problems(ck: &mut FileCheck, errors: &[toml::de::Error]) {
    for e in errors {
        let span = e.span().unwrap_or(0..0);
        ck.err(&span, format!("TOML syntax error: {}", e.message()));
    }
}

/// Parses a duration string such as `"500ms"`, `"55s"`, `"15m"`, `"1h"`, or a sum like
/// `"1h30m"`. Units: `ms`, `s`, `m`, `h`. Bare numbers, signs, fractions and spaces are refused
/// so that a value never silently means something else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration; write e.g. \"55s\", \"15m\" or \"1h30m\"".into());
    }
    if s.starts_with('-') {
        return Err(format!("duration {s:?} must not be negative"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}; write e.g. \"55s\", \"15m\" or \"1h30m\""
            ));
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("duration {s:?} is too large"))?;
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" if tail.is_empty() && rest.len() == s.len() => {
                return Err(format!("duration {s:?} needs a unit; write e.g. \"{s}s\""))
            }
            "" => {
                return Err(format!(
                    "invalid duration {s:?}; write e.g. \"55s\", \"15m\" or \"1h30m\""
                ))
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {s:?}; use ms, s, m or h"
                ))
            }
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
        rest = tail;
    }
    Ok(total)
}
