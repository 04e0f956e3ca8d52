//! The test harness itself: the fixtures other test files rely on behave as they claim.
//! (No proxy here: if these fail, every other end-to-end failure is suspect.)

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{http_client, EchoUpstream, KeyKind, LocalIssuer, OidcProvider, TestDir, TlsFixture};

fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[tokio::test]
async fn echo_upstream_records_and_echoes() {
    let echo = EchoUpstream::start().await;
    let resp = http_client()
        .post(format!("{}/a/b?c=d", echo.url()))
        .header("x-test", "1")
        .body("hello")
        .send()
        .await
        .expect("echo request");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("echo JSON");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["uri"], "/a/b?c=d");
    assert_eq!(body["body"], "hello");
    assert_eq!(echo.count(), 1);
    let req = echo.last().expect("recorded");
    assert_eq!(req.header("X-Test"), Some("1"));
    assert_eq!(&req.body[..], b"hello");

    echo.set_status(503);
    let resp = http_client()
        .get(echo.url())
        .send()
        .await
        .expect("echo request");
    assert_eq!(resp.status(), 503);
    assert_eq!(echo.count(), 2);
}

#[tokio::test]
async fn tls_echo_upstream_is_trusted_only_with_its_ca() {
    let dir = TestDir::new();
    let good = TlsFixture::generate(dir.path(), "good");
    let other = TlsFixture::generate(dir.path(), "other");
    let echo = EchoUpstream::start_tls(&good).await;
    assert!(echo.url().starts_with("https://127.0.0.1:"));

    let resp = good
        .client()
        .get(echo.url())
        .send()
        .await
        .expect("TLS echo");
    assert_eq!(resp.status(), 200);

    let err = other.client().get(echo.url()).send().await;
    assert!(err.is_err(), "a client pinning another CA must fail");
    assert_eq!(echo.count(), 1);
}

#[tokio::test]
async fn local_issuer_serves_discovery_and_jwks_and_counts() {
    let issuer = LocalIssuer::start().await;
    issuer.add_key(KeyKind::EdDsa, "ed1");
    let client = http_client();
    let disc: serde_json::Value = client
        .get(format!(
            "{}/.well-known/openid-configuration",
            issuer.issuer()
        ))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(disc["issuer"], issuer.issuer());
    assert_eq!(disc["jwks_uri"], issuer.jwks_uri());

    let jwks: serde_json::Value = client
        .get(issuer.jwks_uri())
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JWKS JSON");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, ["k1", "ed1"]);
    assert_eq!(issuer.discovery_fetches(), 1);
    assert_eq!(issuer.jwks_fetches(), 1);

    // A token it signs verifies against the JWK it publishes.
    let token = issuer.token("alice", "https://api.example.test", serde_json::json!({}));
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).expect("JWK");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://api.example.test"]);
    validation.set_issuer(&[issuer.issuer()]);
    jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).expect("valid token");

    issuer.unpublish("k1");
    issuer.set_down(true);
    let resp = client.get(issuer.jwks_uri()).send().await.expect("jwks");
    assert_eq!(resp.status(), 503);
    issuer.set_down(false);
    let jwks: serde_json::Value = client
        .get(issuer.jwks_uri())
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JWKS JSON");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn oidc_provider_issues_jwt_access_tokens_for_a_resource() {
    let idp = OidcProvider::start();
    assert!(idp.issuer().starts_with("http://127.0.0.1:"));
    let disc = idp.discovery().await;
    assert_eq!(disc["issuer"], idp.issuer());

    let token = idp
        .client_credentials_token("https://api.example.test", "read write")
        .await;
    let header = jwt_part(&token, 0);
    let claims = jwt_part(&token, 1);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["sub"], "svc-client");
    assert_eq!(claims["aud"], "https://api.example.test");
    assert_eq!(claims["scope"], "read write");

    // The kid is published in the provider's JWKS, next to an ES256 key.
    let jwks: serde_json::Value = http_client()
        .get(disc["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JWKS JSON");
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(keys.iter().any(|k| k["kid"] == header["kid"]));
    assert!(keys.iter().any(|k| k["kty"] == "EC" && k["crv"] == "P-256"));
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "private key leaked"
    );
}

#[tokio::test]
async fn oidc_provider_can_sign_access_tokens_with_es256() {
    let idp = OidcProvider::start_with(&["http://127.0.0.1:1/oidc/callback"], "ES256");
    let token = idp
        .client_credentials_token("https://other.example.test", "admin")
        .await;
    assert_eq!(jwt_part(&token, 0)["alg"], "ES256");
    assert_eq!(jwt_part(&token, 1)["aud"], "https://other.example.test");
}
