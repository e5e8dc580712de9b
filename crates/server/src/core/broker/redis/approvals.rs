//! Approvals in Redis: a hash per approval (the request as JSON, and the
//! decision's fields), and sorted sets: pending by deadline, claimed by claim
//! expiry, decided by decision time (at most [`MAX_DECIDED`] kept), created
//! by creation time (for listing). Creating and deciding are scripts, so a
//! decision is a compare-and-set: of any decisions made at once, on any
//! nodes, exactly one wins. Every change is announced on one channel, so a
//! producer waiting on any node hears of a decision made on any other.

use std::collections::HashMap;
use std::time::Duration;

use herald_protocol::CallbackId;
use herald_protocol::payload::{ApprovalRecord, ApprovalRequested, ApprovalStatus};

use super::scripts::{self, Unexpected, items, text};
use super::{Shared, failed, keys};
use crate::core::broker::memory::approval_book::{MAX_DECIDED, MAX_PENDING};
use crate::core::broker::{
    ApprovalQuery, ApprovalStoreError, BrokerError, Decision, Expired, UNANNOUNCED_PER_PASS,
};

/// How long a node has to time out the approvals it claimed before they
/// are handed out again: a node that died, or a claim whose reply was lost
/// (Redis stalled past the command timeout), delays a timeout by this much
/// at most. Two nodes deciding one approval is harmless (the decide script
/// lets one win).
const CLAIM_FOR_MS: u64 = 5_000;
/// Most expired approvals claimed at once.
const CLAIM_AT_ONCE: usize = 100;

/// An optional text as the decide script takes it: `""` for none.
fn optional(value: Option<&str>) -> String {
    value.map_or_else(String::new, |v| format!("={v}"))
}

