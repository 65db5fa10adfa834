//! The durable job queue, on the application database.
//!
//! Design:
//!
//! - **One table, `jobs`.** A row is a pending (`ready`), `running` or `dead` job. It is
//!   inserted by [`enqueue`] inside the caller's transaction, next to the row it serves
//!   (a task), so a job exists exactly when its row does. A job that finishes is deleted
//!   in the transaction that records its outcome on that row. Callers that create many
//!   jobs at once (a campaign's deliveries, an event's webhook deliveries) use
//!   [`enqueue_many`]: one statement per thousand jobs, same promises.
//! - **Named queues** (`execute-task`, `sync-connector`, `send-email`). A job that exhausts its attempts
//!   moves to the queue's dead-letter queue (`<queue>-dlq`) with status `dead` and its
//!   last error, where an admin can retry or discard it.
//! - **The kill switch** moves a tenant's `ready` jobs to `paused` and back, and a job
//!   queued or retried while its tenant is paused starts as `paused`, so claims never walk
//!   a paused tenant's backlog (they did: every claim filtered out every waiting job of
//!   every paused tenant). The claim still skips paused tenants, for a job queued in the
//!   instant the switch was thrown.
//! - **Claiming** takes the highest-priority, oldest `ready` jobs whose `run_at` has come,
//!   skipping tenants whose kill switch is on and giving no tenant more jobs than its
//!   concurrency limit leaves free (so one tenant's backlog cannot take every worker).
//!   Each claimed job gets a random lease token and a lease expiry, and its attempt is
//!   counted. Claims are batched: [`claim_many`] takes up to as many jobs as the worker
//!   has free slots in one statement (on PostgreSQL the `ocsuite_claim_jobs` function,
//!   `FOR UPDATE SKIP LOCKED`, so many workers in many processes claim concurrently
//!   without blocking each other; on SQLite one statement under `BEGIN IMMEDIATE`).
//!   The concurrency limit is exact: on PostgreSQL a tenant near its limit has its claims
//!   serialised by an advisory lock held until the claim commits.
//! - **Settling is batched too.** The dispatcher (`dispatch`) records every attempt that
//!   ended since its last round, and claims their successors, in one transaction: the
//!   finished jobs' rows go in one statement per tenant ([`complete_many`]), and the
//!   transaction enters each tenant's scope in turn. See `dispatch` for the round.
//! - **Leases.** A worker renews its lease while it runs the job. Every change it makes
//!   afterwards is conditional on its lease token, so a worker that lost its lease (it
//!   stalled, or was presumed dead) cannot record an outcome: the job ends once. A
//!   crashed worker's job is found by [`expired`] after its lease runs out and is retried
//!   (or dead-lettered when that was its last attempt).
//! - **Wake-ups.** Whoever queues a job calls [`Wake::notify_one`] after the commit: this
//!   process's idle workers wake at once, and on PostgreSQL the relay tells every other
//!   process (`pg_notify('ocsuite_jobs')`, batched, after commit; see
//!   `crate::realtime::relay` for why not inside the transaction). Every worker also
//!   polls, so a lost wake-up delays a job by at most one poll interval.
//! - **Traces.** When traces are exported, [`enqueue`] writes the current request's W3C
//!   `traceparent` into the payload (key `traceparent`), and the claim takes it out into
//!   [`Claimed::trace`], so the worker's span continues the request's trace
//!   (`crate::telemetry::traces`).
//! - **Retries** back off exponentially from `queue_retry_base_ms` with jitter, capped at
//!   ten minutes, up to the job's `max_attempts` (from the capability).
//!
//! Why not a crate: the well-kept Rust queues (apalis, sqlxmq, graphile_worker ports)
//! each miss something we need here — SQLite and PostgreSQL from one codebase, tenant
//! row-level security on the jobs table, per-tenant concurrency and a kill switch, or the
//! enqueue-in-the-caller's-transaction guarantee. See docs/decisions.md.

pub mod admin;
mod attempt;
mod dispatch;
pub mod pool;
mod wake;
pub mod worker;

pub use wake::Wake;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use crate::error::{AppError, Result};
use crate::ids::{JobId, TenantId};
use crate::store::cross_tenant;
use crate::store::{Affected, Store, TenantTx, Tx, scoped};
use crate::telemetry::traces::TRACE_KEY;

