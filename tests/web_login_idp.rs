//! The approval page's vote guards through the real binary's routes, with the approver signed
//! in at a real OpenID Provider (npm `oidc-provider`): a form vote without the page's CSRF
//! token is refused and nothing is forwarded, and a vote on an `approve_via = "login"` request
//! from a sign-in older than the request gets "Sign in again", whose link signs in afresh at
//! the IdP and then lets the vote count. A reqwest client with a cookie jar is the browser; it
//! fills in the IdP's development login and consent forms.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, http_client, EchoUpstream, OidcProvider, Proxy, TestDir};
use reqwest::StatusCode;
use url::Url;

/// Audience of the caller's access token.
const AUD: &str = "https://deploy.example.com";

fn policy(approve_via: &str) -> String {
    format!(
        r#"
[[rule]]
name = "prod-deploy"
methods = ["POST"]
path_prefix = "/v1/deployments/"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
approve_via = "{approve_via}"
hold = "60s"
expires = "5m"
# The caller is a machine (client credentials): its token names no person.
unidentified_requester = "hold"
break_glass = true
grant = "15m"
grant_uses = 3
"#
    )
}

struct Setup {
    dir: TestDir,
    echo: EchoUpstream,
    idp: OidcProvider,
    proxy: Proxy,
    public_url: String,
}

async fn setup(approve_via: &str) -> Setup {
    setup_with(approve_via, &[]).await
}

/// Like [`setup`], with extra environment for the IdP (see `tests/idp/server.mjs`).
async fn setup_with(approve_via: &str, idp_env: &[(&str, &str)]) -> Setup {
    let dir = TestDir::new();
    let echo = EchoUpstream::start().await;
    // The IdP must know the redirect URI before the proxy starts: fix the control port first.
    let control_listen = format!("127.0.0.1:{}", free_port());
    let public_url = format!("http://{control_listen}");
    let idp = OidcProvider::start_with_env(
        &[&format!("{public_url}/oidc/callback")],
        "RS256",
        &[&[("ID_TOKEN_CLAIMS", "1")], idp_env].concat(),
    );
    dir.write("policies/approvals.toml", policy(approve_via));
    dir.write("login-client-secret", "countersign-secret\n");
    let config = format!(
        "{}\n[approver_login]\nissuer = \"{}\"\nclient_id = \"countersign\"\n\
         client_secret = \"file:login-client-secret\"\n\n[approvals]\n\
         audit_log = \"{{{{dir}}}}/audit.jsonl\"\n",
        common::basic_config(&echo.url(), idp.issuer(), &[AUD]),
        idp.issuer()
    );
    let mut proxy =
        Proxy::start_with_control(&dir, "countersign.toml", &config, &control_listen).await;
    proxy.wait_ready().await;
    Setup {
        dir,
        echo,
        idp,
        proxy,
        public_url,
    }
}

type Held = tokio::task::JoinHandle<(u16, String)>;

