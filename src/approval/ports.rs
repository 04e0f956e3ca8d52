//! The broker's ports: what it tells the world through, and nothing else. [`AuditSink`] takes
//! a typed [`AuditEvent`] (one variant per lifecycle step); [`Notifier`] tells people;
//! [`OnCallResolver`] says who is on call (`pagerduty:` approvers).
//!
//! Owns the shape of every approval audit event (its kind and fields) in one place. Must not
//! touch storage, HTTP or chat APIs: the hash-chained log and the chat channels plug in from
//! outside (`app.rs`, `chat`).

use std::fmt::Debug;

use async_trait::async_trait;

use super::grant::Grant;
use super::record::{Approval, ApprovalId, ApproverIdentity, Vote};
use crate::audit::Event;

/// The audit log could not record an event. The step it records is not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log: {0}")]
pub struct AuditError(pub String);

/// How the stored request was executed (audit field `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// By the proxy holding the caller's connection.
    Held,
    /// By the background, result parked.
    Background,
}

impl ExecMode {
    /// `held` or `background`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecMode::Held => "held",
            ExecMode::Background => "background",
        }
    }
}

/// One step of an approval's life, as the audit log records it.
#[derive(Debug, Clone, Copy)]
pub enum AuditEvent<'a> {
    /// `approval.requested`: a new approval, from data-plane request `request_id`.
    Requested {
        /// The new approval.
        approval: &'a Approval,
        /// The data-plane request id, when the request had one.
        request_id: Option<&'a str>,
    },
    /// `vote.cast`: a counted vote.
    VoteCast {
        /// The approval after the vote.
        approval: &'a Approval,
        /// Who voted, as authenticated.
        approver: &'a ApproverIdentity,
        /// The vote.
        vote: &'a Vote,
    },
    /// `approval.approved`: quorum reached.
    Approved(&'a Approval),
    /// `approval.denied`.
    Denied(&'a Approval),
    /// `approval.expired`.
    Expired(&'a Approval),
    /// `approval.cancelled` by `actor` for `reason`.
    Cancelled {
        /// The cancelled approval.
        approval: &'a Approval,
        /// Who cancelled.
        actor: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// `request.forwarded`: upstream answered `status`.
    Forwarded {
        /// The executed approval.
        approval: &'a Approval,
        /// Held or background.
        mode: ExecMode,
        /// Upstream status.
        status: u16,
    },
    /// `request.failed`: upstream could not be reached.
    ExecutionFailed {
        /// The approval whose execution failed.
        approval: &'a Approval,
        /// Held or background.
        mode: ExecMode,
        /// What went wrong.
        error: &'a str,
    },
    /// `record.tampered`: a shared-store record of approval `id` failed its integrity check
    /// and was refused. Carries no approval: the record cannot be believed.
    Tampered {
        /// The approval id the record was stored under.
        id: &'a ApprovalId,
        /// Which record, and what did not verify.
        error: &'a str,
    },
    /// `record.lost`: a held approval's record is gone from the shared store (it lost data);
    /// the held caller was answered 503. Carries no approval: there is none left.
    Lost {
        /// The approval id that was held.
        id: &'a ApprovalId,
        /// What happened.
        error: &'a str,
    },
    /// `store.reset`: the shared store came back without its data (its epoch changed);
    /// approvals pending before are gone and fail closed.
    StoreReset,
    /// `approval.break_glass`: the requester broke the glass; recorded before the request is
    /// forwarded (SPEC 9).
    BreakGlass {
        /// The new approval, in review.
        approval: &'a Approval,
        /// The data-plane request id, when the request had one.
        request_id: Option<&'a str>,
    },
    /// `approval.acknowledged`: an approver reviewed a break-glass request afterwards.
    Acknowledged {
        /// The approval after the acknowledgement.
        approval: &'a Approval,
        /// Who acknowledged, as authenticated.
        approver: &'a ApproverIdentity,
    },
    /// `approval.escalated`: still pending after `escalate.after`; `added` joined the
    /// approvers (resolved now, then fixed in the record).
    Escalated {
        /// The approval after the escalation.
        approval: &'a Approval,
        /// The emails added to the approvers (may be empty: all were approvers already).
        added: &'a [String],
    },
    /// `approvers.unresolved`: an on-call entry (`pagerduty:SCHEDULE_ID`) of rule `rule`
    /// resolved to nobody when a request was created (fail closed). Comes before any approval
    /// exists, so it carries the data-plane request id instead.
    ApproversUnresolved {
        /// The rule whose approvers were being fixed.
        rule: &'a str,
        /// The entry as written, e.g. `pagerduty:PABC123`.
        entry: &'a str,
        /// Why it resolved to nobody (never a credential).
        error: &'a str,
        /// The data-plane request id, when the request had one.
        request_id: Option<&'a str>,
    },
    /// `grant.created`: approval `approval` made `grant` (SPEC 9).
    GrantCreated {
        /// The approval whose approvers asked for the grant.
        approval: &'a Approval,
        /// The new grant.
        grant: &'a Grant,
    },
    /// `grant.used`: request `approval` passed under `grant` without votes; recorded before
    /// it is forwarded. `grant.uses` counts this use.
    GrantUsed {
        /// The approval recorded for this request (approved under the grant).
        approval: &'a Approval,
        /// The grant after this use.
        grant: &'a Grant,
        /// The data-plane request id, when the request had one.
        request_id: Option<&'a str>,
    },
    /// `grant.revoked` by `by`: no request passes under `grant` from now on.
    GrantRevoked {
        /// The grant, revoked.
        grant: &'a Grant,
        /// Who revoked it (lowercase email, or subject).
        by: &'a str,
    },
    /// `notify.sent` (no `error`) or `notify.failed`.
    Notified {
        /// The approval the notification was about.
        approval: &'a Approval,
        /// What it said ([`NotifyEvent::as_str`]).
        event: &'a NotifyEvent,
        /// Why delivery failed, if it did.
        error: Option<&'a str>,
    },
    /// An end's line (`approval.approved`, `.denied`, `.expired` or `.cancelled`) written by a
    /// sweep because the replica that made the end never wrote it (it died, or its store
    /// write timed out although it applied): the same event with `recorded_late: true`.
    Late(&'a AuditEvent<'a>),
}

/// Adds `value` under `name` when there is one.
fn opt<V: Into<crate::audit::FieldValue>>(e: Event, name: &str, value: Option<V>) -> Event {
    match value {
        Some(v) => e.field(name, v),
        None => e,
    }
}

impl AuditEvent<'_> {
    /// The event kind, e.g. `vote.cast`.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Requested { .. } => "approval.requested",
            AuditEvent::VoteCast { .. } => "vote.cast",
            AuditEvent::Approved(_) => "approval.approved",
            AuditEvent::Denied(_) => "approval.denied",
            AuditEvent::Expired(_) => "approval.expired",
            AuditEvent::Cancelled { .. } => "approval.cancelled",
            AuditEvent::Forwarded { .. } => "request.forwarded",
            AuditEvent::ExecutionFailed { .. } => "request.failed",
            AuditEvent::Tampered { .. } => "record.tampered",
            AuditEvent::Lost { .. } => "record.lost",
            AuditEvent::StoreReset => "store.reset",
            AuditEvent::Escalated { .. } => "approval.escalated",
            AuditEvent::BreakGlass { .. } => "approval.break_glass",
            AuditEvent::Acknowledged { .. } => "approval.acknowledged",
            AuditEvent::ApproversUnresolved { .. } => "approvers.unresolved",
            AuditEvent::GrantCreated { .. } => "grant.created",
            AuditEvent::GrantUsed { .. } => "grant.used",
            AuditEvent::GrantRevoked { .. } => "grant.revoked",
            AuditEvent::Notified { error: None, .. } => "notify.sent",
            AuditEvent::Notified { error: Some(_), .. } => "notify.failed",
            AuditEvent::Late(event) => event.kind(),
        }
    }

    /// The approval the event is about (none for a record that cannot be believed).
    pub fn approval(&self) -> Option<&Approval> {
        if let AuditEvent::Late(event) = self {
            return event.approval();
        }
        Some(match self {
            AuditEvent::Requested { approval, .. }
            | AuditEvent::VoteCast { approval, .. }
            | AuditEvent::Approved(approval)
            | AuditEvent::Denied(approval)
            | AuditEvent::Expired(approval)
            | AuditEvent::Cancelled { approval, .. }
            | AuditEvent::Forwarded { approval, .. }
            | AuditEvent::ExecutionFailed { approval, .. }
            | AuditEvent::Escalated { approval, .. }
            | AuditEvent::BreakGlass { approval, .. }
            | AuditEvent::Acknowledged { approval, .. }
            | AuditEvent::GrantCreated { approval, .. }
            | AuditEvent::GrantUsed { approval, .. }
            | AuditEvent::Notified { approval, .. } => approval,
            AuditEvent::Tampered { .. }
            | AuditEvent::Lost { .. }
            | AuditEvent::StoreReset
            | AuditEvent::GrantRevoked { .. }
            | AuditEvent::ApproversUnresolved { .. }
            | AuditEvent::Late(_) => return None,
        })
    }

    /// The events with no approval to show: `record.tampered` and `record.lost` (the id and
    /// what happened), `store.reset`, `approvers.unresolved` (rule, entry, error).
    fn approval_less_event(&self) -> Event {
        let e = Event::new(self.kind()).actor("countersign");
        match *self {
            AuditEvent::Tampered { id, error } | AuditEvent::Lost { id, error } => {
                e.approval_id(id.as_str()).field("error", error)
            }
            AuditEvent::ApproversUnresolved {
                rule,
                entry,
                error,
                request_id,
            } => {
                let e = match request_id {
                    Some(id) => e.request_id(id),
                    None => e,
                };
                e.rule(rule).field("entry", entry).field("error", error)
            }
            AuditEvent::GrantRevoked { grant, by } => Event::new(self.kind())
                .approval_id(&grant.approval_id)
                .rule(&grant.rule)
                .actor(by)
                .field("grant_id", &grant.id)
                .field("uses", grant.uses)
                .field("uses_max", grant.uses_max),
            _ => e,
        }
    }

    /// The audit-log event: `approval_id` and `rule` always, `actor` and the details per kind.
    pub fn to_event(&self) -> Event {
        if let AuditEvent::Late(event) = self {
            return event.to_event().field("recorded_late", true);
        }
        let Some(a) = self.approval() else {
            return self.approval_less_event();
        };
        let e = Event::new(self.kind())
            .approval_id(a.id.as_str())
            .rule(&a.rule);
        match *self {
            AuditEvent::Requested {
                approval: a,
                request_id,
            } => {
                let e = by_requester(e, a, request_id);
                let e = opt(e, "requester_email", a.requester.email.as_deref())
                    .field("method", &a.method)
                    .field("host", &a.host)
                    .field("path", &a.path)
                    .field("request_hash", &a.request_hash)
                    .field("body_len", a.body_len);
                let e = opt(e, "reason", a.reason.as_deref())
                    .field("approvers", a.approvers.join(","))
                    .field("quorum", a.quorum);
                // Who counts for which entry, as fixed at creation (SPEC 9).
                let entries = a
                    .quorum_entries
                    .iter()
                    .map(|q| format!("{}={} ({})", q.entry, q.need, q.members.join(",")));
                let entries = entries.collect::<Vec<_>>().join("; ");
                opt(
                    e,
                    "quorum_entries",
                    Some(entries.as_str()).filter(|s| !s.is_empty()),
                )
                .field("self_approval", a.self_approval)
                .field("expires_at", a.expires_at)
            }
            AuditEvent::VoteCast {
                approval: a,
                approver,
                vote,
            } => {
                let e = e.actor(&vote.approver);
                let e = opt(e, "approver_iss", approver.iss.as_deref());
                let e = opt(e, "approver_sub", approver.sub.as_deref())
                    .field("decision", vote.decision.as_str());
                let e = opt(e, "reason", vote.reason.as_deref())
                    .field("via", vote.via.as_str())
                    .field("self_approval", vote.self_approval)
                    .field("grant", vote.grant)
                    .field("approvals", a.approved_by().len())
                    .field("quorum", a.quorum);
                let e = opt(e, "quorum_progress", a.quorum_summary().as_deref());
                if vote.self_approval {
                    e.field(
                        "warning",
                        "SELF-APPROVAL: the requester approved their own request (break-glass)",
                    )
                } else {
                    e
                }
            }
            AuditEvent::Approved(a) | AuditEvent::Denied(a) => {
                let e = match &a.decided_by {
                    Some(by) => e.actor(by),
                    None => e,
                };
                let e = e.field("approvers", a.approved_by().join(","));
                let e = opt(e, "reason", a.decision_reason.as_deref());
                opt(
                    e,
                    "decision_ms",
                    a.decided_at.map(|d| d.saturating_sub(a.created_at)),
                )
            }
            AuditEvent::Expired(a) => e.actor("countersign").field("expires_at", a.expires_at),
            AuditEvent::Cancelled { actor, reason, .. } => e.actor(actor).field("reason", reason),
            AuditEvent::Forwarded {
                approval: a,
                mode,
                status,
            } => e
                .actor("countersign")
                .field("mode", mode.as_str())
                .field("method", &a.method)
                .field("host", &a.host)
                .field("path", &a.path)
                .field("request_hash", &a.request_hash)
                .field("upstream_status", status),
            AuditEvent::ExecutionFailed { mode, error, .. } => e
                .actor("countersign")
                .field("mode", mode.as_str())
                .field("error", error),
            AuditEvent::Tampered { .. }
            | AuditEvent::Lost { .. }
            | AuditEvent::StoreReset
            | AuditEvent::GrantRevoked { .. }
            | AuditEvent::ApproversUnresolved { .. }
            | AuditEvent::Late(_) => e,
            AuditEvent::GrantCreated { grant, .. } => {
                grant_fields(e.actor(grant.approvers.join(",")), grant)
            }
            AuditEvent::GrantUsed {
                approval: a,
                grant,
                request_id,
            } => {
                let e = by_requester(e, a, request_id)
                    .field("request_hash", &a.request_hash)
                    .field("from_approval_id", &grant.approval_id);
                grant_fields(e, grant)
            }
            AuditEvent::Escalated { approval: a, added } => e
                .actor("countersign")
                .field("added_approvers", added.join(","))
                .field("approvers", a.approvers.join(",")),
            AuditEvent::BreakGlass {
                approval: a,
                request_id,
            } => {
                let e = by_requester(e, a, request_id)
                    .field("method", &a.method)
                    .field("host", &a.host)
                    .field("path", &a.path)
                    .field("request_hash", &a.request_hash)
                    .field("approvers", a.approvers.join(","));
                let reason = a.break_glass.as_ref().map(|b| b.reason.as_str());
                opt(e, "reason", reason).field(
                    "warning",
                    "BREAK-GLASS: forwarded without approval; approvers must review it",
                )
            }
            AuditEvent::Acknowledged { approval, approver } => {
                let by = approval.break_glass.as_ref();
                let e = e.actor(by.and_then(|b| b.acknowledged_by.as_deref()).unwrap_or(""));
                let e = opt(e, "approver_iss", approver.iss.as_deref());
                opt(e, "approver_sub", approver.sub.as_deref()).field("via", approver.via.as_str())
            }
            AuditEvent::Notified { event, error, .. } => {
                let e = opt(e, "error", error);
                e.actor("countersign").field("notify_event", event.as_str())
            }
        }
    }
}