fn status_of(name: &str) -> Option<ApprovalStatus> {
    [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Rejected,
        ApprovalStatus::TimedOut,
        ApprovalStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
}

/// An approval's record from its hash's fields.
fn record_of(fields: &HashMap<String, String>) -> Result<ApprovalRecord, Unexpected> {
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let request: ApprovalRequested =
        serde_json::from_str(field("req")).map_err(|e| Unexpected(e.to_string()))?;
    let status = status_of(field("status"))
        .ok_or_else(|| Unexpected(format!("approval status {:?}", field("status"))))?;
    let text = |name: &str| field(name).strip_prefix('=').map(str::to_owned);
    Ok(ApprovalRecord {
        request,
        status,
        proceed: match field("proceed") {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        },
        feedback: text("feedback"),
        decided_by: text("decided_by"),
        decided_at: field("decided_at").parse().ok(),
        created_at: field("created_at").parse().unwrap_or_default(),
        delivered_to: field("delivered_to").parse().unwrap_or_default(),
    })
}

impl Shared {
    pub(super) async fn create_approval(
        &self,
        record: &ApprovalRecord,
    ) -> Result<(), ApprovalStoreError> {
        let request = &record.request;
        let body = serde_json::to_string(request).map_err(|e| BrokerError::Write(e.to_string()))?;
        let created: i64 = scripts::APPROVAL_CREATE
            .key(keys::approval(&request.callback_id))
            .key(keys::PENDING)
            .key(keys::CLAIMED)
            .key(keys::CREATED)
            .key(keys::task(&request.task_id))
            .key(keys::UNANNOUNCED)
            .arg(request.callback_id.as_str())
            .arg(body)
            .arg(&request.user_id)
            .arg(&request.task_id)
            .arg(record.created_at)
            .arg(request.expires_at)
            .arg(MAX_PENDING)
            .arg(keys::APPROVALS_CHANNEL)
            .arg(self.publish_deadline())
            .invoke_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        match created {
            0 => Err(ApprovalStoreError::TooMany(MAX_PENDING)),
            -1 => Err(BrokerError::Unavailable(
                "the store ran the request past its deadline, and stored nothing".into(),
            )
            .into()),
            _ => Ok(()),
        }
    }

    pub(super) async fn decide_approval(
        &self,
        id: &CallbackId,
        decision: Decision,
    ) -> Result<ApprovalRecord, ApprovalStoreError> {
        let answer: redis::Value = scripts::APPROVAL_DECIDE
            .key(keys::approval(id))
            .key(keys::PENDING)
            .key(keys::CLAIMED)
            .key(keys::DECIDED)
            .key(keys::CREATED)
            .key(keys::UNANNOUNCED)
            .arg(id.as_str())
            .arg(decision.status.as_str())
            .arg(if decision.proceed { "1" } else { "0" })
            .arg(optional(decision.feedback.as_deref()))
            .arg(optional(decision.decided_by.as_deref()))
            .arg(decision.decided_at)
            .arg(decision.answering_user.as_deref().unwrap_or(""))
            .arg(MAX_DECIDED)
            .arg(keys::APPROVALS_CHANNEL)
            .arg(keys::APPROVAL_PREFIX)
            .arg(keys::TASK_PREFIX)
            .invoke_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        let answer = items(answer).map_err(BrokerError::from)?;
        let outcome = answer
            .first()
            .map(text)
            .transpose()
            .map_err(BrokerError::from)?;
        match outcome {
            Some("decided") => {
                let fields = answer[1..]
                    .chunks_exact(2)
                    .map(|pair| Ok((text(&pair[0])?.to_owned(), text(&pair[1])?.to_owned())))
                    .collect::<Result<HashMap<_, _>, Unexpected>>()
                    .map_err(BrokerError::from)?;
                Ok(record_of(&fields).map_err(BrokerError::from)?)
            }
            Some("resolved") => {
                let status = answer
                    .get(1)
                    .and_then(|s| text(s).ok())
                    .and_then(status_of)
                    .unwrap_or(ApprovalStatus::Cancelled);
                Err(ApprovalStoreError::AlreadyResolved {
                    id: id.to_string(),
                    status: status.as_str(),
                })
            }
            Some("forbidden") => Err(ApprovalStoreError::Forbidden),
            _ => Err(ApprovalStoreError::NotFound(id.to_string())),
        }
    }

    /// Adds `connections` (reached on one node) to the approval's
    /// `delivered_to`: every node adds its own, as it delivers the request.
    pub(super) async fn record_delivery(
        &self,
        id: &CallbackId,
        connections: u32,
    ) -> Result<(), BrokerError> {
        scripts::APPROVAL_DELIVERED
            .key(keys::approval(id))
            .arg(connections)
            .invoke_async::<i64>(&mut self.commands.clone())
            .await
            .map(|_| ())
            .map_err(failed)
    }

    pub(super) async fn approval_published(
        &self,
        id: &CallbackId,
        pending: bool,
    ) -> Result<bool, BrokerError> {
        scripts::APPROVAL_ANNOUNCED
            .key(keys::UNANNOUNCED)
            .key(keys::approval(id))
            .arg(id.as_str())
            .arg(if pending { "pending" } else { "decided" })
            .invoke_async::<i64>(&mut self.commands.clone())
            .await
            .map(|unchanged| unchanged >= 0)
            .map_err(failed)
    }

    pub(super) async fn approvals_owed(
        &self,
        older_than: Duration,
    ) -> Result<Vec<ApprovalRecord>, BrokerError> {
        let ids: Vec<String> = scripts::APPROVAL_UNANNOUNCED
            .key(keys::UNANNOUNCED)
            .arg(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX))
            .arg(UNANNOUNCED_PER_PASS)
            .invoke_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        let records = self.records(&ids).await?;
        // Approvals gone meanwhile (the oldest decided ones are let go)
        // are owed to no one.
        let gone: Vec<&String> = ids
            .iter()
            .filter(|id| {
                !records
                    .iter()
                    .any(|record| record.request.callback_id.as_str() == id.as_str())
            })
            .collect();
        if !gone.is_empty() {
            redis::cmd("ZREM")
                .arg(keys::UNANNOUNCED)
                .arg(gone)
                .query_async::<i64>(&mut self.commands.clone())
                .await
                .map_err(failed)?;
        }
        Ok(records)
    }

    pub(super) async fn approval(
        &self,
        id: &CallbackId,
    ) -> Result<Option<ApprovalRecord>, BrokerError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::approval(id))
            .query_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(record_of(&fields)?))
    }

    /// Records by id, in the order given (those gone are skipped).
    async fn records(&self, ids: &[String]) -> Result<Vec<ApprovalRecord>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut reading = redis::pipe();
        for id in ids {
            reading.hgetall(format!("{}{id}", keys::APPROVAL_PREFIX));
        }
        let all: Vec<HashMap<String, String>> = reading
            .query_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        let mut records = Vec::with_capacity(all.len());
        for fields in all.iter().filter(|f| !f.is_empty()) {
            records.push(record_of(fields)?);
        }
        Ok(records)
    }

    pub(super) async fn approvals(
        &self,
        query: &ApprovalQuery,
    ) -> Result<Vec<ApprovalRecord>, BrokerError> {
        // A task's approvals come from its set: a steering check or a
        // cancel costs what that task was asked, not every approval.
        let mut listing = redis::cmd(if query.task_id.is_some() {
            "SMEMBERS"
        } else {
            "ZREVRANGE"
        });
        match &query.task_id {
            Some(task) => listing.arg(keys::task(task)),
            None => listing.arg(keys::CREATED).arg(0).arg(-1),
        };
        let ids: Vec<String> = listing
            .query_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        let mut records = Vec::new();
        for slice in ids.chunks(500) {
            records.extend(self.records(slice).await?.into_iter().filter(|r| {
                query
                    .task_id
                    .as_ref()
                    .is_none_or(|t| r.request.task_id == *t)
                    && query
                        .user_id
                        .as_ref()
                        .is_none_or(|u| r.request.user_id == *u)
                    && query.status.is_none_or(|s| r.status == s)
            }));
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        Ok(records)
    }

    /// Whether `user` was asked on `task_id`: the users of the task's
    /// approvals, not their requests, read in one pipelined round trip.
    pub(super) async fn asked_on_task(
        &self,
        user: &str,
        task_id: &str,
    ) -> Result<bool, BrokerError> {
        let mut commands = self.commands.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::task(task_id))
            .query_async(&mut commands)
            .await
            .map_err(failed)?;
        for slice in ids.chunks(500) {
            let users = self.field_of(slice, "user").await?;
            if users.iter().flatten().any(|asked| asked == user) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One field of each approval in `ids`, in one pipelined round trip
    /// (`None` for an approval gone).
    async fn field_of(
        &self,
        ids: &[String],
        field: &str,
    ) -> Result<Vec<Option<String>>, BrokerError> {
        let mut reading = redis::pipe();
        for id in ids {
            reading.hget(format!("{}{id}", keys::APPROVAL_PREFIX), field);
        }
        reading
            .query_async(&mut self.commands.clone())
            .await
            .map_err(failed)
    }

    /// Puts every approval in its task's set, at a node's start: approvals
    /// stored by an earlier release, without the sets, are found by a
    /// cancel or a steering check too (during a rolling upgrade, those the
    /// earlier release's nodes store later are added at the next start).
    pub(super) async fn index_tasks(&self) -> Result<(), BrokerError> {
        let mut commands = self.commands.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys::CREATED)
            .arg(0)
            .arg(-1)
            .query_async(&mut commands)
            .await
            .map_err(failed)?;
        for slice in ids.chunks(500) {
            let tasks = self.field_of(slice, "task").await?;
            let mut indexing = redis::pipe();
            for (id, task) in slice.iter().zip(tasks) {
                if let Some(task) = task {
                    indexing.sadd(keys::task(&task), id).ignore();
                }
            }
            let () = indexing.query_async(&mut commands).await.map_err(failed)?;
        }
        Ok(())
    }

    pub(super) async fn claim_expired(&self, now_ms: u64) -> Result<Expired, BrokerError> {
        let answer: Vec<String> = scripts::APPROVAL_CLAIM
            .key(keys::PENDING)
            .key(keys::CLAIMED)
            .arg(CLAIM_FOR_MS)
            .arg(CLAIM_AT_ONCE)
            .invoke_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        let [next, redis_now, ids @ ..] = answer.as_slice() else {
            return Ok(Expired::default());
        };
        // Deadlines are in Redis's clock: the wait for the next one is
        // carried over to this node's clock, so that a node whose clock runs
        // ahead does not claim in a loop until Redis's clock catches up.
        let redis_now: u64 = redis_now.parse().unwrap_or(now_ms);
        let mut expired = Expired {
            approvals: self.records(ids).await?,
            next_deadline: next
                .parse::<u64>()
                .ok()
                .map(|at| now_ms + at.saturating_sub(redis_now)),
        };
        // Claims that come back are due again at their claim's end.
        if !ids.is_empty() {
            let retry = now_ms + CLAIM_FOR_MS;
            expired.next_deadline = Some(expired.next_deadline.map_or(retry, |n| n.min(retry)));
        }
        Ok(expired)
    }

    /// An approval announced by some node: its waiters here are told.
    pub(super) async fn approval_announced(&self, payload: &[u8]) {
        let Some(id) = std::str::from_utf8(payload)
            .ok()
            .and_then(|id| CallbackId::new(id).ok())
        else {
            return;
        };
        match self.approval(&id).await {
            Ok(Some(record)) => self.handler.on_approval(&record),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, callback_id = %id, "cannot read an announced approval");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_from_its_fields() {
        let request = serde_json::json!({
            "callback_id": "c1", "user_id": "u1", "task_id": "t1", "step": 3,
            "step_result": {"step": "train", "message": "retry?", "status": "failed", "result": [1, 2.5]},
            "timeout_ms": 1000, "default_proceed": false, "expires_at": 1_700_000_001_000u64
        });
        let fields: HashMap<String, String> = [
            ("req", request.to_string()),
            ("status", "approved".into()),
            ("proceed", "1".into()),
            ("feedback", "=".into()),
            ("decided_by", "=u1".into()),
            ("decided_at", "1700000000500".into()),
            ("created_at", "1700000000000".into()),
            ("delivered_to", "2".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let record = record_of(&fields).unwrap();
        assert_eq!(record.status, ApprovalStatus::Approved);
        assert_eq!(record.proceed, Some(true));
        assert_eq!(
            record.feedback.as_deref(),
            Some(""),
            "empty feedback is not no feedback"
        );
        assert_eq!(record.decided_by.as_deref(), Some("u1"));
        assert_eq!(
            record.request.step_result.result,
            serde_json::json!([1, 2.5])
        );
        assert_eq!(record.delivered_to, 2);
    }
}
