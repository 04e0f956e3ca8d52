//! The approval page in a real headless Chromium: an approver opens the link, logs in at a real
//! OpenID Provider (npm `oidc-provider`, login form then consent form), lands back on the
//! approval page, clicks Approve, and the caller's held request completes with the upstream's
//! answer. JavaScript is switched off in the browser: approving must work as plain HTML (issue 3:
//! "No JavaScript needed to approve"). Needs Debian's `chromium`, `chromium-driver` and `node` (scripts/test-setup.sh);
//! without them the test fails and says what to install.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, http_client, Browser, EchoUpstream, OidcProvider, Proxy, TestDir};

/// Audience of the caller's access token.
const AUD: &str = "https://deploy.example.com";

const POLICY: &str = r#"
[[rule]]
name = "prod-deploy"
methods = ["POST"]
path_prefix = "/v1/deployments/"
action = "approve"
[rule.approval]
approvers = ["alice@example.com"]
hold = "60s"
expires = "5m"
# The caller is a machine (client credentials): its token names no person.
unidentified_requester = "hold"
# Approvers may let the same request pass again for a while (SPEC 9).
grant = "15m"
grant_uses = 2
# A caller may go first with `Countersign-Break-Glass: <reason>`, reviewed afterwards.
break_glass = true
"#;

/// Where the IdP puts the approver's `email` claim.
#[derive(Debug, Clone, Copy)]
enum EmailClaim {
    /// In the ID token (Okta, Auth0, Keycloak, Entra ID by default).
    InIdToken,
    /// Only at the UserInfo endpoint (OIDC Core 5.4; `oidc-provider`'s default).
    UserInfoOnly,
}

/// Which approve button the approver presses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Press {
    /// "Approve once": this request only.
    Once,
    /// "Approve for 15 min": also a grant for the same request (SPEC 9).
    ForAWhile,
}

#[tokio::test]
async fn approver_logs_in_and_approves_a_held_request_in_chromium() {
    approve_in_browser(EmailClaim::InIdToken, Press::Once).await;
}

/// An IdP that follows OIDC Core 5.4 serves `email` only at UserInfo: the login falls back to it.
#[tokio::test]
async fn approver_login_works_when_email_is_only_at_userinfo() {
    approve_in_browser(EmailClaim::UserInfoOnly, Press::Once).await;
}

/// "Approve for 15 min" on the page: the same caller's next identical request passes at once.
#[tokio::test]
async fn approve_for_15_min_on_the_page_lets_the_same_request_pass_again() {
    approve_in_browser(EmailClaim::InIdToken, Press::ForAWhile).await;
}

/// The proxy with `[approver_login]` at a real OpenID Provider, and the upstream.
struct Stage {
    dir: TestDir,
    echo: EchoUpstream,
    idp: OidcProvider,
    proxy: Proxy,
    public_url: String,
}

impl Stage {
    async fn start(email_claim: EmailClaim) -> Stage {
        let dir = TestDir::new();
        let echo = EchoUpstream::start().await;
        // The IdP must know the redirect URI before the proxy starts: fix the control port.
        let control_listen = format!("127.0.0.1:{}", free_port());
        let public_url = format!("http://{control_listen}");
        let env: &[(&str, &str)] = match email_claim {
            EmailClaim::InIdToken => &[("ID_TOKEN_CLAIMS", "1")],
            EmailClaim::UserInfoOnly => &[],
        };
        let idp =
            OidcProvider::start_with_env(&[&format!("{public_url}/oidc/callback")], "RS256", env);
        dir.write("policies/approvals.toml", POLICY);
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
        Stage {
            dir,
            echo,
            idp,
            proxy,
            public_url,
        }
    }

