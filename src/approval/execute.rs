//! Exactly-once execution of an approved request: claim the one execution in the store, sign
//! the approval evidence, send the stored request upstream, park the response for the
//! background path, record the outcome, audit and notify.
//!
//! Owns the claim -> verify -> send -> park -> finish order. Must not decide whether a request
//! is approved (that is [`super::transition`]) and must not touch pingora or axum.
//!
//! Verify (SPEC 8): the store is not trusted. Before anything is sent, the stored request must
//! be the one that was approved: same method, host, path, query, replayed headers and requester
//! as the approval record, and its request hash, recomputed from the stored bytes, equal to the approved one.
//! A request that fails is refused, audited (`request.failed`) and reported to approvers as
//! failed, never sent. The upstream is found by name in the local config ([`super::Executor`]).

use super::broker::Broker;
use super::error::ExecuteError;
use super::executor::{Evidence, UpstreamResponse};
use super::ports::{AuditEvent, ExecMode, NotifyEvent};
use super::preview::shown_headers;
use super::record::{Approval, ApprovalId, Execution, Status, StoredRequest};
use super::store::{Cas, Claimant, ParkedResult, StoreError};

impl Broker {
    /// For the holding caller after [`super::WaitOutcome::Approved`]: claims the one execution, sends
    /// the stored request upstream, audits `request.forwarded` and returns the response (body
    /// at most `held_body_cap`). Any later call gets [`ExecuteError::AlreadyClaimed`].
    pub async fn execute(&self, id: &ApprovalId) -> Result<UpstreamResponse, ExecuteError> {
        let (_, resp, _) = self
            .claim_and_send(id, Claimant::Holder, self.settings.held_body_cap)
            .await?;
        Ok(resp)
    }

