//! Human-in-the-loop approvals: a producer asks a user, waits, and gets the
//! first decision, a timeout's default, or a cancellation.
//!
//! The registry holds pending approvals (bounded by [`MAX_PENDING`]) and the
//! recent decided ones for the audit trail (bounded by [`MAX_DECIDED`]; the
//! oldest go first), so it never grows without bound. Each approval has a
//! `watch` channel that long-polls and the Rust API wait on.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use herald_protocol::payload::{
    ApprovalDecision, ApprovalRecord, ApprovalRequested, ApprovalStatus, NewApproval,
};
use herald_protocol::{CallbackId, ErrorCode};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::hub::now_ms;
use crate::metrics::Histogram;

/// Most approvals pending at once; more are refused (HTTP 429) until some resolve.
pub const MAX_PENDING: usize = 100_000;
/// Decided approvals kept for `GET /api/v1/approvals`.
pub const MAX_DECIDED: usize = 10_000;
/// The longest wait a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

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
    #[error("too many pending approvals (at most {MAX_PENDING})")]
    TooMany,
    #[error("the hub could not publish the approval: {0}")]
    Publish(String),
}

impl ApprovalError {
    /// The code reported to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApprovalError::NotFound(_) => ErrorCode::NotFound,
            ApprovalError::AlreadyResolved { .. } => ErrorCode::Conflict,
            ApprovalError::Forbidden => ErrorCode::Forbidden,
            ApprovalError::Invalid(_) => ErrorCode::InvalidRequest,
            ApprovalError::TooMany => ErrorCode::RateLimited,
            ApprovalError::Publish(_) => ErrorCode::Internal,
        }
    }
}

#[derive(Debug)]
struct Entry {
    record: ApprovalRecord,
    watch: watch::Sender<ApprovalDecision>,
}

#[derive(Debug, Default)]
struct Registry {
    entries: HashMap<CallbackId, Entry>,
    decided: VecDeque<CallbackId>,
    pending: usize,
}

/// Counters for `/metrics`.
#[derive(Debug)]
pub(crate) struct ApprovalMetrics {
    pub(crate) decisions: [std::sync::atomic::AtomicU64; 4],
    pub(crate) time_to_decision: Histogram,
}

const DECISION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The approvals of one hub.
#[derive(Debug)]
pub struct Approvals {
    registry: Mutex<Registry>,
    /// Wakes the timeout task when a nearer deadline appears.
    pub(crate) changed: Notify,
    pub(crate) metrics: ApprovalMetrics,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            registry: Mutex::default(),
            changed: Notify::new(),
            metrics: ApprovalMetrics {
                decisions: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
                time_to_decision: Histogram::new(&DECISION_BUCKETS),
            },
        }
    }
}

/// The outcomes counted in `herald_approval_decisions_total`.
pub(crate) const OUTCOMES: [ApprovalStatus; 4] = [
    ApprovalStatus::Approved,
    ApprovalStatus::Rejected,
    ApprovalStatus::TimedOut,
    ApprovalStatus::Cancelled,
];

