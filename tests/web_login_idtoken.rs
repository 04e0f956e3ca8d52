//! The login callback against a hostile or broken IdP: every ID token that should not be
//! trusted is refused with an error page and no session.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use countersign::clock::SystemClock;
use countersign::config::ApproverLogin;
use countersign::control::login::{self, Login};
use countersign::control::session::{SessionKey, Sessions};
use countersign::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use url::Url;

const CLIENT_ID: &str = "countersign";
const CLIENT_SECRET: &str = "shared-secret";

/// The error page title for an ID token that fails verification.
const UNVERIFIED: &str = "Sign-in could not be verified";

/// The `<h1>` of a page.
fn title(html: &str) -> &str {
    html.split("<h1>")
        .nth(1)
        .and_then(|t| t.split("</h1>").next())
        .unwrap_or("")
}

/// What the fake IdP's token endpoint returns: `make(issuer, nonce)` builds the ID token.
type MakeToken = Box<dyn Fn(&str, &str) -> String + Send + Sync>;

struct Idp {
    issuer: String,
    /// Key published in the JWKS.
    good: rcgen::KeyPair,
    /// Key not published anywhere.
    rogue: rcgen::KeyPair,
    nonce: Mutex<String>,
    make: Mutex<Option<MakeToken>>,
    /// The JWKS publishes `rogue` instead of `good` (a key rotation).
    rotated: std::sync::atomic::AtomicBool,
}

fn p256() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn jwk(key: &rcgen::KeyPair, kid: &str) -> Value {
    let point = key.public_key_raw();
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    })
}

fn es256(key: &rcgen::KeyPair, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("good".into());
    let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &enc).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims a correct IdP would send.
fn good_claims(issuer: &str, nonce: &str) -> Value {
    json!({
        "iss": issuer, "sub": "u1", "aud": CLIENT_ID, "iat": now(), "exp": now() + 300,
        "nonce": nonce, "email": "alice@example.com", "email_verified": true,
        "auth_time": now(),
    })
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Json<Value> {
    let i = &idp.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "HS256"],
    }))
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Json<Value> {
    if idp.rotated.load(std::sync::atomic::Ordering::SeqCst) {
        Json(json!({"keys": [jwk(&idp.rogue, "good")]}))
    } else {
        Json(json!({"keys": [jwk(&idp.good, "good")]}))
    }
}

async fn token(State(idp): State<Arc<Idp>>) -> Json<Value> {
    let nonce = idp.nonce.lock().unwrap().clone();
    let make = idp.make.lock().unwrap();
    let id_token = (make.as_ref().unwrap())(&idp.issuer, &nonce);
    Json(
        json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": id_token}),
    )
}

struct Harness {
    idp: Arc<Idp>,
    base: String,
}

async fn harness() -> Harness {
    let idp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = Arc::new(Idp {
        issuer: format!("http://{}", idp_listener.local_addr().unwrap()),
        good: p256(),
        rogue: p256(),
        nonce: Mutex::new(String::new()),
        make: Mutex::new(None),
        rotated: std::sync::atomic::AtomicBool::new(false),
    });
    let idp_app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(idp_listener, idp_app).await.unwrap() });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let public_url = Url::parse(&base).unwrap();
    let sessions = Sessions::for_public_url(
        SessionKey::random().unwrap(),
        &public_url,
        Arc::new(SystemClock),
    );
    let cfg = ApproverLogin {
        issuer: idp.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
    };
    let login = Arc::new(Login::new(&cfg, &public_url, sessions).unwrap());
    let app: Router = login::router(login);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Harness { idp, base }
}

