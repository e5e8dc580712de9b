//! Approvals over HTTP: [`Publisher::create_approval`],
//! [`Publisher::approval`], [`Publisher::wait_approval`],
//! [`Publisher::request_approval`], which asks and waits for the decision,
//! and [`Publisher::list_approvals`], the audit trail.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_protocol::CallbackId;
use herald_protocol::api::ApprovalList;
use herald_protocol::payload::{ApprovalDecision, ApprovalRecord, ApprovalStatus, NewApproval};
use reqwest::Method;

use crate::error::{ApprovalError, HttpError};
use crate::publisher::{Idempotency, Publisher};

/// How long one long-poll asks the hub to wait.
pub const LONG_POLL: Duration = Duration::from_secs(30);

/// How long after an approval's `expires_at` [`Publisher::request_approval`]
/// keeps retrying an unreachable hub before giving up.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// The longest approval timeout a hub takes (its `MAX_TIMEOUT`).
const MAX_APPROVAL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Publisher {
    /// Registers an approval (`POST /api/v1/approvals`, answered 201) and
    /// returns its record at once; the hub publishes `approval.requested` on
    /// `user:{user_id}`. Retried only when the connection cannot be opened
    /// (a request has no id the hub could de-duplicate).
    pub async fn create_approval(
        &self,
        request: &NewApproval,
    ) -> Result<ApprovalRecord, ApprovalError> {
        Ok(self
            .call(
                Method::POST,
                |hub| hub.http("api/v1/approvals"),
                Some(request),
                self.timeout(),
                Idempotency::Once,
            )
            .await?)
    }

    /// Approvals, newest first (`GET /api/v1/approvals`): those of task
    /// `task_id` and in `status`, when given.
    pub async fn list_approvals(
        &self,
        task_id: Option<&str>,
        status: Option<ApprovalStatus>,
    ) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        let status = status.map(ApprovalStatus::as_str);
        let target = |hub: &crate::endpoint::HubUrl| {
            let mut url = hub.http("api/v1/approvals")?;
            if let Some(task_id) = task_id {
                url.query_pairs_mut().append_pair("task_id", task_id);
            }
            if let Some(status) = status {
                url.query_pairs_mut().append_pair("status", status);
            }
            Ok(url)
        };
        let list: ApprovalList = self
            .call(
                Method::GET,
                target,
                None::<&()>,
                self.timeout(),
                Idempotency::Idempotent,
            )
            .await?;
        Ok(list.approvals)
    }

    /// An approval's decision now (`GET /api/v1/approvals/{id}`).
    pub async fn approval(&self, id: &CallbackId) -> Result<ApprovalDecision, ApprovalError> {
        self.wait_approval(id, Duration::ZERO).await
    }

    /// An approval's decision, long-polling up to `wait` while it is pending
    /// (`GET /api/v1/approvals/{id}?wait_ms=N`). The answer may still be
    /// pending when `wait` runs out.
    pub async fn wait_approval(
        &self,
        id: &CallbackId,
        wait: Duration,
    ) -> Result<ApprovalDecision, ApprovalError> {
        let target = |hub: &crate::endpoint::HubUrl| {
            let mut url = hub.http_segments(&["api", "v1", "approvals", id.as_str()])?;
            if !wait.is_zero() {
                url.query_pairs_mut()
                    .append_pair("wait_ms", &wait.as_millis().to_string());
            }
            Ok(url)
        };
        let result = self
            .call(
                Method::GET,
                target,
                None::<&()>,
                self.timeout() + wait,
                Idempotency::Idempotent,
            )
            .await;
        match result {
            Err(error) if error.status() == Some(404) => Err(ApprovalError::NotFound(id.clone())),
            other => Ok(other?),
        }
    }

    /// Asks for an approval and waits for the decision: creates it, then
    /// long-polls until its status is no longer `pending` (approved,
    /// rejected, timed out or cancelled: the hub decides by itself when the
    /// approval expires). A hub that goes away meanwhile (restart, network)
    /// is polled again with backoff until [`EXPIRY_GRACE`] after the
    /// approval's `expires_at`.
    pub async fn request_approval(
        &self,
        request: NewApproval,
    ) -> Result<ApprovalDecision, ApprovalError> {
        let record = self.create_approval(&request).await?;
        let id = record.request.callback_id;
        // No later than the longest approval a hub takes (7 days) from now,
        // whatever `expires_at` it answered.
        let latest = SystemTime::now() + MAX_APPROVAL + EXPIRY_GRACE;
        let give_up_at = UNIX_EPOCH
            .checked_add(Duration::from_millis(record.request.expires_at) + EXPIRY_GRACE)
            .map_or(latest, |at| at.min(latest));
        let mut failures = 0;
        loop {
            match self.wait_approval(&id, LONG_POLL).await {
                Ok(decision) if decision.status.is_final() => return Ok(decision),
                Ok(_) => failures = 0,
                Err(ApprovalError::Http(error))
                    if is_outage(&error) && SystemTime::now() < give_up_at =>
                {
                    failures += 1;
                    tracing::debug!(%error, %id, "the hub is unreachable; polling the approval again");
                    tokio::time::sleep(self.retry_policy().delay(failures)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// A failure that a hub restart explains: no connection, or a 5xx.
fn is_outage(error: &HttpError) -> bool {
    match error {
        HttpError::Transport { .. } => true,
        HttpError::Status { status, .. } => *status >= 500,
        _ => false,
    }
}
