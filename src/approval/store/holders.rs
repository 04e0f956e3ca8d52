//! Which replica holds which caller (the hold lease, issue 13): a registry of replicas by last
//! heartbeat and, per replica, the approvals it holds a caller for. A sweep reads it to find the
//! holds of a replica that stopped beating. Owns the [`Holders`] trait and its two small types;
//! must not touch approval records: what a dead holder means for a record is
//! [`crate::approval::transition::cancel_lost_hold`]'s call, made by the sweep.

use async_trait::async_trait;

use super::StoreError;
use crate::approval::record::ApprovalId;

/// `holder` (a replica's instance id) holds the caller of `id` until `backstop` (unix ms: the
/// end of the hold plus [`crate::approval::transition::HOLD_LEASE`]).
#[derive(Debug, Clone, Copy)]
pub struct Hold<'a> {
    /// The replica holding the caller.
    pub holder: &'a str,
    /// The approval the caller waits for.
    pub id: &'a ApprovalId,
    /// When the hold ends at the latest, unix ms.
    pub backstop: u64,
}

/// A holder that has not beaten since `last_beat` (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silent {
    /// The replica's instance id.
    pub holder: String,
    /// Its last heartbeat, unix ms.
    pub last_beat: u64,
}

/// The holder registry of a store. A store without one keeps nothing (the defaults): holds
/// there end only at their backstop.
#[async_trait]
pub trait Holders: Send + Sync {
    /// `holder` is alive at `now`; also forgets its holds whose backstop passed. Every replica
    /// calls it once per [`crate::approval::transition::HEARTBEAT_EVERY`].
    async fn beat(&self, holder: &str, now: u64) -> Result<(), StoreError> {
        let _ = (holder, now);
        Ok(())
    }

    /// Notes `hold` (so a sweep finds it if its holder dies) and beats for its holder at `now`.
    /// Called before the record names its holder.
    async fn add_hold(&self, hold: &Hold<'_>, now: u64) -> Result<(), StoreError> {
        let _ = (hold, now);
        Ok(())
    }

    /// Up to `limit` holders whose last beat is before `silent_since`, longest silent first.
    async fn silent_holders(&self, since: u64, limit: usize) -> Result<Vec<Silent>, StoreError> {
        let _ = (since, limit);
        Ok(Vec::new())
    }

    /// Up to `limit` of the approvals [`Self::add_hold`] noted for `holder`.
    async fn holds_of(&self, holder: &str, limit: usize) -> Result<Vec<ApprovalId>, StoreError> {
        let _ = (holder, limit);
        Ok(Vec::new())
    }

    /// Forgets `ids` of the `silent` holder (a sweep dealt with them), then the holder itself
    /// if it holds nothing more and has not beaten since (a replica that was only stalled
    /// comes back with a new beat, and keeps any hold it took meanwhile).
    async fn forget_holds(&self, silent: &Silent, ids: &[ApprovalId]) -> Result<(), StoreError> {
        let _ = (silent, ids);
        Ok(())
    }
}
