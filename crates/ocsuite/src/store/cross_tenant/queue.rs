//! The queue's SQL: claims, batched completion, lease sweeps and depths across tenants,
//! and the batched statements a round of the dispatcher writes (see `crate::queue`).

use chrono::{DateTime, Utc};

use super::Result;
use crate::store::{Sql, TenantTx, Tx, scoped, sql};

/// Whether `queue` has a job ready to run, in any tenant: the dispatcher's look, as a
/// reader, before it claims from a queue it has not seen busy.
pub async fn job_ready(tx: &mut Tx, queue: &str, now: DateTime<Utc>) -> Result<bool> {
    let q = if tx.is_postgres() {
        sql("SELECT ocsuite_job_ready($1, $2)")
    } else {
        sql(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = $1 AND status = 'ready' AND run_at <= $2)",
        )
    };
    let (ready,): (bool,) = tx.fetch_one(q.bind(queue).bind(now)).await?;
    Ok(ready)
}

/// Claims up to `$5` runnable jobs of a queue across tenants, in one statement: highest
/// priority, then oldest, skipping paused tenants and giving no tenant more than its
/// concurrency limit allows. Each claimed job gets its own random lease token. Binds:
/// queue, worker, now, lease end, limit. Returns `tenant_id, id, payload, attempts,
/// max_attempts, run_at, lease_token`. It sets no tenant scope: the caller enters each
/// job's tenant before touching its rows ([`Tx::enter_tenant`]).
///
/// Candidates are read four times the limit deep, so a tenant with many jobs but few free
/// slots does not shrink the batch much; tenants already at their limit are skipped
/// before that cut. On PostgreSQL see `ocsuite_claim_jobs` (SKIP LOCKED, and an advisory
/// lock per tenant near its limit so the limit holds across processes); SQLite has one
/// writer, so a plain statement is exact. There, running jobs are counted through the
/// `jobs_running` partial index (`INDEXED BY`): the planner otherwise counted a tenant's
/// running jobs by walking all of its jobs, backlog included, for every candidate.
pub fn claim_jobs(tx: &Tx) -> Sql {
    if tx.is_postgres() {
        sql(
            "SELECT tenant_id, id, payload, attempts, max_attempts, run_at, lease_token FROM ocsuite_claim_jobs($1, $2, $3, $4, $5)",
        )
    } else {
        sql(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = lower(hex(randomblob(16))), \
                    lease_until = $4, worker = $2, updated_at = $3 \
             WHERE (tenant_id, id) IN ( \
               WITH busy AS ( \
                 SELECT r.tenant_id, count(*) AS n FROM jobs r INDEXED BY jobs_running \
                  WHERE r.status = 'running' GROUP BY r.tenant_id), \
               cand AS ( \
                 SELECT c.tenant_id, c.id, c.priority, c.run_at FROM jobs c \
                  WHERE c.queue = $1 AND c.status = 'ready' AND c.run_at <= $3 \
                    AND c.tenant_id NOT IN (SELECT t.id FROM tenants t WHERE t.jobs_paused_at IS NOT NULL) \
                    AND c.tenant_id NOT IN ( \
                        SELECT b.tenant_id FROM busy b JOIN tenants t ON t.id = b.tenant_id \
                         WHERE b.n >= t.job_concurrency) \
                  ORDER BY c.priority DESC, c.run_at, c.id LIMIT $5 * 4), \
               ranked AS ( \
                 SELECT cand.*, row_number() OVER (PARTITION BY cand.tenant_id ORDER BY cand.priority DESC, cand.run_at, cand.id) AS rn \
                   FROM cand) \
               SELECT ranked.tenant_id, ranked.id FROM ranked \
                 JOIN tenants t ON t.id = ranked.tenant_id \
                 LEFT JOIN busy b ON b.tenant_id = ranked.tenant_id \
                WHERE ranked.rn <= t.job_concurrency - COALESCE(b.n, 0) \
                ORDER BY ranked.priority DESC, ranked.run_at, ranked.id LIMIT $5) \
             RETURNING tenant_id, id, payload, attempts, max_attempts, run_at, lease_token",
        )
    }
}

