//! Integrity and confidentiality of records in a shared store (SPEC 8: "records in a shared
//! store carry a MAC keyed from `signing_key`; stored `Authorization`, `Cookie` and
//! `Proxy-Authorization` values are encrypted at rest").
//!
//! Owns the two keys derived from the approval signing key and the byte formats:
//! - a sealed record is `m1.<base64url HMAC-SHA256>.<json>`; the MAC covers a version tag, the
//!   record kind (`approval`, `request`, `result`) and the approval id, so a record cannot be
//!   edited, nor moved to another id or kind;
//! - an encrypted header value is `\0cs-enc1` followed by a 96-bit random nonce and the
//!   AES-256-GCM ciphertext of the value, with the approval id and header name as associated
//!   data. A NUL byte never occurs in an HTTP header value, so no real value looks encrypted.
//!
//! Must not know the store's layout or the lifecycle rules: it turns bytes into sealed bytes
//! and back, and says when something does not verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::approval::record::{ApprovalId, StoredHeader, StoredRequest};

/// Prefix of a sealed record (format version 1).
const SEALED_PREFIX: &str = "m1.";
/// Prefix of an encrypted header value.
const ENCRYPTED_PREFIX: &[u8] = b"\0cs-enc1";
/// Header values that are credentials, encrypted at rest.
pub const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// Why a stored record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not in the sealed format (written by something else, or truncated).
    #[error("not a sealed record")]
    NotSealed,
    /// The MAC does not match: edited, moved, or sealed with another key.
    #[error("MAC does not match")]
    BadMac,
    /// An encrypted header value does not decrypt.
    #[error("encrypted {0} value does not decrypt")]
    BadCiphertext(String),
    /// A credential header is stored in clear text.
    #[error("{0} value is stored in clear text")]
    Plaintext(String),
    /// The crypto library failed (no randomness).
    #[error("crypto failure")]
    Crypto,
}

/// The MAC and encryption keys of one deployment. Every replica derives the same keys from the
/// same `signing_key`.
pub struct RecordSeal {
    mac: hmac::Key,
    aead: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for RecordSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are never printed.
        f.write_str("RecordSeal(..)")
    }
}

fn derive(label: &[u8], material: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, label), material)
}

impl RecordSeal {
    /// Keys derived from secret `material` (the approval signing key's PEM): one HMAC-SHA256
    /// per purpose, with distinct labels, so neither key says anything about the other or about
    /// the signing key.
    pub fn derive_from(material: &[u8]) -> Self {
        let mac = derive(b"countersign store record mac v1", material);
        let enc = derive(b"countersign store credential key v1", material);
        Self::from_keys(mac.as_ref(), enc.as_ref())
    }

    /// Fresh random keys: records are readable by this process only (a single replica, tests).
    pub fn random() -> Result<Self, SealError> {
        let rng = SystemRandom::new();
        let mut mac = [0u8; 32];
        let mut enc = [0u8; 32];
        rng.fill(&mut mac).map_err(|_| SealError::Crypto)?;
        rng.fill(&mut enc).map_err(|_| SealError::Crypto)?;
        Ok(Self::from_keys(&mac, &enc))
    }

    fn from_keys(mac: &[u8], enc: &[u8]) -> Self {
        // 32 bytes is AES-256's key length, so this cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, &enc[..32]).unwrap_or_else(|_| {
            unreachable!("a 32-byte key is a valid AES-256 key");
        });
        Self {
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac),
            aead: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// `json`, a record of `kind` for approval `id`, with its MAC in front.
    pub fn seal(&self, kind: &str, id: &ApprovalId, json: &str) -> String {
        let tag = hmac::sign(&self.mac, &mac_input(kind, id, json));
        let tag = URL_SAFE_NO_PAD.encode(tag.as_ref());
        format!("{SEALED_PREFIX}{tag}.{json}")
    }

    /// The JSON inside a sealed record, once its MAC verifies for `kind` and `id`.
    pub fn open<'a>(
        &self,
        kind: &str,
        id: &ApprovalId,
        sealed: &'a str,
    ) -> Result<&'a str, SealError> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SealError::NotSealed)?;
        let (tag, json) = rest.split_once('.').ok_or(SealError::NotSealed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SealError::NotSealed)?;
        // Constant-time comparison.
        hmac::verify(&self.mac, &mac_input(kind, id, json), &tag).map_err(|_| SealError::BadMac)?;
        Ok(json)
    }

    /// A copy of `req` whose credential header values are encrypted (for writing).
    pub fn encrypt_credentials(
        &self,
        id: &ApprovalId,
        req: &StoredRequest,
    ) -> Result<StoredRequest, SealError> {
        let mut out = req.clone();
        for h in out.headers.iter_mut().filter(|h| is_credential(h)) {
            h.value = self.encrypt(id, &h.name, &h.value)?;
        }
        Ok(out)
    }

    /// `req` with its credential header values decrypted (after reading). A credential value
    /// in clear text is refused: this store never writes one, so someone else did.
    pub fn decrypt_credentials(
        &self,
        id: &ApprovalId,
        mut req: StoredRequest,
    ) -> Result<StoredRequest, SealError> {
        for h in req.headers.iter_mut().filter(|h| is_credential(h)) {
            h.value = self.decrypt(id, &h.name, &h.value)?;
        }
        Ok(req)
    }

    fn encrypt(&self, id: &ApprovalId, name: &str, value: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Crypto)?;
        let mut buf = value.to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(id, name)),
                &mut buf,
            )
            .map_err(|_| SealError::Crypto)?;
        let mut out = Vec::with_capacity(ENCRYPTED_PREFIX.len() + NONCE_LEN + buf.len());
        out.extend_from_slice(ENCRYPTED_PREFIX);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn decrypt(&self, id: &ApprovalId, name: &str, stored: &[u8]) -> Result<Vec<u8>, SealError> {
        let body = stored
            .strip_prefix(ENCRYPTED_PREFIX)
            .ok_or_else(|| SealError::Plaintext(name.to_owned()))?;
        let bad = || SealError::BadCiphertext(name.to_owned());
        if body.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(bad());
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad(id, name)), &mut buf)
            .map_err(|_| bad())?;
        Ok(plain.to_vec())
    }
}

