//! The development login issuer as an OpenID Provider, spoken to directly over HTTP: what
//! `countersign demo` relies on, and what any OIDC client would check.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use countersign::devlogin::{DevLogin, DEMO_ACR};
use countersign::secret::Secret;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, LOCATION};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

const CLIENT: &str = "demo-client";
const SECRET: &str = "demo-secret";
const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";
const VERIFIER: &str = "a-long-enough-pkce-code-verifier-0123456789-abcdef";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn start() -> DevLogin {
    DevLogin::start(CLIENT, Some(Secret::new(SECRET)), REDIRECT).unwrap()
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize_url(dev: &DevLogin, extra: &[(&str, &str)]) -> Url {
    let mut url = Url::parse(&format!("{}/authorize", dev.issuer())).unwrap();
    let c = challenge(VERIFIER);
    url.query_pairs_mut().extend_pairs([
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email"),
        ("state", "st4te"),
        ("nonce", "n0nce"),
        ("code_challenge", c.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    for (k, v) in extra {
        url.query_pairs_mut().append_pair(k, v);
    }
    url
}

fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Signs in as `email` and returns the code from the redirect.
async fn code_for(dev: &DevLogin, email: &str) -> String {
    let r = client()
        .post(authorize_url(dev, &[]))
        .form(&[("email", email)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap();
    assert!(back.as_str().starts_with(REDIRECT));
    assert_eq!(query_param(&back, "state").as_deref(), Some("st4te"));
    query_param(&back, "code").expect("code")
}

async fn redeem(dev: &DevLogin, form: &[(&str, &str)], basic: Option<&str>) -> reqwest::Response {
    let mut req = client().post(format!("{}/token", dev.issuer())).form(form);
    if let Some(creds) = basic {
        req = req.header(AUTHORIZATION, format!("Basic {}", STANDARD.encode(creds)));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn discovery_and_jwks() {
    let dev = start();
    let d: Value = client()
        .get(format!("{}/.well-known/openid-configuration", dev.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], dev.issuer());
    assert_eq!(d["id_token_signing_alg_values_supported"][0], "ES256");
    assert_eq!(d["code_challenge_methods_supported"][0], "S256");
    let jwks: Value = client()
        .get(d["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
}

#[tokio::test]
async fn code_flow_issues_a_verifiable_id_token_once() {
    let dev = start();
    let code = code_for(&dev, "alice@example.com").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
    ];
    let r = redeem(&dev, &form, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    let body: Value = r.json().await.unwrap();
    let id_token = body["id_token"].as_str().unwrap();

    let jwks: jsonwebtoken::jwk::JwkSet = client()
        .get(format!("{}/jwks", dev.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[CLIENT]);
    v.set_issuer(&[dev.issuer()]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["nonce"], "n0nce");
    assert_eq!(claims["acr"], DEMO_ACR);
    assert!(claims["auth_time"].as_u64().is_some());
    assert!(claims["sub"].as_str().unwrap().starts_with("dev-"));

    // The same code again: refused.
    let r = redeem(&dev, &form, None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

#[tokio::test]
async fn pkce_and_client_authentication_are_enforced() {
    let dev = start();
    // Wrong verifier (client_secret_basic this time, form-encoded per RFC 6749 2.3.1).
    let code = code_for(&dev, "bob@example.com").await;
    let basic = format!("{CLIENT}:{SECRET}");
    let wrong_verifier = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        (
            "code_verifier",
            "another-verifier-that-is-long-enough-0123456789",
        ),
    ];
    let r = redeem(&dev, &wrong_verifier, Some(&basic)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    // Right verifier, wrong secret.
    let code = code_for(&dev, "bob@example.com").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let r = redeem(&dev, &form, Some(&format!("{CLIENT}:nope"))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    // Basic auth works with the right secret (a fresh code; failed attempts burn codes).
    let code = code_for(&dev, "bob@example.com").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let r = redeem(&dev, &form, Some(&basic)).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_authorization_requests() {
    let dev = start();
    // Unknown client or redirect URI: an error page, never a redirect.
    for (k, v) in [
        ("client_id", "someone-else"),
        ("redirect_uri", "https://evil.example/cb"),
    ] {
        let mut url = authorize_url(&dev, &[]);
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(a, b)| {
                let value = if a == k { v.to_owned() } else { b.into_owned() };
                (a.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let r = client().get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{k}");
        assert!(r.headers().get(LOCATION).is_none(), "{k}");
    }
    // No PKCE: back to the client with an error.
    let mut url = authorize_url(&dev, &[]);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(a, _)| !a.starts_with("code_challenge"))
        .map(|(a, b)| (a.into_owned(), b.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap();
    assert_eq!(
        query_param(&back, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&back, "state").as_deref(), Some("st4te"));
}

#[tokio::test]
async fn always_shows_the_form_and_says_when_a_fresh_login_was_asked() {
    let dev = start();
    let plain = client().get(authorize_url(&dev, &[])).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(!plain.text().await.unwrap().contains("fresh sign-in"));
    let url = authorize_url(&dev, &[("max_age", "0"), ("prompt", "login")]);
    let fresh = client().get(url).send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    let html = fresh.text().await.unwrap();
    assert!(html.contains("fresh sign-in"));
    assert!(html.contains("value=\"alice@example.com\""));
}
