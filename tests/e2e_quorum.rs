//! Quorum across groups end to end (SPEC 9, issue 11 item 1), through the real `countersign`
//! binary: `quorum = { "group:dba" = 1, "group:security" = 1 }` needs one approver from each
//! group at once, one person counts toward one group only, the members are fixed when the
//! request is created, and the JSON API, the approval page, `check` and `explain` show it.
//!
//! Approvers vote with bearer tokens from a local issuer (`POST /approvals/{id}/decision`);
//! the page test signs in through the development login issuer, as `countersign demo` does.

mod common;

use std::time::{Duration, Instant};

use common::{basic_config, TestDir};
use common::{countersign, free_port, http_client, json_body, EchoUpstream, LocalIssuer, Proxy};
use countersign::devlogin::DevLogin;
use countersign::secret::Secret;
use serde_json::{json, Value};

/// Audience of every token.
const AUD: &str = "https://db.example.com";

/// dba and security share alice; `dba_next` is what the dba entry becomes after a reload.
const GROUPS: &str = r#"
[approvers.groups]
dba = ["dave@example.com", "alice@example.com"]
security = ["sam@example.com", "alice@example.com"]
dba_next = ["nina@example.com"]
"#;

/// The rule under test, its dba entry naming `dba_group`. No `approvers`: the quorum's keys
/// are the approvers.
fn policy(dba_group: &str) -> String {
    format!(
        r#"
[[rule]]
name = "db-change"
path_prefix = "/db"
action = "approve"
[rule.approval]
quorum = {{ "group:{dba_group}" = 1, "group:security" = 1 }}
hold = "30s"
expires = "2m"
"#
    )
}

/// One proxy with the quorum rule, a local issuer for API tokens and the development login
/// issuer for the approval page.
struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
    login: DevLogin,
}