    /// Executes `id` if it is approved, not held and not claimed; parks the response.
    /// Returns `Ok(None)` when there was nothing to do (someone else has it, or not approved).
    pub async fn execute_in_background(
        &self,
        id: &ApprovalId,
    ) -> Result<Option<ParkedResult>, ExecuteError> {
        match self
            .claim_and_send(id, Claimant::Background, self.settings.result_cap)
            .await
        {
            Ok((_, _, parked)) => Ok(parked),
            Err(ExecuteError::AlreadyClaimed | ExecuteError::NotApproved(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn claim_and_send(
        &self,
        id: &ApprovalId,
        who: Claimant,
        body_cap: usize,
    ) -> Result<(Approval, UpstreamResponse, Option<ParkedResult>), ExecuteError> {
        let mode = match who {
            Claimant::Holder => ExecMode::Held,
            Claimant::Background => ExecMode::Background,
        };
        let owner = format!("{}/{}", self.instance, mode.as_str());
        let claimed = self
            .store
            .claim_execution(id, who, &owner, self.now_ms())
            .await;
        let a = match self.refuse_tampered(id, claimed).await? {
            Cas::Applied(a) => a,
            Cas::Conflict(a) if a.status == Status::Approved => {
                return Err(ExecuteError::AlreadyClaimed)
            }
            Cas::Conflict(a) => return Err(ExecuteError::NotApproved(a.status)),
            Cas::NotFound => return Err(ExecuteError::NotFound),
        };
        let sent = self.send_claimed(&a, body_cap).await;
        // A background result is parked BEFORE the execution is marked done, so a requester
        // polling `/result` never sees "done, nothing parked" for a request that succeeded.
        let parked = match (&who, &sent) {
            (Claimant::Background, Ok(resp)) => {
                let p = ParkedResult {
                    status: resp.status.as_u16(),
                    headers: resp.stored_headers(),
                    body: resp.body.to_vec(),
                    truncated: resp.truncated,
                    at: self.now_ms(),
                };
                Some(
                    self.store
                        .park_result(&a.id, &p, self.settings.result_ttl)
                        .await
                        .map(|()| p),
                )
            }
            _ => None,
        };
        let outcome = match &sent {
            Ok(resp) => Execution::Done {
                status: resp.status.as_u16(),
            },
            Err(e) => Execution::Failed {
                reason: e.to_string(),
            },
        };
        self.store.finish_execution(id, outcome).await?;
        self.record_execution(&a, mode, &sent).await;
        let parked = parked.transpose()?;
        sent.map(|resp| (a, resp, parked))
    }

    async fn send_claimed(
        &self,
        a: &Approval,
        body_cap: usize,
    ) -> Result<UpstreamResponse, ExecuteError> {
        let stored = match self.store.stored_request(&a.id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(ExecuteError::NotFound),
            Err(StoreError::Tampered { record, why }) => {
                return Err(ExecuteError::Integrity(format!("{record}: {why}")))
            }
            Err(e) => return Err(e.into()),
        };
        verify_as_approved(a, &stored).map_err(ExecuteError::Integrity)?;
        let token = self.signer.sign(a, self.clock.unix())?;
        let evidence = Evidence {
            approval_id: &a.id,
            token: &token,
        };
        Ok(self.executor.send(&stored, &evidence, body_cap).await?)
    }

    /// Passes `result` through; a record that failed its integrity check is audited
    /// (`record.tampered`) on the way, so an operator hears of it even though nothing can be
    /// shown to approvers for a record that cannot be believed.
    pub(crate) async fn refuse_tampered<T>(
        &self,
        id: &ApprovalId,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Err(StoreError::Tampered { record, why }) = &result {
            let error = format!("{record}: {why}");
            tracing::error!(approval_id = %id, error = %error, "refused a tampered store record");
            let event = AuditEvent::Tampered { id, error: &error };
            if let Err(e) = self.audit.record(event).await {
                tracing::error!(approval_id = %id, error = %e, "audit of a tampered record failed");
            }
        }
        result
    }

    async fn record_execution(
        &self,
        a: &Approval,
        mode: ExecMode,
        sent: &Result<UpstreamResponse, ExecuteError>,
    ) {
        let error = sent.as_ref().err().map(ToString::to_string);
        let (event, notice) = match (sent, &error) {
            (Ok(resp), _) => {
                let status = resp.status.as_u16();
                let event = AuditEvent::Forwarded {
                    approval: a,
                    mode,
                    status,
                };
                (event, NotifyEvent::Executed { status })
            }
            (Err(_), error) => {
                let event = AuditEvent::ExecutionFailed {
                    approval: a,
                    mode,
                    error: error.as_deref().unwrap_or_default(),
                };
                (event, NotifyEvent::ExecutionFailed)
            }
        };
        if let Some(m) = &self.metrics {
            let result = if sent.is_ok() { "ok" } else { "error" };
            m.approval_executions
                .with_label_values(&[mode.as_str(), result])
                .inc();
        }
        // The upstream call already happened; a failed audit write cannot undo it, so it is
        // logged loudly instead of hiding the upstream's answer from the caller.
        let kind = event.kind();
        if let Err(e) = self.audit.record(event).await {
            tracing::error!(approval_id = %a.id, error = %e, event = kind, "audit failed after upstream call");
        }
        self.notify(a, notice).await;
    }
}

/// Whether `stored` is the request `a` approved: the fields approvers were shown, the
/// requester, and the request hash recomputed from the stored bytes. `Err` says what differs.
pub(crate) fn verify_as_approved(a: &Approval, stored: &StoredRequest) -> Result<(), String> {
    let shown = (
        a.method.as_str(),
        a.host.as_str(),
        a.path.as_str(),
        a.query.as_deref(),
    );
    let sent = (
        stored.method.as_str(),
        stored.host.as_str(),
        stored.path.as_str(),
        stored.query.as_deref(),
    );
    if shown != sent {
        return Err("method, host, path or query differs from the approved request".into());
    }
    if shown_headers(&stored.headers) != a.headers {
        return Err("replayed headers differ from the ones approvers were shown".into());
    }
    if !a.requester.is(&stored.issuer, &stored.subject) {
        return Err("requester differs from the approved request".into());
    }
    if stored.hash_hex() != a.request_hash {
        return Err("request hash differs from the approved one".into());
    }
    Ok(())
}