pub const EXECUTE_TASK: &str = "execute-task";
pub const SYNC_CONNECTOR: &str = "sync-connector";
pub const SEND_EMAIL: &str = "send-email";
/// One campaign email to one recipient (the Email Orchestrator).
pub const DELIVER_EMAIL: &str = "deliver-email";
/// Fetch, extract, split and index one knowledge source.
pub const INGEST_SOURCE: &str = "ingest-source";
/// One run of a trigger's action.
pub const RUN_TRIGGER: &str = "run-trigger";
/// One message to one webhook endpoint.
pub const DELIVER_WEBHOOK: &str = "deliver-webhook";
/// Removes a company whose deletion two super-admins agreed on.
pub const PURGE_TENANT: &str = "purge-tenant";
/// Every live queue; each has a dead-letter queue named by [`dead_letter_queue`].
pub const QUEUES: [&str; 8] = [
    EXECUTE_TASK,
    SYNC_CONNECTOR,
    SEND_EMAIL,
    DELIVER_EMAIL,
    INGEST_SOURCE,
    RUN_TRIGGER,
    DELIVER_WEBHOOK,
    PURGE_TENANT,
];
pub(crate) const JOBS_CHANNEL: &str = "ocsuite_jobs";

pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}-dlq")
}

/// A job to add.
pub struct NewJob<'a> {
    pub queue: &'static str,
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub max_attempts: u32,
    /// Use this id (to link the job to its row); a fresh one otherwise.
    pub id: Option<&'a JobId>,
}

/// Adds a job inside the caller's transaction. Call [`Wake::notify_one`] once it commits.
pub async fn enqueue(tx: &mut TenantTx, mut job: NewJob<'_>) -> Result<JobId> {
    let id = job.id.cloned().unwrap_or_default();
    let now = Utc::now();
    // The trace this job continues, when traces are exported (see telemetry::traces).
    if let (Some(tp), Value::Object(fields)) =
        (crate::telemetry::traces::traceparent(), &mut job.payload)
    {
        fields.insert(TRACE_KEY.to_owned(), Value::String(tp));
    }
    tx.defer(
        scoped(
            "INSERT INTO jobs (tenant_id, id, queue, payload, priority, run_at, status, attempts, max_attempts, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, (SELECT CASE WHEN jobs_paused_at IS NULL THEN 'ready' ELSE 'paused' END FROM tenants WHERE id = $1), 0, $7, $8, $8)",
        )
        .bind(&id)
        .bind(job.queue)
        .bind(job.payload.to_string())
        .bind(job.priority)
        .bind(job.run_at)
        .bind(job.max_attempts.max(1))
        .bind(now),
    )
    .await?;
    Ok(id)
}

/// Most jobs one [`enqueue_many`] statement inserts: keeps the bound JSON to a few
/// hundred kilobytes.
const ENQUEUE_CHUNK: usize = 1000;

/// [`enqueue`] for callers that create many jobs at once (a campaign's deliveries, an
/// event's webhook deliveries): one statement per thousand jobs instead of one per job,
/// in the caller's transaction. Returns the ids in order. Call [`Wake::notify_waiters`]
/// once it commits.
pub async fn enqueue_many(tx: &mut TenantTx, jobs: Vec<NewJob<'_>>) -> Result<Vec<JobId>> {
    let now = Utc::now();
    let trace = crate::telemetry::traces::traceparent();
    let mut ids = Vec::with_capacity(jobs.len());
    let mut rows = Vec::with_capacity(jobs.len().min(ENQUEUE_CHUNK));
    let last = jobs.len();
    for (i, mut job) in jobs.into_iter().enumerate() {
        let id = job.id.cloned().unwrap_or_default();
        if let (Some(tp), Value::Object(fields)) = (&trace, &mut job.payload) {
            fields.insert(TRACE_KEY.to_owned(), Value::String(tp.clone()));
        }
        rows.push(serde_json::json!({
            "id": id,
            "queue": job.queue,
            "payload": job.payload.to_string(),
            "priority": job.priority,
            "run_at": cross_tenant::time_text(job.run_at),
            "max_attempts": job.max_attempts.max(1),
        }));
        ids.push(id);
        if rows.len() == ENQUEUE_CHUNK || i + 1 == last {
            let batch = Value::from(std::mem::take(&mut rows)).to_string();
            let q = cross_tenant::insert_jobs(tx).bind(batch).bind(now);
            tx.defer(q).await?;
        }
    }
    Ok(ids)
}

