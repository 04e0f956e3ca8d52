//! The PagerDuty client on its own (`countersign::oncall::PagerDutyClient`) against the fake
//! PagerDuty REST API v2: paging, deduplication, malformed answers, the token, the cache.

mod common;

use std::time::Duration;

use common::fake_pagerduty::{FakePagerDuty, PD_TOKEN};
use countersign::approval::OnCallResolver;
use countersign::config::PagerDuty;
use countersign::oncall::PagerDutyClient;
use countersign::secret::Secret;

fn client(pd: &FakePagerDuty, cache: Duration) -> PagerDutyClient {
    PagerDutyClient::new(&PagerDuty {
        api_token: Secret::new(PD_TOKEN),
        api_url: url::Url::parse(&pd.url()).unwrap(),
        cache,
    })
    .unwrap()
}

#[tokio::test]
async fn every_page_is_read_and_people_are_listed_once_in_order() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call(
        "S1",
        &[
            ("P1", "Alice", "alice@example.com"),
            ("P2", "Bob", "BOB@example.com"),
            ("P3", "Carol", "carol@example.com"),
        ],
    );
    pd.set_on_call("S2", &[("P9", "Zed", "zed@example.com")]);
    // Four entries (Alice twice), two a page: the client must follow `more`.
    pd.set_page_cap(Some(2));
    let got = client(&pd, Duration::ZERO).on_call("S1").await.unwrap();
    assert_eq!(
        got,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
    assert_eq!(pd.oncalls_calls(), 2);
    assert_eq!(pd.users_calls(), 3);
    assert_eq!(pd.asked(), vec![vec!["S1".to_owned()]; 2]);
}

#[tokio::test]
async fn nobody_on_call_is_an_empty_answer() {
    let pd = FakePagerDuty::start().await;
    let got = client(&pd, Duration::ZERO).on_call("EMPTY").await.unwrap();
    assert!(got.is_empty());
    assert_eq!(pd.users_calls(), 0);
}

#[tokio::test]
async fn an_answer_that_is_not_json_fails_the_entry() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P1", "Alice", "alice@example.com")]);
    pd.set_garbage(true);
    let err = client(&pd, Duration::ZERO).on_call("S1").await.unwrap_err();
    assert!(err.0.starts_with("GET /oncalls: unexpected JSON"), "{err}");
}

#[tokio::test]
async fn a_failed_answer_is_not_cached_and_a_good_one_is() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P1", "Alice", "alice@example.com")]);
    let c = client(&pd, Duration::from_secs(60));
    pd.set_fault(Some(503));
    let err = c.on_call("S1").await.unwrap_err();
    assert_eq!(err.0, "GET /oncalls: PagerDuty answered 503");
    pd.set_fault(None);
    assert_eq!(c.on_call("S1").await.unwrap(), ["alice@example.com"]);
    // Cached now: a fault or a handover is not seen until the entry expires.
    pd.set_fault(Some(500));
    assert_eq!(c.on_call("S1").await.unwrap(), ["alice@example.com"]);
    assert_eq!(pd.oncalls_calls(), 2);
    // Another schedule is its own entry.
    assert!(c.on_call("S2").await.is_err());
}

#[tokio::test]
async fn concurrent_askers_share_one_fetch() {
    let pd = FakePagerDuty::start().await;
    pd.set_on_call("S1", &[("P1", "Alice", "alice@example.com")]);
    pd.set_latency(Duration::from_millis(200));
    let c = client(&pd, Duration::from_secs(60));
    let answers = futures::future::join_all((0..10).map(|_| c.on_call("S1"))).await;
    for a in answers {
        assert_eq!(a.unwrap(), ["alice@example.com"]);
    }
    assert_eq!(pd.oncalls_calls(), 1);
}

#[tokio::test]
async fn the_token_is_sent_as_pagerduty_wants_and_never_shown() {
    let pd = FakePagerDuty::start().await;
    let c = client(&pd, Duration::ZERO);
    assert!(
        !format!("{c:?}").contains(PD_TOKEN),
        "Debug hides the token"
    );
    c.on_call("S1").await.unwrap();
    assert_eq!(pd.unauthorized(), 0);
    let wrong = PagerDutyClient::new(&PagerDuty {
        api_token: Secret::new("u+wrong"),
        api_url: url::Url::parse(&pd.url()).unwrap(),
        cache: Duration::ZERO,
    })
    .unwrap();
    let err = wrong.on_call("S1").await.unwrap_err();
    assert_eq!(err.0, "GET /oncalls: PagerDuty answered 401");
    assert_eq!(pd.unauthorized(), 1);
}
