//! Tasks: a tenant's request to run one module capability, executed through the queue.
//!
//! Lifecycle: `queued` → `running` → `succeeded` | `failed` | `dead` | `cancelled`, with
//! `running` → `queued` again between retries. A task a board meeting proposes starts
//! as `proposed` and waits for a person: approval queues it, rejection ends it as
//! `rejected` (see `crate::approvals`). Every change bumps the task's `event_seq`
//! and appends an event to the topic `task:{id}` in the same transaction, so the stored
//! events are the task's timeline and the realtime stream at once. State changes are
//! audited.

mod batch;
pub mod execute;
pub mod gauge;
pub mod handler;
pub mod inline;
pub mod routes;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{AppError, Result};
use crate::ids::{JobId, TaskId};
use crate::realtime::{self, Event, Topic};
use crate::store::{TenantTx, scoped};

/// The `execute-task` job's payload.
#[derive(Serialize, serde::Deserialize)]
pub struct TaskJob {
    pub task_id: TaskId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waits for a person's approval; nothing runs it until then.
    Proposed,
    Rejected,
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Rejected => "rejected",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "proposed" => Self::Proposed,
            "rejected" => Self::Rejected,
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Rejected
        )
    }
}

/// A task as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Task {
    #[schema(value_type = String)]
    pub id: TaskId,
    pub capability: String,
    pub version: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub status: Status,
    pub attempts: i64,
    pub max_attempts: i64,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_by: String,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The board meeting that proposed it.
    pub meeting_id: Option<String>,
    /// The conversation whose agent called it as a tool.
    pub conversation_id: Option<String>,
    /// Who approved or rejected it (`user:…`, `policy:auto`), when, and why.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_rationale: Option<String>,
    /// The task this one undoes.
    pub undo_of: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    capability: String,
    version: String,
    input: String,
    status: String,
    attempts: i64,
    max_attempts: i64,
    result: Option<String>,
    error: Option<String>,
    idempotency_key: Option<String>,
    created_by: String,
    cancel_requested: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    meeting_id: Option<String>,
    conversation_id: Option<String>,
    decided_by: Option<String>,
    decided_at: Option<DateTime<Utc>>,
    decision_rationale: Option<String>,
    undo_of: Option<String>,
}

/// `SELECT <every task column> FROM tasks <tail>`.
macro_rules! select_tasks {
    ($tail:literal) => {
        concat!(
            "SELECT id, capability, version, input, status, attempts, max_attempts, result, error, \
             idempotency_key, created_by, cancel_requested, created_at, updated_at, started_at, \
             finished_at, meeting_id, conversation_id, decided_by, decided_at, decision_rationale, undo_of FROM tasks ",
            $tail
        )
    };
}

impl Row {
    fn into_task(self) -> Result<Task> {
        Ok(Task {
            id: TaskId::parse(&self.id).ok_or_else(|| AppError::Internal("bad task id".into()))?,
            capability: self.capability,
            version: self.version,
            input: serde_json::from_str(&self.input).unwrap_or(Value::Null),
            status: Status::parse(&self.status)
                .ok_or_else(|| AppError::Internal(format!("bad task status {}", self.status)))?,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            result: self.result.and_then(|r| serde_json::from_str(&r).ok()),
            error: self.error,
            idempotency_key: self.idempotency_key,
            created_by: self.created_by,
            cancel_requested: self.cancel_requested,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            meeting_id: self.meeting_id,
            conversation_id: self.conversation_id,
            decided_by: self.decided_by,
            decided_at: self.decided_at,
            decision_rationale: self.decision_rationale,
            undo_of: self.undo_of,
        })
    }
}

/// A task to create.
pub struct NewTask<'a> {
    pub capability: &'a str,
    pub version: &'a str,
    pub input: &'a Value,
    pub max_attempts: u32,
    pub idempotency_key: Option<&'a str>,
    pub created_by: &'a str,
    /// `Queued` (the caller enqueues its job) or `Proposed` (waits for approval).
    pub status: Status,
    pub meeting_id: Option<&'a str>,
    pub conversation_id: Option<&'a str>,
    pub undo_of: Option<&'a TaskId>,
}

