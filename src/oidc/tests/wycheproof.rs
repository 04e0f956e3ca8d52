//! Wycheproof vectors through the very signature check the verifier uses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use wycheproof::TestResult;

use super::super::jwks::{verify_signature, KeyType, VerifyKey};
use crate::config::Algorithm;

/// One signature vector, whichever Wycheproof set it comes from.
trait Vector {
    fn tc_id(&self) -> usize;
    fn comment(&self) -> &str;
    fn msg(&self) -> &[u8];
    fn sig(&self) -> &[u8];
    fn result(&self) -> &TestResult;
}

/// One group of vectors under one key.
trait Group {
    type Test: Vector;
    fn tests(&self) -> &[Self::Test];
}

/// The signature sets share one group and test shape, with types of their own.
macro_rules! impl_vector {
    ($($set:ident),*) => {$(
        impl Vector for wycheproof::$set::Test {
            fn tc_id(&self) -> usize { self.tc_id }
            fn comment(&self) -> &str { &self.comment }
            fn msg(&self) -> &[u8] { &self.msg }
            fn sig(&self) -> &[u8] { &self.sig }
            fn result(&self) -> &TestResult { &self.result }
        }

        impl Group for wycheproof::$set::TestGroup {
            type Test = wycheproof::$set::Test;
            fn tests(&self) -> &[Self::Test] { &self.tests }
        }
    )*};
}

impl_vector!(ecdsa, rsa_pkcs1_verify, eddsa);

/// Runs one vector; returns false when the outcome contradicts the expectation.
fn agrees(key: Option<&VerifyKey>, alg: Algorithm, test: &impl Vector) -> bool {
    let sig = URL_SAFE_NO_PAD.encode(test.sig());
    let ok = key.is_some_and(|k| verify_signature(k, alg, test.msg(), &sig));
    match test.result() {
        TestResult::Valid => ok,
        TestResult::Invalid => !ok,
        TestResult::Acceptable => true,
    }
}

/// Runs every vector of a set, each group under the key `key_of` makes of it:
/// the set must hold a valid vector, and no outcome may contradict its expectation.
fn assert_set_agrees<G: Group>(
    alg: Algorithm,
    groups: &[G],
    key_of: impl Fn(&G) -> Option<VerifyKey>,
) {
    let mut failures = Vec::new();
    let mut valid = 0;
    for group in groups {
        let key = key_of(group);
        for test in group.tests() {
            valid += usize::from(*test.result() == TestResult::Valid);
            if !agrees(key.as_ref(), alg, test) {
                failures.push((test.tc_id(), test.comment().to_owned()));
            }
        }
    }
    assert!(valid > 0);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).expect("vectors load");
    assert_set_agrees(Algorithm::ES256, &set.test_groups, |group| {
        let point = &group.key.key;
        let key = VerifyKey::ec(KeyType::P256, &point[1..33], &point[33..65]);
        assert!(key.is_some(), "wycheproof keys are well-formed");
        key
    });
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256).expect("vectors load");
    assert_set_agrees(Algorithm::RS256, &set.test_groups, |group| {
        VerifyKey::rsa(&group.key.n, &group.key.e)
    });
}

#[test]
fn ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).expect("vectors load");
    assert_set_agrees(Algorithm::EdDSA, &set.test_groups, |group| {
        let key = VerifyKey::ed25519(&group.key.pk);
        assert!(key.is_some());
        key
    });
}

#[test]
fn a_key_never_verifies_an_algorithm_it_does_not_fit() {
    let ed = VerifyKey::ed25519(&[7u8; 32]).expect("key");
    assert!(!verify_signature(&ed, Algorithm::ES256, b"m", "AAAA"));
    assert!(!verify_signature(&ed, Algorithm::RS256, b"m", "AAAA"));
}
