//! Prometheus metrics: one registry per process, handed to whoever records.

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric Countersign exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `countersign_requests_total{rule,outcome}`.
    pub requests: IntCounterVec,
    /// `countersign_token_rejections_total{reason}`.
    pub token_rejections: IntCounterVec,
    /// `countersign_jwks_fetches_total{issuer,result}`.
    pub jwks_fetches: IntCounterVec,
    /// `countersign_upstream_latency_seconds{upstream}`.
    pub upstream_latency: HistogramVec,
    /// `countersign_policy_reloads_total{result}`.
    pub policy_reloads: IntCounterVec,
    /// `countersign_policy_rules`: rules in the active policy.
    pub policy_rules: IntGauge,
    /// `countersign_shadow_matches_total{rule}`: requests a `mode = "shadow"` rule matched
    /// (recorded, not enforced).
    pub shadow_matches: IntCounterVec,
    /// `countersign_policy_warnings`: coverage-lint warnings of the active config and policy
    /// (SPEC 8); anything above 0 is a gap worth closing.
    pub policy_warnings: IntGauge,
    /// `countersign_approvals_pending`: approvals waiting for a decision.
    pub approvals_pending: IntGauge,
    /// `countersign_approval_decisions_total{outcome}`: approved, denied, expired, cancelled.
    pub approval_decisions: IntCounterVec,
    /// `countersign_approval_decision_seconds{outcome}`: time from request to decision.
    pub approval_decision_seconds: HistogramVec,
    /// `countersign_approval_executions_total{mode,result}`: stored requests sent upstream
    /// (mode held|background, result ok|error).
    pub approval_executions: IntCounterVec,
    /// `countersign_break_glass_total{rule}`: requests forwarded by break-glass (SPEC 9).
    pub break_glass: IntCounterVec,
    /// `countersign_grant_uses_total{rule}`: requests passed under a grant (SPEC 9).
    pub grant_uses: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        Self {
            requests: counters(
                r,
                "countersign_requests_total",
                "Data-plane requests by matched rule and outcome.",
                &["rule", "outcome"],
            ),
            token_rejections: counters(
                r,
                "countersign_token_rejections_total",
                "Bearer tokens rejected, by reason.",
                &["reason"],
            ),
            jwks_fetches: counters(
                r,
                "countersign_jwks_fetches_total",
                "JWKS (and discovery) fetches by issuer and result.",
                &["issuer", "result"],
            ),
            upstream_latency: histograms(
                r,
                "countersign_upstream_latency_seconds",
                "Time from sending the request upstream to the response header.",
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
                &["upstream"],
            ),
            policy_reloads: counters(
                r,
                "countersign_policy_reloads_total",
                "Policy reloads by result (ok, error).",
                &["result"],
            ),
            policy_rules: gauge(r, "countersign_policy_rules", "Rules in the active policy."),
            shadow_matches: counters(
                r,
                "countersign_shadow_matches_total",
                "Requests a shadow rule (mode = \"shadow\") matched; recorded, not enforced.",
                &["rule"],
            ),
            policy_warnings: gauge(
                r,
                "countersign_policy_warnings",
                "Coverage-lint warnings (gaps in routes and rules) of the active policy.",
            ),
            // ----- approvals (issue 3) -----
            approvals_pending: gauge(
                r,
                "countersign_approvals_pending",
                "Approval requests waiting for a decision.",
            ),
            approval_decisions: counters(
                r,
                "countersign_approval_decisions_total",
                "Approval requests decided, by outcome (approved, denied, expired, cancelled).",
                &["outcome"],
            ),
            approval_decision_seconds: histograms(
                r,
                "countersign_approval_decision_seconds",
                "Time from an approval request to its decision.",
                vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
                    86400.0,
                ],
                &["outcome"],
            ),
            approval_executions: counters(
                r,
                "countersign_approval_executions_total",
                "Approved requests sent upstream, by mode (held, background) and result.",
                &["mode", "result"],
            ),
            break_glass: counters(
                r,
                "countersign_break_glass_total",
                "Requests forwarded by break-glass (without approval, reviewed afterwards).",
                &["rule"],
            ),
            grant_uses: counters(
                r,
                "countersign_grant_uses_total",
                "Requests passed without a new approval under a grant an approver gave.",
                &["rule"],
            ),
            registry,
        }
    }

    /// The registry, for collectors registered elsewhere.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `metric`, registered in `registry` (every definition and name here is static and unique, so
/// neither step can fail).
fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("static metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// A counter per value of `labels`, registered in `registry`.
fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A histogram with `buckets` per value of `labels`, registered in `registry`.
fn histograms(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    registered(registry, HistogramVec::new(opts, labels))
}

/// A gauge, registered in `registry`.
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
