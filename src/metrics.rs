//! Prometheus metrics: one registry per process, handed to whoever records.

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
        let requests = IntCounterVec::new(
            Opts::new(
                "countersign_requests_total",
                "Data-plane requests by matched rule and outcome.",
            ),
            &["rule", "outcome"],
        )
        .expect("static metric definition");
        let token_rejections = IntCounterVec::new(
            Opts::new(
                "countersign_token_rejections_total",
                "Bearer tokens rejected, by reason.",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "countersign_jwks_fetches_total",
                "JWKS (and discovery) fetches by issuer and result.",
            ),
            &["issuer", "result"],
        )
        .expect("static metric definition");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "countersign_upstream_latency_seconds",
                "Time from sending the request upstream to the response header.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["upstream"],
        )
        .expect("static metric definition");
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "countersign_policy_reloads_total",
                "Policy reloads by result (ok, error).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let policy_rules = IntGauge::new("countersign_policy_rules", "Rules in the active policy.")
            .expect("static metric definition");
        let shadow_matches = IntCounterVec::new(
            Opts::new(
                "countersign_shadow_matches_total",
                "Requests a shadow rule (mode = \"shadow\") matched; recorded, not enforced.",
            ),
            &["rule"],
        )
        .expect("static metric definition");
        let policy_warnings = IntGauge::new(
            "countersign_policy_warnings",
            "Coverage-lint warnings (gaps in routes and rules) of the active policy.",
        )
        .expect("static metric definition");
        // ----- approvals (issue 3) -----
        let approvals_pending = IntGauge::new(
            "countersign_approvals_pending",
            "Approval requests waiting for a decision.",
        )
        .expect("static metric definition");
        let approval_decisions = IntCounterVec::new(
            Opts::new(
                "countersign_approval_decisions_total",
                "Approval requests decided, by outcome (approved, denied, expired, cancelled).",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let approval_decision_seconds = HistogramVec::new(
            HistogramOpts::new(
                "countersign_approval_decision_seconds",
                "Time from an approval request to its decision.",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
            ]),
            &["outcome"],
        )
        .expect("static metric definition");
        let approval_executions = IntCounterVec::new(
            Opts::new(
                "countersign_approval_executions_total",
                "Approved requests sent upstream, by mode (held, background) and result.",
            ),
            &["mode", "result"],
        )
        .expect("static metric definition");
        let break_glass = IntCounterVec::new(
            Opts::new(
                "countersign_break_glass_total",
                "Requests forwarded by break-glass (without approval, reviewed afterwards).",
            ),
            &["rule"],
        )
        .expect("static metric definition");
        let grant_uses = IntCounterVec::new(
            Opts::new(
                "countersign_grant_uses_total",
                "Requests passed without a new approval under a grant an approver gave.",
            ),
            &["rule"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(token_rejections.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(policy_rules.clone()),
            Box::new(shadow_matches.clone()),
            Box::new(policy_warnings.clone()),
            Box::new(approvals_pending.clone()),
            Box::new(grant_uses.clone()),
            Box::new(approval_decisions.clone()),
            Box::new(approval_decision_seconds.clone()),
            Box::new(approval_executions.clone()),
            Box::new(break_glass.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            token_rejections,
            jwks_fetches,
            upstream_latency,
            policy_reloads,
            policy_rules,
            shadow_matches,
            policy_warnings,
            approvals_pending,
            approval_decisions,
            approval_decision_seconds,
            approval_executions,
            break_glass,
            grant_uses,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