/// The requester as actor (email, else subject), their issuer and subject, and the data-plane
/// request id when there is one: what every event a requester's request causes starts with.
fn by_requester(e: Event, a: &Approval, request_id: Option<&str>) -> Event {
    let e = match request_id {
        Some(id) => e.request_id(id),
        None => e,
    };
    e.actor(a.requester.email.as_deref().unwrap_or(&a.requester.sub))
        .field("requester_iss", &a.requester.iss)
        .field("requester_sub", &a.requester.sub)
}

/// What every grant event says about the grant.
fn grant_fields(e: Event, g: &Grant) -> Event {
    e.field("grant_id", &g.id)
        .field("method", &g.method)
        .field("host", &g.host)
        .field("path", &g.path)
        .field("approvers", g.approvers.join(","))
        .field("uses", g.uses)
        .field("uses_max", g.uses_max)
        .field("grant_expires_at", g.expires_at)
}

/// Where the broker records what happened (the real hash-chained log plugs in here).
#[async_trait]
pub trait AuditSink: Send + Sync + Debug {
    /// Appends one event and returns once it is durable. Events never hold a token, secret or
    /// redacted value ([`Event`] refuses them).
    async fn record(&self, event: AuditEvent<'_>) -> Result<(), AuditError>;
}

/// A notifier could not deliver a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notify: {0}")]
pub struct NotifyError(pub String);

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A new approval request: tell the approvers.
    Requested,
    /// A vote was counted; still pending.
    VoteCast,
    /// Quorum reached.
    Approved,
    /// Someone denied.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The caller hung up or withdrew the request.
    Cancelled,
    /// The stored request was sent upstream, which answered `status`.
    Executed {
        /// Upstream status code.
        status: u16,
    },
    /// The stored request could not be delivered upstream (not retried).
    ExecutionFailed,
    /// Still pending: the `remind` interval passed (`Approval::nudges` counts reminders).
    Reminder,
    /// Still pending after `escalate.after`: approvers were added; tell them on the
    /// escalation's targets (`Approval::nudges.escalation`) and the rule's.
    Escalated,
}