/// A job a worker holds a lease on.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub tenant_id: TenantId,
    pub id: JobId,
    pub queue: &'static str,
    pub payload: Value,
    /// Including this one.
    pub attempts: u32,
    pub max_attempts: u32,
    pub token: String,
    /// The W3C `traceparent` of the request that queued it, when traced.
    pub trace: Option<String>,
}

impl Claimed {
    /// The payload as its queue's own type; `None` when it does not read as one.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        T::deserialize(&self.payload).ok()
    }
}

/// A stored payload, and the trace it carries (taken out: handlers see their own type).
fn read_payload(stored: &str) -> (Value, Option<String>) {
    let mut payload: Value = serde_json::from_str(stored).unwrap_or(Value::Null);
    let trace = match &mut payload {
        Value::Object(fields) => match fields.remove(TRACE_KEY) {
            Some(Value::String(tp)) => Some(tp),
            _ => None,
        },
        _ => None,
    };
    (payload, trace)
}

/// A job's payload as stored, from its queue's own type.
pub fn payload(p: &impl Serialize) -> Value {
    // A struct of ids and strings always serializes.
    serde_json::to_value(p).unwrap_or(Value::Null)
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    tenant_id: String,
    id: String,
    payload: String,
    attempts: i64,
    max_attempts: i64,
    run_at: DateTime<Utc>,
    lease_token: String,
}

/// Claims up to `limit` runnable jobs of `queue` inside `tx`, which may already hold
/// other work (the dispatcher settles the jobs that ended and claims their successors in
/// one transaction). The batch can span tenants; enter each job's tenant
/// ([`Tx::enter_tenant`]) before touching its rows.
pub async fn claim_many(
    tx: &mut Tx,
    queue: &'static str,
    worker: &str,
    lease: std::time::Duration,
    limit: usize,
) -> Result<Vec<Claimed>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let until = now + Duration::from_std(lease).map_err(AppError::internal)?;
    let q = cross_tenant::claim_jobs(tx);
    let began = std::time::Instant::now();
    let rows: Vec<ClaimRow> = tx
        .fetch_all(
            q.bind(queue)
                .bind(worker)
                .bind(now)
                .bind(until)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX)),
        )
        .await?;
    crate::telemetry::job_claimed(queue, began.elapsed());
    let mut jobs = Vec::with_capacity(rows.len());
    for r in rows {
        crate::telemetry::job_started(queue, (now - r.run_at).to_std().unwrap_or_default());
        let (Some(tenant_id), Some(id)) = (TenantId::parse(&r.tenant_id), JobId::parse(&r.id))
        else {
            return Err(AppError::Internal(format!("malformed job row {}", r.id)));
        };
        let (payload, trace) = read_payload(&r.payload);
        jobs.push(Claimed {
            tenant_id,
            id,
            queue,
            payload,
            attempts: r.attempts.max(0) as u32,
            max_attempts: r.max_attempts.max(1) as u32,
            token: r.lease_token,
            trace,
        });
    }
    Ok(jobs)
}

/// Claims the next runnable job of `queue` in a transaction of its own; returns it with
/// that transaction, already in the job's tenant scope, so the caller records "started"
/// atomically. (Workers claim in batches; this serves one-off callers and tests.)
pub async fn claim(
    store: &Store,
    queue: &'static str,
    worker: &str,
    lease: std::time::Duration,
) -> Result<Option<(Claimed, TenantTx)>> {
    let mut tx = store.platform().await?;
    let Some(job) = claim_many(&mut tx, queue, worker, lease, 1).await?.pop() else {
        tx.commit().await?;
        return Ok(None);
    };
    let tx = tx.enter_tenant(&job.tenant_id).await?;
    Ok(Some((job, tx)))
}

/// Whether `queue` has a job ready to run in any tenant: a reader's look, so idle
/// workers polling empty queues neither take SQLite's one writer nor open a write
/// transaction on PostgreSQL.
pub async fn ready(store: &Store, queue: &str) -> Result<bool> {
    let mut look = store.platform_read().await?;
    let ready = cross_tenant::job_ready(&mut look, queue, Utc::now()).await?;
    look.commit().await?;
    Ok(ready)
}