/// Inserts a task with its first event (`queued` or `proposed`).
pub async fn insert(tx: &mut TenantTx, id: &TaskId, t: &NewTask<'_>) -> Result<Event> {
    let now = Utc::now();
    let status = t.status.as_str();
    // Sent with the event below in one trip on SQLite.
    tx.defer(
        scoped("INSERT INTO tasks (tenant_id, id, capability, version, input, status, attempts, max_attempts, idempotency_key, created_by, cancel_requested, event_seq, created_at, updated_at, meeting_id, undo_of, conversation_id) \
             VALUES ($1, $2, $3, $4, $5, $11, 0, $6, $7, $8, $9, 1, $10, $10, $12, $13, $14)")
            .bind(id)
            .bind(t.capability)
            .bind(t.version)
            .bind(t.input.to_string())
            .bind(t.max_attempts)
            .bind(t.idempotency_key)
            .bind(t.created_by)
            .bind(false)
            .bind(now)
            .bind(status)
            .bind(t.meeting_id)
            .bind(t.undo_of.map(|u| u.to_string()))
            .bind(t.conversation_id),
    )
    .await?;
    realtime::record(
        tx,
        &Topic::Task(id.clone()).name(),
        1,
        status,
        json!({"task_id": id, "status": status, "capability": t.capability, "version": t.version}),
    )
    .await
}

/// An audit entry to write with a task.
pub struct AuditEntry<'a> {
    /// `("agent", "cfo")`.
    pub actor: (&'a str, &'a str),
    pub action: &'a str,
    pub details: Value,
}

/// Stores a task that already ran (an agent's read, run at once) in its final state,
/// with its audit entry and its whole timeline (`queued`, `started`, then `succeeded`
/// or `failed`): one statement on PostgreSQL, one trip on SQLite.
pub async fn insert_finished(
    tx: &mut TenantTx,
    id: &TaskId,
    t: &NewTask<'_>,
    started: DateTime<Utc>,
    outcome: std::result::Result<&Value, &str>,
    audit: AuditEntry<'_>,
) -> Result<Vec<Event>> {
    // Microseconds: what PostgreSQL keeps, so the receipt's time equals the audit row's.
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let (status, result, error) = match outcome {
        Ok(v) => (Status::Succeeded, Some(v.to_string()), None),
        Err(e) => (Status::Failed, None, Some(e)),
    };
    let end = match outcome {
        Ok(_) => json!({"task_id": id, "status": "succeeded", "attempt": 1}),
        Err(e) => json!({"task_id": id, "status": "failed", "error": e, "attempt": 1}),
    };
    let topic = Topic::Task(id.clone()).name();
    let timeline = vec![
        (
            1,
            "queued",
            json!({"task_id": id, "status": "queued", "capability": t.capability, "version": t.version}),
        ),
        (
            2,
            "started",
            json!({"task_id": id, "status": "running", "attempt": 1, "max_attempts": 1}),
        ),
        (3, status.as_str(), end),
    ];
    if tx.is_postgres() {
        let rows: Vec<Value> = timeline
            .iter()
            .map(|(seq, kind, data)| json!({"seq": seq, "kind": kind, "data": data.to_string()}))
            .collect();
        let (audit_id, details) = (crate::ids::AuditId::new(), audit.details.to_string());
        let q = crate::store::cross_tenant::add_finished_task(tx)
            .bind(id)
            .bind(t.capability)
            .bind(t.version)
            .bind(t.input.to_string())
            .bind(status.as_str())
            .bind(t.created_by)
            .bind(started)
            .bind(now)
            .bind(result)
            .bind(error)
            .bind(t.meeting_id)
            .bind(t.conversation_id)
            .bind(&audit_id)
            .bind(audit.actor.0)
            .bind(audit.actor.1)
            .bind(audit.action)
            .bind(details.as_str())
            .bind(topic.as_str())
            .bind(Value::Array(rows).to_string());
        let ids: Vec<(i64,)> = tx.fetch_all(q).await?;
        // The audit entry's signed receipt, as `audit::insert` writes for every other.
        crate::receipts::append(
            tx,
            &crate::receipts::Entry {
                audit_id: audit_id.as_str(),
                actor: audit.actor,
                action: audit.action,
                target: ("task", id.as_str()),
                details: &details,
                request_id: None,
                at: now,
            },
        )
        .await?;
        return Ok(timeline
            .into_iter()
            .zip(ids)
            .map(|((seq, kind, data), (event_id,))| {
                realtime::Event::stored(
                    tx.tenant_id().clone(),
                    event_id,
                    &topic,
                    seq,
                    kind,
                    data,
                    now,
                )
            })
            .collect());
    }
    tx.defer(
        scoped("INSERT INTO tasks (tenant_id, id, capability, version, input, status, attempts, max_attempts, idempotency_key, created_by, cancel_requested, event_seq, created_at, updated_at, started_at, finished_at, result, error, meeting_id, conversation_id) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, 1, NULL, $7, $8, 3, $9, $10, $9, $10, $11, $12, $13, $14)")
            .bind(id)
            .bind(t.capability)
            .bind(t.version)
            .bind(t.input.to_string())
            .bind(status.as_str())
            .bind(t.created_by)
            .bind(false)
            .bind(started)
            .bind(now)
            .bind(result)
            .bind(error)
            .bind(t.meeting_id)
            .bind(t.conversation_id),
    )
    .await?;
    crate::audit::insert(
        tx,
        audit.actor,
        audit.action,
        "task",
        id.as_str(),
        audit.details,
        None,
    )
    .await?;
    let mut events = Vec::with_capacity(timeline.len());
    for (seq, kind, data) in timeline {
        events.push(realtime::record(tx, &topic, seq, kind, data).await?);
    }
    Ok(events)
}

