//! The hub's approval methods: ask, wait, decide, cancel, time out, and
//! keep it durable with a durable store.

use herald_protocol::payload::{
    ApprovalDecision, ApprovalRecord, ApprovalResolved, ApprovalStatus, NewApproval, Payload as _,
};
use herald_protocol::{EventType, Label, Priority, PublishRequest, Topic};

use super::{Audience, Hub, now_ms};
use crate::approvals::{ApprovalError, Approvals};
use crate::store::{ApprovalWrite, Write};

impl Hub {
    pub(crate) fn publish_limiter(&self) -> &crate::limits::PublishLimiter {
        &self.inner.publish_limiter
    }

    /// The hub's approvals.
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// Asks a user and returns at once: registers the approval (durably, with
    /// a durable store) and publishes `approval.requested` on `user:{user_id}`
    /// (to every connection of the user) and `task:{task_id}`, keyed by the
    /// callback id so the topics' snapshots show it until it is resolved.
    pub async fn create_approval(
        &self,
        request: NewApproval,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let user_topic =
            Topic::user(&request.user_id).map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        let task_topic = Topic::with_id("task", &request.task_id)
            .map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        let config = &self.inner.config;
        let record = Approvals::prepare(
            request,
            config.approval_timeout,
            config.approval_default_proceed,
        )?;
        self.persist_approval(&record).await?;
        self.inner.approvals.insert(record.clone())?;
        let id = record.request.callback_id.clone();
        let data = record.request.to_data();
        let key = Label::new(id.as_str()).map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        let user = record.request.user_id.clone();
        let mut reached = 0;
        for (topic, audience) in [
            (user_topic, Audience::User(user)),
            (task_topic, Audience::Subscribers),
        ] {
            let request = PublishRequest::new(topic, EventType::ApprovalRequested, data.clone())
                .priority(Priority::High)
                .key(key.clone());
            let (_, n) = self
                .publish_counted(request, audience)
                .await
                .map_err(|e| ApprovalError::Publish(e.to_string()))?;
            reached += n;
        }
        self.inner.approvals.set_delivered(&id, reached);
        tracing::info!(callback_id = %id, user = %record.request.user_id, task = %record.request.task_id, reached, "approval requested");
        Ok(self.inner.approvals.get(id.as_str()).unwrap_or(record))
    }

    /// Asks a user and waits for the decision (or the timeout's default): the
    /// one-call form for Rust producers.
    pub async fn request_approval(
        &self,
        request: NewApproval,
    ) -> Result<ApprovalDecision, ApprovalError> {
        let record = self.create_approval(request).await?;
        let id = record.request.callback_id.as_str();
        let limit = std::time::Duration::from_millis(record.request.timeout_ms)
            + std::time::Duration::from_secs(5);
        self.inner.approvals.wait(id, limit).await
    }

    /// Records a decision (the first wins) and publishes `approval.resolved`.
    /// `answering_user` is checked against the approval's user when given.
    pub async fn decide_approval(
        &self,
        id: &str,
        proceed: bool,
        feedback: Option<String>,
        decided_by: Option<String>,
        answering_user: Option<&str>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let status = if proceed {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Rejected
        };
        self.resolve(id, status, proceed, feedback, decided_by, answering_user)
            .await
    }

    async fn resolve(
        &self,
        id: &str,
        status: ApprovalStatus,
        proceed: bool,
        feedback: Option<String>,
        decided_by: Option<String>,
        answering_user: Option<&str>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let record = self.inner.approvals.decide(
            id,
            status,
            proceed,
            feedback,
            decided_by,
            answering_user,
        )?;
        if let Err(error) = self.persist_approval(&record).await {
            tracing::error!(%error, callback_id = id, "could not store a decision");
        }
        let data = ApprovalResolved {
            decision: record.decision(),
            task_id: record.request.task_id.clone(),
            user_id: record.request.user_id.clone(),
        }
        .to_data();
        let key = Label::new(id).ok();
        let topics = [
            (
                Topic::user(&record.request.user_id),
                Audience::User(record.request.user_id.clone()),
            ),
            (
                Topic::with_id("task", &record.request.task_id),
                Audience::Subscribers,
            ),
        ];
        for (topic, audience) in topics {
            let Ok(topic) = topic else { continue };
            let mut request = PublishRequest::new(topic, EventType::ApprovalResolved, data.clone())
                .priority(Priority::High);
            request.key = key.clone();
            if let Err(error) = self.publish_to(request, audience).await {
                tracing::warn!(%error, callback_id = id, "could not publish a decision");
            }
        }
        tracing::info!(
            callback_id = id,
            status = status.as_str(),
            by = record.decided_by.as_deref(),
            "approval resolved"
        );
        Ok(record)
    }

    /// Resolves a task's pending approvals as cancelled.
    pub async fn cancel_task_approvals(&self, task_id: &str) -> usize {
        let ids = self.inner.approvals.pending_of_task(task_id);
        let mut cancelled = 0;
        for id in ids {
            if self
                .resolve(
                    id.as_str(),
                    ApprovalStatus::Cancelled,
                    false,
                    None,
                    None,
                    None,
                )
                .await
                .is_ok()
            {
                cancelled += 1;
            }
        }
        cancelled
    }

    /// Resolves expired approvals with their default until the hub stops.
    pub(crate) async fn run_approval_timeouts(&self) {
        let token = self.inner.shutdown.clone();
        loop {
            let (expired, next) = self.inner.approvals.expired(now_ms());
            for id in expired {
                let default = self
                    .inner
                    .approvals
                    .get(id.as_str())
                    .is_some_and(|r| r.request.default_proceed);
                let _ = self
                    .resolve(
                        id.as_str(),
                        ApprovalStatus::TimedOut,
                        default,
                        None,
                        None,
                        None,
                    )
                    .await;
            }
            let wait = next.map_or(std::time::Duration::from_secs(3600), |at| {
                std::time::Duration::from_millis(at.saturating_sub(now_ms()))
            });
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.inner.approvals.changed.notified() => {}
            }
        }
    }

    async fn persist_approval(&self, record: &ApprovalRecord) -> Result<(), ApprovalError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let journal = store
            .journal()
            .ok_or_else(|| ApprovalError::Publish("the store is closed".into()))?;
        let (done, durable) = tokio::sync::oneshot::channel();
        let write = Write::Approval(ApprovalWrite {
            callback_id: record.request.callback_id.to_string(),
            pending: record.status == ApprovalStatus::Pending,
            body: serde_json::to_string(record).unwrap_or_default(),
            done,
        });
        journal
            .send(write)
            .await
            .map_err(|_| ApprovalError::Publish("the store is closed".into()))?;
        durable
            .await
            .map_err(|_| ApprovalError::Publish("the store stopped".into()))?
            .map_err(|e| ApprovalError::Publish(e.to_string()))
    }
}