/// Removes finished jobs of the transaction's tenant in one statement, each only while
/// it is still under the lease it was claimed with; returns the lease tokens that were
/// (a job whose token is missing belongs to another worker now: record nothing for it).
pub async fn complete_many(tx: &mut TenantTx, jobs: &[&Claimed]) -> Result<Vec<String>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let tokens: Vec<&str> = jobs.iter().map(|j| j.token.as_str()).collect();
    let q = cross_tenant::complete_jobs(tx)
        .bind(Value::from(ids).to_string())
        .bind(Value::from(tokens).to_string());
    let held: Vec<(String,)> = tx.fetch_all(q).await?;
    Ok(held.into_iter().map(|(t,)| t).collect())
}

/// Extends the lease; false when the job is no longer this worker's.
pub async fn renew(store: &Store, job: &Claimed, lease: std::time::Duration) -> Result<bool> {
    let until = Utc::now() + Duration::from_std(lease).map_err(AppError::internal)?;
    let mut tx = store.tenant(&job.tenant_id).await?;
    let n = tx
        .execute(
            scoped("UPDATE jobs SET lease_until = $2 WHERE tenant_id = $1 AND id = $3 AND lease_token = $4 AND status = 'running'")
                .bind(until)
                .bind(&job.id)
                .bind(job.token.as_str()),
        )
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Removes a finished job. Deferred: the count is 1 unless the lease was lost, and then
/// the caller must not commit (see [`held`]).
pub async fn complete(tx: &mut TenantTx, job: &Claimed) -> Result<Affected> {
    Ok(tx
        .defer_counted(
            scoped("DELETE FROM jobs WHERE tenant_id = $1 AND id = $2 AND lease_token = $3")
                .bind(&job.id)
                .bind(job.token.as_str()),
        )
        .await?)
}

/// Puts the job back to run at `at` (deferred like [`complete`]).
pub async fn retry_at(
    tx: &mut TenantTx,
    job: &Claimed,
    error: &str,
    at: DateTime<Utc>,
) -> Result<Affected> {
    Ok(tx
        .defer_counted(
            scoped("UPDATE jobs SET status = (SELECT CASE WHEN jobs_paused_at IS NULL THEN 'ready' ELSE 'paused' END FROM tenants WHERE id = $1), \
                   run_at = $2, last_error = $3, lease_token = NULL, lease_until = NULL, worker = NULL, updated_at = $4 \
                 WHERE tenant_id = $1 AND id = $5 AND lease_token = $6")
                .bind(at)
                .bind(truncate(error))
                .bind(Utc::now())
                .bind(&job.id)
                .bind(job.token.as_str()),
        )
        .await?)
}

/// Moves the job to its dead-letter queue (deferred like [`complete`]).
pub async fn dead_letter(tx: &mut TenantTx, job: &Claimed, error: &str) -> Result<Affected> {
    Ok(tx
        .defer_counted(
            scoped("UPDATE jobs SET status = 'dead', queue = $2, last_error = $3, lease_token = NULL, lease_until = NULL, worker = NULL, updated_at = $4 \
                 WHERE tenant_id = $1 AND id = $5 AND lease_token = $6")
                .bind(dead_letter_queue(job.queue))
                .bind(truncate(error))
                .bind(Utc::now())
                .bind(&job.id)
                .bind(job.token.as_str()),
        )
        .await?)
}

/// Whether the change [`complete`], [`retry_at`] or [`dead_letter`] made found the job
/// still under this lease, sending it first if it has not gone yet. False: another
/// worker owns the job now; drop the transaction (nothing it did is kept).
pub async fn held(tx: &mut TenantTx, change: &Affected) -> Result<bool> {
    if change.get().is_none() {
        tx.flush().await?;
    }
    Ok(change.get() == Some(1))
}

/// Removes a job that has not started (its row was cancelled). False when it is running.
pub async fn remove_pending(tx: &mut TenantTx, id: &JobId) -> Result<bool> {
    let n = tx
        .execute(
            scoped(
                "DELETE FROM jobs WHERE tenant_id = $1 AND id = $2 AND status IN ('ready', 'paused', 'dead')",
            )
            .bind(id),
        )
        .await?;
    Ok(n == 1)
}

/// Errors are kept to a readable size.
fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}