/// Stores a task ready to run and its `execute-task` job, in the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub async fn insert_queued(
    tx: &mut TenantTx,
    id: &TaskId,
    spec: &ocsuite_module_sdk::CapabilitySpec,
    input: &serde_json::Value,
    idempotency_key: Option<&str>,
    created_by: &str,
    priority: i32,
    run_at: DateTime<Utc>,
) -> Result<Event> {
    let version = spec.version.to_string();
    let ev = insert(
        tx,
        id,
        &NewTask {
            capability: &spec.name,
            version: &version,
            input,
            max_attempts: spec.max_attempts,
            idempotency_key,
            created_by,
            status: Status::Queued,
            meeting_id: None,
            conversation_id: None,
            undo_of: None,
        },
    )
    .await?;
    crate::queue::enqueue(
        tx,
        crate::queue::NewJob {
            queue: crate::queue::EXECUTE_TASK,
            payload: crate::queue::payload(&TaskJob {
                task_id: id.clone(),
            }),
            priority,
            run_at,
            max_attempts: spec.max_attempts,
            id: Some(&job_id(id)),
        },
    )
    .await?;
    Ok(ev)
}

pub async fn get(tx: &mut TenantTx, id: &TaskId) -> Result<Task> {
    let row: Option<Row> = tx
        .fetch_optional(scoped(select_tasks!("WHERE tenant_id = $1 AND id = $2")).bind(id))
        .await?;
    row.ok_or(AppError::NotFound("task"))?.into_task()
}

pub async fn by_idempotency_key(tx: &mut TenantTx, key: &str) -> Result<Option<Task>> {
    let row: Option<Row> = tx
        .fetch_optional(
            scoped(select_tasks!(
                "WHERE tenant_id = $1 AND idempotency_key = $2"
            ))
            .bind(key),
        )
        .await?;
    row.map(Row::into_task).transpose()
}

/// Newest first; `before` pages by creation time and id.
pub async fn list(
    tx: &mut TenantTx,
    status: Option<Status>,
    limit: i64,
    before: Option<&TaskId>,
) -> Result<Vec<Task>> {
    let rows: Vec<Row> = tx
        .fetch_all(
            scoped(select_tasks!(
                "WHERE tenant_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4"
            ))
            .bind(status.map(Status::as_str))
            .bind(before.map(|b| b.as_str().to_owned()))
            .bind(limit),
        )
        .await?;
    rows.into_iter().map(Row::into_task).collect()
}

/// How many of the tenant's tasks wait or run, counting no further than `cap` (the
/// check only needs to know whether the cap is reached).
pub async fn open_count(tx: &mut TenantTx, cap: i64) -> Result<i64> {
    let (n,): (i64,) = tx
        .fetch_one(
            scoped("SELECT count(*) FROM (SELECT 1 FROM tasks WHERE tenant_id = $1 AND status IN ('queued', 'running') LIMIT $2) open_tasks")
                .bind(cap),
        )
        .await?;
    Ok(n)
}