/// Removes jobs of the transaction's tenant, each only while it is still under the lease
/// it was claimed with. Binds `$2` a JSON array of job ids and `$3` one of their lease
/// tokens. Returns the tokens found; a token missing from the result lost its lease
/// (another worker owns that job now). The ids let PostgreSQL and SQLite find the rows
/// by primary key instead of scanning the tenant's backlog for the tokens.
pub fn complete_jobs(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "DELETE FROM jobs WHERE tenant_id = $1 \
                AND id = ANY (ARRAY(SELECT json_array_elements_text($2::json))) \
                AND lease_token = ANY (ARRAY(SELECT json_array_elements_text($3::json))) \
             RETURNING lease_token",
        )
    } else {
        scoped(
            "DELETE FROM jobs WHERE tenant_id = $1 \
                AND id IN (SELECT value FROM json_each($2)) \
                AND lease_token IN (SELECT value FROM json_each($3)) \
             RETURNING lease_token",
        )
    }
}

/// Jobs of any tenant whose lease ran out before `now`: `(tenant_id, id)`.
pub async fn expired_leases(
    tx: &mut Tx,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    let q = if tx.is_postgres() {
        sql("SELECT tenant_id, id FROM ocsuite_expired_leases($1, $2)")
    } else {
        sql(
            "SELECT tenant_id, id FROM jobs WHERE status = 'running' AND lease_until < $1 ORDER BY lease_until LIMIT $2",
        )
    };
    tx.fetch_all(q.bind(now).bind(limit)).await
}

/// Job counts by queue and status across tenants: `(queue, status, count)`.
pub async fn queue_depths(tx: &mut Tx) -> Result<Vec<(String, String, i64)>> {
    let q = if tx.is_postgres() {
        sql("SELECT queue, status, jobs FROM ocsuite_queue_depths()")
    } else {
        sql("SELECT queue, status, count(*) FROM jobs GROUP BY queue, status")
    };
    tx.fetch_all(q).await
}

/// Job counts by queue and status across tenants, with the age in seconds of each
/// queue's oldest job that is due and not started (`None` for other statuses): the
/// figures `/metrics` reports. `(queue, status, count, oldest due age)`.
pub async fn queue_stats(
    tx: &mut Tx,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String, i64, Option<f64>)>> {
    let q = if tx.is_postgres() {
        sql("SELECT queue, status, jobs, oldest_due_secs FROM ocsuite_queue_stats($1)")
    } else {
        sql("SELECT queue, status, count(*), \
                    max(CASE WHEN status = 'ready' AND run_at <= $1 THEN (julianday($1) - julianday(run_at)) * 86400.0 END) \
               FROM jobs GROUP BY queue, status")
    };
    tx.fetch_all(q.bind(now)).await
}

/// Marks many tasks of the transaction's tenant `running` in one statement, each unless
/// it is gone, cancelled or already ended. Binds: `$2` a JSON array of
/// `{"id", "attempts"}`, `$3` now, `$4` false (not cancelled). Returns `id, event_seq,
/// capability, version, input` of the tasks it marked. The status test is written so
/// neither planner can use the `(tenant_id, status)` index for it (`IS TRUE`, unary `+`):
/// with it, a busy tenant's every queued task was walked to find the few in the batch,
/// instead of looking them up by primary key.
pub fn start_tasks(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "UPDATE tasks t SET status = 'running', attempts = x.attempts, started_at = $3, updated_at = $3, event_seq = t.event_seq + 1 \
               FROM json_to_recordset($2::json) AS x(id TEXT, attempts BIGINT) \
              WHERE t.tenant_id = $1 AND t.id = x.id AND t.cancel_requested = $4 AND (t.status IN ('queued', 'running')) IS TRUE \
                AND t.id = ANY (ARRAY(SELECT e ->> 'id' FROM json_array_elements($2::json) e)) \
             RETURNING t.id, t.event_seq, t.capability, t.version, t.input",
        )
    } else {
        scoped(
            "UPDATE tasks SET status = 'running', attempts = x.attempts, started_at = $3, updated_at = $3, event_seq = event_seq + 1 \
               FROM (SELECT value ->> 'id' AS id, value ->> 'attempts' AS attempts FROM json_each($2)) AS x \
              WHERE tasks.tenant_id = $1 AND tasks.id = x.id AND tasks.cancel_requested = $4 \
                AND tasks.id IN (SELECT value ->> 'id' FROM json_each($2)) AND +tasks.status IN ('queued', 'running') \
             RETURNING id, event_seq, capability, version, input",
        )
    }
}

