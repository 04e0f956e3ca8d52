//! The approval rule the broker-level tests share: `prod-deploy`, approved by the `sre-leads`
//! group, carol or dev, one approval, 55 s hold, one hour to expire, `/token` redacted.
//!
//! Owns these fixture values only; tests that need another quorum or notify list change the
//! returned spec with struct-update syntax, never by copying it.

use std::path::PathBuf;
use std::time::Duration;

use countersign::policy::{
    Action, ApprovalSpec, ApproveVia, Approver, Mode, Origin, PathMatch, Quorum, Requirements, Rule,
};

/// The shared approval spec (no notify targets).
pub fn spec() -> ApprovalSpec {
    ApprovalSpec {
        approvers: vec![
            Approver::Group("sre-leads".into()),
            Approver::Email("carol@example.com".into()),
            Approver::Email("dev@example.com".into()),
        ],
        quorum: Quorum::Count(1),
        notify: vec![],
        hold: Duration::from_secs(55),
        expires: Duration::from_secs(3600),
        self_approval: false,
        approve_via: ApproveVia::Button,
        reason_required: false,
        redact: vec!["/token".into()],
        unidentified_requester: Default::default(),
        nudge: Default::default(),
        break_glass: false,
        break_glass_cooldown: None,
        grant: None,
    }
}

/// The `prod-deploy` approve rule (`policies/prod.toml` line 1) carrying `spec`.
pub fn rule(spec: ApprovalSpec) -> Rule {
    Rule {
        name: "prod-deploy".into(),
        origin: Origin {
            file: PathBuf::from("policies/prod.toml"),
            line: 1,
        },
        methods: None,
        host: None,
        path: PathMatch::Any,
        params: vec![],
        claims: vec![],
        action: Action::Approve,
        require: Requirements::default(),
        approval: Some(spec),
        mode: Mode::Enforce,
    }
}
