//! Human-in-the-loop approvals: a producer asks a user, waits, and gets the
//! first decision, the timeout's default, or a cancellation.
//!
//! The broker keeps the approvals and decides them atomically (exactly one
//! decision wins); this service asks (registers, then publishes
//! `approval.requested` on `user:{user_id}`, to every connection of that
//! user, and on `task:{task_id}`), decides (then publishes
//! `approval.resolved` on the same topics), times out what the broker says
//! expired, and wakes whoever waits on a decision (`Decisions`, fed by the
//! broker's notices, whichever node decided).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_protocol::payload::{
    ApprovalDecision, ApprovalRecord, ApprovalRequested, ApprovalResolved, ApprovalStatus,
    NewApproval, Payload as _,
};
use herald_protocol::{
    CallbackId, ErrorCode, EventId, EventType, Label, Priority, PublishRequest, Topic,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::core::broker::{
    ApprovalQuery, ApprovalStoreError, Audience, Broker, BrokerError, Decision, Expired,
};
use crate::core::clock::now_ms;
use crate::core::publish::{PublishError, PublishOptions, Publisher};
use crate::operations::metrics::Metrics;

/// The longest wait a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How soon expired approvals are claimed again after the store failed to
/// answer.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// How long an approval's change (request or decision) may be stored and
/// not published before another pass takes it over: well past the longest
/// a node takes to store and publish one (each store call gives up within
/// 2 s, a request makes five).
const OWED_FOR: Duration = Duration::from_secs(30);

/// How often the approvals owed to their topics are looked for.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

/// How long past an approval's timeout a waiter gives its default to be
/// recorded before it reads the approval as it stands.
pub const DECISION_SLACK: Duration = Duration::from_secs(5);

/// How long the timeout task sleeps when no deadline is ahead.
const IDLE_CHECK: Duration = Duration::from_secs(3600);

/// Why an approval operation failed; each maps to an [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval has callback_id {0:?}")]
    NotFound(String),
    #[error("approval {id:?} is already resolved ({status})")]
    AlreadyResolved { id: String, status: &'static str },
    #[error("only the approval's user may answer it")]
    Forbidden,
    #[error("{0}")]
    Invalid(String),
    #[error("too many pending approvals (at most {0})")]
    TooMany(usize),
    #[error("the hub could not publish the approval: {0}")]
    Publish(String),
    #[error(transparent)]
    Store(BrokerError),
}

impl ApprovalError {
    /// The code reported to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApprovalError::NotFound(_) => ErrorCode::NotFound,
            ApprovalError::AlreadyResolved { .. } => ErrorCode::Conflict,
            ApprovalError::Forbidden => ErrorCode::Forbidden,
            ApprovalError::Invalid(_) => ErrorCode::InvalidRequest,
            ApprovalError::TooMany(_) => ErrorCode::RateLimited,
            ApprovalError::Publish(_) | ApprovalError::Store(_) => ErrorCode::Internal,
        }
    }
}

impl From<ApprovalStoreError> for ApprovalError {
    fn from(error: ApprovalStoreError) -> Self {
        match error {
            ApprovalStoreError::NotFound(id) => ApprovalError::NotFound(id),
            ApprovalStoreError::AlreadyResolved { id, status } => {
                ApprovalError::AlreadyResolved { id, status }
            }
            ApprovalStoreError::Forbidden => ApprovalError::Forbidden,
            ApprovalStoreError::TooMany(max) => ApprovalError::TooMany(max),
            ApprovalStoreError::Broker(error) => ApprovalError::Store(error),
        }
    }
}

impl From<BrokerError> for ApprovalError {
    fn from(error: BrokerError) -> Self {
        ApprovalError::Store(error)
    }
}

/// Who waits on which approval's decision on this node, and the wake-up of
/// the timeout task when a new deadline may be nearer.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    waiting: Mutex<HashMap<CallbackId, watch::Sender<ApprovalDecision>>>,
    new_deadline: Notify,
}

impl Decisions {
    /// An approval was created or decided (on any node).
    pub(crate) fn changed(&self, record: &ApprovalRecord) {
        if !record.status.is_final() {
            self.new_deadline.notify_one();
            return;
        }
        let waiting = self.waiting.lock().remove(&record.request.callback_id);
        if let Some(waiting) = waiting {
            waiting.send_replace(record.decision());
        }
    }