    /// Opens `page` in `browser`, signs in at the IdP as alice (login form, then consent
    /// unless the IdP skips it) and waits until the browser is back on `page`.
    async fn sign_in(&self, browser: &Browser, page: &str) {
        browser.goto(page).await;
        // Not logged in: the page sends us to the IdP's login form.
        browser
            .wait_url_prefix(self.idp.issuer(), Duration::from_secs(20))
            .await;
        let login = browser.find("input[name=login]").await;
        browser.type_into(&login, "alice@example.com").await;
        // The development login form accepts any password.
        let password = browser.find("input[name=password]").await;
        browser.type_into(&password, "any password").await;
        let sign_in = browser.find("button[type=submit]").await;
        browser.click(&sign_in).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !browser.url().await.starts_with(&self.public_url) {
            let body = browser.source().await;
            if body.contains("name=\"prompt\" value=\"consent\"") {
                let cont = browser.find("button[type=submit]").await;
                browser.click(&cont).await;
            }
            assert!(
                Instant::now() < deadline,
                "never came back to Countersign; at {}:\n{}\nproxy stderr:\n{}\nidp stderr:\n{}",
                browser.url().await,
                browser.source().await,
                self.proxy.stderr(),
                self.idp.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let landed = browser.wait_url_prefix(page, Duration::from_secs(20)).await;
        assert_eq!(landed, page, "login returns to the approval page");
    }
}

async fn approve_in_browser(email_claim: EmailClaim, press: Press) {
    let stage = Stage::start(email_claim).await;
    let Stage {
        dir,
        echo,
        idp,
        proxy,
        public_url,
    } = &stage;

    // The caller: a service with a client-credentials token, held for up to 60 s.
    let token = idp.client_credentials_token(AUD, "deploy:write").await;
    let url = format!("{}/v1/deployments/production", proxy.data_url());
    let (again_token, again_url) = (token.clone(), url.clone());
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
        let approval_id = resp
            .headers()
            .get("countersign-approval-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, approval_id, resp.text().await.unwrap_or_default())
    });
    let id = wait_for_held(proxy, dir).await;

    // With JavaScript off: the login, consent and approval pages must work as plain HTML.
    let browser = Browser::start_with(dir.path(), false).await;
    let page = format!("{public_url}/approvals/{id}");
    stage.sign_in(&browser, &page).await;

    let text = browser.body_text().await;
    for want in [
        "alice@example.com",
        "POST",
        "/v1/deployments/production",
        "prod-deploy",
    ] {
        assert!(
            text.contains(want),
            "approval page should show {want:?}:\n{text}"
        );
    }
    let shot = dir.join("approval-page.png");
    browser.screenshot(&shot).await;
    keep_screenshot(&shot, &format!("{email_claim:?}-{press:?}"));
    assert_eq!(echo.count(), 0, "nothing forwarded before the click");

    assert!(
        text.contains("Approve once") && text.contains("Approve for 15 min"),
        "a rule with grant offers both buttons:\n{text}"
    );
    let value = match press {
        Press::Once => "approve",
        Press::ForAWhile => "approve_grant",
    };
    let approve = browser
        .find(&format!("button[name=decision][value={value}]"))
        .await;
    browser.click(&approve).await;

    let (status, approval_id, body) = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("held request finished after the click")
        .expect("held task");
    assert_eq!(status, 200, "held caller after Approve: {body}");
    assert_eq!(approval_id.as_deref(), Some(id.as_str()));
    let after = browser.body_text().await;
    assert!(
        after.to_lowercase().contains("approved"),
        "the page confirms the approval:\n{after}"
    );
    // The held caller has its answer, so the execution has finished: count this approval's
    // executions now and again after a quiet window.
    assert_eq!(
        echo.executions_of(&id, Duration::from_millis(500)).await,
        1,
        "the upstream got the request exactly once"
    );
    assert_eq!(echo.count(), 1, "and nothing else reached the upstream");
    let got = echo.last().expect("forwarded request");
    assert_eq!(got.uri, "/v1/deployments/production");
    assert_eq!(&got.body[..], br#"{"version":"2.7.1"}"#);
    assert!(got.header("countersign-approval").is_some());

    // The same caller sends the same request again (answer at once if it is held).
    let again = http_client()
        .post(again_url)
        .bearer_auth(again_token)
        .header("content-type", "application/json")
        .header("prefer", "respond-async")
        .body(r#"{"version":"2.7.2"}"#)
        .send()
        .await
        .expect("second request");
    let (again_status, grant_id) = (
        again.status().as_u16(),
        again
            .headers()
            .get("countersign-grant-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    match press {
        Press::Once => {
            assert_eq!(again_status, 202, "approved once: the next one is held");
            assert_eq!(echo.count(), 1);
        }
        Press::ForAWhile => {
            assert_eq!(again_status, 200, "passes under the grant");
            assert!(grant_id.is_some_and(|g| g.starts_with("gr_")));
            assert_eq!(echo.count(), 2);
            assert_eq!(
                &echo.last().expect("forwarded").body[..],
                br#"{"version":"2.7.2"}"#
            );
        }
    }
}

/// The id of the held request, read from the audit log (the browser test has no API token for
/// an approver; the log is what an operator would look at).
async fn wait_for_held(proxy: &Proxy, dir: &TestDir) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = dir.read("audit.jsonl");
        let id = log
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
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The screenshot lives in the test's temp folder and goes with it; set
/// `COUNTERSIGN_SCREENSHOT_DIR` to keep a copy (to look at the page as an approver sees it).
fn keep_screenshot(shot: &std::path::Path, label: &str) {
    if let Some(keep) = std::env::var_os("COUNTERSIGN_SCREENSHOT_DIR") {
        let keep = std::path::PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("create COUNTERSIGN_SCREENSHOT_DIR");
        let name = format!("approval-page-{label}.png");
        std::fs::copy(shot, keep.join(name)).expect("copy screenshot");
    }
}

/// Break-glass (SPEC 9): the request went through at once; an approver signs in, sees the
/// review, and presses Acknowledge on the page.
#[tokio::test]
async fn a_break_glass_request_is_acknowledged_on_the_page_in_chromium() {
    let stage = Stage::start(EmailClaim::InIdToken).await;
    let token = stage
        .idp
        .client_credentials_token(AUD, "deploy:write")
        .await;
    let resp = http_client()
        .post(format!(
            "{}/v1/deployments/production",
            stage.proxy.data_url()
        ))
        .bearer_auth(token)
        .header("countersign-break-glass", "checkout is down, rolling back")
        .body(r#"{"version":"2.6.9"}"#)
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

    let browser = Browser::start_with(stage.dir.path(), false).await;
    let page = format!("{}/approvals/{id}", stage.public_url);
    stage.sign_in(&browser, &page).await;
    let text = browser.body_text().await;
    assert!(text.contains("Break-glass: review"), "{text}");
    assert!(text.contains("checkout is down, rolling back"), "{text}");
    let ack = browser
        .find("button[name=decision][value=acknowledge]")
        .await;
    browser.click(&ack).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !browser
        .body_text()
        .await
        .contains("You acknowledged the break-glass")
    {
        assert!(
            Instant::now() < deadline,
            "no confirmation: {}",
            browser.body_text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = stage.dir.read("audit.jsonl");
    assert!(audit.contains("\"approval.acknowledged\""), "{audit}");
    assert_eq!(
        stage.echo.count(),
        1,
        "forwarded once, acknowledging sends nothing"
    );
}
