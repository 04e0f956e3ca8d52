//! Approver login end to end over plain HTTP: a test control plane mounting the login routes,
//! the built-in development issuer, and a reqwest client with a cookie jar standing in for the
//! browser (each redirect followed by hand so every hop can be checked).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{FromRef, Path};
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use countersign::approval::Status;
use countersign::clock::SystemClock;
use countersign::config::ApproverLogin;
use countersign::control::login::{self, Login};
use countersign::control::pages::{
    self, ApprovalSummary, ApprovalView, DecisionForm, DecisionView,
};
use countersign::control::session::{ApproverSession, SessionKey, Sessions};
use countersign::devlogin::DevLogin;
use countersign::secret::Secret;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use url::Url;

const CLIENT_ID: &str = "countersign-test";

/// Router state of the test control plane.
#[derive(Clone)]
struct TestState {
    sessions: Sessions,
    created_at: SystemTime,
}

impl FromRef<TestState> for Sessions {
    fn from_ref(s: &TestState) -> Sessions {
        s.sessions.clone()
    }
}

/// A control plane (login routes + a protected page) and the dev issuer it trusts.
struct Harness {
    base: String,
    dev: DevLogin,
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with_issuer(None).await
    }

    /// `issuer_override` points the login at some other issuer (e.g. one that is down).
    async fn start_with_issuer(issuer_override: Option<String>) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let dev = DevLogin::start(
            CLIENT_ID,
            Some(Secret::new("dev-secret")),
            &format!("{base}/oidc/callback"),
        )
        .unwrap();
        let cfg = ApproverLogin {
            issuer: issuer_override.unwrap_or_else(|| dev.issuer().to_owned()),
            client_id: CLIENT_ID.into(),
            client_secret: Some(Secret::new("dev-secret")),
        };
        let clock = Arc::new(SystemClock);
        let public_url = Url::parse(&base).unwrap();
        let sessions = Sessions::for_public_url(SessionKey::random().unwrap(), &public_url, clock);
        let login = Arc::new(Login::new(&cfg, &public_url, sessions.clone()).unwrap());
        let state = TestState {
            sessions,
            created_at: SystemTime::now(),
        };
        let app = Router::new()
            .route("/whoami", get(whoami))
            .route("/approvals/{id}", get(approval_page))
            .route("/approvals/{id}/decision", axum::routing::post(decide))
            .merge(login::router(login))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Harness { base, dev }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A protected route: who is logged in, and is the login fresh for a request created when the
/// harness started.
async fn whoami(
    axum::extract::State(s): axum::extract::State<TestState>,
    session: ApproverSession,
) -> Json<serde_json::Value> {
    let now = SystemTime::now();
    Json(serde_json::json!({
        "email": session.who.email,
        "iss": session.who.iss,
        "sub": session.who.sub,
        "acr": session.who.acr,
        "has_auth_time": session.who.auth_time.is_some(),
        "fresh": session.is_fresh_for(s.created_at, Duration::from_secs(600), now),
    }))
}

/// A pending approval as the maintainer's handler would render it.
async fn approval_page(
    axum::extract::State(s): axum::extract::State<TestState>,
    Path(id): Path<String>,
    session: ApproverSession,
) -> Response {
    let view = ApprovalView {
        summary: ApprovalSummary {
            id: id.clone(),
            rule: "prod-deploy".into(),
            requester: "ci@example.com".into(),
            method: "POST".into(),
            host: "deploy.example.com".into(),
            path: "/v1/deployments/production".into(),
            created_at: s.created_at,
            expires_at: s.created_at + Duration::from_secs(3600),
            status: Status::Pending,
            quorum: 1,
            approvals_so_far: 0,
        },
        reason: Some("release 1.2.3".into()),
        body_preview: Some("{\"image\":\"v1.2.3\"}".into()),
        replay: Default::default(),
        votes: vec![],
        quorum_progress: None,
        can_vote: true,
        why_not: None,
        csrf_token: s.sessions.csrf_token(&session, &id),
        fresh_login_required: false,
        acr_values: vec![],
        self_approval_flag: false,
        grant_label: None,
        can_acknowledge: false,
    };
    pages::render_detail(&view, &session.who.email, SystemTime::now())
}

/// The decision form handler: session + CSRF for this approval, then the result page.
async fn decide(
    axum::extract::State(s): axum::extract::State<TestState>,
    Path(id): Path<String>,
    session: ApproverSession,
    Form(form): Form<DecisionForm>,
) -> Response {
    if !s.sessions.verify_csrf(&session, &id, &form.csrf) {
        return pages::error_page(AxumStatus::FORBIDDEN, "Forbidden", "Stale or forged form.");
    }
    let view = pages::ResultView {
        id,
        decision: form.decision,
        status: match form.decision {
            DecisionView::Approve | DecisionView::ApproveGrant => Status::Approved,
            DecisionView::Deny => Status::Denied,
            DecisionView::Acknowledge => Status::Acknowledged,
        },
        quorum: 1,
        approvals_so_far: u32::from(matches!(
            form.decision,
            DecisionView::Approve | DecisionView::ApproveGrant
        )),
        quorum_progress: None,
    };
    pages::render_result(&view, &session.who.email).into_response()
}

