//! Who is on call (SPEC 9, `pagerduty:SCHEDULE_ID` approvers): the adapters behind the
//! broker's [`OnCallResolver`](crate::approval::OnCallResolver) port.
//!
//! Owns the HTTP conversations with on-call services and their short caches. Must not decide
//! who may approve (the broker fixes the approver set at creation) nor write audit events (the
//! broker audits a failed resolution).

pub mod pagerduty;

pub use pagerduty::PagerDutyClient;
