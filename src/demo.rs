//! `countersign demo`: a zero-setup tour on loopback. Starts a development token issuer, a
//! development login issuer for approvers, a demo upstream and the proxy (with a generated config
//! and policy in a temporary folder), then prints ready-to-paste curl commands with freshly
//! minted tokens, and the approval page link whenever a request is held.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;

use std::sync::Arc;

use crate::approval::{Approval, Notifier, NotifyError, NotifyEvent};
use crate::clock::SystemClock;
use crate::devidp::DevIdp;
use crate::devlogin::DevLogin;
use crate::secret::Secret;

/// The demo policy: one file, every action shown.
const DEMO_POLICY: &str = r#"# Demo policy: written by `countersign demo`.
[[rule]]
name = "health"
methods = ["GET"]
path = "/health"
action = "public"

[[rule]]
name = "no-deletes"
methods = ["DELETE"]
path_prefix = "/v1/"
action = "deny"

[[rule]]
name = "admin-needs-mfa"
path_prefix = "/v1/admin/"
action = "allow"
require = { scopes = ["admin"], acr = ["urn:mfa"], max_age = "5m" }

[[rule]]
name = "prod-deploy"
methods = ["POST"]
path = "/v1/deployments/{env}"
params = { env = "production" }
action = "approve"

[rule.approval]
approvers = ["group:deployers"]
quorum = 1
hold = "120s"
expires = "15m"
redact = ["/token"]
# An approver may "Approve for 15 min": the same deploy passes again 3 times without a vote.
grant = "15m"
grant_uses = 3
# In an emergency: `Countersign-Break-Glass: <reason>` forwards at once, reviewed afterwards.
break_glass = true
break_glass_cooldown = "1m"

[[rule]]
name = "read-deployments"
methods = ["GET"]
path_prefix = "/v1/deployments"
action = "allow"
require = { scopes = ["deploy:read"] }
"#;

