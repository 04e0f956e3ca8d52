//! Approval evidence (SPEC 5.6): a compact ES256 JWS that upstreams verify with
//! `{public_url}/.well-known/jwks.json`, signed with an [`Es256Key`] (also the development
//! login's key).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::record::Approval;

/// `typ` of approval tokens (explicit typing, RFC 8725 3.11).
pub const TOKEN_TYPE: &str = "countersign-approval+jwt";
/// Default token lifetime: long enough for one upstream call, short enough to be useless later.
pub const DEFAULT_TTL_SECS: u64 = 300;

/// Why a signing key could not be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    /// Not a PEM `PRIVATE KEY` block.
    #[error("signing key: not a PKCS#8 PEM private key: {0}")]
    Pem(String),
    /// A PKCS#8 key that is not P-256 ECDSA (or lacks its public key).
    #[error("signing key: not a P-256 ECDSA PKCS#8 key")]
    NotP256,
    /// Key generation or signing failed in the crypto library.
    #[error("signing failed")]
    Crypto,
}

/// One P-256 key that signs compact ES256 JWS (RFC 7515, 7518 3.4): generated or loaded from
/// PKCS#8, its public half as a JWK. Approval tokens and the development login's ID tokens
/// both sign with it; the key id and the claims are the caller's.
pub struct Es256Key {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    x: String,
    y: String,
}

impl std::fmt::Debug for Es256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never printed.
        f.debug_struct("Es256Key").finish_non_exhaustive()
    }
}

impl Es256Key {
    /// A fresh random key.
    pub fn generate() -> Result<Self, SignerError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| SignerError::Crypto)?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Loads a P-256 PKCS#8 key (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, SignerError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| SignerError::NotP256)?;
        // Uncompressed point: 0x04 || X (32) || Y (32).
        let point = key.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(SignerError::NotP256);
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        Ok(Self { key, rng, x, y })
    }

    /// The public key as an uncompressed point (`04 || x || y`).
    pub fn public_point(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// The RFC 7638 JWK thumbprint: members in lexicographic order, no whitespace.
    pub fn thumbprint(&self) -> String {
        let (x, y) = (&self.x, &self.y);
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The public key as a JWK (RFC 7517/7518) with key id `kid`.
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
        })
    }

    /// The ES256 signature of `input`: FIXED signing yields r || s (64 bytes), exactly the JWS
    /// encoding (RFC 7518 3.4).
    pub fn sign_bytes(&self, input: &[u8]) -> Result<Vec<u8>, SignerError> {
        let sig = self
            .key
            .sign(&self.rng, input)
            .map_err(|_| SignerError::Crypto)?;
        Ok(sig.as_ref().to_vec())
    }

    /// A compact ES256 JWS over `claims`, with header `typ` and `kid`.
    pub fn sign(
        &self,
        typ: &str,
        kid: &str,
        claims: &serde_json::Value,
    ) -> Result<String, SignerError> {
        let header = json!({ "alg": "ES256", "typ": typ, "kid": kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.sign_bytes(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// Signs approval tokens with one P-256 key.
#[derive(Debug)]
pub struct ApprovalSigner {
    key: Es256Key,
    kid: String,
    issuer: String,
    ttl_secs: u64,
}

impl ApprovalSigner {
    /// Loads a P-256 PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, SignerError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivatePkcs8KeyDer;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| SignerError::Pem(e.to_string()))?;
        Es256Key::from_pkcs8(der.secret_pkcs8_der()).map(Self::with_key)
    }

    /// A fresh random key (for `countersign demo`).
    pub fn generate() -> Result<Self, SignerError> {
        Es256Key::generate().map(Self::with_key)
    }

    fn with_key(key: Es256Key) -> Self {
        Self {
            kid: key.thumbprint(),
            key,
            issuer: "countersign".to_owned(),
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }

    /// Sets `iss` of every token (the control plane's `public_url`).
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.trim_end_matches('/').to_owned();
        self
    }

    /// Sets the token lifetime in seconds.
    pub fn with_ttl_secs(mut self, secs: u64) -> Self {
        self.ttl_secs = secs;
        self
    }

    /// `iss` of the tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id: the RFC 7638 JWK thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        self.key.jwk(&self.kid)
    }

    /// The body of `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        json!({ "keys": [self.jwk()] })
    }

    /// The claims of an approval token for `approval`, issued at `now` (unix seconds).
    /// A break-glass approval also carries `"break_glass": true`, a request passed under a
    /// grant `grant_id` (SPEC 9).
    pub fn claims(&self, approval: &Approval, now: u64) -> serde_json::Value {
        let mut claims = json!({
            "iss": self.issuer,
            "jti": approval.id.as_str(),
            "approval_id": approval.id.as_str(),
            "sub": approval.requester.sub,
            "requester": {
                "iss": approval.requester.iss,
                "sub": approval.requester.sub,
                "email": approval.requester.email,
            },
            "approvers": approval.approved_by(),
            "rule": approval.rule,
            "request_hash": approval.request_hash,
            "iat": now,
            "exp": now.saturating_add(self.ttl_secs),
        });
        if approval.break_glass.is_some() {
            claims["break_glass"] = json!(true);
        }
        // Passed under a grant (SPEC 9): which grant, and the approval that made it.
        if let Some(g) = &approval.granted {
            claims["grant_id"] = json!(g.grant_id);
            claims["granted_by_approval"] = json!(g.from_approval);
        }
        claims
    }

    /// A compact JWS over [`Self::claims`].
    pub fn sign(&self, approval: &Approval, now: u64) -> Result<String, SignerError> {
        self.sign_claims(&self.claims(approval, now))
    }

    /// A compact ES256 JWS over any claims (with this signer's header).
    pub fn sign_claims(&self, claims: &serde_json::Value) -> Result<String, SignerError> {
        self.key.sign(TOKEN_TYPE, &self.kid, claims)
    }
}
