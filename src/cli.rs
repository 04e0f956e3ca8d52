//! Command-line interface (SPEC section 2). Parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::{Parser, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::logging::{self, LogFormat};

/// Countersign: an authenticating reverse proxy that holds sensitive requests for approval.
#[derive(Debug, Parser)]
#[command(name = "countersign", version, about)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(long, default_value = "countersign.toml")]
        config: PathBuf,
    },
    /// Zero-setup tour on loopback: proxy, demo upstream and a development token issuer.
    Demo {
        /// Print the Teams bot card JSON a held request would send, and exit.
        #[arg(long)]
        teams_card: bool,
    },
    /// Validate the config and every policy file; print all problems as file:line:col, and
    /// coverage-lint warnings as `warning:` lines.
    Check {
        /// Config file.
        #[arg(long, default_value = "countersign.toml")]
        config: PathBuf,
        /// Exit 1 when there is any warning, too.
        #[arg(long)]
        strict: bool,
    },
    /// Show which route and rule match a request and what would happen, and why.
    Explain {
        /// Config file.
        #[arg(long, default_value = "countersign.toml")]
        config: PathBuf,
        /// HTTP method.
        method: String,
        /// Full URL, e.g. https://deploy.example.com/v1/deployments/production.
        url: String,
        /// A JWT whose claims to use (its signature is NOT checked by explain).
        #[arg(long, conflicts_with = "claims")]
        token: Option<String>,
        /// Claims as a JSON object.
        #[arg(long)]
        claims: Option<String>,
    },
    /// Run policy test files: each [[case]] (method, url, claims, expect, rule) is judged as
    /// `explain` would; one line per case, then `N passed, M failed`; exit 1 on a failure.
    Test {
        /// Config file.
        #[arg(long, default_value = "countersign.toml")]
        config: PathBuf,
        /// Test files (TOML with [[case]] tables).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Audit log tools.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `countersign audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; exit 1 naming the first bad line.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
    },
    /// Print every event as a CloudEvents 1.0 JSON line (the webhook's body), for backfill.
    Export {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// Only events at or after this: an RFC 3339 time or a duration before now (`24h`).
        #[arg(long)]
        since: Option<String>,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Demo { teams_card: true } => crate::demo::print_teams_card(),
        Command::Demo { teams_card: false } => crate::demo::run(),
        Command::Check { config, strict } => check(&config, strict),
        Command::Explain {
            config,
            method,
            url,
            token,
            claims,
        } => explain(&config, &method, &url, token.as_deref(), claims.as_deref()),
        Command::Test { config, files } => crate::policytest::main(&config, &files),
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => crate::audit::verify_cli(&file),
        Command::Audit {
            command: AuditCommand::Export { file, since },
        } => crate::audit::webhook::export_cli(&file, since.as_deref()),
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let (config, policy) = match crate::config::load(path) {
        Ok(v) => v,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!("countersign: {} problem(s); not starting", problems.0.len());
            return ExitCode::FAILURE;
        }
    };
    match crate::app::run(config, policy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path, strict: bool) -> ExitCode {
    match crate::config::load(path) {
        Ok((config, policy)) => {
            let warnings = config.lint(&policy);
            for w in &warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: ok ({} upstream(s), {} route(s), {} issuer(s), {} rule(s), {} warning(s))",
                path.display(),
                config.upstreams.len(),
                config.routes.len(),
                config.issuers.len(),
                policy.rules.len(),
                warnings.len()
            );
            if strict && !warnings.is_empty() {
                println!(
                    "countersign: {} warning(s) and --strict: failing",
                    warnings.len()
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print!("{problems}");
            ExitCode::FAILURE
        }
    }
}

fn explain(
    path: &std::path::Path,
    method: &str,
    url: &str,
    token: Option<&str>,
    claims: Option<&str>,
) -> ExitCode {
    let (config, policy) = match crate::config::load(path) {
        Ok(v) => v,
        Err(problems) => {
            eprint!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let claims = match (token, claims) {
        (Some(t), _) => match unverified_claims(t) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("countersign: --token: {e}");
                return ExitCode::FAILURE;
            }
        },
        (None, Some(c)) => match serde_json::from_str::<serde_json::Value>(c) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            Ok(_) => {
                eprintln!("countersign: --claims must be a JSON object");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("countersign: --claims is not JSON: {e}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => None,
    };
    let now = SystemClock.unix();
    let principal = match claims.map(|map| crate::explain::caller_from_claims(&config, map, now)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("countersign: {e}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    if token.is_some() {
        println!("note: the token's signature and expiry are not checked by explain");
    }
    match crate::explain::explain(&config, &policy, method, url, principal.as_ref(), now)
        .map(|r| r.text)
    {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The payload of a compact JWS, without verifying anything.
fn unverified_claims(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("not a JWT (expected header.payload.signature)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "payload is not base64url".to_owned())?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err("payload is not a JSON object".to_owned()),
    }
}
