//! The development issuer's signing keys: committed RSA PEMs (`certs/dev/`), P-256 and Ed25519
//! generated with `ring` at start-up. Public halves as JWKs and SPKI PEMs.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

use crate::approval::signer::{Es256Key, SignerError};

/// RSA-2048 private keys (PKCS#8 PEM) and their public keys, handed out in turn.
const RSA_2048: [(&str, &str); 4] = [
    (
        include_str!("../../certs/dev/rsa2048-1.pem"),
        include_str!("../../certs/dev/rsa2048-1.pub.pem"),
    ),
    (
        include_str!("../../certs/dev/rsa2048-2.pem"),
        include_str!("../../certs/dev/rsa2048-2.pub.pem"),
    ),
    (
        include_str!("../../certs/dev/rsa2048-3.pem"),
        include_str!("../../certs/dev/rsa2048-3.pub.pem"),
    ),
    (
        include_str!("../../certs/dev/rsa2048-4.pem"),
        include_str!("../../certs/dev/rsa2048-4.pub.pem"),
    ),
];
/// The 1024-bit RSA public key, as a JWK and as PEM (ring cannot sign with it).
const RSA_1024_JWK: &str = include_str!("../../certs/dev/rsa1024.jwk.json");
const RSA_1024_PUB: &str = include_str!("../../certs/dev/rsa1024.pub.pem");

/// SPKI DER prefix of a P-256 public key (followed by the 65-byte uncompressed point).
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// SPKI DER prefix of an Ed25519 public key (followed by the 32-byte key).
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Kinds of key the development issuer can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA-2048 from the committed PEMs (the next of four; after four they repeat). Signs RS* and
    /// PS*; RS256 by default.
    Rsa2048,
    /// The committed 1024-bit RSA key. Published only to prove verifiers ignore it: it cannot
    /// sign (its "signatures" are zero bytes).
    Rsa1024,
    /// ECDSA P-256, generated at runtime. Signs ES256.
    P256,
    /// Ed25519, generated at runtime. Signs EdDSA.
    Ed25519,
}

/// Private half of a key.
enum Signer {
    Rsa(RsaKeyPair),
    /// No private key we can use: signatures are this many zero bytes.
    RsaUnusable(usize),
    P256(Es256Key),
    Ed25519(Ed25519KeyPair),
}

/// One key of the development issuer.
pub(crate) struct DevKey {
    /// `kid`.
    pub(crate) kid: String,
    signer: Signer,
    /// Public JWK (with `kid`, `use`, `alg`).
    pub(crate) jwk: Value,
    /// Public key as SPKI PEM.
    pub(crate) public_pem: String,
    /// Listed in the JWKS.
    pub(crate) published: bool,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &self.kid)
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl DevKey {
    /// Makes a key of `kind`; `rsa_index` picks the committed RSA-2048 PEM.
    pub(crate) fn new(kind: KeyKind, kid: String, rsa_index: usize) -> Result<DevKey, String> {
        let rng = SystemRandom::new();
        let (signer, mut jwk, public_pem) = match kind {
            KeyKind::Rsa2048 => {
                let (private, public) = RSA_2048[rsa_index % RSA_2048.len()];
                let pair = RsaKeyPair::from_pkcs8(&pem_der(private)?)
                    .map_err(|e| format!("bad committed RSA key: {e}"))?;
                let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                // No `alg`: the key serves RS256 and PS256 tokens alike.
                let jwk = json!({"kty": "RSA", "n": b64(&parts.n), "e": b64(&parts.e)});
                (Signer::Rsa(pair), jwk, public.to_owned())
            }
            KeyKind::Rsa1024 => {
                let jwk: Value = serde_json::from_str(RSA_1024_JWK)
                    .map_err(|e| format!("bad committed JWK: {e}"))?;
                (Signer::RsaUnusable(128), jwk, RSA_1024_PUB.to_owned())
            }
            KeyKind::P256 => {
                let key = Es256Key::generate().map_err(|e| match e {
                    SignerError::Crypto => "P-256 key generation failed".to_owned(),
                    e => format!("P-256 key rejected: {e}"),
                })?;
                let jwk = key.jwk(&kid);
                let pem = spki_pem(P256_SPKI_PREFIX, key.public_point());
                (Signer::P256(key), jwk, pem)
            }
            KeyKind::Ed25519 => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| "Ed25519 key generation failed".to_owned())?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|e| format!("Ed25519 key rejected: {e}"))?;
                let public = pair.public_key().as_ref().to_vec();
                let jwk =
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&public), "alg": "EdDSA"});
                let pem = spki_pem(ED25519_SPKI_PREFIX, &public);
                (Signer::Ed25519(pair), jwk, pem)
            }
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Ok(DevKey {
            kid,
            signer,
            jwk,
            public_pem,
            published: true,
        })
    }

    /// The JOSE algorithm this key signs with when the header does not ask for another it
    /// supports.
    pub(crate) fn default_alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) | Signer::RsaUnusable(_) => "RS256",
            Signer::P256(_) => "ES256",
            Signer::Ed25519(_) => "EdDSA",
        }
    }

    /// Signs `input` with `alg` if this key can, else with its default algorithm. ECDSA
    /// signatures are JOSE-style (64-byte r||s). Empty on a (practically impossible) RNG failure.
    pub(crate) fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; pair.public().modulus_len()];
                match pair.sign(padding, &rng, input, &mut out) {
                    Ok(()) => out,
                    Err(_) => Vec::new(),
                }
            }
            Signer::RsaUnusable(len) => vec![0; *len],
            Signer::P256(key) => key.sign_bytes(input).unwrap_or_default(),
            Signer::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
        }
    }

    /// True when `alg` is one this key signs with for real.
    pub(crate) fn supports(&self, alg: &str) -> bool {
        match self.signer {
            Signer::Rsa(_) | Signer::RsaUnusable(_) => {
                matches!(
                    alg,
                    "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512"
                )
            }
            Signer::P256(_) => alg == "ES256",
            Signer::Ed25519(_) => alg == "EdDSA",
        }
    }
}

/// Unpadded base64url.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside a PEM block.
fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD
        .decode(body.trim())
        .map_err(|e| format!("bad PEM: {e}"))
}

/// A `PUBLIC KEY` PEM from a fixed SPKI prefix and the raw key.
fn spki_pem(prefix: &[u8], key: &[u8]) -> String {
    let mut der = prefix.to_vec();
    der.extend_from_slice(key);
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}
