//! Wycheproof vectors through the very signature check the verifier uses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use wycheproof::TestResult;

use super::super::jwks::{verify_signature, KeyType, VerifyKey};
use crate::config::Algorithm;

/// Runs one vector; returns false when the outcome contradicts the expectation.
fn agrees(
    key: Option<&VerifyKey>,
    alg: Algorithm,
    msg: &[u8],
    sig: &[u8],
    want: &TestResult,
) -> bool {
    let ok = key.is_some_and(|k| verify_signature(k, alg, msg, &URL_SAFE_NO_PAD.encode(sig)));
    match want {
        TestResult::Valid => ok,
        TestResult::Invalid => !ok,
        TestResult::Acceptable => true,
    }
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).expect("vectors load");
    let mut failures = Vec::new();
    let mut valid = 0;
    for group in set.test_groups {
        let point = &group.key.key;
        let key = VerifyKey::ec(KeyType::P256, &point[1..33], &point[33..65]);
        assert!(key.is_some(), "wycheproof keys are well-formed");
        for test in group.tests {
            valid += usize::from(test.result == TestResult::Valid);
            if !agrees(
                key.as_ref(),
                Algorithm::ES256,
                &test.msg,
                &test.sig,
                &test.result,
            ) {
                failures.push((test.tc_id, test.comment));
            }
        }
    }
    assert!(valid > 0);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256).expect("vectors load");
    let mut failures = Vec::new();
    let mut valid = 0;
    for group in set.test_groups {
        let key = VerifyKey::rsa(&group.key.n, &group.key.e);
        for test in group.tests {
            valid += usize::from(test.result == TestResult::Valid);
            if !agrees(
                key.as_ref(),
                Algorithm::RS256,
                &test.msg,
                &test.sig,
                &test.result,
            ) {
                failures.push((test.tc_id, test.comment));
            }
        }
    }
    assert!(valid > 0);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).expect("vectors load");
    let mut failures = Vec::new();
    let mut valid = 0;
    for group in set.test_groups {
        let key = VerifyKey::ed25519(&group.key.pk);
        assert!(key.is_some());
        for test in group.tests {
            valid += usize::from(test.result == TestResult::Valid);
            if !agrees(
                key.as_ref(),
                Algorithm::EdDSA,
                &test.msg,
                &test.sig,
                &test.result,
            ) {
                failures.push((test.tc_id, test.comment));
            }
        }
    }
    assert!(valid > 0);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn a_key_never_verifies_an_algorithm_it_does_not_fit() {
    let ed = VerifyKey::ed25519(&[7u8; 32]).expect("key");
    assert!(!verify_signature(&ed, Algorithm::ES256, b"m", "AAAA"));
    assert!(!verify_signature(&ed, Algorithm::RS256, b"m", "AAAA"));
}