/// A change to a task's row.
#[derive(Default)]
pub struct Change<'a> {
    pub status: Option<Status>,
    pub attempts: Option<u32>,
    pub result: Option<&'a Value>,
    pub error: Option<Option<&'a str>>,
    pub started: bool,
    pub finished: bool,
    pub cancel_requested: bool,
}

/// Applies `change`, bumps the task's event sequence and records the event `kind` with
/// `data` on its topic. `None` when the task is gone.
pub async fn update(
    tx: &mut TenantTx,
    id: &TaskId,
    change: Change<'_>,
    kind: &str,
    mut data: Value,
) -> Result<Option<Event>> {
    let now = Utc::now();
    let row: Option<(i64, String, Option<String>)> = tx
        .fetch_optional(
            scoped("UPDATE tasks SET status = COALESCE($2, status), attempts = COALESCE($3, attempts), \
                   result = CASE WHEN $4 IS NULL THEN result ELSE $4 END, \
                   error = CASE WHEN $5 THEN $6 ELSE error END, \
                   started_at = CASE WHEN $7 THEN $8 ELSE started_at END, \
                   finished_at = CASE WHEN $9 THEN $8 ELSE finished_at END, \
                   cancel_requested = CASE WHEN $10 THEN $10 ELSE cancel_requested END, \
                   event_seq = event_seq + 1, updated_at = $8 \
                 WHERE tenant_id = $1 AND id = $11 RETURNING event_seq, status, meeting_id")
                .bind(change.status.map(Status::as_str))
                .bind(change.attempts.map(i64::from))
                .bind(change.result.map(Value::to_string))
                .bind(change.error.is_some())
                .bind(change.error.flatten())
                .bind(change.started)
                .bind(now)
                .bind(change.finished)
                .bind(change.cancel_requested)
                .bind(id),
        )
        .await?;
    let Some((seq, status, meeting)) = row else {
        return Ok(None);
    };
    if let Value::Object(m) = &mut data {
        m.insert("task_id".into(), json!(id));
        m.insert("status".into(), json!(status));
        if let Some(meeting) = meeting {
            m.insert("meeting_id".into(), json!(meeting));
        }
    }
    let ev = realtime::record(tx, &Topic::Task(id.clone()).name(), seq, kind, data).await?;
    Ok(Some(ev))
}

/// What a worker needs to run a task.
pub struct Runnable {
    pub capability: String,
    pub version: String,
    pub input: Value,
}

/// Marks a task `running` for attempt `attempt` and records `started`, unless it is gone,
/// cancelled or already ended (then `None`: do not run it).
pub async fn mark_running(
    tx: &mut TenantTx,
    id: &TaskId,
    attempt: u32,
    max_attempts: u32,
) -> Result<Option<(Event, Runnable)>> {
    let now = Utc::now();
    let row: Option<(i64, String, String, String)> = tx
        .fetch_optional(
            scoped("UPDATE tasks SET status = 'running', attempts = $2, started_at = $3, updated_at = $3, event_seq = event_seq + 1 \
                 WHERE tenant_id = $1 AND id = $4 AND cancel_requested = $5 AND status IN ('queued', 'running') \
                 RETURNING event_seq, capability, version, input")
                .bind(attempt)
                .bind(now)
                .bind(id)
                .bind(false),
        )
        .await?;
    let Some((seq, capability, version, input)) = row else {
        return Ok(None);
    };
    let ev = realtime::record(
        tx,
        &Topic::Task(id.clone()).name(),
        seq,
        "started",
        json!({"task_id": id, "status": "running", "attempt": attempt, "max_attempts": max_attempts}),
    )
    .await?;
    Ok(Some((
        ev,
        Runnable {
            capability,
            version,
            input: serde_json::from_str(&input).unwrap_or(Value::Null),
        },
    )))
}

/// The job that runs a task shares its id's random part, so either finds the other.
pub fn job_id(task: &TaskId) -> JobId {
    JobId::from_hex(task.hex()).unwrap_or_default()
}
