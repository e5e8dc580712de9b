//! The memory engine's approvals: pending ones (at most [`MAX_PENDING`]) and
//! the recent decided ones for the audit trail (at most [`MAX_DECIDED`]; the
//! oldest go first), so the book never grows without bound.

use std::collections::{HashMap, HashSet, VecDeque};

use herald_protocol::CallbackId;
use herald_protocol::payload::{ApprovalRecord, ApprovalStatus};

use crate::core::broker::{ApprovalQuery, ApprovalStoreError, Decision, Expired};

/// Most approvals pending at once; more are refused until some resolve.
pub const MAX_PENDING: usize = 100_000;
/// Decided approvals kept for the audit trail.
pub const MAX_DECIDED: usize = 10_000;

/// Every approval one node knows.
#[derive(Debug, Default)]
pub(crate) struct ApprovalBook {
    records: HashMap<CallbackId, ApprovalRecord>,
    /// Decided ones, oldest decision first.
    decided: VecDeque<CallbackId>,
    pending: usize,
    /// Approvals whose last change (request or decision) is stored but not
    /// yet published, and since when (ms): owed to their topics.
    owed: HashMap<CallbackId, u64>,
}

impl ApprovalBook {
    /// Registers an approval (new, or recovered from a store).
    pub(crate) fn insert(&mut self, record: ApprovalRecord) -> Result<(), ApprovalStoreError> {
        let pending = record.status == ApprovalStatus::Pending;
        if pending && self.pending >= MAX_PENDING {
            return Err(ApprovalStoreError::TooMany(MAX_PENDING));
        }
        let id = record.request.callback_id.clone();
        if pending {
            self.pending += 1;
        } else {
            self.decided.push_back(id.clone());
        }
        if let Some(old) = self.records.insert(id, record)
            && old.status == ApprovalStatus::Pending
        {
            self.pending -= 1;
        }
        self.forget_oldest_decided();
        Ok(())
    }

    /// Forgets an approval (one that could not be kept).
    pub(crate) fn remove(&mut self, id: &CallbackId) {
        self.owed.remove(id);
        if let Some(old) = self.records.remove(id) {
            if old.status == ApprovalStatus::Pending {
                self.pending -= 1;
            } else {
                self.decided.retain(|decided| decided != id);
            }
        }
    }

    /// Decides a pending approval; the first decision wins.
    pub(crate) fn decide(
        &mut self,
        id: &CallbackId,
        decision: Decision,
    ) -> Result<ApprovalRecord, ApprovalStoreError> {
        let record = self
            .records
            .get_mut(id)
            .ok_or_else(|| ApprovalStoreError::NotFound(id.to_string()))?;
        // Another user is refused before anything is said of the outcome.
        if let Some(user) = &decision.answering_user
            && *user != record.request.user_id
        {
            return Err(ApprovalStoreError::Forbidden);
        }
        if record.status.is_final() {
            return Err(ApprovalStoreError::AlreadyResolved {
                id: id.to_string(),
                status: record.status.as_str(),
            });
        }
        record.status = decision.status;
        record.proceed = Some(decision.proceed);
        record.feedback = decision.feedback;
        record.decided_by = decision.decided_by;
        record.decided_at = Some(decision.decided_at);
        let record = record.clone();
        self.pending -= 1;
        self.decided.push_back(id.clone());
        self.forget_oldest_decided();
        Ok(record)
    }

    fn forget_oldest_decided(&mut self) {
        while self.decided.len() > MAX_DECIDED {
            if let Some(old) = self.decided.pop_front() {
                self.records.remove(&old);
                self.owed.remove(&old);
            }
        }
    }

    /// Adds connections the request reached.
    pub(crate) fn add_delivered(
        &mut self,
        id: &CallbackId,
        connections: u32,
    ) -> Option<&ApprovalRecord> {
        let record = self.records.get_mut(id)?;
        record.delivered_to = record.delivered_to.saturating_add(connections);
        Some(record)
    }

    pub(crate) fn get(&self, id: &CallbackId) -> Option<&ApprovalRecord> {
        self.records.get(id)
    }

    /// Marks the approval's last change as not yet published, since `now`.
    pub(crate) fn owe(&mut self, id: &CallbackId, now: u64) {
        if self.records.contains_key(id) {
            self.owed.insert(id.clone(), now);
        }
    }

    /// Whether the approval's last change is not yet published.
    pub(crate) fn is_owed(&self, id: &CallbackId) -> bool {
        self.owed.contains_key(id)
    }

    /// The approval's request (`pending`) or decision was published:
    /// unless it changed since (`None`), it is owed no more; whether it
    /// was owed.
    pub(crate) fn settle(&mut self, id: &CallbackId, pending: bool) -> Option<bool> {
        let unchanged = self
            .records
            .get(id)
            .is_none_or(|record| (record.status == ApprovalStatus::Pending) == pending);
        unchanged.then(|| self.owed.remove(id).is_some())
    }