/// What the MAC covers: a version tag, then kind, id and JSON, each length-prefixed.
fn mac_input(kind: &str, id: &ApprovalId, json: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(json.len() + 96);
    v.extend_from_slice(b"countersign-record-v1");
    for part in [kind.as_bytes(), id.as_str().as_bytes(), json.as_bytes()] {
        v.extend_from_slice(&(part.len() as u64).to_be_bytes());
        v.extend_from_slice(part);
    }
    v
}

fn is_credential(h: &StoredHeader) -> bool {
    CREDENTIAL_HEADERS.contains(&h.name.as_str())
}

fn aad(id: &ApprovalId, name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.as_str().len() + name.len() + 1);
    v.extend_from_slice(id.as_str().as_bytes());
    v.push(0);
    v.extend_from_slice(name.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: &[u8]) -> StoredRequest {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "authorization",
            http::HeaderValue::from_bytes(auth).unwrap(),
        );
        headers.insert("x-other", http::HeaderValue::from_static("visible"));
        StoredRequest::new(
            &http::Method::POST,
            "h",
            "/p",
            None,
            &headers,
            Vec::new(),
            "echo",
            "sub",
        )
    }

    #[test]
    fn a_sealed_record_opens_only_unchanged_for_its_kind_and_id() {
        let seal = RecordSeal::derive_from(b"key material");
        let (a, b) = (ApprovalId::generate(), ApprovalId::generate());
        let sealed = seal.seal("approval", &a, r#"{"x":1}"#);
        assert_eq!(seal.open("approval", &a, &sealed), Ok(r#"{"x":1}"#));
        assert_eq!(seal.open("approval", &b, &sealed), Err(SealError::BadMac));
        assert_eq!(seal.open("request", &a, &sealed), Err(SealError::BadMac));
        let edited = sealed.replace(r#""x":1"#, r#""x":2"#);
        assert_eq!(seal.open("approval", &a, &edited), Err(SealError::BadMac));
        assert_eq!(
            seal.open("approval", &a, r#"{"x":1}"#),
            Err(SealError::NotSealed)
        );
        let other = RecordSeal::derive_from(b"other key");
        assert_eq!(other.open("approval", &a, &sealed), Err(SealError::BadMac));
    }

    #[test]
    fn credentials_are_encrypted_and_bound_to_their_approval() {
        let seal = RecordSeal::random().unwrap();
        let (a, b) = (ApprovalId::generate(), ApprovalId::generate());
        let req = request(b"Bearer secret-token");
        let at_rest = seal.encrypt_credentials(&a, &req).unwrap();
        let auth = &at_rest.headers[0];
        assert_eq!(auth.name, "authorization");
        assert!(!auth
            .value
            .windows(b"secret-token".len())
            .any(|w| w == b"secret-token"));
        assert_eq!(at_rest.headers[1].value, b"visible");
        assert_eq!(seal.decrypt_credentials(&a, at_rest.clone()).unwrap(), req);
        assert_eq!(
            seal.decrypt_credentials(&b, at_rest),
            Err(SealError::BadCiphertext("authorization".into()))
        );
        assert_eq!(
            seal.decrypt_credentials(&a, req),
            Err(SealError::Plaintext("authorization".into()))
        );
    }
}
