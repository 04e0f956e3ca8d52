//! An HTTP answer read whole ([`Reply`]) and the verification of `Countersign-Approval`
//! against the control plane's JWKS ([`verified_claims`]), shared by the end-to-end tests.

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub text: String,
}

impl Reply {
    /// Reads `resp` to the end.
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("read body");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {:?}", self.status, self.text))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a SPEC error: `status`, JSON `error` = `code`; returns the description.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status, status,
            "expected {status} {code}: {}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["error"], code, "error code in {body}");
        body["error_description"]
            .as_str()
            .unwrap_or_else(|| panic!("error_description missing in {body}"))
            .to_owned()
    }
}

/// Verifies the compact JWS `jws` (a `Countersign-Approval`) with the JWKS that the control
/// plane at `control_url` publishes (ES256, `iss` = `control_url`); returns its claims.
pub async fn verified_claims(control_url: &str, jws: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = super::http_client()
        .get(format!("{control_url}/.well-known/jwks.json"))
        .send()
        .await
        .expect("GET jwks")
        .json()
        .await
        .expect("JWKS JSON");
    let header = jsonwebtoken::decode_header(jws).expect("JWS header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.expect("kid in the JWS header");
    let jwk = jwks.find(&kid).expect("JWKS has the JWS's kid");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key from JWK");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.validate_aud = false;
    validation.set_issuer(&[control_url]);
    jsonwebtoken::decode::<Value>(jws, &key, &validation)
        .expect("Countersign-Approval verifies with the published JWKS")
        .claims
}