impl Approvals {
    /// Builds the record of a new approval (not yet registered).
    pub(crate) fn prepare(
        request: NewApproval,
        default_timeout: Duration,
        default_proceed: bool,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let timeout = request
            .timeout_ms
            .map_or(default_timeout, Duration::from_millis);
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
                default_proceed: request.default_proceed.unwrap_or(default_proceed),
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

    /// Registers an approval (new, or recovered from the store).
    pub(crate) fn insert(&self, record: ApprovalRecord) -> Result<(), ApprovalError> {
        let mut registry = self.registry.lock();
        let pending = record.status == ApprovalStatus::Pending;
        if pending && registry.pending >= MAX_PENDING {
            return Err(ApprovalError::TooMany);
        }
        let id = record.request.callback_id.clone();
        let (watch, _) = watch::channel(record.decision());
        if pending {
            registry.pending += 1;
        } else {
            registry.decided.push_back(id.clone());
        }
        registry.entries.insert(id, Entry { record, watch });
        drop(registry);
        self.changed.notify_one();
        Ok(())
    }

    /// Notes how many connections the request reached.
    pub(crate) fn set_delivered(&self, id: &CallbackId, connections: u32) {
        if let Some(entry) = self.registry.lock().entries.get_mut(id) {
            entry.record.delivered_to = connections;
        }
    }

    /// Decides a pending approval; the first decision wins.
    pub(crate) fn decide(
        &self,
        id: &str,
        status: ApprovalStatus,
        proceed: bool,
        feedback: Option<String>,
        decided_by: Option<String>,
        answering_user: Option<&str>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let mut registry = self.registry.lock();
        let key = CallbackId::new(id).map_err(|_| ApprovalError::NotFound(id.to_owned()))?;
        let entry = registry
            .entries
            .get_mut(&key)
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        if entry.record.status.is_final() {
            return Err(ApprovalError::AlreadyResolved {
                id: id.to_owned(),
                status: entry.record.status.as_str(),
            });
        }
        if let Some(user) = answering_user
            && user != entry.record.request.user_id
        {
            return Err(ApprovalError::Forbidden);
        }
        let now = now_ms();
        entry.record.status = status;
        entry.record.proceed = Some(proceed);
        entry.record.feedback = feedback;
        entry.record.decided_by = decided_by;
        entry.record.decided_at = Some(now);
        entry.watch.send_replace(entry.record.decision());
        let record = entry.record.clone();
        registry.pending -= 1;
        registry.decided.push_back(key);
        while registry.decided.len() > MAX_DECIDED {
            if let Some(old) = registry.decided.pop_front() {
                registry.entries.remove(&old);
            }
        }
        drop(registry);
        if let Some(i) = OUTCOMES.iter().position(|o| *o == status) {
            self.metrics.decisions[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.metrics
            .time_to_decision
            .observe(Duration::from_millis(now.saturating_sub(record.created_at)));
        Ok(record)
    }

    /// The record of one approval.
    pub fn get(&self, id: &str) -> Option<ApprovalRecord> {
        let key = CallbackId::new(id).ok()?;
        self.registry
            .lock()
            .entries
            .get(&key)
            .map(|e| e.record.clone())
    }

    /// Waits until the approval is decided or `wait` passes; returns its decision then.
    pub async fn wait(&self, id: &str, wait: Duration) -> Result<ApprovalDecision, ApprovalError> {
        let mut receiver = {
            let key = CallbackId::new(id).map_err(|_| ApprovalError::NotFound(id.to_owned()))?;
            let registry = self.registry.lock();
            let entry = registry
                .entries
                .get(&key)
                .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
            entry.watch.subscribe()
        };
        let _ = tokio::time::timeout(wait, receiver.wait_for(|d| d.status.is_final())).await;
        let decision = receiver.borrow().clone();
        Ok(decision)
    }

    /// Approvals matching the filters, newest first.
    pub fn list(
        &self,
        task_id: Option<&str>,
        status: Option<ApprovalStatus>,
    ) -> Vec<ApprovalRecord> {
        let registry = self.registry.lock();
        let mut records: Vec<ApprovalRecord> = registry
            .entries
            .values()
            .map(|e| &e.record)
            .filter(|r| task_id.is_none_or(|t| r.request.task_id == t))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        records
    }

    /// Ids of the pending approvals of a task.
    pub(crate) fn pending_of_task(&self, task_id: &str) -> Vec<CallbackId> {
        self.registry
            .lock()
            .entries
            .values()
            .filter(|e| {
                e.record.status == ApprovalStatus::Pending && e.record.request.task_id == task_id
            })
            .map(|e| e.record.request.callback_id.clone())
            .collect()
    }

    /// Pending approvals of a user.
    pub(crate) fn pending_of_user(&self, user_id: &str) -> usize {
        self.registry
            .lock()
            .entries
            .values()
            .filter(|e| {
                e.record.status == ApprovalStatus::Pending && e.record.request.user_id == user_id
            })
            .count()
    }

    /// Approvals waiting for a decision.
    pub fn pending(&self) -> usize {
        self.registry.lock().pending
    }

    /// Pending approvals whose deadline passed, and the nearest future deadline.
    pub(crate) fn expired(&self, now: u64) -> (Vec<CallbackId>, Option<u64>) {
        let registry = self.registry.lock();
        let mut expired = Vec::new();
        let mut next: Option<u64> = None;
        for entry in registry.entries.values() {
            if entry.record.status != ApprovalStatus::Pending {
                continue;
            }
            let deadline = entry.record.request.expires_at;
            if deadline <= now {
                expired.push(entry.record.request.callback_id.clone());
            } else {
                next = Some(next.map_or(deadline, |n: u64| n.min(deadline)));
            }
        }
        (expired, next)
    }
}

impl Approvals {
    /// Appends the approval metrics in the Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP herald_approval_decisions_total Approvals resolved, by outcome.\n# TYPE herald_approval_decisions_total counter"
        );
        for (outcome, count) in OUTCOMES.iter().zip(&self.metrics.decisions) {
            let _ = writeln!(
                out,
                "herald_approval_decisions_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                count.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        self.metrics.time_to_decision.render(
            out,
            "herald_approval_time_to_decision_seconds",
            "Time from an approval's request to its resolution.",
        );
    }
}
