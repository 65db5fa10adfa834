//! HTTP handlers for tasks.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ocsuite_module_sdk::parse_requested_version;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Change, Status, Task, job_id, update};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::TaskId;
use crate::json::{ApiJson, ApiQuery};
use crate::modules;
use crate::queue;
use crate::realtime::{self, Event, Topic};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Member;
use ocsuite_module_sdk::SideEffect;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(execute))
        .routes(routes!(get))
        .routes(routes!(cancel))
}

/// Most tasks a tenant may have waiting or running at once.
pub const MAX_OPEN_TASKS: i64 = 10_000;
const MAX_KEY_LEN: usize = 200;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteIn {
    /// `module.capability`.
    pub capability: String,
    /// Wanted version (`1`, `1.2` or `1.2.3`): the highest compatible one runs. Absent:
    /// the highest available.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
    /// Resending with the same key returns the first task instead of running again.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// -10 (background) to 10 (urgent); default 0.
    #[serde(default)]
    pub priority: i32,
    /// Run no earlier than this time (at most 30 days ahead).
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
}

fn empty_object() -> Value {
    json!({})
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskRef {
    #[schema(value_type = String)]
    pub id: TaskId,
    pub status: Status,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Executed {
    pub task: TaskRef,
    /// True when the idempotency key matched an earlier request.
    pub replayed: bool,
}

/// Queues a capability to run.
#[utoipa::path(post, path = "/tasks/execute", request_body = ExecuteIn, tag = "tasks",
    responses((status = 202, body = Executed), (status = 200, body = Executed, description = "idempotent replay"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn execute(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(input): ApiJson<ExecuteIn>,
) -> Result<(StatusCode, Json<Executed>)> {
    if !(-10..=10).contains(&input.priority) {
        return Err(AppError::invalid(
            "priority",
            "priority must be between -10 and 10",
        ));
    }
    let now = Utc::now();
    let run_at = match input.run_at {
        Some(t) if t > now + chrono::Duration::days(30) => {
            return Err(AppError::invalid(
                "run_at",
                "run_at may be at most 30 days ahead",
            ));
        }
        Some(t) => t.max(now),
        None => now,
    };
    let requested = input
        .version
        .as_deref()
        .map(parse_requested_version)
        .transpose()
        .map_err(|m| AppError::invalid("version", m))?;
    if let Some(k) = &input.idempotency_key
        && (k.is_empty() || k.len() > MAX_KEY_LEN)
    {
        return Err(AppError::invalid(
            "idempotency_key",
            format!("idempotency_key must be 1-{MAX_KEY_LEN} characters"),
        ));
    }

    // The checks only read (on SQLite outside the writer's turn, see `Store::writable`);
    // a racing duplicate idempotency key is caught by its unique index.
    let mut read = state.store.tenant_read(&ctx.tenant_id).await?;
    if let Some(key) = &input.idempotency_key
        && let Some(existing) = super::by_idempotency_key(&mut read, key).await?
    {
        return replay(existing, &input);
    }
    let resolved = modules::resolve(
        &state.registry,
        &mut read,
        &input.capability,
        requested.as_ref(),
    )
    .await?;
    modules::validate(&resolved.input, &input.input, "input")?;
    let open = match state.open_tasks.fresh(&ctx.tenant_id) {
        Some(n) => n,
        None => {
            let n = super::open_count(&mut read, MAX_OPEN_TASKS).await?;
            state.open_tasks.set(&ctx.tenant_id, n);
            n
        }
    };
    if open >= MAX_OPEN_TASKS {
        return Err(AppError::Detailed {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_open_tasks",
            message: format!(
                "this company already has {MAX_OPEN_TASKS} tasks waiting or running; retry when some have finished, or cancel some"
            ),
            details: json!({"limit": MAX_OPEN_TASKS, "retry_after_seconds": 5}),
        });
    }
    state
        .plans
        .ensure_room(&mut read, crate::plans::Limit::TasksPerDay, 1)
        .await?;
    let mut tx = state.store.writable(read).await?;
    let id = TaskId::new();
    // Capabilities that change something are privileged; reads are not.
    let side_effect = resolved.spec.side_effect;
    if !matches!(side_effect, SideEffect::None | SideEffect::Read) {
        let resource = crate::policy::Resource {
            kind: "capability".into(),
            id: id.to_string(),
            capability: resolved.spec.name.clone(),
            side_effect: side_effect.as_str().into(),
            amount: crate::policy::input_amount(&input.input),
            recipients: crate::policy::input_recipients(&input.input),
            ..Default::default()
        };
        tx =
            crate::policy::authorize(&state.policies, tx, &ctx, "capability.run", resource).await?;
    }
    let version = resolved.spec.version.to_string();
    let created = async {
        let ev = super::insert_queued(
            &mut tx,
            &id,
            &resolved.spec,
            &input.input,
            input.idempotency_key.as_deref(),
            &format!("{}:{}", ctx.actor.kind(), ctx.actor.id()),
            input.priority,
            run_at,
        )
        .await?;
        audit::record(
            &mut tx,
            &ctx,
            "task.queued",
            "task",
            id.as_str(),
            json!({"capability": resolved.spec.name, "version": version, "side_effect": resolved.spec.side_effect}),
        )
        .await?;
        tx.commit().await?;
        Ok::<_, AppError>(ev)
    }
    .await;
    let ev = match created {
        Ok(ev) => ev,
        // Two requests raced with one idempotency key: the loser answers with the winner.
        Err(AppError::Database(e))
            if crate::error::is_unique_violation(&e) && input.idempotency_key.is_some() =>
        {
            let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
            let key = input.idempotency_key.as_deref().unwrap_or_default();
            let existing = super::by_idempotency_key(&mut tx, key)
                .await?
                .ok_or(AppError::Database(e))?;
            return replay(existing, &input);
        }
        Err(e) => return Err(e),
    };
    state.open_tasks.add(&ctx.tenant_id);
    state.bus.after_commit(vec![ev]);
    state.jobs_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(Executed {
            task: TaskRef {
                id,
                status: Status::Queued,
            },
            replayed: false,
        }),
    ))
}

/// The answer to a repeated idempotency key: the first task, unless the request differs.
fn replay(existing: Task, input: &ExecuteIn) -> Result<(StatusCode, Json<Executed>)> {
    if existing.capability != input.capability || existing.input != input.input {
        return Err(AppError::Conflict(
            "this idempotency_key was already used for a different request; use a new key".into(),
        ));
    }
    Ok((
        StatusCode::OK,
        Json(Executed {
            task: TaskRef {
                id: existing.id,
                status: existing.status,
            },
            replayed: true,
        }),
    ))
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
