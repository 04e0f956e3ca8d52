//! The development issuer's signing key: a P-256 key generated at start (never stored) and its
//! key id. The key, its JWK and the ES256 JWS are [`Es256Key`]'s.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::approval::signer::{Es256Key, SignerError};

/// An ES256 signing key with its key id.
#[derive(Debug)]
pub(crate) struct Signer {
    key: Es256Key,
    kid: String,
}

impl Signer {
    /// A new random key.
    pub(crate) fn generate() -> std::io::Result<Self> {
        let key = Es256Key::generate().map_err(|e| {
            std::io::Error::other(match e {
                SignerError::Crypto => "cannot generate the dev login key",
                _ => "cannot load the dev login key",
            })
        })?;
        // The kid is a digest of the public key: stable for the key, says nothing else.
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_point());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        Ok(Self { key, kid })
    }

    /// The public key as a JWK (RFC 7517/7518).
    pub(crate) fn jwk(&self) -> Value {
        self.key.jwk(&self.kid)
    }

    /// A compact JWS of `claims` (`header.payload.signature`, signature `r || s`).
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, SignerError> {
        self.key.sign("JWT", &self.kid, claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_verify_with_the_published_jwk() {
        let signer = Signer::generate().unwrap();
        let token = signer
            .sign(&json!({"sub": "alice", "exp": 4_000_000_000u64}))
            .unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(signer.jwk()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(
            data.header.kid.as_deref(),
            Some(signer.jwk()["kid"].as_str().unwrap())
        );
        // A different key does not verify it.
        let other = Signer::generate().unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(other.jwk()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&token, &key, &v).is_err());
    }
}