impl Env {
    async fn start() -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        let control = format!("127.0.0.1:{}", free_port());
        let login = DevLogin::start(
            "countersign",
            Some(Secret::new("login-secret")),
            &format!("http://{control}/oidc/callback"),
        )
        .expect("development login issuer");
        dir.write("login-secret", "login-secret\n");
        dir.write("policies/quorum.toml", policy("dba"));
        let config = format!(
            "{}\n[approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n{GROUPS}\n\
             [approver_login]\nissuer = \"{}\"\nclient_id = \"countersign\"\n\
             client_secret = \"file:login-secret\"\n",
            basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
            login.issuer()
        );
        let mut proxy =
            Proxy::start_with_control(&dir, "countersign.toml", &config, &control).await;
        proxy.wait_ready().await;
        Env {
            dir,
            issuer,
            echo,
            proxy,
            login,
        }
    }

    /// A token for `name@example.com`.
    fn person(&self, name: &str) -> String {
        self.issuer
            .token(name, AUD, json!({ "email": format!("{name}@example.com") }))
    }

    fn control(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.control_url())
    }

    /// Sends `POST /db/{what}` as a service in the background; it is held until decided.
    fn send(&self, what: &str) -> tokio::task::JoinHandle<(u16, String)> {
        let token = self.issuer.token(
            "svc-migrator",
            AUD,
            json!({ "email": "svc-migrator@example.com" }),
        );
        let req = http_client()
            .post(format!("{}/db/{what}", self.proxy.data_url()))
            .timeout(Duration::from_secs(45))
            .bearer_auth(token)
            .body(format!("{{\"migration\":\"{what}\"}}"));
        tokio::spawn(async move {
            let resp = req.send().await.expect("data-plane request");
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("body"))
        })
    }

    /// Waits for a pending approval of `POST /db/{what}` visible to `viewer`; returns its id.
    async fn pending(&self, viewer: &str, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let resp = http_client()
                .get(self.control("/approvals"))
                .bearer_auth(self.person(viewer))
                .header("accept", "application/json")
                .send()
                .await
                .expect("GET /approvals");
            let list = json_body(resp).await;
            let found = list["approvals"].as_array().and_then(|all| {
                all.iter()
                    .find(|a| a["status"] == "pending" && a["path"] == format!("/db/{what}"))
            });
            if let Some(a) = found {
                return a["approval_id"].as_str().expect("approval_id").to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no pending approval of /db/{what} for {viewer}: {list}\n{}",
                self.proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `name` votes `decision` on `id` through the API; returns the status and JSON body.
    async fn vote(&self, id: &str, name: &str, decision: &str) -> (u16, Value) {
        let resp = http_client()
            .post(self.control(&format!("/approvals/{id}/decision")))
            .bearer_auth(self.person(name))
            .json(&json!({ "decision": decision }))
            .send()
            .await
            .expect("POST decision");
        let status = resp.status().as_u16();
        (status, json_body(resp).await)
    }

    /// The API view of `id` as `viewer`.
    async fn view(&self, id: &str, viewer: &str) -> Value {
        let resp = http_client()
            .get(self.control(&format!("/approvals/{id}")))
            .bearer_auth(self.person(viewer))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET approval");
        assert_eq!(resp.status(), 200);
        json_body(resp).await
    }

    /// Upstream calls after giving any stray execution a moment to happen.
    async fn settled_upstream_count(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.echo.count()
    }
}

/// `(entry, have, need, by)` of every quorum entry of an API view, sorted by entry.
fn entries(view: &Value) -> Vec<(String, u64, u64, Vec<String>)> {
    let mut out: Vec<_> = view["quorum_entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no quorum_entries in {view}"))
        .iter()
        .map(|e| {
            let by = e["by"].as_array().expect("by").iter();
            (
                e["entry"].as_str().expect("entry").to_owned(),
                e["have"].as_u64().expect("have"),
                e["need"].as_u64().expect("need"),
                by.map(|b| b.as_str().expect("email").to_owned()).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

fn entry(name: &str, have: u64, need: u64, by: &[&str]) -> (String, u64, u64, Vec<String>) {
    let by = by.iter().map(|b| format!("{b}@example.com")).collect();
    (format!("group:{name}"), have, need, by)
}

#[tokio::test]
async fn one_approver_per_group_releases_the_request_exactly_once() {
    let env = Env::start().await;
    let held = env.send("add-index");
    let id = env.pending("dave", "add-index").await;

    let (status, after) = env.vote(&id, "dave", "approve").await;
    assert_eq!(status, 200, "{after}");
    let v = env.view(&id, "sam").await;
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(
        entries(&v),
        [entry("dba", 1, 1, &["dave"]), entry("security", 0, 1, &[])]
    );
    assert_eq!(v["quorum"], 2, "the numeric field stays: the total needed");
    assert_eq!(env.settled_upstream_count().await, 0);

    let (status, after) = env.vote(&id, "sam", "approve").await;
    assert_eq!(status, 200, "{after}");
    let (code, body) = held.await.expect("held request");
    assert_eq!(code, 200, "{body}");
    assert_eq!(env.settled_upstream_count().await, 1);
    let v = env.view(&id, "dave").await;
    assert_eq!(v["status"], "approved");
    assert_eq!(
        entries(&v),
        [
            entry("dba", 1, 1, &["dave"]),
            entry("security", 1, 1, &["sam"])
        ]
    );

    // The audit log records who could fill which entry, and the progress at each vote.
    let log = env.dir.read("audit.jsonl");
    let line = |event: &str, needle: &str| {
        log.lines()
            .any(|l| l.contains(&id) && l.contains(event) && l.contains(needle))
    };
    assert!(
        line(
            "approval.requested",
            "group:dba=1 (dave@example.com,alice@example.com); group:security=1 (sam@example.com,alice@example.com)"
        ),
        "{log}"
    );
    assert!(line("vote.cast", "dba 1/1, security 0/1"), "{log}");
    assert!(line("vote.cast", "dba 1/1, security 1/1"), "{log}");
}

#[tokio::test]
async fn one_person_in_both_groups_never_releases_it_alone() {
    let env = Env::start().await;
    let held = env.send("drop-table");
    let id = env.pending("alice", "drop-table").await;

    let (status, after) = env.vote(&id, "alice", "approve").await;
    assert_eq!(status, 200, "{after}");
    let (status, again) = env.vote(&id, "alice", "approve").await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("already_voted"))
    );
    assert_eq!(env.settled_upstream_count().await, 0);
    let v = env.view(&id, "alice").await;
    assert_eq!(v["status"], "pending", "{v}");
    let progress = entries(&v);
    let filled: u64 = progress.iter().map(|e| e.1).sum();
    assert_eq!(filled, 1, "alice filled two entries: {progress:?}");

    // One deny still denies.
    let (status, after) = env.vote(&id, "sam", "deny").await;
    assert_eq!(status, 200, "{after}");
    let (code, body) = held.await.expect("held request");
    assert_eq!(code, 403, "{body}");
    assert_eq!(env.settled_upstream_count().await, 0);
}

/// Lines the proxy logged for a finished policy reload.
fn reloads(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("policy reloaded"))
        .count()
}

#[tokio::test]
async fn members_are_fixed_when_the_request_is_created() {
    let env = Env::start().await;
    let held = env.send("before");
    let before = env.pending("dave", "before").await;

    // The dba entry now names another group: requests created from now on use it.
    let seen = reloads(&env.proxy.stderr());
    env.dir.write("policies/quorum.toml", policy("dba_next"));
    env.proxy.send_signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&env.proxy.stderr()) <= seen {
        assert!(
            Instant::now() < deadline,
            "no reload:\n{}",
            env.proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held_after = env.send("after");
    let after = env.pending("nina", "after").await;

    // The earlier request keeps its members: nina is no approver of it, dave still counts.
    let (status, body) = env.vote(&before, "nina", "approve").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_an_approver"))
    );
    let (status, body) = env.vote(&before, "dave", "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        entries(&env.view(&before, "dave").await),
        [entry("dba", 1, 1, &["dave"]), entry("security", 0, 1, &[])]
    );
    let (status, body) = env.vote(&before, "sam", "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held.await.expect("held").0, 200);

    // The later one has the new members: dave is refused, nina counts.
    let (status, body) = env.vote(&after, "dave", "approve").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_an_approver"))
    );
    let (status, body) = env.vote(&after, "nina", "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        entries(&env.view(&after, "nina").await),
        [
            entry("dba_next", 1, 1, &["nina"]),
            entry("security", 0, 1, &[])
        ]
    );
    let (status, body) = env.vote(&after, "sam", "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held_after.await.expect("held").0, 200);
    assert_eq!(env.settled_upstream_count().await, 2);
}

/// A browser-like client: keeps cookies, follows redirects by hand.
fn page_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Opens `url` signed in as `email` through the development login; returns the final HTML.
async fn open_signed_in(env: &Env, client: &reqwest::Client, url: &str, email: &str) -> String {
    let mut url = url::Url::parse(url).expect("url");
    for _ in 0..10 {
        let resp = client.get(url.clone()).send().await.expect("GET");
        if resp.status().is_redirection() {
            let to = resp.headers()["location"].to_str().expect("location");
            url = url.join(to).expect("redirect target");
            continue;
        }
        let html = resp.text().await.expect("html");
        if !url.as_str().starts_with(env.login.issuer()) {
            return html;
        }
        // The development login's form: post the email to the same URL.
        let resp = client
            .post(url.clone())
            .form(&[("email", email)])
            .send()
            .await
            .expect("POST login form");
        assert!(
            resp.status().is_redirection(),
            "login form answered {}",
            resp.status()
        );
        let to = resp.headers()["location"].to_str().expect("location");
        url = url.join(to).expect("callback");
    }
    panic!("no page after 10 redirects (last {url})");
}

#[tokio::test]
async fn the_approval_page_shows_progress_per_group() {
    let env = Env::start().await;
    let held = env.send("vacuum");
    let id = env.pending("dave", "vacuum").await;
    let (status, body) = env.vote(&id, "dave", "approve").await;
    assert_eq!(status, 200, "{body}");

    let client = page_client();
    let page = env.control(&format!("/approvals/{id}"));
    let html = open_signed_in(&env, &client, &page, "sam@example.com").await;
    assert!(html.contains("dba 1/1, security 0/1"), "{html}");
    assert!(html.contains("value=\"approve\""), "sam may vote: {html}");

    // Approving on the page: the result page says it is approved, the request goes through.
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field");
    let result = client
        .post(format!("{page}/decision"))
        .form(&[("csrf", csrf), ("decision", "approve"), ("reason", "")])
        .send()
        .await
        .expect("POST decision form")
        .text()
        .await
        .expect("result page");
    assert!(result.contains("approved"), "{result}");
    assert_eq!(held.await.expect("held").0, 200);
    assert_eq!(env.settled_upstream_count().await, 1);
}

#[test]
fn check_reports_quorum_mistakes_at_file_line_col_and_explain_lists_entries() {
    let dir = TestDir::new();
    let config = format!(
        "{}\n{GROUPS}",
        basic_config("http://127.0.0.1:9", "https://idp.example.com", &[AUD])
    );
    let config = config
        .replace("{{listen}}", "127.0.0.1:8080")
        .replace("{{control_listen}}", "127.0.0.1:9090")
        .replace("{{public_url}}", "http://127.0.0.1:9090");
    let config_path = dir.write("countersign.toml", config);
    let config_arg = config_path.to_str().expect("utf-8 path");

    dir.write(
        "policies/quorum.toml",
        policy("dba").replace("\"group:dba\" = 1", "\"group:dba\" = 3"),
    );
    let out = countersign(&["check", "--config", config_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "policies/quorum.toml:7:26: quorum for \"group:dba\" is 3 but group \"dba\" has only 2 member(s)"
        ),
        "{stdout}"
    );

    dir.write("policies/quorum.toml", policy("dba"));
    let out = countersign(&["check", "--config", config_arg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = countersign(&[
        "explain",
        "--config",
        config_arg,
        "--claims",
        r#"{"iss": "https://idp.example.com", "sub": "svc", "exp": 4102444800}"#,
        "POST",
        "https://db.example.com/db/add-index",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .contains("quorum entry: group:dba needs 1 of: dave@example.com, alice@example.com\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "quorum entry: group:security needs 1 of: sam@example.com, alice@example.com\n"
        ),
        "{stdout}"
    );
}