/// Runs one login whose ID token is made by `make`; returns the callback's status and whether
/// a session cookie was set.
async fn login_with(h: &Harness, make: MakeToken) -> (StatusCode, bool, String) {
    *h.idp.make.lock().unwrap() = Some(make);
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = b
        .get(format!("{}/login?next=%2Fok", h.base))
        .send()
        .await
        .unwrap();
    let to_idp = Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap();
    let param = |n: &str| {
        to_idp
            .query_pairs()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    *h.idp.nonce.lock().unwrap() = param("nonce");
    let callback = format!(
        "{}/oidc/callback?code=c0de&state={}",
        h.base,
        param("state")
    );
    let r = b.get(callback).send().await.unwrap();
    let status = r.status();
    let session = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("countersign_session="));
    (status, session, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_correct_id_token_logs_in() {
    let h = harness().await;
    // Sanity of the harness itself: garbage is refused (the IdP's answer is unusable)...
    let (status, session, html) = login_with(&h, Box::new(|_, _| "not-a-jwt".to_owned())).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(html.contains("Identity provider problem"), "{html}");
    assert!(!session);
    // ...and a well-made token signed with the published key is accepted.
    let idp = h.idp.clone();
    let (status, session, _) = login_with(
        &h,
        Box::new(move |iss, nonce| es256(&idp.good, &good_claims(iss, nonce))),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(session);
}

#[tokio::test]
async fn untrustworthy_id_tokens_are_refused() {
    let h = harness().await;
    type Tamper = fn(&mut Value);
    let claim_cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "wrong audience",
            |c| c["aud"] = json!("someone-else"),
            UNVERIFIED,
        ),
        (
            "wrong issuer",
            |c| c["iss"] = json!("https://evil.example"),
            UNVERIFIED,
        ),
        (
            "wrong nonce",
            |c| c["nonce"] = json!("replayed"),
            UNVERIFIED,
        ),
        (
            "no nonce",
            |c| drop(c.as_object_mut().unwrap().remove("nonce")),
            UNVERIFIED,
        ),
        ("expired", |c| c["exp"] = json!(now() - 3600), UNVERIFIED),
        (
            "no email",
            |c| drop(c.as_object_mut().unwrap().remove("email")),
            "No email address",
        ),
        (
            "email not verified",
            |c| c["email_verified"] = json!(false),
            "Email not verified",
        ),
    ];
    for (name, tamper, expected) in claim_cases {
        let idp = h.idp.clone();
        let make: MakeToken = Box::new(move |iss, nonce| {
            let mut c = good_claims(iss, nonce);
            tamper(&mut c);
            es256(&idp.good, &c)
        });
        let (status, session, html) = login_with(&h, make).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {html}");
        assert!(!session, "{name}");
        assert_eq!(title(&html), expected, "{name}");
    }

    // Signed by a key the IdP never published (same kid).
    let idp = h.idp.clone();
    let rogue: MakeToken = Box::new(move |iss, nonce| es256(&idp.rogue, &good_claims(iss, nonce)));
    let (status, session, html) = login_with(&h, rogue).await;
    assert_eq!(title(&html), UNVERIFIED, "rogue");
    assert_eq!(status, StatusCode::BAD_REQUEST, "rogue key");
    assert!(!session);

    // HS256 with the client secret: allowed by OIDC for confidential clients, refused here so
    // that only the IdP's published keys can vouch for an approver.
    let hs: MakeToken = Box::new(|iss, nonce| {
        let key = EncodingKey::from_secret(CLIENT_SECRET.as_bytes());
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good_claims(iss, nonce),
            &key,
        )
        .unwrap()
    });
    let (status, session, html) = login_with(&h, hs).await;
    assert_eq!(title(&html), UNVERIFIED, "hs");
    assert_eq!(status, StatusCode::BAD_REQUEST, "HS256");
    assert!(!session);

    // alg=none.
    let none: MakeToken = Box::new(|iss, nonce| {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(good_claims(iss, nonce).to_string());
        format!("{header}.{body}.")
    });
    let (status, session, html) = login_with(&h, none).await;
    assert_eq!(title(&html), UNVERIFIED, "none");
    assert_eq!(status, StatusCode::BAD_REQUEST, "alg none");
    assert!(!session);
}

#[tokio::test]
async fn rotated_idp_keys_are_refetched() {
    let h = harness().await;
    let idp = h.idp.clone();
    let signed_by_good: MakeToken =
        Box::new(move |iss, nonce| es256(&idp.good, &good_claims(iss, nonce)));
    let (status, _, _) = login_with(&h, signed_by_good).await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // The IdP rotates to a new key. Refetches are rate limited (5 s), so wait that out.
    h.idp
        .rotated
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
    let idp = h.idp.clone();
    let signed_by_new: MakeToken =
        Box::new(move |iss, nonce| es256(&idp.rogue, &good_claims(iss, nonce)));
    let (status, session, html) = login_with(&h, signed_by_new).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert!(session);
}
