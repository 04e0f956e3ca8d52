//! JWK sets: parsing an issuer's JWKS into verification keys, and the one signature check every
//! token (and every Wycheproof vector) goes through.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use crate::config::Algorithm;

/// Smallest RSA modulus we accept (bits). Smaller keys in a JWKS are skipped.
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus ring verifies (bits); larger keys could never verify, so they are skipped.
const MAX_RSA_BITS: usize = 8192;

/// What kind of public key a JWK holds (after validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    /// RSA (2048 to 8192 bits).
    Rsa,
    /// ECDSA on P-256.
    P256,
    /// ECDSA on P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// True when a key of this type can verify `alg`.
    fn fits(self, alg: Algorithm) -> bool {
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self == KeyType::Rsa,
            Algorithm::ES256 => self == KeyType::P256,
            Algorithm::ES384 => self == KeyType::P384,
            Algorithm::EdDSA => self == KeyType::Ed25519,
        }
    }
}

/// A public key usable for JWS verification.
pub(crate) struct VerifyKey {
    /// `kid`, if the JWK had one.
    pub(crate) kid: Option<String>,
    /// The JWK's `alg`, if it named one: the key may only verify that algorithm.
    alg: Option<Algorithm>,
    /// Key type and curve.
    key_type: KeyType,
    /// The key in the form `jsonwebtoken::crypto::verify` takes.
    decoding: DecodingKey,
    /// Canonical public material, so an unchanged key keeps its `Arc` across refetches (cached
    /// tokens stay valid) while a replaced one does not.
    material: Vec<u8>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// An RSA key from big-endian modulus and exponent (leading zero bytes tolerated).
    /// `None` when the modulus is outside 2048..=8192 bits.
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Option<VerifyKey> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = bit_length(n);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || e.is_empty() {
            return None;
        }
        let mut material = b"RSA".to_vec();
        material.extend_from_slice(&(n.len() as u32).to_be_bytes());
        material.extend_from_slice(n);
        material.extend_from_slice(e);
        Some(VerifyKey {
            kid: None,
            alg: None,
            key_type: KeyType::Rsa,
            decoding: DecodingKey::from_rsa_raw_components(n, e),
            material,
        })
    }

    /// An ECDSA key from affine coordinates (each exactly the curve's field size).
    pub(crate) fn ec(key_type: KeyType, x: &[u8], y: &[u8]) -> Option<VerifyKey> {
        let size = match key_type {
            KeyType::P256 => 32,
            KeyType::P384 => 48,
            KeyType::Rsa | KeyType::Ed25519 => return None,
        };
        if x.len() != size || y.len() != size {
            return None;
        }
        // SEC1 uncompressed point: what ring's fixed-size ECDSA verification parses.
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let mut material = if key_type == KeyType::P256 {
            b"P-256".to_vec()
        } else {
            b"P-384".to_vec()
        };
        material.extend_from_slice(&point);
        Some(VerifyKey {
            kid: None,
            alg: None,
            key_type,
            decoding: DecodingKey::from_ec_der(&point),
            material,
        })
    }

    /// An Ed25519 key from its 32-byte public key.
    pub(crate) fn ed25519(x: &[u8]) -> Option<VerifyKey> {
        if x.len() != 32 {
            return None;
        }
        let mut material = b"Ed25519".to_vec();
        material.extend_from_slice(x);
        Some(VerifyKey {
            kid: None,
            alg: None,
            key_type: KeyType::Ed25519,
            decoding: DecodingKey::from_ed_der(x),
            material,
        })
    }

    /// True when this key may verify a token signed with `alg`: the JWK's `alg` (if any) is
    /// exactly `alg` and the key type and curve fit it.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|own| own == alg) && self.key_type.fits(alg)
    }

    /// Same key, same kid, same alg restriction.
    fn same_as(&self, other: &VerifyKey) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.material == other.material
    }
}

/// Checks a JWS signature: `signature_b64` (base64url, no padding) over `signing_input` with
/// `key` for `alg`. False for any mismatch, including a key that does not fit the algorithm.
/// The Verifier and the Wycheproof tests both use exactly this function.
pub(crate) fn verify_signature(
    key: &VerifyKey,
    alg: Algorithm,
    signing_input: &[u8],
    signature_b64: &str,
) -> bool {
    // jsonwebtoken does not check that the key family fits the algorithm (an RSA key with
    // ES256 would hit its `unreachable!`), so we do, before calling it.
    if !key.fits(alg) {
        return false;
    }
    jsonwebtoken::crypto::verify(signature_b64, signing_input, &key.decoding, jose_alg(alg))
        .unwrap_or(false)
}