/// A browser stand-in: keeps cookies, does not follow redirects by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The hops of one login up to (not including) the callback.
struct Started {
    /// The IdP authorization URL Countersign sent the browser to.
    authorize_url: Url,
    /// `name=value` of the login-flow cookie.
    flow_cookie: String,
    /// The callback URL the IdP sent the browser back to.
    callback_url: String,
}

/// `GET /login?...`, the dev issuer's form, and signing in as `email`.
async fn start_login(h: &Harness, b: &reqwest::Client, login_path: &str, email: &str) -> Started {
    let r = b.get(h.url(login_path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{login_path}");
    let flow_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("countersign_login_"))
        .expect("login-flow cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/oidc/callback",
        "Max-Age=600",
    ] {
        assert!(flow_cookie.contains(attr), "{attr} missing: {flow_cookie}");
    }
    let authorize_url = Url::parse(&location(&r)).unwrap();
    assert!(authorize_url.as_str().starts_with(h.dev.issuer()));

    let form = b.get(authorize_url.clone()).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.unwrap();
    assert!(html.contains("alice@example.com") && html.contains("bob@example.com"));

    let signed_in = b
        .post(authorize_url.clone())
        .form(&[("email", email)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let callback_url = location(&signed_in);
    assert!(
        callback_url.starts_with(&h.url("/oidc/callback?")),
        "{callback_url}"
    );
    Started {
        authorize_url,
        flow_cookie: flow_cookie.split(';').next().unwrap().to_owned(),
        callback_url,
    }
}

fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn full_login_sets_a_session_that_protected_pages_see() {
    let h = Harness::start().await;
    let b = browser();

    // Not logged in: a page visit is sent to the login, coming back to the same page.
    let r = b.get(h.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login?next=%2Fwhoami");

    let started = start_login(&h, &b, "/login?next=%2Fwhoami", "alice@example.com").await;
    let auth = &started.authorize_url;
    assert_eq!(query_param(auth, "response_type").as_deref(), Some("code"));
    assert_eq!(
        query_param(auth, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(auth, "state").is_some() && query_param(auth, "nonce").is_some());
    assert!(query_param(auth, "scope")
        .unwrap()
        .split(' ')
        .any(|s| s == "openid"));
    assert_eq!(query_param(auth, "max_age"), None, "not a fresh login");
    assert!(started.flow_cookie.starts_with("countersign_login_"));

    let r = b.get(&started.callback_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/whoami");
    let cookies = set_cookies(&r);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("countersign_session="))
        .expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=28800"] {
        assert!(session.contains(attr), "{attr} missing: {session}");
    }
    assert!(!session.contains("Secure"), "public URL is http");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("countersign_login_") && c.contains("Max-Age=0")),
        "login-flow cookie removed: {cookies:?}"
    );

    let me: serde_json::Value = b
        .get(h.url("/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["iss"], h.dev.issuer());
    assert_eq!(me["acr"], "urn:countersign:demo");
    assert_eq!(me["has_auth_time"], true);

    // Another browser (no cookie) is still a stranger.
    let r = browser().get(h.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Signing out drops the session.
    let r = b.post(h.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = b.get(h.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn callback_with_the_wrong_state_is_refused() {
    let h = Harness::start().await;
    let b = browser();
    let started = start_login(&h, &b, "/login?next=%2Fwhoami", "alice@example.com").await;
    let mut tampered = Url::parse(&started.callback_url).unwrap();
    let code = query_param(&tampered, "code").unwrap();
    let state = query_param(&tampered, "state").unwrap();
    // Same cookie-name prefix, different state: found by name, refused by the full comparison.
    let forged_state = format!("{}x", &state[..state.len() - 1]);
    tampered
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", &forged_state);
    let r = b.get(tampered.as_str()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookies(&r)
        .iter()
        .all(|c| !c.starts_with("countersign_session=")));
    assert!(r.text().await.unwrap().contains("Login expired"));

    // No state at all.
    let r = b
        .get(h.url(&format!("/oidc/callback?code={code}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The right state from a browser that never started this login (no flow cookie).
    let r = browser().get(&started.callback_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Not logged in after any of that.
    let r = b.get(h.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_code_works_once() {
    let h = Harness::start().await;
    let b = browser();
    let started = start_login(&h, &b, "/login?next=%2Fwhoami", "alice@example.com").await;
    let r = b.get(&started.callback_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Replay the callback with the flow cookie captured earlier: the IdP refuses the used code.
    let replay = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(&started.callback_url)
        .header(COOKIE, &started.flow_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookies(&replay)
        .iter()
        .all(|c| !c.starts_with("countersign_session=")));
    let html = replay.text().await.unwrap();
    assert!(html.contains("Sign-in failed"), "{html}");
    assert!(
        html.contains("href=\"/login?next=%2Fwhoami\""),
        "offers to start again: {html}"
    );
}

#[tokio::test]
async fn next_cannot_leave_the_site() {
    let h = Harness::start().await;
    for next in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let path = format!("/login?next={}", urlencode(next));
        let r = browser().get(h.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{next}");
        assert!(r.headers().get(LOCATION).is_none(), "{next}");
        assert!(set_cookies(&r).is_empty(), "{next}");
    }
    // No next at all goes to the approval list.
    let b = browser();
    let started = start_login(&h, &b, "/login", "bob@example.com").await;
    let r = b.get(&started.callback_url).send().await.unwrap();
    assert_eq!(location(&r), "/approvals");
}

#[tokio::test]
async fn fresh_login_asks_the_idp_to_authenticate_again() {
    let h = Harness::start().await;
    let b = browser();
    let started = start_login(&h, &b, "/login?next=%2Fwhoami&fresh=1", "carol@example.com").await;
    assert_eq!(
        query_param(&started.authorize_url, "max_age").as_deref(),
        Some("0")
    );
    assert_eq!(
        query_param(&started.authorize_url, "prompt").as_deref(),
        Some("login")
    );
    let r = b.get(&started.callback_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let me: serde_json::Value = b
        .get(h.url("/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "carol@example.com");
    assert_eq!(
        me["fresh"], true,
        "logged in after the request was created, just now"
    );
}

#[tokio::test]
async fn a_required_acr_is_checked_in_the_id_token() {
    let h = Harness::start().await;
    // The dev issuer only ever asserts urn:countersign:demo.
    let b = browser();
    let started = start_login(
        &h,
        &b,
        "/login?next=%2Fwhoami&acr_values=urn%3Amfa",
        "alice@example.com",
    )
    .await;
    assert_eq!(
        query_param(&started.authorize_url, "acr_values").as_deref(),
        Some("urn:mfa")
    );
    let r = b.get(&started.callback_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(html.contains("Stronger sign-in needed"));
    assert!(
        html.contains("href=\"/login?next=%2Fwhoami&#38;acr_values=urn%3Amfa\""),
        "retry keeps the acr: {html}"
    );

    let b = browser();
    let path = "/login?next=%2Fwhoami&acr_values=phr%20urn%3Acountersign%3Ademo";
    let started = start_login(&h, &b, path, "alice@example.com").await;
    let r = b.get(&started.callback_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn idp_refusal_and_idp_down_render_error_pages() {
    let h = Harness::start().await;
    let b = browser();
    let r = b.get(h.url("/login?next=%2Fwhoami")).send().await.unwrap();
    let state = query_param(&Url::parse(&location(&r)).unwrap(), "state").unwrap();
    let r = b
        .get(h.url(&format!(
            "/oidc/callback?error=access_denied&state={}",
            urlencode(&state)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("Sign-in refused"));

    // An issuer nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let h = Harness::start_with_issuer(Some(dead)).await;
    let r = browser()
        .get(h.url("/login?next=%2Fwhoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let html = r.text().await.unwrap();
    assert!(html.contains("Identity provider unavailable"));
    assert!(
        !html.contains("error sending request"),
        "no internals: {html}"
    );
}

#[tokio::test]
async fn approve_from_the_page_with_csrf() {
    let h = Harness::start().await;
    let b = browser();
    let started = start_login(
        &h,
        &b,
        "/login?next=%2Fapprovals%2Fapr_1",
        "alice@example.com",
    )
    .await;
    let r = b.get(&started.callback_url).send().await.unwrap();
    assert_eq!(location(&r), "/approvals/apr_1");

    let page = b.get(h.url("/approvals/apr_1")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Signed in as alice@example.com"));
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_owned();

    // The token of apr_1 does not work for apr_2, and no token does not work either.
    for (id, token) in [("apr_2", csrf.as_str()), ("apr_1", "")] {
        let r = b
            .post(h.url(&format!("/approvals/{id}/decision")))
            .form(&[("decision", "approve"), ("reason", ""), ("csrf", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{id}");
    }
    // Without the session cookie the form post is a 401, not a redirect.
    let r = browser()
        .post(h.url("/approvals/apr_1/decision"))
        .form(&[
            ("decision", "approve"),
            ("reason", ""),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = b
        .post(h.url("/approvals/apr_1/decision"))
        .form(&[
            ("decision", "approve"),
            ("reason", "looks right"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("You approved"));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
