//! Tests of the real `Verifier` against the development issuer, plus unit tests of the parts.

mod attacks;
mod bearer;
mod keys;
mod prop;
mod valid;
mod wycheproof;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{TokenError, Verifier};
use crate::clock::ManualClock;
use crate::config::{Algorithm, Issuer};
use crate::devidp::{DevIdp, KeyKind};
use crate::metrics::Metrics;

/// The audience every test verifier accepts.
const AUD: &str = "https://api.example.test";

/// A development issuer, a manual clock and a started verifier trusting the issuer.
struct Harness {
    idp: DevIdp,
    clock: Arc<ManualClock>,
    verifier: Verifier,
    metrics: Metrics,
}

impl Harness {
    /// Ready harness with default issuer settings.
    async fn new() -> Harness {
        Self::ready(|_| {}, |_| {}).await
    }

    /// `prepare` runs on the issuer before the verifier starts (add keys, set outage, ...);
    /// `tweak` adjusts the issuer config. Does not wait for readiness.
    async fn build(prepare: impl FnOnce(&DevIdp), tweak: impl FnOnce(&mut Issuer)) -> Harness {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let idp = DevIdp::start_with_clock(clock.clone())
            .await
            .expect("dev idp starts");
        prepare(&idp);
        let mut issuer = issuer_for(&idp);
        tweak(&mut issuer);
        let metrics = Metrics::new();
        let verifier = Verifier::new(vec![issuer], http(), clock.clone(), metrics.clone());
        verifier.start();
        Harness {
            idp,
            clock,
            verifier,
            metrics,
        }
    }

    /// Like [`Harness::build`] and waits until the keys are loaded.
    async fn ready(prepare: impl FnOnce(&DevIdp), tweak: impl FnOnce(&mut Issuer)) -> Harness {
        let h = Self::build(prepare, tweak).await;
        assert!(h.verifier.wait_ready(Duration::from_secs(5)).await);
        h
    }

    /// A ready harness whose issuer signs with every algorithm the verifier supports: the
    /// harness and one (kid, alg) each for RS256, PS256, ES256 and EdDSA.
    async fn every_algorithm() -> (Harness, Vec<(String, &'static str)>) {
        let mut kids = Vec::new();
        let h = Self::ready(
            |idp| {
                kids.push((idp.default_kid(), "RS256"));
                kids.push((idp.default_kid(), "PS256"));
                kids.push((idp.add_key(KeyKind::P256), "ES256"));
                kids.push((idp.add_key(KeyKind::Ed25519), "EdDSA"));
            },
            |_| {},
        )
        .await;
        (h, kids)
    }

    fn now(&self) -> u64 {
        use crate::clock::Clock;
        self.clock.unix()
    }

    /// Standard valid claims for this issuer, merged with `extra`.
    fn claims(&self, extra: Value) -> Value {
        let now = self.now();
        let mut claims = json!({
            "iss": self.idp.issuer(),
            "sub": "alice",
            "aud": AUD,
            "iat": now,
            "exp": now + 3600,
        });
        if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            for (k, v) in extra {
                if v.is_null() {
                    map.remove(&k);
                } else {
                    map.insert(k, v);
                }
            }
        }
        claims
    }

    /// A token signed by `kid` with header `{"alg": alg, "kid": kid}` and [`Harness::claims`].
    fn token(&self, kid: &str, alg: &str, extra: Value) -> String {
        self.idp
            .mint_with(kid, json!({"alg": alg, "kid": kid}), self.claims(extra))
    }

    /// A valid RS256 token from the default key.
    fn default_token(&self) -> String {
        self.token(&self.idp.default_kid(), "RS256", json!({}))
    }

    async fn verify(&self, token: &str) -> Result<Arc<crate::identity::Principal>, TokenError> {
        self.verifier.verify(token).await
    }

    /// The error `token` is refused with; panics when it verifies.
    async fn refusal(&self, token: &str) -> TokenError {
        self.verify(token).await.unwrap_err()
    }

    /// Asserts that `token` is refused as invalid for `reason`; `case` names it on failure.
    async fn refuses(&self, token: &str, reason: super::Reason, case: impl std::fmt::Display) {
        assert_eq!(self.refusal(token).await, invalid(reason), "{case}");
    }

    /// Moves the clock and lets the refreshers look at it.
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.verifier.wake_refreshers();
    }
}

/// Issuer settings for `idp` with the defaults of the config file.
fn issuer_for(idp: &DevIdp) -> Issuer {
    Issuer {
        issuer: idp.issuer(),
        audiences: vec![AUD.to_owned()],
        jwks_uri: None,
        algorithms: Algorithm::defaults(),
        leeway: Duration::from_secs(60),
        require_typ: None,
        refresh: Duration::from_secs(300),
        identity_claim: "email".into(),
        approvers: false,
    }
}

/// An HTTP client that never goes through a proxy from the environment.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

/// Polls `cond` until true or 5 s pass.
async fn eventually<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Shorthand for an `InvalidToken` reason.
fn invalid(reason: super::Reason) -> TokenError {
    TokenError::InvalidToken(reason)
}