impl NotifyEvent {
    /// Name for logs and audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyEvent::Requested => "requested",
            NotifyEvent::VoteCast => "vote_cast",
            NotifyEvent::Approved => "approved",
            NotifyEvent::Denied => "denied",
            NotifyEvent::Expired => "expired",
            NotifyEvent::Cancelled => "cancelled",
            NotifyEvent::Executed { .. } => "executed",
            NotifyEvent::ExecutionFailed => "execution_failed",
            NotifyEvent::Reminder => "reminder",
            NotifyEvent::Escalated => "escalated",
        }
    }
}

/// Tells people about approvals (Slack and Teams plug in here). Implementations render from
/// `approval`, which always carries the current votes and status.
#[async_trait]
pub trait Notifier: Send + Sync + Debug {
    /// Delivers one notification. Errors are audited and otherwise ignored.
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError>;
}

/// A notifier that only logs (for the demo, and as the always-on channel).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn notify(&self, approval: &Approval, event: &NotifyEvent) -> Result<(), NotifyError> {
        tracing::info!(
            approval_id = %approval.id,
            rule = %approval.rule,
            status = approval.status.as_str(),
            event = event.as_str(),
            "approval notification"
        );
        Ok(())
    }
}

/// Who is on call could not be found out. The message never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OnCallError(pub String);

/// Says who is on call in a schedule (PagerDuty plugs in here, `crate::oncall`). Asked once
/// per `pagerduty:` entry when a request is created; the answer is fixed in the approval.
#[async_trait]
pub trait OnCallResolver: Send + Sync + Debug {
    /// The emails of whoever is on call in `schedule` now (possibly none). Bounded in time by
    /// the implementation; any failure (unreachable, refused, malformed, too slow) is an error,
    /// and the broker then counts nobody for the entry.
    async fn on_call(&self, schedule: &str) -> Result<Vec<String>, OnCallError>;
}
