//! Shadow rules (SPEC 9, `mode = "shadow"`) through the real binary: a shadow rule that would
//! deny is recorded (audit `policy.shadow`, `countersign_shadow_matches_total{rule}`, a log
//! line) while the enforcing rule after it decides, and the request reaches the upstream.

mod common;

use std::time::{Duration, Instant};

use common::{countersign, http_client, EchoUpstream, LocalIssuer, Proxy, TestDir};
use serde_json::{json, Value};

const AUD: &str = "https://api.example.com";

const POLICY: &str = r#"
[[rule]]
name = "watch-deletes"
methods = ["DELETE"]
path_prefix = "/v1/"
action = "deny"
mode = "shadow"

[[rule]]
name = "watch-health"
path = "/healthz"
action = "deny"
mode = "shadow"

[[rule]]
name = "health"
path = "/healthz"
action = "public"

[[rule]]
name = "v1"
path_prefix = "/v1/"
action = "allow"

[[rule]]
name = "watch-after-the-decision"
path_prefix = "/v1/"
action = "deny"
mode = "shadow"
"#;

struct Env {
    dir: TestDir,
    issuer: LocalIssuer,
    echo: EchoUpstream,
    proxy: Proxy,
}

impl Env {
    async fn start() -> Env {
        let dir = TestDir::new();
        let issuer = LocalIssuer::start().await;
        let echo = EchoUpstream::start().await;
        dir.write("policies/shadow.toml", POLICY);
        let config = format!(
            "{}\n[policy]\nfiles = [\"policies/*.toml\"]\ndefault = \"deny\"\n\n\
             [approvals]\naudit_log = \"{{{{dir}}}}/audit.jsonl\"\n",
            common::basic_config(&echo.url(), &issuer.issuer(), &[AUD]),
        );
        let mut proxy = Proxy::start(&dir, &config).await;
        proxy.wait_ready().await;
        Env {
            dir,
            issuer,
            echo,
            proxy,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> u16 {
        let mut req = http_client().request(method, format!("{}{path}", self.proxy.data_url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
            .await
            .expect("data-plane request")
            .status()
            .as_u16()
    }

    async fn metrics(&self) -> String {
        http_client()
            .get(format!("{}/metrics", self.proxy.control_url()))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Every `policy.shadow` line of the audit log.
    fn shadow_events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|v| v["event"] == "policy.shadow")
            .collect()
    }

    /// Waits (the audit line is written in the background) until there are `n` shadow events.
    async fn wait_shadow_events(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let events = self.shadow_events();
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The value of the sample `name` (labels included, as exposed).
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_shadow_deny_is_recorded_while_the_allow_after_it_forwards_the_request() {
    let env = Env::start().await;
    let token = env.issuer.token(
        "svc-cleanup",
        AUD,
        json!({ "email": "cleanup@example.com" }),
    );

    // The shadow rule matches; the enforcing allow after it decides.
    let status = env
        .send(reqwest::Method::DELETE, "/v1/items/7", Some(&token))
        .await;
    assert_eq!(status, 200, "stderr:\n{}", env.proxy.stderr());
    assert_eq!(env.echo.count(), 1, "the request reached the upstream");
    assert_eq!(env.echo.last().unwrap().method, "DELETE");

    let events = env.wait_shadow_events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["rule"], "watch-deletes", "{e}");
    assert_eq!(e["actor"], "cleanup@example.com", "{e}");
    assert!(
        e["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{e}"
    );
    let d = &e["details"];
    assert_eq!(
        (&d["action"], &d["decided_by"], &d["decision"]),
        (&json!("deny"), &json!("v1"), &json!("allow")),
        "{e}"
    );
    assert_eq!(
        (&d["method"], &d["path"]),
        (&json!("DELETE"), &json!("/v1/items/7"))
    );

    let metrics = env.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "countersign_shadow_matches_total{rule=\"watch-deletes\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // A shadow rule after the deciding rule is never reached.
    assert!(!metrics.contains("watch-after-the-decision"), "{metrics}");
    let log = env.proxy.stderr();
    assert!(
        log.lines().any(|l| l.contains("shadow rule matched")
            && l.contains("watch-deletes")
            && l.contains("countersign::shadow")),
        "{log}"
    );

    // A request the shadow rule does not match records nothing more.
    let status = env
        .send(reqwest::Method::GET, "/v1/items/7", Some(&token))
        .await;
    assert_eq!(status, 200);

    // A public request: the shadow rule before the public rule is recorded, without a caller.
    let status = env.send(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(
        status, 200,
        "a shadow deny must not refuse a public request"
    );
    let events = env.wait_shadow_events(2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["rule"], "watch-health");
    assert!(events[1].get("actor").is_none(), "{}", events[1]);
    assert_eq!(events[1]["details"]["decided_by"], "health");

    let metrics = env.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "countersign_shadow_matches_total{rule=\"watch-deletes\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "countersign_shadow_matches_total{rule=\"watch-health\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(env.echo.count(), 3);

    // The audit log with the new events still verifies.
    let path = env.dir.join("audit.jsonl");
    let verify = countersign(&["audit", "verify", path.to_str().unwrap()]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
