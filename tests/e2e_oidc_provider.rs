//! Countersign in front of an API, with a real outside OpenID Provider (npm `oidc-provider`)
//! issuing the tokens: discovery, JWKS, RFC 9068 JWT access tokens from the client-credentials
//! grant with a resource indicator (RFC 8707).

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{
    assert_error_body, basic_config, http_client, EchoUpstream, OidcProvider, Proxy, TestDir,
};

const API: &str = "https://api.example.test";

/// The provider, an echo upstream and a ready proxy accepting the provider's tokens for [`API`].
struct Setup {
    idp: OidcProvider,
    echo: EchoUpstream,
    proxy: Proxy,
    _dir: TestDir,
}

async fn setup(access_token_alg: &str) -> Setup {
    let idp = OidcProvider::start_with(&[], access_token_alg);
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    let mut proxy = Proxy::start(&dir, &basic_config(&echo.url(), idp.issuer(), &[API])).await;
    proxy.wait_ready().await;
    Setup {
        idp,
        echo,
        proxy,
        _dir: dir,
    }
}

fn www_authenticate(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no WWW-Authenticate on a {} response", resp.status()))
        .to_owned()
}

#[tokio::test]
async fn client_credentials_token_passes_and_upstream_sees_the_subject() {
    let s = setup("RS256").await;
    let token = s.idp.client_credentials_token(API, "read write").await;

    let resp = http_client()
        .post(format!("{}/v1/things?limit=2", s.proxy.data_url()))
        .bearer_auth(&token)
        .header("Countersign-Subject", "forged")
        .header("countersign-approval", "forged")
        .body("payload")
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(resp.status(), 200, "stderr:\n{}", s.proxy.stderr());
    assert_eq!(
        resp.headers().get("x-echo").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    assert_eq!(s.echo.count(), 1);
    let got = s.echo.last().expect("upstream got the request");
    assert_eq!(got.method, "POST");
    assert_eq!(got.uri, "/v1/things?limit=2");
    assert_eq!(&got.body[..], b"payload");
    // Exactly one subject header, set by Countersign; the client's forgery is gone.
    assert_eq!(got.header_all("countersign-subject"), ["svc-client"]);
    assert!(
        got.header("countersign-approval").is_none(),
        "client-sent Countersign-Approval reached upstream"
    );
    // The SPEC does not ask to strip the caller's credentials: the API may want them.
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );

    // The same token again (now from the verified-token cache) still passes.
    let resp = http_client()
        .get(format!("{}/v1/things", s.proxy.data_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("second request");
    assert_eq!(resp.status(), 200);
    assert_eq!(s.echo.count(), 2);
}

#[tokio::test]
async fn es256_access_tokens_from_the_provider_pass_too() {
    let s = setup("ES256").await;
    let token = s.idp.client_credentials_token(API, "read").await;
    let resp = http_client()
        .get(format!("{}/x", s.proxy.data_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(resp.status(), 200, "stderr:\n{}", s.proxy.stderr());
    assert_eq!(
        s.echo
            .last()
            .and_then(|r| r.header("countersign-subject").map(str::to_owned)),
        Some("svc-client".to_owned())
    );
}

#[tokio::test]
async fn no_token_is_401_with_a_bearer_challenge_pointing_at_resource_metadata() {
    let s = setup("RS256").await;
    let resp = http_client()
        .get(format!("{}/v1/things", s.proxy.data_url()))
        .header("Countersign-Subject", "forged")
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(resp.status(), 401);
    let challenge = www_authenticate(&resp);
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("realm="), "{challenge}");
    assert!(
        challenge.contains("resource_metadata=")
            && challenge.contains("/.well-known/oauth-protected-resource"),
        "{challenge}"
    );
    // RFC 6750 3.1: a request without credentials gets no error code in the challenge.
    assert!(!challenge.contains("error="), "{challenge}");
    let body = common::json_body(resp).await;
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(body["error_description"].is_string(), "{body}");
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    assert_eq!(
        s.echo.count(),
        0,
        "an unauthenticated request reached upstream"
    );
}

#[tokio::test]
async fn tampered_token_is_401_invalid_token() {
    let s = setup("RS256").await;
    let token = s.idp.client_credentials_token(API, "read").await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    // Same header and signature, claims changed to another subject.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
    claims["sub"] = "admin".into();
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = parts.join(".");

    let resp = http_client()
        .get(format!("{}/v1/things", s.proxy.data_url()))
        .bearer_auth(&forged)
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(resp.status(), 401);
    let challenge = www_authenticate(&resp);
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    let body = assert_error_body(resp, "invalid_token").await;
    // Never leaks internals such as key ids or library errors.
    assert!(!body.to_string().contains("kid"), "{body}");
    assert_eq!(s.echo.count(), 0);

    // A flipped signature byte is just as invalid.
    let mut sig = URL_SAFE_NO_PAD
        .decode(token.rsplit('.').next().expect("sig"))
        .expect("b64");
    sig[10] ^= 0x01;
    let (head, _) = token.rsplit_once('.').expect("dots");
    let bad_sig = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
    let resp = http_client()
        .get(format!("{}/v1/things", s.proxy.data_url()))
        .bearer_auth(&bad_sig)
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(resp.status(), 401);
    assert_error_body(resp, "invalid_token").await;
    assert_eq!(s.echo.count(), 0);
}

#[tokio::test]
async fn token_for_another_resource_is_401_invalid_token() {
    let s = setup("RS256").await;
    let token = s
        .idp
        .client_credentials_token("https://other-api.example.test", "read")
        .await;
    let resp = http_client()
        .get(format!("{}/v1/things", s.proxy.data_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(resp.status(), 401);
    assert!(www_authenticate(&resp).contains(r#"error="invalid_token""#));
    assert_error_body(resp, "invalid_token").await;
    assert_eq!(s.echo.count(), 0);
}

#[tokio::test]
async fn token_from_another_provider_instance_is_401() {
    // Same client, same resource, but signed by keys Countersign was never told about and
    // carrying another issuer.
    let s = setup("RS256").await;
    let stranger = OidcProvider::start();
    let token = stranger.client_credentials_token(API, "read").await;
    let resp = http_client()
        .get(format!("{}/v1/things", s.proxy.data_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(resp.status(), 401);
    assert_error_body(resp, "invalid_token").await;
    assert_eq!(s.echo.count(), 0);
}