/// The caller's request, held until approvers decide; answers (status, body).
async fn hold(s: &Setup) -> (Held, String) {
    let token = s.idp.client_credentials_token(AUD, "deploy:write").await;
    let url = format!("{}/v1/deployments/production", s.proxy.data_url());
    let held = tokio::spawn(async move {
        let resp = http_client()
            .post(url)
            .timeout(Duration::from_secs(90))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(r#"{"version":"2.7.1"}"#)
            .send()
            .await
            .expect("held request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    });
    let id = wait_for_held(s).await;
    (held, id)
}

/// The id of the held request, from the audit log.
async fn wait_for_held(s: &Setup) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let id = s
            .dir
            .read("audit.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "approval.requested")
            .and_then(|e| e["approval_id"].as_str().map(str::to_owned));
        if let Some(id) = id {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no approval.requested in the audit log after 15 s; proxy stderr:\n{}",
            s.proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser stand-in: keeps cookies and follows redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client")
}

/// The `value` of the first `<input name="{name}" ...>` (attributes in any order).
fn input_value(html: &str, name: &str) -> Option<String> {
    html.split("<input").skip(1).find_map(|tag| {
        let tag = tag.split('>').next()?;
        if !tag.contains(&format!("name=\"{name}\"")) {
            return None;
        }
        let value = tag.split("value=\"").nth(1)?.split('"').next()?;
        Some(value.to_owned())
    })
}

/// Every hidden input of the first form, as (name, value).
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|tag| tag.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| {
            let name = tag.split("name=\"").nth(1)?.split('"').next()?;
            let value = tag
                .split("value=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("");
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Opens `start` (a page or login link on Countersign), signs in at the IdP as `email`
/// (login form, then consent unless skipped) and returns the Countersign page landed on and
/// whether the IdP showed its login form (it does not when its own session still counts).
async fn sign_in(s: &Setup, b: &reqwest::Client, start: &str, email: &str) -> (Url, String, bool) {
    let mut resp = b.get(start).send().await.expect("open the link");
    let mut login_form = false;
    for _ in 0..6 {
        let url = resp.url().clone();
        let html = resp.text().await.expect("page");
        if url.as_str().starts_with(&s.public_url) {
            return (url, html, login_form);
        }
        assert!(
            url.as_str().starts_with(s.idp.issuer()),
            "left both Countersign and the IdP: {url}\n{html}"
        );
        let action = html
            .split("<form")
            .nth(1)
            .and_then(|f| f.split("action=\"").nth(1))
            .and_then(|a| a.split('"').next())
            .unwrap_or_else(|| panic!("no form at {url}:\n{html}\nidp:\n{}", s.idp.stderr()));
        let action = url.join(action).expect("form action");
        let mut fields = hidden_inputs(&html);
        if html.contains("name=\"login\"") {
            login_form = true;
            fields.push(("login".into(), email.into()));
            // The development login form accepts any password.
            fields.push(("password".into(), "any password".into()));
        }
        resp = b
            .post(action)
            .form(&fields)
            .send()
            .await
            .expect("IdP form post");
    }
    panic!(
        "never came back to Countersign; proxy stderr:\n{}\nidp stderr:\n{}",
        s.proxy.stderr(),
        s.idp.stderr()
    )
}

/// The page's "Sign in again" link (`/login?...`).
fn sign_in_again_link(html: &str) -> String {
    html.split("href=\"")
        .find_map(|rest| {
            let href = rest
                .split('"')
                .next()?
                .replace("&amp;", "&")
                .replace("&#38;", "&");
            href.starts_with("/login?").then_some(href)
        })
        .unwrap_or_else(|| panic!("no sign-in link on the page:\n{html}"))
}

/// Posts the page's vote form.
async fn vote(s: &Setup, b: &reqwest::Client, id: &str, csrf: &str) -> (StatusCode, String) {
    let r = b
        .post(format!("{}/approvals/{id}/decision", s.public_url))
        .form(&[("decision", "approve"), ("reason", ""), ("csrf", csrf)])
        .send()
        .await
        .expect("vote");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

async fn finish(held: Held) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("held request finished after the vote")
        .expect("held task")
}

#[tokio::test]
async fn a_form_vote_without_the_pages_csrf_token_is_refused() {
    let s = setup("button").await;
    let (held, id) = hold(&s).await;
    let b = browser();
    let page = format!("{}/approvals/{id}", s.public_url);
    let (landed, html, _) = sign_in(&s, &b, &page, "alice@example.com").await;
    assert_eq!(landed.as_str(), page, "login returns to the approval page");
    assert!(html.contains("Signed in as alice@example.com"), "{html}");
    let csrf = input_value(&html, "csrf").expect("csrf field on the page");
    assert!(!csrf.is_empty());

    // A forged form (no token, or a token that is not this page's) counts nothing.
    let forged = format!("{csrf}x");
    for token in ["", forged.as_str()] {
        let (status, body) = vote(&s, &b, &id, token).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "csrf {token:?}: {body}");
        assert!(body.contains("Vote refused"), "{body}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.echo.count(), 0, "a refused vote forwarded the request");

    let (status, body) = vote(&s, &b, &id, &csrf).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("You approved"), "{body}");
    let (status, body) = finish(held).await;
    assert_eq!(status, 200, "held caller after the vote: {body}");
    assert_eq!(s.echo.count(), 1);
}

#[tokio::test]
async fn a_sign_in_older_than_a_login_only_request_must_sign_in_again() {
    let s = setup("login").await;
    let b = browser();
    // The approver signs in before the request exists.
    let list = format!("{}/approvals", s.public_url);
    let (landed, _, login_form) = sign_in(&s, &b, &list, "alice@example.com").await;
    assert!(login_form, "the first sign-in shows the IdP's login form");
    assert_eq!(landed.as_str(), list);
    let (held, id) = hold(&s).await;

    let page = format!("{}/approvals/{id}", s.public_url);
    let html = b
        .get(&page)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page body");
    // The page offers no vote form to a sign-in older than the request, only "Sign in again".
    assert!(
        input_value(&html, "csrf").is_none(),
        "a vote form for a stale sign-in:\n{html}"
    );
    assert!(html.contains("Sign in again to decide"), "{html}");
    let link = sign_in_again_link(&html);
    assert!(
        link.contains("fresh"),
        "the link asks for a fresh sign-in: {link}"
    );
    // A vote posted anyway (it cannot carry the page's token) counts nothing.
    let (status, body) = vote(&s, &b, &id, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.echo.count(), 0, "a vote from a stale sign-in counted");

    // The link signs in afresh at the IdP (it asks for the login form again) and comes back.
    let again = format!("{}{link}", s.public_url);
    let (landed, html, login_form) = sign_in(&s, &b, &again, "alice@example.com").await;
    assert!(
        login_form,
        "the IdP asked for the login again ({again}); proxy:\n{}\nidp:\n{}",
        s.proxy.stderr(),
        s.idp.stderr()
    );
    assert_eq!(
        landed.as_str(),
        page,
        "the fresh sign-in returns to the request"
    );
    let csrf = input_value(&html, "csrf").expect("csrf field after the fresh sign-in");
    let (status, body) = vote(&s, &b, &id, &csrf).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = finish(held).await;
    assert_eq!(status, 200, "held caller after the fresh vote: {body}");
    assert_eq!(s.echo.count(), 1);
}

#[tokio::test]
async fn a_login_the_idp_did_not_make_fresh_is_refused_on_a_login_only_request() {
    // An IdP that ignores `max_age=0`: its ID tokens say the person signed in an hour ago.
    let s = setup_with("login", &[("STALE_AUTH_TIME", "1")]).await;
    let (held, id) = hold(&s).await;
    let b = browser();
    let page = format!("{}/approvals/{id}", s.public_url);
    let (landed, html, _) = sign_in(&s, &b, &page, "alice@example.com").await;
    assert_eq!(landed.as_str(), page);
    // The ID token's sign-in predates the request: only "Sign in again" is offered.
    assert!(html.contains("Sign in again to decide"), "{html}");
    let link = sign_in_again_link(&html);

    // The fresh sign-in asks the IdP for a new login (`max_age=0`); this IdP shows its form but
    // still answers with the old sign-in time, so Countersign refuses the login itself.
    let again = format!("{}{link}", s.public_url);
    let (landed, html, login_form) = sign_in(&s, &b, &again, "alice@example.com").await;
    assert!(login_form, "the IdP showed its login form");
    assert!(
        landed
            .as_str()
            .starts_with(&format!("{}/oidc/callback", s.public_url)),
        "the stale sign-in ends on the callback, not the approval page: {landed}"
    );
    assert!(html.contains("Fresh sign-in needed"), "{html}");
    assert!(
        html.contains("sign in again just now"),
        "the page says what to do: {html}"
    );
    assert!(
        input_value(&html, "csrf").is_none(),
        "no vote form after a stale sign-in:\n{html}"
    );

    // The page still offers no vote, only another sign-in.
    let resp = b.get(&page).send().await.expect("page");
    let after = resp.url().clone();
    let html = resp.text().await.expect("page body");
    assert!(
        input_value(&html, "csrf").is_none(),
        "a vote form at {after} after a refused sign-in:\n{html}"
    );
    let (status, body) = vote(&s, &b, &id, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The request is still pending and nothing reached the upstream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.echo.count(), 0, "a stale sign-in let the request through");
    assert!(!held.is_finished(), "the held caller is still waiting");
    held.abort();
    let log = s.dir.read("audit.jsonl");
    assert!(
        !log.contains("\"vote.cast\""),
        "a vote was recorded from a stale sign-in:\n{log}"
    );
}

/// Break-glass (SPEC 9): the request is forwarded at once; an approver acknowledges it on the
/// page with its Acknowledge button (CSRF-protected like a vote), and that is audited.
#[tokio::test]
async fn a_break_glass_request_is_acknowledged_on_the_approval_page() {
    let s = setup("button").await;
    let token = s.idp.client_credentials_token(AUD, "deploy:write").await;
    let resp = http_client()
        .post(format!("{}/v1/deployments/production", s.proxy.data_url()))
        .bearer_auth(token)
        .header("countersign-break-glass", "rollback, checkout down")
        .body(r#"{"version":"2.7.0"}"#)
        .send()
        .await
        .expect("break-glass request");
    assert_eq!(resp.status(), 200, "forwarded at once");
    let id = resp
        .headers()
        .get("countersign-approval-id")
        .and_then(|v| v.to_str().ok())
        .expect("approval id")
        .to_owned();
    assert_eq!(s.echo.count(), 1);

    let b = browser();
    let page = format!("{}/approvals/{id}", s.public_url);
    let (_, html, _) = sign_in(&s, &b, &page, "alice@example.com").await;
    assert!(
        html.contains("value=\"acknowledge\""),
        "an Acknowledge button: {html}"
    );
    assert!(
        !html.contains("value=\"approve\""),
        "no Approve on a review: {html}"
    );
    let csrf = input_value(&html, "csrf").expect("csrf field on the page");
    let forged = b
        .post(format!("{}/approvals/{id}/decision", s.public_url))
        .form(&[("decision", "acknowledge"), ("csrf", "forged")])
        .send()
        .await
        .expect("forged acknowledge");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let r = b
        .post(format!("{}/approvals/{id}/decision", s.public_url))
        .form(&[("decision", "acknowledge"), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("acknowledge");
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("You acknowledged the break-glass"), "{body}");
    let (_, html, _) = sign_in(&s, &b, &page, "alice@example.com").await;
    assert!(
        !html.contains("value=\"acknowledge\""),
        "acknowledged once: {html}"
    );
    let audit = s.dir.read("audit.jsonl");
    assert_eq!(
        audit.matches("\"approval.acknowledged\"").count(),
        1,
        "{audit}"
    );
    assert_eq!(s.echo.count(), 1, "acknowledging forwards nothing");
}

/// Grants in the browser (SPEC 9): "Approve for 15 min" on the approval page makes a grant; the
/// approver's grants page lists it with a Revoke button (CSRF-protected like a vote); revoking
/// it there holds the caller's next identical request again.
#[tokio::test]
async fn a_grant_made_on_the_page_is_listed_and_revoked_on_the_grants_page() {
    let s = setup("button").await;
    let (held, id) = hold(&s).await;
    let b = browser();
    let page = format!("{}/approvals/{id}", s.public_url);
    let (_, html, _) = sign_in(&s, &b, &page, "alice@example.com").await;
    assert!(html.contains("Approve for 15 min"), "{html}");
    let csrf = input_value(&html, "csrf").expect("csrf field on the page");
    let r = b
        .post(format!("{}/approvals/{id}/decision", s.public_url))
        .form(&[
            ("decision", "approve_grant"),
            ("reason", ""),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .expect("vote");
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("You approved, with a grant"), "{body}");
    let (status, body) = finish(held).await;
    assert_eq!(status, 200, "{body}");

    let grants = format!("{}/grants", s.public_url);
    let html = b
        .get(&grants)
        .send()
        .await
        .expect("grants page")
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Active") && html.contains("/v1/deployments/production"),
        "{html}"
    );
    assert!(html.contains("0 of 3 uses"), "{html}");
    let grant_id = html
        .split("action=\"/grants/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a revoke form")
        .to_owned();
    assert!(grant_id.starts_with("gr_"), "{grant_id}");
    let csrf = input_value(&html, "csrf").expect("csrf on the revoke form");

    // A forged form revokes nothing.
    let forged = b
        .post(format!("{grants}/{grant_id}/revoke"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .expect("forged revoke");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let r = b
        .post(format!("{grants}/{grant_id}/revoke"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "redirected back to the grants page"
    );
    let html = r.text().await.unwrap_or_default();
    assert!(html.contains("Revoked"), "{html}");
    assert!(
        !html.contains("action=\"/grants/"),
        "no Revoke button left: {html}"
    );
    let audit = s.dir.read("audit.jsonl");
    assert_eq!(audit.matches("\"grant.revoked\"").count(), 1, "{audit}");

    // The caller's next identical request is held again.
    let token = s.idp.client_credentials_token(AUD, "deploy:write").await;
    let again = http_client()
        .post(format!("{}/v1/deployments/production", s.proxy.data_url()))
        .bearer_auth(token)
        .header("prefer", "respond-async")
        .header("content-type", "application/json")
        .body(r#"{"version":"2.7.1"}"#)
        .send()
        .await
        .expect("second request");
    assert_eq!(again.status(), 202, "held after the revocation");
    assert_eq!(s.echo.count(), 1);
}
