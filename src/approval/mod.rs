//! The approval lifecycle (SPEC 4 `[rule.approval]`, 5.5-5.6, 7): approval records and the
//! stored request ([`record`]), the state machine as pure functions ([`transition`]), the store
//! with its one compare-and-set primitive and two storage backends ([`store`]), the
//! [`Broker`] that the proxy and the control plane call, approval evidence ([`signer`]) and the
//! upstream [`Executor`].
//!
//! Owns approval state and the exactly-once execution of approved requests. Must not touch
//! pingora, axum or HTML: the proxy holds connections and the control plane renders pages,
//! both through the [`Broker`].
//!
//! Typical flow in the proxy: [`Broker::submit`] -> [`Broker::wait`] (raced against the
//! client hanging up, then [`Broker::cancel`]) -> `Approved`: [`Broker::execute`];
//! `StillPending`: [`Broker::release_hold`] and 202, after which the background task
//! ([`Broker::spawn_background_until`], in [`sweeper`]) executes it once ([`execute`]) and parks
//! the response for [`Broker::result`]. Audit and notification go through [`ports`].
//!
//! Replicas (issue 13): a held caller is a lease. [`Broker::wait`] names this replica as its
//! holder once, and each replica beats once a second for everything it holds. If the holding
//! replica dies (stops beating), another replica's sweep cancels the request (`holder_lost`),
//! even when it was approved but not yet sent: it is never executed. A request whose caller was
//! answered 202 is not held, so any replica executes it once approved. The rules are in
//! [`transition`] (`take_hold`, `hold_lost`, `cancel_lost_hold`).
#![warn(missing_docs)]

pub mod approvers;
pub mod breakglass;
pub mod broker;
pub mod draft;
pub mod error;
pub mod execute;
pub mod executor;
pub mod grant;
pub mod granting;
pub mod lost;
pub mod nudge;
pub mod nudges;
pub mod oncall;
pub mod owed;
pub mod ports;
pub mod preview;
pub mod quorum;
pub mod record;
pub mod remind;
pub mod serde_fields;
pub mod signer;
pub mod store;
pub mod sweeper;
pub mod transition;
pub mod vote;
pub mod waiters;

pub use broker::{ApproverIdentity, Broker, BrokerSettings, WaitOutcome};
pub use error::{BrokerError, CancelError, DecideError, ExecuteError, ResultError, RevokeError};
pub use executor::{Evidence, Executor, ExecutorError, UpstreamResponse};
pub use grant::Grant;
pub use granting::GrantViewer;
pub use ports::{
    AuditError, AuditEvent, AuditSink, ExecMode, LogNotifier, Notifier, NotifyError, NotifyEvent,
};
pub use ports::{OnCallError, OnCallResolver};
pub use preview::{body_preview, body_preview_of, body_sha256, shown_headers};
pub use quorum::{EntryProgress, QuorumEntry};
pub use record::{
    expand_approvers, request_hash, Approval, ApprovalId, BreakGlass, Channel, Decision, Execution,
    GrantOffer, Granted, Requester, ShownHeader, Status, StoredHeader, StoredRequest, Vote,
};
pub use signer::{ApprovalSigner, SignerError};
pub use store::seal::RecordSeal;
pub use store::{
    ApprovalStore, Cas, Claimant, Hold, Holders, ListFilter, MemoryStore, ParkedResult, RedisStore,
    Silent, StoreError, VoteResult,
};
pub use sweeper::SweepReport;

#[cfg(test)]
pub(crate) mod tests;
