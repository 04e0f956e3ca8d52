//! Config and policy files -> validated, typed configuration.
//!
//! Owns the file formats (SPEC sections 3 and 4): every problem in every file is reported at
//! once as `file:line:col: message`. Owns nothing at run time: the proxy receives a [`Config`]
//! and a compiled [`crate::policy::PolicySet`] and never sees TOML.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::policy::{DefaultAction, HostPattern, PolicySet};
use crate::secret::Secret;

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
    /// `[slack]`.
    pub slack: Option<Slack>,
    /// `[teams]`.
    pub teams: Option<Teams>,
    /// `[approver_login]`.
    pub approver_login: Option<ApproverLogin>,
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
}

/// `[teams]`.
#[derive(Debug, Clone)]
pub struct Teams {
    /// Workflows webhook URL (a secret: it is a bearer capability).
    pub webhook_url: Secret,
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

/// Loads and validates a config file and every policy file it names.
///
/// Returns every problem found (syntax, unknown keys, bad values, dangling references, secrets
/// that cannot be read, policy file problems), each with `file:line:col`.
pub fn load(path: &Path) -> Result<(Config, PolicySet), Problems> {
    let _ = path;
    todo!("config::load")
}

/// Loads only the policy files named by `config.policy` (for hot reload), validating references
/// to approver groups, chat and login settings against `config`.
pub fn load_policies(config: &Config) -> Result<PolicySet, Problems> {
    let _ = config;
    todo!("config::load_policies")
}

/// Parses a duration string such as `"500ms"`, `"55s"`, `"15m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let _ = s;
    todo!("config::parse_duration")
}
