//! Records shadow-rule matches on the data plane (SPEC 9, `mode = "shadow"`): per match one
//! log line (target `countersign::shadow`), one `countersign_shadow_matches_total{rule}`
//! increment and one audit `policy.shadow` event.
//!
//! Owns only the recording. The policy found the matches ([`Decision::shadow`]); nothing here
//! may change what happens to the request, so the audit line is written in the background and
//! a failure to write it is logged, never answered to the caller.

use crate::audit::{AuditLog, Event};
use crate::identity::Principal;
use crate::metrics::Metrics;
use crate::policy::{CanonicalRequest, Decision};

/// Where shadow matches go.
#[derive(Debug, Clone)]
pub struct ShadowRecorder {
    metrics: Metrics,
    audit: AuditLog,
}

impl ShadowRecorder {
    /// Records into `metrics` and `audit`.
    pub fn new(metrics: Metrics, audit: AuditLog) -> Self {
        Self { metrics, audit }
    }

    /// Records every shadow rule that matched on the way to `decision` for request
    /// `request_id` (`who` = the caller, `None` for a public request whose token was not read).
    pub fn record(
        &self,
        decision: &Decision<'_>,
        request_id: &str,
        req: &CanonicalRequest,
        who: Option<&Principal>,
    ) {
        for rule in &decision.shadow {
            tracing::info!(
                target: "countersign::shadow",
                request_id,
                rule = %rule.name,
                action = rule.action.as_str(),
                decided_by = decision.rule_name(),
                decision = decision.action.as_str(),
                "shadow rule matched; not enforced"
            );
            self.metrics
                .shadow_matches
                .with_label_values(&[rule.name.as_str()])
                .inc();
            let mut event = Event::new("policy.shadow")
                .request_id(request_id)
                .rule(&rule.name)
                .field("action", rule.action.as_str())
                .field("decided_by", decision.rule_name())
                .field("decision", decision.action.as_str())
                .field("method", req.method.as_str())
                .field("host", &req.host)
                .field("path", &req.path);
            if let Some(who) = who {
                event = event
                    .actor(who.email.as_deref().unwrap_or(&who.subject))
                    .field("requester_iss", &who.issuer)
                    .field("requester_sub", &who.subject);
            }
            let audit = self.audit.clone();
            let rule = rule.name.clone();
            tokio::spawn(async move {
                if let Err(e) = audit.append(event).await {
                    tracing::error!(target: "countersign::shadow", rule, error = %e, "could not audit a shadow match");
                }
            });
        }
    }
}