/// Our algorithm enum to jsonwebtoken's (which also has HMAC, never produced here).
fn jose_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
        Algorithm::RS512 => jsonwebtoken::Algorithm::RS512,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        Algorithm::PS384 => jsonwebtoken::Algorithm::PS384,
        Algorithm::PS512 => jsonwebtoken::Algorithm::PS512,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
    }
}

/// One issuer's usable keys, as of one JWKS fetch. Immutable; replaced as a whole.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    by_kid: HashMap<String, Vec<usize>>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that are not usable signature keys are skipped (and
    /// counted in the second value); a document without a `keys` array is an error.
    /// Keys identical to one in `previous` reuse its `Arc`, so tokens cached as verified with
    /// them stay valid.
    pub(crate) fn parse(body: &[u8], previous: Option<&KeySet>) -> Result<(KeySet, usize), String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document =
            serde_json::from_slice(body).map_err(|e| format!("JWKS is not a JWK set: {e}"))?;
        let mut set = KeySet::default();
        let mut skipped = 0;
        for value in doc.keys {
            match parse_jwk(value) {
                Some(key) => {
                    let key = previous
                        .and_then(|p| p.keys.iter().find(|old| old.same_as(&key)).cloned())
                        .unwrap_or_else(|| Arc::new(key));
                    set.push(key);
                }
                None => skipped += 1,
            }
        }
        Ok((set, skipped))
    }

    fn push(&mut self, key: Arc<VerifyKey>) {
        if let Some(kid) = &key.kid {
            self.by_kid
                .entry(kid.clone())
                .or_default()
                .push(self.keys.len());
        }
        self.keys.push(key);
    }

    /// Number of usable keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Keys that may verify a token with this `kid` (or, without a kid, every key) and `alg`.
    /// `None` when a kid was given and no key has it at all (an unknown key: worth a refetch).
    pub(crate) fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<Vec<&Arc<VerifyKey>>> {
        match kid {
            Some(kid) => {
                let idx = self.by_kid.get(kid)?;
                Some(
                    idx.iter()
                        .filter_map(|&i| self.keys.get(i))
                        .filter(|k| k.fits(alg))
                        .collect(),
                )
            }
            None => Some(self.keys.iter().filter(|k| k.fits(alg)).collect()),
        }
    }

    /// True when `key` (the very same `Arc`) is still part of this set. Cheap: a map lookup by
    /// kid and pointer comparisons.
    pub(crate) fn contains(&self, key: &Arc<VerifyKey>) -> bool {
        match &key.kid {
            Some(kid) => self.by_kid.get(kid).is_some_and(|idx| {
                idx.iter()
                    .any(|&i| self.keys.get(i).is_some_and(|k| Arc::ptr_eq(k, key)))
            }),
            None => self.keys.iter().any(|k| Arc::ptr_eq(k, key)),
        }
    }
}

/// The members of a JWK we look at. Unknown members (x5c, x5t, ...) are ignored: they are never
/// used for anything.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// One JWK to a verification key, or `None` when it is not a usable public signature key:
/// `use` other than `sig`, `key_ops` without `verify`, an `alg` we do not accept, RSA under
/// 2048 bits, an unsupported `kty`/`crv`, or bad encodings.
fn parse_jwk(value: serde_json::Value) -> Option<VerifyKey> {
    let raw: RawJwk = serde_json::from_value(value).ok()?;
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if raw
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return None;
    }
    let alg = match raw.alg.as_deref() {
        Some(name) => Some(Algorithm::from_jose(name)?),
        None => None,
    };
    let mut key = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => VerifyKey::rsa(&b64(raw.n.as_deref()?)?, &b64(raw.e.as_deref()?)?)?,
        ("EC", Some("P-256")) => VerifyKey::ec(
            KeyType::P256,
            &b64(raw.x.as_deref()?)?,
            &b64(raw.y.as_deref()?)?,
        )?,
        ("EC", Some("P-384")) => VerifyKey::ec(
            KeyType::P384,
            &b64(raw.x.as_deref()?)?,
            &b64(raw.y.as_deref()?)?,
        )?,
        ("OKP", Some("Ed25519")) => VerifyKey::ed25519(&b64(raw.x.as_deref()?)?)?,
        _ => return None,
    };
    // A key whose own alg does not fit its type could never verify anything.
    if alg.is_some_and(|a| !key.key_type.fits(a)) {
        return None;
    }
    key.kid = raw.kid;
    key.alg = alg;
    Some(key)
}

/// Strict base64url without padding.
fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Bit length of a big-endian unsigned integer without leading zero bytes.
fn bit_length(n: &[u8]) -> usize {
    match n.first() {
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}