    fn watch(&self, current: ApprovalDecision) -> watch::Receiver<ApprovalDecision> {
        self.waiting
            .lock()
            .entry(current.callback_id.clone())
            .or_insert_with(|| watch::channel(current).0)
            .subscribe()
    }

    /// Forgets a watch nobody holds any more.
    fn unwatch(&self, id: &CallbackId) {
        let mut waiting = self.waiting.lock();
        if waiting.get(id).is_some_and(|w| w.receiver_count() == 0) {
            waiting.remove(id);
        }
    }
}

/// The approvals service of a hub.
#[derive(Debug)]
pub struct Approvals {
    broker: Arc<dyn Broker>,
    publisher: Publisher,
    decisions: Arc<Decisions>,
    default_timeout: Duration,
    default_proceed: bool,
    metrics: Arc<Metrics>,
}

impl Approvals {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        publisher: Publisher,
        decisions: Arc<Decisions>,
        default_timeout: Duration,
        default_proceed: bool,
        metrics: Arc<Metrics>,
    ) -> Approvals {
        Approvals {
            broker,
            publisher,
            decisions,
            default_timeout,
            default_proceed,
            metrics,
        }
    }

    /// Asks a user and returns at once: registers the approval and publishes
    /// `approval.requested` on `user:{user_id}` (to every connection of the
    /// user) and `task:{task_id}`, keyed by the callback id so the topics'
    /// snapshots show it until it is resolved. `delivered_to` counts the
    /// connections able to answer it that it was queued to; none is counted
    /// (`herald_approvals_unreached_total`) and logged.
    pub async fn create(&self, request: NewApproval) -> Result<ApprovalRecord, ApprovalError> {
        let invalid = |e: &dyn std::fmt::Display| ApprovalError::Invalid(e.to_string());
        // Named for the field the caller sent, not the topic made of it.
        let field = |name: &str, value: &str| {
            ApprovalError::Invalid(format!(
                "{name} {value:?} must match [A-Za-z0-9_.@-]{{1,128}}"
            ))
        };
        let user_topic =
            Topic::user(&request.user_id).map_err(|_| field("user_id", &request.user_id))?;
        let task_topic = Topic::with_id("task", &request.task_id)
            .map_err(|_| field("task_id", &request.task_id))?;
        let mut record = self.prepare(request)?;
        self.broker.create_approval(record.clone()).await?;
        let id = record.request.callback_id.clone();
        let data = record.request.to_data();
        let key = Label::new(id.as_str()).map_err(|e| invalid(&e))?;
        let mut reached = 0;
        for (topic, audience) in [
            (user_topic, Audience::User),
            (task_topic, Audience::Subscribers),
        ] {
            let event = PublishRequest::new(topic, EventType::ApprovalRequested, data.clone())
                .priority(Priority::High)
                .key(key.clone());
            let published = match self
                .publisher
                .publish(event, PublishOptions::to(audience))
                .await
            {
                Ok(published) => published,
                Err(error) => {
                    self.withdraw(&record).await;
                    return Err(ApprovalError::Publish(error.to_string()));
                }
            };
            reached += published.reached;
        }
        if let Err(error) = self.broker.record_delivery(&id, reached).await {
            self.withdraw(&record).await;
            return Err(error.into());
        }
        // Until this is stored, any node takes the request for one that was
        // never asked and withdraws it.
        match self.broker.announced(&id, true).await {
            Ok(true) => {}
            // Changed meanwhile: answered already, or withdrawn by a pass
            // because this request took longer than `OWED_FOR`.
            Ok(false) => {
                if let Some(now) = self.get(id.as_str()).await?
                    && now.status == ApprovalStatus::Cancelled
                {
                    return Err(ApprovalError::Publish(
                        "the request took too long to publish and was withdrawn".to_owned(),
                    ));
                }
            }
            Err(error) => {
                self.withdraw(&record).await;
                return Err(error.into());
            }
        }
        record.delivered_to = reached;
        let (user, task) = (&record.request.user_id, &record.request.task_id);
        if reached > 0 {
            tracing::info!(callback_id = %id, user, task, reached, "approval requested");
        } else if self.broker.delivers_on_publish() {
            self.unreached(
                &record,
                "approval requested, but no connection can answer it yet",
            );
        } else {
            // Other nodes add the connections they reach as they deliver
            // it; one that times out having reached none is counted then.
            tracing::info!(callback_id = %id, user, task, "approval requested; no connection on this node can answer it");
        }
        Ok(record)
    }

    /// Cancels an approval whose request could not be published: the
    /// producer is told it failed and has no callback id to wait on, so a
    /// user who did get the question must not be able to answer it.
    async fn withdraw(&self, record: &ApprovalRecord) {
        let cancelled = Decision::by_hub(
            ApprovalStatus::Cancelled,
            false,
            Some("the request could not be delivered".to_owned()),
        );
        let id = record.request.callback_id.as_str();
        if let Err(error) = self.resolve(id, cancelled).await {
            tracing::error!(%error, callback_id = id, "could not withdraw an approval whose request failed; it will time out");
        }
    }

    /// Builds the record of a new approval (not yet registered).
    fn prepare(&self, request: NewApproval) -> Result<ApprovalRecord, ApprovalError> {
        let timeout = request
            .timeout_ms
            .map_or(self.default_timeout, Duration::from_millis);
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(ApprovalError::Invalid(format!(
                "timeout_ms must be between 1 and {}",
                MAX_TIMEOUT.as_millis()
            )));
        }
        let callback_id = CallbackId::new(uuid::Uuid::new_v4().to_string())
            .map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        let created_at = now_ms();
        Ok(ApprovalRecord {
            request: ApprovalRequested {
                callback_id,
                user_id: request.user_id,
                task_id: request.task_id,
                step: request.step,
                step_result: request.step_result,
                timeout_ms: timeout.as_millis() as u64,
                default_proceed: request.default_proceed.unwrap_or(self.default_proceed),
                expires_at: created_at + timeout.as_millis() as u64,
            },
            status: ApprovalStatus::Pending,
            proceed: None,
            feedback: None,
            decided_by: None,
            decided_at: None,
            created_at,
            delivered_to: 0,
        })
    }

    /// Asks a user and waits for the decision (or the timeout's default): the
    /// one-call form for Rust producers.
    pub async fn request(&self, request: NewApproval) -> Result<ApprovalDecision, ApprovalError> {
        let record = self.create(request).await?;
        let limit = Duration::from_millis(record.request.timeout_ms) + DECISION_SLACK;
        let never = CancellationToken::new();
        self.wait(record.request.callback_id.as_str(), limit, &never)
            .await
    }

    /// Records a user's decision (the first wins) and publishes
    /// `approval.resolved`. `answering_user` is checked against the
    /// approval's user when given.
    pub async fn decide(
        &self,
        id: &str,
        proceed: bool,
        feedback: Option<String>,
        decided_by: Option<String>,
        answering_user: Option<&str>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let decision = Decision {
            status: status_of(proceed),
            proceed,
            feedback,
            decided_by: decided_by.clone(),
            decided_at: now_ms(),
            answering_user: answering_user.map(str::to_owned),
        };
        self.time_out_if_due(id, answering_user).await?;
        match self.resolve(id, decision).await {
            Err(ApprovalError::AlreadyResolved { id, status }) => {
                // The same answer from the same user again is a retry (a
                // client that lost its link before the answer's `ack` sends
                // it again): it gets the decision it made.
                match self.get(&id).await? {
                    Some(record)
                        if decided_by.is_some()
                            && record.status == status_of(proceed)
                            && record.decided_by == decided_by =>
                    {
                        Ok(record)
                    }
                    _ => Err(ApprovalError::AlreadyResolved { id, status }),
                }
            }
            decided => decided,
        }
    }

    /// Resolves the approval as `timed_out` if its deadline has passed while
    /// it is still pending (the task that times approvals out may be behind,
    /// its store having been away): an answer that came after the deadline
    /// does not win over it, and gets `conflict` like any later answer.
    async fn time_out_if_due(
        &self,
        id: &str,
        answering_user: Option<&str>,
    ) -> Result<(), ApprovalError> {
        let Some(record) = self.get(id).await? else {
            return Ok(());
        };
        let request = &record.request;
        let answerable = answering_user.is_none_or(|user| user == request.user_id);
        if record.status != ApprovalStatus::Pending || now_ms() < request.expires_at || !answerable
        {
            return Ok(());
        }
        let timed_out = Decision::by_hub(ApprovalStatus::TimedOut, request.default_proceed, None);
        // Another node (or the timeout task, just now) may have won: the
        // answer is refused with what did; a store error is said as such.
        let record = self.resolve(id, timed_out).await?;
        Err(ApprovalError::AlreadyResolved {
            id: id.to_owned(),
            status: record.status.as_str(),
        })
    }

    async fn resolve(&self, id: &str, decision: Decision) -> Result<ApprovalRecord, ApprovalError> {
        let key = CallbackId::new(id).map_err(|_| ApprovalError::NotFound(id.to_owned()))?;
        let record = self.broker.decide_approval(&key, decision).await?;
        let decided_at = record.decided_at.unwrap_or(record.created_at);
        self.metrics.approval_decided(
            record.status,
            Duration::from_millis(decided_at.saturating_sub(record.created_at)),
        );
        self.announce_decision(&record).await;
        tracing::info!(
            callback_id = id,
            status = record.status.as_str(),
            by = record.decided_by.as_deref(),
            "approval resolved"
        );
        Ok(record)
    }

    /// Publishes `approval.resolved` on the approval's topics, then tells
    /// the broker the decision is no longer owed. Its event id is the
    /// approval's, so publishing it again (the node stopped before telling
    /// the broker) while the first copy is retained is taken for a retry
    /// and stored once.
    async fn announce_decision(&self, record: &ApprovalRecord) {
        let id = record.request.callback_id.as_str();
        let data = ApprovalResolved {
            decision: record.decision(),
            task_id: record.request.task_id.clone(),
            user_id: record.request.user_id.clone(),
        }
        .to_data();
        let label = Label::new(id).ok();
        // A UUID, as every id the hub gives, derived from the approval: a
        // node announcing the decision again publishes the same event, which
        // the topic's ids make stored once.
        let derived = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("urn:herald:approval.resolved:{id}").as_bytes(),
        );
        let event_id = EventId::new(derived.to_string()).ok();
        let topics = [
            (Topic::user(&record.request.user_id), Audience::User),
            (
                Topic::with_id("task", &record.request.task_id),
                Audience::Subscribers,
            ),
        ];
        let mut published = true;
        for (topic, audience) in topics {
            let Ok(topic) = topic else { continue };
            let mut event = PublishRequest::new(topic, EventType::ApprovalResolved, data.clone())
                .priority(Priority::High);
            event.key = label.clone();
            event.id = event_id.clone();
            match self
                .publisher
                .publish(event, PublishOptions::to(audience))
                .await
            {
                // Published before, by a pass that could not say so.
                Ok(_) | Err(PublishError::Conflict { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, callback_id = id, "could not publish a decision; trying again shortly");
                    published = false;
                }
            }
        }
        if published
            && let Err(error) = self
                .broker
                .announced(&record.request.callback_id, false)
                .await
        {
            tracing::warn!(%error, callback_id = id, "could not record that a decision was published; it will be published again");
        }
    }

    /// Publishes what the broker says is owed: decisions stored by a node
    /// that stopped (or failed to publish) before publishing them, and
    /// withdraws requests stored but never asked (their producer was
    /// answered an error, or nothing).
    async fn announce_owed(&self, older_than: Duration) {
        let owed = match self.broker.unannounced(older_than).await {
            Ok(owed) => owed,
            Err(error) => {
                tracing::warn!(%error, "could not read the approvals owed to their topics; trying again shortly");
                return;
            }
        };
        for record in owed {
            let id = &record.request.callback_id;
            if record.status == ApprovalStatus::Pending {
                tracing::warn!(callback_id = %id, "withdrawing an approval whose request was stored but never published");
                self.withdraw(&record).await;
            } else {
                tracing::info!(callback_id = %id, status = record.status.as_str(), "publishing a decision that was stored but not published");
                self.announce_decision(&record).await;
            }
        }
    }

    /// Publishes what is owed (see `announce_owed`) now, then every
    /// [`ANNOUNCE_EVERY`], until `stop` fires.
    pub(crate) async fn run_announcements(&self, stop: CancellationToken) {
        loop {
            self.announce_owed(OWED_FOR).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            }
        }
    }

    /// Whether `user` was asked an approval on task `task_id`, whatever
    /// became of it: such a user may steer the task (cancel, pause, resume)
    /// without a token that lets them watch it.
    pub(crate) async fn asked_on_task(&self, user: &str, task_id: &str) -> bool {
        match self.broker.asked_on_task(user, task_id).await {
            Ok(asked) => asked,
            Err(error) => {
                tracing::warn!(%error, task_id, "could not list the task's approvals");
                false
            }
        }
    }

    /// Resolves a task's pending approvals as cancelled; how many were.
    pub async fn cancel_task(&self, task_id: &str) -> usize {
        let query = ApprovalQuery {
            task_id: Some(task_id.to_owned()),
            status: Some(ApprovalStatus::Pending),
            ..ApprovalQuery::default()
        };
        let pending = match self.broker.approvals(&query).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, task_id, "could not list the task's approvals to cancel");
                return 0;
            }
        };
        let mut cancelled = 0;
        for record in pending {
            let decision = Decision::by_hub(ApprovalStatus::Cancelled, false, None);
            if self
                .resolve(record.request.callback_id.as_str(), decision)
                .await
                .is_ok()
            {
                cancelled += 1;
            }
        }
        cancelled
    }

    /// Waits until the approval is decided, `wait` passes or `until` is
    /// cancelled; returns its decision then (`pending` when undecided).
    pub async fn wait(
        &self,
        id: &str,
        wait: Duration,
        until: &CancellationToken,
    ) -> Result<ApprovalDecision, ApprovalError> {
        let key = CallbackId::new(id).map_err(|_| ApprovalError::NotFound(id.to_owned()))?;
        let current = self.current(&key).await?;
        if current.status.is_final() || wait.is_zero() {
            return Ok(current);
        }
        let mut watching = self.decisions.watch(current);
        // Decided between the read and the watch: the notice may have
        // come before anyone was watching.
        let current = self.current(&key).await?;
        if current.status.is_final() {
            drop(watching);
            self.decisions.unwatch(&key);
            return Ok(current);
        }
        let decided = tokio::select! {
            decided = tokio::time::timeout(wait, watching.wait_for(|d| d.status.is_final())) => {
                decided.ok().and_then(Result::ok).map(|decision| decision.clone())
            }
            () = until.cancelled() => None,
        };
        drop(watching);
        self.decisions.unwatch(&key);
        match decided {
            Some(decision) => Ok(decision),
            None => self.current(&key).await,
        }
    }

    async fn current(&self, id: &CallbackId) -> Result<ApprovalDecision, ApprovalError> {
        self.broker
            .approval(id)
            .await?
            .map(|record| record.decision())
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))
    }

    /// One approval's record.
    pub async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError> {
        let Ok(key) = CallbackId::new(id) else {
            return Ok(None);
        };
        Ok(self.broker.approval(&key).await?)
    }

    /// Approvals matching the filters, newest first.
    pub async fn list(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        Ok(self.broker.approvals(query).await?)
    }

    /// Approvals waiting for a decision.
    pub fn pending(&self) -> usize {
        self.broker.stats().pending_approvals
    }

    /// Counts an approval that reached no connection able to answer it
    /// (`herald_approvals_unreached_total`) and says so in the log: when it
    /// is requested if the engine delivers on publish, else when it times
    /// out (a shared engine's other nodes deliver it later).
    fn unreached(&self, record: &ApprovalRecord, what: &'static str) {
        self.metrics.approvals_unreached.inc();
        let request = &record.request;
        tracing::warn!(
            callback_id = %request.callback_id,
            user = request.user_id,
            task = request.task_id,
            default_proceed = request.default_proceed,
            "{what}"
        );
    }

    /// Resolves expired approvals with their default until `stop` fires.
    pub(crate) async fn run_timeouts(&self, stop: CancellationToken) {
        loop {
            let expired = match self.broker.claim_expired(now_ms()).await {
                Ok(expired) => expired,
                Err(error) => {
                    tracing::warn!(%error, "could not read expired approvals; trying again shortly");
                    // Tried again soon, not at the next known deadline: the
                    // store may be back in a moment, and a deadline due
                    // meanwhile must not wait for the idle check.
                    Expired {
                        next_deadline: Some(now_ms() + CLAIM_RETRY.as_millis() as u64),
                        ..Default::default()
                    }
                }
            };
            let mut next_deadline = expired.next_deadline;
            for record in &expired.approvals {
                let decision = Decision::by_hub(
                    ApprovalStatus::TimedOut,
                    record.request.default_proceed,
                    None,
                );
                match self
                    .resolve(record.request.callback_id.as_str(), decision)
                    .await
                {
                    Ok(record)
                        if record.status == ApprovalStatus::TimedOut
                            && record.delivered_to == 0
                            && !self.broker.delivers_on_publish() =>
                    {
                        self.unreached(
                            &record,
                            "approval timed out without reaching a connection that could answer it",
                        );
                    }
                    // Another node (or the user, just now) won.
                    Ok(_) | Err(ApprovalError::AlreadyResolved { .. }) => {}
                    // Not kept (the store failed): still pending, and due.
                    Err(error) => {
                        tracing::warn!(%error, callback_id = %record.request.callback_id, "could not time an approval out; trying again shortly");
                        let retry = now_ms() + CLAIM_RETRY.as_millis() as u64;
                        next_deadline = Some(next_deadline.map_or(retry, |at| at.min(retry)));
                    }
                }
            }
            let wait = next_deadline.map_or(IDLE_CHECK, |at| {
                Duration::from_millis(at.saturating_sub(now_ms()))
            });
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.decisions.new_deadline.notified() => {}
            }
        }
    }
}