/// Holds (`paused`) or releases (`ready`) the waiting jobs of the transaction's tenant,
/// with its kill switch.
pub async fn set_paused(tx: &mut TenantTx, paused: bool) -> Result<()> {
    let (from, to) = if paused {
        ("ready", "paused")
    } else {
        ("paused", "ready")
    };
    tx.execute(
        scoped("UPDATE jobs SET status = $2 WHERE tenant_id = $1 AND status = $3")
            .bind(to)
            .bind(from),
    )
    .await?;
    Ok(())
}

/// The delay before attempt `attempts + 1`: base · 2^(attempts-1), capped, with the
/// upper half jittered so retries of many jobs do not arrive together.
pub fn backoff(base_ms: u32, attempts: u32) -> std::time::Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let full = (u64::from(base_ms) << exp).min(600_000);
    let half = full / 2;
    let jitter = if half > 0 {
        rand::rng().random_range(0..=half)
    } else {
        0
    };
    std::time::Duration::from_millis(half + jitter)
}

/// Jobs of any tenant whose lease ran out: `(tenant, job)` pairs.
pub async fn expired(store: &Store, limit: i64) -> Result<Vec<(TenantId, JobId)>> {
    let now = Utc::now();
    let mut tx = store.platform_read().await?;
    let rows = cross_tenant::expired_leases(&mut tx, now, limit).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, j)| Some((TenantId::parse(&t)?, JobId::parse(&j)?)))
        .collect())
}

/// Takes over an expired lease inside the job's tenant: returns the job with a new
/// token, or `None` when another reaper or the worker itself got there first.
pub async fn take_expired(tx: &mut TenantTx, id: &JobId) -> Result<Option<Claimed>> {
    let tenant = tx.tenant_id().clone();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let row: Option<(String, String, i64, i64)> = tx
        .fetch_optional(
            scoped("UPDATE jobs SET lease_token = $2 WHERE tenant_id = $1 AND id = $3 AND status = 'running' AND lease_until < $4 \
                 RETURNING queue, payload, attempts, max_attempts")
                .bind(token.as_str())
                .bind(id)
                .bind(Utc::now()),
        )
        .await?;
    Ok(row.and_then(|(queue, payload, attempts, max_attempts)| {
        let queue = QUEUES.into_iter().find(|q| *q == queue)?;
        let (payload, trace) = read_payload(&payload);
        Some(Claimed {
            tenant_id: tenant,
            id: id.clone(),
            queue,
            payload,
            attempts: attempts.max(0) as u32,
            max_attempts: max_attempts.max(1) as u32,
            token,
            trace,
        })
    }))
}

/// One queue's depth by status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Depth {
    pub queue: String,
    pub ready: i64,
    pub running: i64,
    pub dead: i64,
}

fn fold_depths(rows: Vec<(String, String, i64)>) -> Vec<Depth> {
    let mut out: Vec<Depth> = QUEUES
        .iter()
        .flat_map(|q| [q.to_string(), dead_letter_queue(q)])
        .map(|queue| Depth {
            queue,
            ready: 0,
            running: 0,
            dead: 0,
        })
        .collect();
    for (queue, status, n) in rows {
        if let Some(d) = out.iter_mut().find(|d| d.queue == queue) {
            match status.as_str() {
                // Paused jobs wait like ready ones.
                "ready" | "paused" => d.ready += n,
                "running" => d.running = n,
                "dead" => d.dead = n,
                _ => {}
            }
        }
    }
    out
}

/// Depths of every queue for one tenant.
pub async fn tenant_depths(tx: &mut TenantTx) -> Result<Vec<Depth>> {
    let rows = tx
        .fetch_all(scoped(
            "SELECT queue, status, count(*) FROM jobs WHERE tenant_id = $1 GROUP BY queue, status",
        ))
        .await?;
    Ok(fold_depths(rows))
}

/// Depths of every queue across tenants (platform view).
pub async fn platform_depths(tx: &mut Tx) -> Result<Vec<Depth>> {
    Ok(fold_depths(cross_tenant::queue_depths(tx).await?))
}
