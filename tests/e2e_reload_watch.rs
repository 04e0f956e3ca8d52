//! The policy file watcher reacts to policy files only. Before the fix, a config folder whose
//! policy glob's own folder did not exist was watched whole, so the proxy's stderr log in that
//! folder triggered a reload, whose log line triggered the next one, forever.

mod common;

use std::time::Duration;

use common::{basic_config, http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};

async fn reloads(proxy: &Proxy) -> f64 {
    let text = http_client()
        .get(format!("{}/metrics", proxy.control_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with("countersign_policy_reloads_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_log_file_next_to_the_config_triggers_no_reload() {
    let issuer = LocalIssuer::start().await;
    let echo = EchoUpstream::start().await;
    let dir = TestDir::new();
    // No [policy]: the default glob "policies/*.toml" names a folder that does not exist, so
    // the config folder itself (where the harness writes the proxy's stderr) is watched.
    let mut proxy = Proxy::start(
        &dir,
        &basic_config(&echo.url(), &issuer.issuer(), &["https://api.example.test"]),
    )
    .await;
    proxy.wait_ready().await;
    for i in 0..5 {
        dir.write(format!("notes-{i}.log"), "not a policy");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(reloads(&proxy).await, 0.0, "{}", proxy.stderr());
}