/// The status an answer asks for.
fn status_of(proceed: bool) -> ApprovalStatus {
    if proceed {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::broker::memory::approval_book::tests::step_result;
    use crate::core::broker::memory::{MemoryBroker, Retention};
    use crate::core::broker::{BrokerHandler, HistoryRequest, Publication, ReadRequest};
    use herald_protocol::EventFilter;
    use herald_protocol::frame::Since;

    /// Reaches nobody.
    #[derive(Debug)]
    struct Nobody;

    impl BrokerHandler for Nobody {
        fn on_publication(&self, _publication: &Publication<'_>) -> u32 {
            0
        }
        fn on_approval(&self, _record: &ApprovalRecord) {}
        fn on_gap(&self, _gap: &herald_protocol::frame::Gap) {}
    }

    fn memory_broker() -> Arc<dyn Broker> {
        let retention = Retention {
            history_size: 100,
            history_age: Duration::from_secs(60),
            history_memory: 1 << 20,
        };
        Arc::new(MemoryBroker::new(retention, Arc::new(Nobody)))
    }

    /// Approvals on a memory broker; `stopping` makes every publish but a
    /// notice to everyone fail, as a hub shutting down does.
    fn approvals(stopping: &CancellationToken) -> Approvals {
        approvals_on(memory_broker(), stopping)
    }

    fn approvals_on(broker: Arc<dyn Broker>, stopping: &CancellationToken) -> Approvals {
        let metrics = Arc::new(Metrics::default());
        let publisher = Publisher::new(broker.clone(), stopping.clone(), metrics.clone());
        Approvals::new(
            broker,
            publisher,
            Arc::default(),
            Duration::from_secs(60),
            false,
            metrics,
        )
    }

    fn question(timeout_ms: u64) -> NewApproval {
        NewApproval {
            user_id: "u1".to_owned(),
            task_id: "t1".to_owned(),
            step: 1,
            step_result: step_result(),
            timeout_ms: Some(timeout_ms),
            default_proceed: Some(false),
        }
    }

    #[tokio::test]
    async fn a_request_that_could_not_be_published_is_withdrawn() {
        let stopping = CancellationToken::new();
        stopping.cancel();
        let approvals = approvals(&stopping);
        let refused = approvals.create(question(60_000)).await;
        assert!(
            matches!(refused, Err(ApprovalError::Publish(_))),
            "{refused:?}"
        );
        let query = ApprovalQuery::default();
        let listed = approvals.list(&query).await.unwrap();
        let [withdrawn] = listed.as_slice() else {
            panic!("{listed:?}")
        };
        assert_eq!(withdrawn.status, ApprovalStatus::Cancelled);
        assert_eq!(approvals.pending(), 0);
    }

    #[tokio::test]
    async fn an_answer_after_the_deadline_loses_to_the_timeout() {
        let running = CancellationToken::new();
        let approvals = approvals(&running);
        let record = approvals.create(question(1)).await.unwrap();
        let id = record.request.callback_id.as_str();
        // No timeout task runs here: only the answer sees the deadline passed.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let late = approvals
            .decide(id, true, None, Some("u1".to_owned()), Some("u1"))
            .await;
        assert!(
            matches!(
                late,
                Err(ApprovalError::AlreadyResolved {
                    status: "timed_out",
                    ..
                })
            ),
            "{late:?}"
        );
        let decided = approvals.get(id).await.unwrap().unwrap();
        assert_eq!(
            (decided.status, decided.proceed),
            (ApprovalStatus::TimedOut, Some(false))
        );
    }

    /// The event types stored on `topic`, oldest first.
    async fn published_on(broker: &Arc<dyn Broker>, topic: &str) -> Vec<String> {
        let since = Since::Seq {
            seq: 0,
            epoch: None,
        };
        let filter = EventFilter::default();
        let read = broker
            .read(
                &Topic::parse(topic).unwrap(),
                ReadRequest {
                    snapshot: None,
                    history: Some(HistoryRequest {
                        since: &since,
                        filter: &filter,
                        limit: usize::MAX,
                    }),
                },
            )
            .await
            .unwrap();
        read.history
            .map(|history| {
                history
                    .events
                    .iter()
                    .map(|e| e.event.event_type.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_decision_stored_but_not_published_is_published_by_a_later_pass_once() {
        let broker = memory_broker();
        let stopping = CancellationToken::new();
        let failing = approvals_on(broker.clone(), &stopping);
        let record = failing.create(question(60_000)).await.unwrap();
        let id = record.request.callback_id.as_str();
        // The decision is kept; its event cannot be published.
        stopping.cancel();
        failing
            .decide(id, true, None, Some("u1".to_owned()), Some("u1"))
            .await
            .unwrap();
        assert_eq!(
            published_on(&broker, "task:t1").await,
            ["approval.requested"]
        );
        // Another pass (a restarted hub, another node) publishes it.
        let running = CancellationToken::new();
        let later = approvals_on(broker.clone(), &running);
        later.announce_owed(Duration::ZERO).await;
        later.announce_owed(Duration::ZERO).await;
        for topic in ["task:t1", "user:u1"] {
            assert_eq!(
                published_on(&broker, topic).await,
                ["approval.requested", "approval.resolved"],
                "{topic}"
            );
        }
        assert!(broker.unannounced(Duration::ZERO).await.unwrap().is_empty());
        // A pass that published it but could not say so publishes nothing twice.
        later
            .announce_decision(&later.get(id).await.unwrap().unwrap())
            .await;
        assert_eq!(
            published_on(&broker, "task:t1").await,
            ["approval.requested", "approval.resolved"]
        );
    }

    #[tokio::test]
    async fn a_request_stored_but_never_published_is_withdrawn_by_a_later_pass() {
        let broker = memory_broker();
        let record = approvals(&CancellationToken::new())
            .prepare(question(60_000))
            .unwrap();
        // Stored, then the node stopped before publishing the question.
        broker.create_approval(record.clone()).await.unwrap();
        let running = CancellationToken::new();
        let later = approvals_on(broker.clone(), &running);
        later.announce_owed(Duration::from_secs(3600)).await;
        assert_eq!(later.pending(), 1, "a request in flight is left alone");
        later.announce_owed(Duration::ZERO).await;
        let withdrawn = later
            .get(record.request.callback_id.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(withdrawn.status, ApprovalStatus::Cancelled);
        assert_eq!(
            published_on(&broker, "task:t1").await,
            ["approval.resolved"]
        );
    }

    #[tokio::test]
    async fn an_approval_asked_and_answered_owes_nothing() {
        let broker = memory_broker();
        let approvals = approvals_on(broker.clone(), &CancellationToken::new());
        let record = approvals.create(question(60_000)).await.unwrap();
        assert!(broker.unannounced(Duration::ZERO).await.unwrap().is_empty());
        approvals
            .decide(record.request.callback_id.as_str(), false, None, None, None)
            .await
            .unwrap();
        assert!(broker.unannounced(Duration::ZERO).await.unwrap().is_empty());
    }
}
