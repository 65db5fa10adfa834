//! Queue administration: depths, the kill switch, concurrency, and dead jobs.
//!
//! Tenant admins see and act on their own tenant's jobs. A platform super-admin also
//! gets depths across every tenant (`GET /api/v1/admin/queues`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Depth, EXECUTE_TASK, QUEUES, dead_letter_queue, tenant_depths};
use crate::audit;
use crate::auth::SuperAdmin;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{JobId, TaskId};
use crate::json::ApiJson;
use crate::state::AppState;
use crate::store::{TenantTx, scoped};
use crate::tasks::{self, Change, Status};
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, settings))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(dead))
        .routes(routes!(retry_dead))
        .routes(routes!(discard_dead))
        .routes(routes!(platform))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueState {
    /// When the kill switch was turned on; null while jobs run.
    pub paused_at: Option<DateTime<Utc>>,
    /// How many of this tenant's jobs may run at once.
    pub concurrency: i64,
    pub depths: Vec<Depth>,
}

async fn queue_state(tx: &mut TenantTx) -> Result<QueueState> {
    let (paused_at, concurrency): (Option<DateTime<Utc>>, i64) = tx
        .fetch_one(scoped(
            "SELECT jobs_paused_at, job_concurrency FROM tenants WHERE id = $1",
        ))
        .await?;
    Ok(QueueState {
        paused_at,
        concurrency,
        depths: tenant_depths(tx).await?,
    })
}

/// This tenant's queues.
#[utoipa::path(get, path = "/queues", tag = "queues",
    responses((status = 200, body = QueueState), (status = 403, body = ErrorBody)))]
pub async fn show(State(state): State<AppState>, ctx: Admin) -> Result<Json<QueueState>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = queue_state(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(out))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsIn {
    /// 1-64.
    pub concurrency: i64,
}

/// Sets how many of this tenant's jobs may run at once.
#[utoipa::path(patch, path = "/queues", request_body = SettingsIn, tag = "queues",
    responses((status = 200, body = QueueState), (status = 422, body = ErrorBody)))]
pub async fn settings(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<SettingsIn>,
) -> Result<Json<QueueState>> {
    if !(1..=64).contains(&input.concurrency) {
        return Err(AppError::invalid("concurrency", "concurrency must be 1-64"));
    }
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    tx.execute(
        scoped("UPDATE tenants SET job_concurrency = $2 WHERE id = $1").bind(input.concurrency),
    )
    .await?;
    audit::record(
        &mut tx,
        &ctx,
        "queue.settings",
        "tenant",
        ctx.tenant_id.as_str(),
        json!({"concurrency": input.concurrency}),
    )
    .await?;
    let out = queue_state(&mut tx).await?;
    tx.commit().await?;
    state.jobs_wake.notify_waiters();
    Ok(Json(out))
}

/// The kill switch: no job of this tenant starts until resumed. Running jobs finish.
#[utoipa::path(post, path = "/queues/pause", tag = "queues",
    responses((status = 200, body = QueueState), (status = 403, body = ErrorBody)))]
pub async fn pause(State(state): State<AppState>, ctx: Admin) -> Result<Json<QueueState>> {
    set_paused(state, ctx, true).await
}

/// Turns the kill switch off.
#[utoipa::path(post, path = "/queues/resume", tag = "queues",
    responses((status = 200, body = QueueState), (status = 403, body = ErrorBody)))]
pub async fn resume(State(state): State<AppState>, ctx: Admin) -> Result<Json<QueueState>> {
    set_paused(state, ctx, false).await
}

async fn set_paused(state: AppState, ctx: Admin, paused: bool) -> Result<Json<QueueState>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    tx.execute(
        scoped("UPDATE tenants SET jobs_paused_at = CASE WHEN $2 THEN COALESCE(jobs_paused_at, $3) ELSE NULL END WHERE id = $1")
            .bind(paused)
            .bind(Utc::now()),
    )
    .await?;
    super::set_paused(&mut tx, paused).await?;
    let action = if paused {
        "queue.pause"
    } else {
        "queue.resume"
    };
    audit::record(
        &mut tx,
        &ctx,
        action,
        "tenant",
        ctx.tenant_id.as_str(),
        json!({}),
    )
    .await?;
    let out = queue_state(&mut tx).await?;
    tx.commit().await?;
    state.jobs_wake.notify_waiters();
    Ok(Json(out))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadJob {
    #[schema(value_type = String)]
    pub id: JobId,
    /// The dead-letter queue it sits in.
    pub queue: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub died_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct DeadRow {
    id: String,
    queue: String,
    payload: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadJobs {
    pub jobs: Vec<DeadJob>,
}

/// This tenant's dead jobs, newest first.
#[utoipa::path(get, path = "/queues/dead", tag = "queues",
    responses((status = 200, body = DeadJobs), (status = 403, body = ErrorBody)))]