    /// The approvals owed since `older_than` ms or longer, at most `limit`
    /// of them; each is owed from `now` again, so the next pass leaves it
    /// to the one publishing it now.
    pub(crate) fn take_owed(
        &mut self,
        older_than: u64,
        now: u64,
        limit: usize,
    ) -> Vec<ApprovalRecord> {
        let due: Vec<CallbackId> = self
            .owed
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= older_than)
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect();
        due.into_iter()
            .filter_map(|id| {
                self.owed.insert(id.clone(), now);
                self.records.get(&id).cloned()
            })
            .collect()
    }

    /// Approvals matching the query, newest first.
    pub(crate) fn list(&self, query: &ApprovalQuery) -> Vec<ApprovalRecord> {
        let mut records: Vec<ApprovalRecord> = self
            .records
            .values()
            .filter(|r| {
                query
                    .task_id
                    .as_ref()
                    .is_none_or(|t| r.request.task_id == *t)
            })
            .filter(|r| {
                query
                    .user_id
                    .as_ref()
                    .is_none_or(|u| r.request.user_id == *u)
            })
            .filter(|r| query.status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        records
    }

    /// Approvals waiting for a decision.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// The users with an approval waiting for their decision.
    pub(crate) fn asked_users(&self) -> HashSet<&str> {
        self.records
            .values()
            .filter(|r| r.status == ApprovalStatus::Pending)
            .map(|r| r.request.user_id.as_str())
            .collect()
    }

    /// Pending approvals whose deadline passed, and the nearest future deadline.
    pub(crate) fn expired(&self, now: u64) -> Expired {
        let mut expired = Expired::default();
        for record in self.records.values() {
            if record.status != ApprovalStatus::Pending {
                continue;
            }
            let deadline = record.request.expires_at;
            if deadline <= now {
                expired.approvals.push(record.clone());
            } else {
                expired.next_deadline =
                    Some(expired.next_deadline.map_or(deadline, |n| n.min(deadline)));
            }
        }
        expired
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use herald_protocol::payload::{ApprovalRequested, TaskStepResult};

    use super::*;

    /// A failed step, as producers ask about.
    pub(crate) fn step_result() -> TaskStepResult {
        TaskStepResult {
            step: "train".to_owned(),
            result: serde_json::Value::Null,
            completed: false,
            message: "retry?".to_owned(),
            status: "failed".to_owned(),
            error_code: None,
            error_message: None,
        }
    }

    pub(crate) fn pending(id: &str, user: &str, expires_at: u64) -> ApprovalRecord {
        ApprovalRecord {
            request: ApprovalRequested {
                callback_id: CallbackId::new(id).unwrap(),
                user_id: user.to_owned(),
                task_id: "t1".to_owned(),
                step: 1,
                step_result: step_result(),
                timeout_ms: 1000,
                default_proceed: false,
                expires_at,
            },
            status: ApprovalStatus::Pending,
            proceed: None,
            feedback: None,
            decided_by: None,
            decided_at: None,
            created_at: 0,
            delivered_to: 0,
        }
    }

    pub(crate) fn decision(status: ApprovalStatus, by: Option<&str>) -> Decision {
        Decision {
            status,
            proceed: status == ApprovalStatus::Approved,
            feedback: None,
            decided_by: by.map(str::to_owned),
            decided_at: 5,
            answering_user: by.map(str::to_owned),
        }
    }

    #[test]
    fn another_user_is_refused_without_learning_the_outcome() {
        let mut book = ApprovalBook::default();
        book.insert(pending("a1", "u1", 100)).unwrap();
        let id = CallbackId::new("a1").unwrap();
        book.decide(&id, decision(ApprovalStatus::Approved, Some("u1")))
            .unwrap();
        let other = book.decide(&id, decision(ApprovalStatus::Rejected, Some("u2")));
        assert!(
            matches!(other, Err(ApprovalStoreError::Forbidden)),
            "{other:?}"
        );
    }

    #[test]
    fn the_first_decision_wins_and_later_ones_are_refused() {
        let mut book = ApprovalBook::default();
        book.insert(pending("a1", "u1", 100)).unwrap();
        let id = CallbackId::new("a1").unwrap();
        let record = book
            .decide(&id, decision(ApprovalStatus::Approved, Some("u1")))
            .unwrap();
        assert_eq!(record.proceed, Some(true));
        assert_eq!(book.pending(), 0);
        let second = book.decide(&id, decision(ApprovalStatus::TimedOut, None));
        assert!(matches!(
            second,
            Err(ApprovalStoreError::AlreadyResolved { .. })
        ));
    }

    #[test]
    fn only_the_approvals_user_may_answer_it() {
        let mut book = ApprovalBook::default();
        book.insert(pending("a1", "u1", 100)).unwrap();
        let id = CallbackId::new("a1").unwrap();
        let result = book.decide(&id, decision(ApprovalStatus::Approved, Some("u2")));
        assert_eq!(result, Err(ApprovalStoreError::Forbidden));
        assert_eq!(book.pending(), 1);
    }

    #[test]
    fn expired_lists_past_deadlines_and_the_next_one_ahead() {
        let mut book = ApprovalBook::default();
        book.insert(pending("late", "u1", 10)).unwrap();
        book.insert(pending("soon", "u1", 30)).unwrap();
        book.insert(pending("later", "u1", 50)).unwrap();
        let expired = book.expired(20);
        let ids: Vec<&str> = expired
            .approvals
            .iter()
            .map(|r| r.request.callback_id.as_str())
            .collect();
        assert_eq!(ids, ["late"]);
        assert_eq!(expired.next_deadline, Some(30));
    }

    #[test]
    fn the_oldest_decided_approvals_leave_the_book_first() {
        let mut book = ApprovalBook::default();
        for i in 0..=MAX_DECIDED {
            let id = format!("a{i}");
            book.insert(pending(&id, "u1", 100)).unwrap();
            book.decide(
                &CallbackId::new(id).unwrap(),
                decision(ApprovalStatus::Rejected, None),
            )
            .unwrap();
        }
        assert!(book.get(&CallbackId::new("a0").unwrap()).is_none());
        assert!(book.get(&CallbackId::new("a1").unwrap()).is_some());
    }
}