/// Appends many events of the transaction's tenant in one statement. Binds: `$2` a JSON
/// array of `{"topic", "seq", "kind", "data"}` (`data` as JSON text), `$3` their time.
/// Returns `id, topic, seq` of each.
pub fn insert_events(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO events (tenant_id, topic, seq, kind, data, created_at) \
             SELECT $1, x.topic, x.seq, x.kind, x.data, $3 \
               FROM json_to_recordset($2::json) AS x(topic TEXT, seq BIGINT, kind TEXT, data TEXT) \
             RETURNING id, topic, seq",
        )
    } else {
        scoped(
            "INSERT INTO events (tenant_id, topic, seq, kind, data, created_at) \
             SELECT $1, value ->> 'topic', value ->> 'seq', value ->> 'kind', value ->> 'data', $3 \
               FROM json_each($2) \
             RETURNING id, topic, seq",
        )
    }
}

/// Records many tasks of the transaction's tenant as ended with one status and their
/// results, in one statement. Binds: `$2` a JSON array of `{"id", "result"}` (`result`
/// as JSON text), `$3` now, `$4` the status. Returns `id, event_seq, status, meeting_id`
/// and whether the task came from a chat proposal someone decided (its outcome is told
/// to that conversation).
pub fn finish_tasks(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "UPDATE tasks t SET status = $4, result = x.result, error = NULL, finished_at = $3, updated_at = $3, event_seq = t.event_seq + 1 \
               FROM json_to_recordset($2::json) AS x(id TEXT, result TEXT) \
              WHERE t.tenant_id = $1 AND t.id = x.id \
                AND t.id = ANY (ARRAY(SELECT e ->> 'id' FROM json_array_elements($2::json) e)) \
             RETURNING t.id, t.event_seq, t.status, t.meeting_id, (t.conversation_id IS NOT NULL AND t.decided_by IS NOT NULL)",
        )
    } else {
        scoped(
            "UPDATE tasks SET status = $4, result = x.result, error = NULL, finished_at = $3, updated_at = $3, event_seq = event_seq + 1 \
               FROM (SELECT value ->> 'id' AS id, value ->> 'result' AS result FROM json_each($2)) AS x \
              WHERE tasks.tenant_id = $1 AND tasks.id = x.id \
                AND tasks.id IN (SELECT value ->> 'id' FROM json_each($2)) \
             RETURNING id, event_seq, status, meeting_id, (conversation_id IS NOT NULL AND decided_by IS NOT NULL)",
        )
    }
}

/// Queues many jobs of the transaction's tenant in one statement, as `queue::enqueue`
/// does one: `ready`, or `paused` while the tenant's kill switch is on. Binds: `$2` a
/// JSON array of `{"id", "queue", "payload", "priority", "run_at", "max_attempts"}`
/// (`payload` as JSON text, `run_at` as [`time_text`]), `$3` now.
pub fn insert_jobs(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO jobs (tenant_id, id, queue, payload, priority, run_at, status, attempts, max_attempts, created_at, updated_at) \
             SELECT $1, x.id, x.queue, x.payload, x.priority, x.run_at, \
                    (SELECT CASE WHEN jobs_paused_at IS NULL THEN 'ready' ELSE 'paused' END FROM tenants WHERE id = $1), \
                    0, x.max_attempts, $3, $3 \
               FROM json_to_recordset($2::json) \
                 AS x(id TEXT, queue TEXT, payload TEXT, priority BIGINT, run_at TIMESTAMPTZ, max_attempts BIGINT)",
        )
    } else {
        scoped(
            "INSERT INTO jobs (tenant_id, id, queue, payload, priority, run_at, status, attempts, max_attempts, created_at, updated_at) \
             SELECT $1, value ->> 'id', value ->> 'queue', value ->> 'payload', value ->> 'priority', value ->> 'run_at', \
                    (SELECT CASE WHEN jobs_paused_at IS NULL THEN 'ready' ELSE 'paused' END FROM tenants WHERE id = $1), \
                    0, value ->> 'max_attempts', $3, $3 \
               FROM json_each($2)",
        )
    }
}

/// A time as text inside a JSON-bound batch: exactly what sqlx binds for a time on
/// SQLite, where times are compared as text (a claim's `run_at <= now`), so a batched
/// row sorts with rows bound one by one. PostgreSQL parses it as a `TIMESTAMPTZ`.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}