pub async fn dead(State(state): State<AppState>, ctx: Admin) -> Result<Json<DeadJobs>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let rows: Vec<DeadRow> = tx
        .fetch_all(scoped(
            "SELECT id, queue, payload, attempts, last_error, created_at, updated_at FROM jobs \
                 WHERE tenant_id = $1 AND status = 'dead' ORDER BY updated_at DESC LIMIT 500",
        ))
        .await?;
    tx.commit().await?;
    let jobs = rows
        .into_iter()
        .filter_map(|r| {
            Some(DeadJob {
                id: JobId::parse(&r.id)?,
                queue: r.queue,
                payload: serde_json::from_str(&r.payload).unwrap_or(Value::Null),
                attempts: r.attempts,
                last_error: r.last_error,
                created_at: r.created_at,
                died_at: r.updated_at,
            })
        })
        .collect();
    Ok(Json(DeadJobs { jobs }))
}

/// The live queue a dead job came from and the task it serves, if any.
async fn dead_job(tx: &mut TenantTx, id: &JobId) -> Result<(&'static str, Option<TaskId>)> {
    let row: Option<(String, String)> = tx
        .fetch_optional(
            scoped("SELECT queue, payload FROM jobs WHERE tenant_id = $1 AND id = $2 AND status = 'dead'")
                .bind(id),
        )
        .await?;
    let (queue, payload) = row.ok_or(AppError::NotFound("dead job"))?;
    let live = QUEUES
        .into_iter()
        .find(|q| dead_letter_queue(q) == queue)
        .ok_or_else(|| AppError::Internal(format!("unknown dead-letter queue {queue}")))?;
    let task = serde_json::from_str::<crate::tasks::TaskJob>(&payload)
        .ok()
        .map(|j| j.task_id);
    Ok((live, task))
}

/// Sends a dead job back to its queue with a fresh set of attempts.
#[utoipa::path(post, path = "/queues/dead/{id}/retry", tag = "queues",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn retry_dead(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = JobId::parse(&id).ok_or(AppError::NotFound("dead job"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let (queue, task) = dead_job(&mut tx, &id).await?;
    tx.execute(
        scoped("UPDATE jobs SET queue = $2, attempts = 0, run_at = $3, updated_at = $3, \
               status = (SELECT CASE WHEN jobs_paused_at IS NULL THEN 'ready' ELSE 'paused' END FROM tenants WHERE id = $1) \
             WHERE tenant_id = $1 AND id = $4")
            .bind(queue)
            .bind(Utc::now())
            .bind(&id),
    )
    .await?;
    let mut events = Vec::new();
    if let (EXECUTE_TASK, Some(task)) = (queue, &task) {
        events.extend(
            tasks::update(
                &mut tx,
                task,
                Change {
                    status: Some(Status::Queued),
                    attempts: Some(0),
                    ..Change::default()
                },
                "requeued",
                json!({}),
            )
            .await?,
        );
    }
    audit::record(
        &mut tx,
        &ctx,
        "queue.dead.retry",
        "job",
        id.as_str(),
        json!({"queue": queue, "task_id": task}),
    )
    .await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    state.jobs_wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a dead job for good; its task stays `dead`.
#[utoipa::path(post, path = "/queues/dead/{id}/discard", tag = "queues",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn discard_dead(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = JobId::parse(&id).ok_or(AppError::NotFound("dead job"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let (queue, task) = dead_job(&mut tx, &id).await?;
    tx.execute(scoped("DELETE FROM jobs WHERE tenant_id = $1 AND id = $2").bind(&id))
        .await?;
    audit::record(
        &mut tx,
        &ctx,
        "queue.dead.discard",
        "job",
        id.as_str(),
        json!({"queue": queue, "task_id": task}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PlatformDepths {
    pub depths: Vec<Depth>,
}

/// Depths across every tenant; platform super-admins only.
#[utoipa::path(get, path = "/admin/queues", tag = "queues",
    responses((status = 200, body = PlatformDepths), (status = 403, body = ErrorBody)))]
pub async fn platform(
    State(state): State<AppState>,
    _: SuperAdmin,
) -> Result<Json<PlatformDepths>> {
    let mut tx = state.store.platform_read().await?;
    let depths = super::platform_depths(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(PlatformDepths { depths }))
}