/// Runs the demo until Ctrl-C.
pub fn run() -> ExitCode {
    match run_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner() -> Result<(), String> {
    let dir = tempfile_dir()?;
    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (idp, upstream) = side.block_on(async {
        let idp = DevIdp::start()
            .await
            .map_err(|e| format!("dev issuer: {e}"))?;
        let upstream = start_upstream().await?;
        Ok::<_, String>((idp, upstream))
    })?;

    let data = pick_addr(8080)?;
    let control = pick_addr(9090)?;
    let secret = format!("{:032x}", rand::random::<u128>());
    let login = DevLogin::start(
        "countersign-demo",
        Some(Secret::new(secret.clone())),
        &format!("{}/oidc/callback", public_url(control)),
    )
    .map_err(|e| format!("dev login issuer: {e}"))?;
    std::fs::write(dir.join("client-secret"), &secret).map_err(|e| e.to_string())?;
    let config_path = write_files(&dir, &idp, login.issuer(), upstream, data, control)?;
    let (config, policy) =
        crate::config::load(&config_path).map_err(|p| format!("demo config invalid:\n{p}"))?;
    let (server, shutdown) = crate::app::build(
        config,
        policy,
        Arc::new(SystemClock),
        Some(Arc::new(PrintNotifier { control })),
    )
    .map_err(|e| e.to_string())?;

    let printer_idp = idp.clone();
    let printed_path = config_path.clone();
    std::thread::spawn(move || {
        if wait_ready(control) {
            print_tour(&printer_idp, data, control, &printed_path);
        } else {
            eprintln!("countersign demo: the proxy did not become ready");
        }
    });
    // The side runtime and the login issuer stay alive while the proxy runs.
    crate::app::serve(server, shutdown);
    drop(login);
    drop(side);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Prints the approval page link when a request is held, and every outcome, to stdout.
#[derive(Debug)]
struct PrintNotifier {
    control: SocketAddr,
}

#[async_trait::async_trait]
impl Notifier for PrintNotifier {
    async fn notify(&self, a: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        match event {
            NotifyEvent::Requested if a.break_glass.is_some() => println!(
                "\n>>> BREAK-GLASS by {}: {} {}{} was forwarded at once (rule {}), reason: {}.\n>>> It stays in review until an approver acknowledges it: http://{}/approvals/{}\n",
                a.decided_by.as_deref().unwrap_or("?"),
                a.method,
                a.host,
                a.path_and_query(),
                a.rule,
                a.break_glass.as_ref().map_or("", |b| b.reason.as_str()),
                self.control,
                a.id
            ),
            NotifyEvent::Requested => println!(
                "\n>>> {} {}{} is held for approval (rule {}).\n>>> Open http://{}/approvals/{} , sign in as alice@example.com or bob@example.com, and click Approve once, Approve for 15 min, or Deny.\n",
                a.method,
                a.host,
                a.path_and_query(),
                a.rule,
                self.control,
                a.id
            ),
            NotifyEvent::Approved if crate::approval::grant::offered_by(a) => println!(
                ">>> approval {}: approved, with grant {} (the same request passes again without a vote)",
                a.id,
                crate::approval::Grant::id_for(a.id.as_str())
            ),
            other => println!(">>> approval {}: {}", a.id, other.as_str()),
        }
        Ok(())
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("countersign-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("policies")).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The preferred port on loopback if free, else any free port.
fn pick_addr(preferred: u16) -> Result<SocketAddr, String> {
    let l = TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

/// Optional Slack mode: set `SLACK_BOT_TOKEN` and `SLACK_SIGNING_SECRET` (and optionally
/// `COUNTERSIGN_DEMO_SLACK_CHANNEL`, `COUNTERSIGN_DEMO_APPROVERS`, `COUNTERSIGN_DEMO_PUBLIC_URL`).
#[derive(Debug, Clone)]
struct SlackMode {
    channel: String,
    approvers: Vec<String>,
}

fn slack_mode() -> Option<SlackMode> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    set("SLACK_BOT_TOKEN")?;
    set("SLACK_SIGNING_SECRET")?;
    let channel =
        set("COUNTERSIGN_DEMO_SLACK_CHANNEL").unwrap_or_else(|| "countersign-demo".into());
    let approvers = set("COUNTERSIGN_DEMO_APPROVERS")
        .map(|v| {
            v.split(',')
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some(SlackMode {
        channel: channel.trim_start_matches('#').to_owned(),
        approvers,
    })
}

/// Where Slack and browsers reach the control plane: `COUNTERSIGN_DEMO_PUBLIC_URL` (a tunnel to
/// the control port, for Slack mode) or the loopback address.
fn public_url(control: SocketAddr) -> String {
    std::env::var("COUNTERSIGN_DEMO_PUBLIC_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{control}"))
}

fn write_files(
    dir: &Path,
    idp: &DevIdp,
    login_issuer: &str,
    upstream: SocketAddr,
    data: SocketAddr,
    control: SocketAddr,
) -> Result<std::path::PathBuf, String> {
    let slack = slack_mode();
    let public_url = public_url(control);
    let mut deployers = vec!["alice@example.com".to_owned(), "bob@example.com".to_owned()];
    if let Some(mode) = &slack {
        deployers.extend(mode.approvers.iter().cloned());
    }
    let deployers = deployers
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let slack_section = if slack.is_some() {
        "\n[slack]\nbot_token = \"env:SLACK_BOT_TOKEN\"\nsigning_secret = \"env:SLACK_SIGNING_SECRET\"\n"
    } else {
        ""
    };
    let config = format!(
        r#"# Demo config: written by `countersign demo`.
[server]
listen = "{data}"
control_listen = "{control}"
public_url = "{public_url}"
threads = 1

[[upstream]]
name = "demo-api"
url = "http://{upstream}"

[[route]]
path_prefix = "/"
upstream = "demo-api"

[[issuer]]
issuer = "{issuer}"
audiences = ["https://api.demo.test"]
# Tokens from this issuer may also vote through the API (the demo's TOKEN_APPROVER).
approvers = true

[policy]
files = ["policies/*.toml"]
default = "deny"

[approvals]
store = "memory"
audit_log = "audit.jsonl"

[approvers.groups]
deployers = [{deployers}]

[approver_login]
issuer = "{login_issuer}"
client_id = "countersign-demo"
client_secret = "file:client-secret"
{slack_section}"#,
        issuer = idp.issuer()
    );
    let path = dir.join("countersign.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let policy = match &slack {
        Some(mode) => DEMO_POLICY.replacen(
            "quorum = 1\n",
            &format!("quorum = 1\nnotify = [\"slack:#{}\"]\n", mode.channel),
            1,
        ),
        None => DEMO_POLICY.to_owned(),
    };
    std::fs::write(dir.join("policies/demo.toml"), policy).map_err(|e| e.to_string())?;
    Ok(path)
}

/// A tiny upstream that says what it received (and what Countersign added).
async fn start_upstream() -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new().fallback(echo);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn echo(req: Request) -> impl IntoResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    axum::Json(serde_json::json!({
        "upstream": "demo-api",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "countersign_subject": header("countersign-subject"),
        "countersign_approval_id": header("countersign-approval-id"),
    }))
}

fn wait_ready(control: SocketAddr) -> bool {
    use std::io::{Read, Write};
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(control) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let req =
                format!("GET /readyz HTTP/1.1\r\nHost: {control}\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut buf).is_ok()
                && buf.starts_with("HTTP/1.1 200")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn print_tour(idp: &DevIdp, data: SocketAddr, control: SocketAddr, config: &Path) {
    let aud = "https://api.demo.test";
    let reader = idp.mint(serde_json::json!({
        "sub": "reader@example.com", "aud": aud, "scope": "deploy:read",
    }));
    let admin_weak = idp.mint(serde_json::json!({
        "sub": "alice@example.com", "aud": aud, "scope": "admin deploy:read",
        "acr": "urn:password", "auth_time": now(),
    }));
    let admin_mfa = idp.mint(serde_json::json!({
        "sub": "alice@example.com", "aud": aud, "scope": "admin deploy:read",
        "acr": "urn:mfa", "auth_time": now(),
    }));
    let deployer = idp.mint(serde_json::json!({
        "sub": "carol@example.com", "email": "carol@example.com", "aud": aud, "scope": "deploy:write",
    }));
    let approver = idp.mint(serde_json::json!({
        "sub": "alice@example.com", "email": "alice@example.com", "aud": aud,
    }));
    let base = format!("http://{data}");
    println!(
        r#"
Countersign demo is running (Ctrl-C to stop).
  proxy (data plane):    {base}
  control plane:         http://{control}   (/healthz /readyz /metrics)
  dev token issuer:      {issuer}
  demo upstream:         behind the proxy, echoes what it received

# Paste these into another shell first: freshly minted tokens (valid for an hour) that the
# commands below use.
export TOKEN_READER='{reader}'
export TOKEN_ADMIN_PASSWORD='{admin_weak}'
export TOKEN_ADMIN_MFA='{admin_mfa}'
export TOKEN_DEPLOYER='{deployer}'
export TOKEN_APPROVER='{approver}'

# 1. Allowed: a valid token with scope deploy:read reads deployments (200, upstream answers)
curl -i {base}/v1/deployments -H "Authorization: Bearer $TOKEN_READER"

# 2. Denied: the policy refuses DELETE under /v1/ (403 access_denied)
curl -i -X DELETE {base}/v1/deployments/42 -H "Authorization: Bearer $TOKEN_READER"

# 3. Step-up: /v1/admin/ needs acr urn:mfa within 5 minutes (401 insufficient_user_authentication)
curl -i {base}/v1/admin/users -H "Authorization: Bearer $TOKEN_ADMIN_PASSWORD"
#    ... and the same call with a token from an MFA login (200)
curl -i {base}/v1/admin/users -H "Authorization: Bearer $TOKEN_ADMIN_MFA"

# 4. No token at all (401 with a WWW-Authenticate challenge), and the RFC 9728 metadata
curl -i {base}/v1/deployments
curl -s {base}/.well-known/oauth-protected-resource

# 5. Approval: a production deploy is held until alice or bob approves it on the approval
#    page (the link appears below when the request is held; sign in at the dev login page).
#    The curl waits up to 2 minutes and then prints the upstream's answer.
curl -i -X POST {base}/v1/deployments/production -H "Authorization: Bearer $TOKEN_DEPLOYER" \
     -H 'Content-Type: application/json' -H 'Countersign-Reason: ship 1.4.2' -d '{{"version":"1.4.2","token":"hidden-from-approvers"}}'
#    Or answer 202 at once and fetch the result later from the status URL it returns:
curl -i -X POST {base}/v1/deployments/production -H "Authorization: Bearer $TOKEN_DEPLOYER" -H 'Prefer: respond-async' -d '{{}}'
#    Approval list: http://{control}/approvals    Grants: http://{control}/grants    Audit log: {audit}
#    countersign audit verify {audit}

# 6. Grant: approve for 15 minutes from the shell (alice, through the API); the same deploy
#    then passes at once, 3 times, with a Countersign-Grant-Id header. (On the page the button
#    is "Approve for 15 min".)
ID=$(curl -s -X POST {base}/v1/deployments/production -H "Authorization: Bearer $TOKEN_DEPLOYER" -H 'Prefer: respond-async' -d '{{"version":"1.4.3"}}' | sed -n 's/.*"approval_id":"\([^"]*\)".*/\1/p')
curl -s -X POST http://{control}/approvals/$ID/decision -H "Authorization: Bearer $TOKEN_APPROVER" -H 'Content-Type: application/json' -d '{{"decision":"approve","grant":true}}'
curl -i -X POST {base}/v1/deployments/production -H "Authorization: Bearer $TOKEN_DEPLOYER" -d '{{"version":"1.4.3"}}'
curl -s http://{control}/grants -H "Authorization: Bearer $TOKEN_APPROVER"
#    Revoke it: curl -X DELETE http://{control}/grants/GRANT_ID -H "Authorization: Bearer $TOKEN_APPROVER"

# 7. Break-glass: forwarded at once with a reason (200), announced, audited, and left in
#    review until an approver acknowledges it on its page; again within a minute is 429.
curl -i -X POST {base}/v1/deployments/production -H "Authorization: Bearer $TOKEN_DEPLOYER" -H 'Countersign-Break-Glass: site down, rolling back' -d '{{"version":"1.4.1"}}'

# 8. Why? Ask the policy engine:
countersign explain --config {config} POST {base}/v1/deployments/production --token "$TOKEN_DEPLOYER"
"#,
        issuer = idp.issuer(),
        config = config.display(),
        audit = config.with_file_name("audit.jsonl").display(),
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `countersign demo --teams-card`: prints, as one JSON document, what the Teams bot mode
/// (`[teams] app_id`) would send for a held request of the demo's `prod-deploy` rule: the
/// message activity posted to each configured conversation (the card everyone sees), and the
/// card an approver's Teams client gets when it refreshes (reason input, Approve and Deny).
/// Nothing is started and nothing is sent. Paste a card into the Adaptive Cards Designer to
/// see it.
pub fn print_teams_card() -> ExitCode {
    use crate::chat::teams_bot::cards::{self, View};
    let now = now() * 1000;
    let body = br#"{"version":"1.4.2","token":"hidden-from-approvers"}"#;
    let approval = Approval {
        id: crate::approval::ApprovalId::generate(),
        rule: "prod-deploy".into(),
        requester: crate::approval::Requester {
            iss: "http://127.0.0.1:5556".into(),
            sub: "carol@example.com".into(),
            email: Some("carol@example.com".into()),
        },
        method: "POST".into(),
        host: "127.0.0.1".into(),
        path: "/v1/deployments/production".into(),
        query: None,
        request_hash: String::new(),
        reason: Some("ship 1.4.2".into()),
        body_preview: crate::approval::body_preview(
            body,
            Some("application/json"),
            &["/token".to_owned()],
        ),
        body_len: body.len() as u64,
        body_preview_cut: false,
        body_sha256: crate::approval::body_sha256(body),
        headers: vec![crate::approval::ShownHeader {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        approvers: vec!["alice@example.com".into(), "bob@example.com".into()],
        quorum: 1,
        quorum_entries: Vec::new(),
        self_approval: false,
        approve_via: crate::policy::ApproveVia::Button,
        notify: vec![crate::policy::NotifyTarget::Teams],
        created_at: now,
        expires_at: now + 15 * 60 * 1000,
        votes: Vec::new(),
        status: crate::approval::Status::Pending,
        decided_by: None,
        decision_reason: None,
        decided_at: None,
        held: true,
        held_until: None,
        holder: None,
        execution: crate::approval::Execution::NotStarted,
        audit_pending: false,
        nudges: Default::default(),
        break_glass: None,
        grant_offer: None,
        granted: None,
    };
    let page = format!("http://127.0.0.1:9090/approvals/{}", approval.id);
    // Member ids as the Bot Connector roster gives them (made up here).
    let approvers = [
        "29:1alice-example-member-id".to_owned(),
        "29:1bob-example-member-id".to_owned(),
    ];
    let base = cards::card(&approval, &page, &approvers, View::Status);
    let view = View::Vote {
        approve: true,
        note: None,
    };
    let out = serde_json::json!({
        "posted_activity": cards::message_activity(&approval, base),
        "approver_view": cards::card(&approval, &page, &approvers, view),
    });
    let text = serde_json::to_string_pretty(&out).unwrap_or_default();
    // A closed pipe (`| head`) is the reader's choice, not a failure worth a panic.
    let mut stdout = std::io::stdout().lock();
    match std::io::Write::write_all(&mut stdout, format!("{text}\n").as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign demo: {e}");
            ExitCode::FAILURE
        }
    }
}
