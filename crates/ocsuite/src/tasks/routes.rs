//! HTTP handlers for tasks.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Change, Status, Task, job_id, update};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::TaskId;
use crate::json::ApiQuery;
use crate::queue;
use crate::realtime::{self, Event, Topic};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Member;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(super::execute::execute))
        .routes(routes!(super::execute::execute_many))
        .routes(routes!(get))
        .routes(routes!(cancel))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only tasks in this status.
    pub status: Option<String>,
    /// 1-200, default 50.
    pub limit: Option<i64>,
    /// Page: tasks older than this task id.
    pub before: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// The tenant's tasks, newest first.
#[utoipa::path(get, path = "/tasks", params(ListQuery), tag = "tasks",
    responses((status = 200, body = TaskList), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TaskList>> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                AppError::invalid(
                    "status",
                    "status must be one of queued, running, succeeded, failed, dead, cancelled",
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-200"));
    }
    let before = q
        .before
        .as_deref()
        .map(|b| {
            TaskId::parse(b).ok_or_else(|| AppError::invalid("before", "before must be a task id"))
        })
        .transpose()?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let tasks = super::list(&mut tx, status, limit, before.as_ref()).await?;
    tx.commit().await?;
    Ok(Json(TaskList { tasks }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskDetail {
    pub task: Task,
    /// Every event of the task, oldest first (topic `task:{id}`).
    #[schema(value_type = Vec<Object>)]
    pub timeline: Vec<Event>,
    /// What a person can do next: approve or reject, undo (or how to reverse it by
    /// hand), or what to do about a failure.
    pub next_steps: Option<String>,
}

/// One task with its timeline.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks",
    responses((status = 200, body = TaskDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<TaskDetail>> {
    let id = TaskId::parse(&id).ok_or(AppError::NotFound("task"))?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let task = super::get(&mut tx, &id).await?;
    let timeline = realtime::replay(&mut tx, &Topic::Task(id), 0).await?;
    let spec = crate::approvals::spec_of(&state.registry, &mut tx, &task)
        .await
        .ok();
    tx.commit().await?;
    let next_steps = next_steps(&task, spec.as_deref());
    Ok(Json(TaskDetail {
        task,
        timeline,
        next_steps,
    }))
}

fn next_steps(task: &Task, spec: Option<&ocsuite_module_sdk::CapabilitySpec>) -> Option<String> {
    use ocsuite_module_sdk::Undo;
    let id = &task.id;
    let error = task.error.as_deref().unwrap_or("no reason was given");
    match task.status {
        Status::Proposed => Some(format!(
            "It waits for approval: POST /api/v1/tasks/{id}/approve, or /reject with a rationale. Nothing runs until then."
        )),
        Status::Rejected => Some(format!(
            "Rejected ({}). To do it after all, propose it again from a meeting or run it with POST /api/v1/tasks/execute.",
            task.decision_rationale.as_deref().unwrap_or("no rationale")
        )),
        Status::Failed => Some(format!(
            "It failed and will not be retried: {error}. Fix the cause (the input, or the connected account it uses), then run it again with POST /api/v1/tasks/execute — or do it by hand."
        )),
        Status::Dead => Some(format!(
            "It failed {} times: {error}. Once the cause is fixed, an admin can retry it from the dead-letter queue (GET /api/v1/queues/dead, then POST /api/v1/queues/dead/{{job id}}/retry).",
            task.attempts
        )),
        Status::Succeeded => match spec.map(|s| &s.undo) {
            Some(Undo::Capability { capability }) => Some(format!(
                "It can be undone: POST /api/v1/tasks/{id}/undo proposes {capability} to reverse it."
            )),
            Some(Undo::Instructions { text }) => Some(format!(
                "It cannot be undone automatically. To reverse it by hand: {text}"
            )),
            _ => None,
        },
        Status::Queued | Status::Running | Status::Cancelled => None,
    }
}

/// Cancels a task: at once when it waits; a running one stops at its next lease renewal.
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks",
    responses((status = 200, body = Task, description = "cancelled"),
              (status = 202, body = Task, description = "running: cancellation requested"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Task>)> {
    let id = TaskId::parse(&id).ok_or(AppError::NotFound("task"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let task = super::get(&mut tx, &id).await?;
    let (code, ev) = match task.status {
        Status::Succeeded | Status::Failed | Status::Cancelled | Status::Rejected => {
            return Err(AppError::Conflict(format!(
                "the task already ended ({}); nothing to cancel",
                task.status.as_str()
            )));
        }
        Status::Proposed => {
            return Err(AppError::Conflict(
                "the task waits for approval; reject it instead (POST /tasks/{id}/reject)".into(),
            ));
        }
        Status::Queued | Status::Dead if queue::remove_pending(&mut tx, &job_id(&id)).await? => {
            let ev = update(
                &mut tx,
                &id,
                Change {
                    status: Some(Status::Cancelled),
                    cancel_requested: true,
                    finished: true,
                    ..Change::default()
                },
                "cancelled",
                json!({}),
            )
            .await?;
            (StatusCode::OK, ev)
        }
        // Claimed by a worker a moment ago: it stops the run as it starts.
        Status::Running | Status::Queued | Status::Dead => {
            let ev = update(
                &mut tx,
                &id,
                Change {
                    cancel_requested: true,
                    ..Change::default()
                },
                "cancel_requested",
                json!({}),
            )
            .await?;
            (StatusCode::ACCEPTED, ev)
        }
    };
    audit::record(
        &mut tx,
        &ctx,
        "task.cancel",
        "task",
        id.as_str(),
        json!({"was": task.status}),
    )
    .await?;
    let task = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    state.bus.after_commit(ev.into_iter().collect());
    Ok((code, Json(task)))
}
