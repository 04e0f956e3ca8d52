//! Exactly-once execution of an approved request: claim the one execution in the store, sign
//! the approval evidence, send the stored request upstream, park the response for the
//! background path, record the outcome, audit and notify.
//!
//! Owns the claim -> send -> park -> finish order. Must not decide whether a request is
//! approved (that is [`super::transition`]) and must not touch pingora or axum.

use super::broker::Broker;
use super::error::ExecuteError;
use super::executor::{Evidence, UpstreamResponse};
use super::ports::{AuditEvent, ExecMode, NotifyEvent};
use super::record::{Approval, ApprovalId, Execution, Status};
use super::store::{Cas, Claimant, ParkedResult};

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
        let a = match self
            .store
            .claim_execution(id, who, &owner, self.now_ms())
            .await?
        {
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
        let stored = self
            .store
            .stored_request(&a.id)
            .await?
            .ok_or(ExecuteError::NotFound)?;
        let token = self.signer.sign(a, self.clock.unix())?;
        let evidence = Evidence {
            approval_id: &a.id,
            token: &token,
        };
        Ok(self.executor.send(&stored, &evidence, body_cap).await?)
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
