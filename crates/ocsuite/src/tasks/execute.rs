//! Queuing tasks: one per request (`POST /tasks/execute`), or up to [`MAX_BATCH`] in one
//! request and one transaction (`POST /tasks/execute-many`) for callers that create
//! many at once (an import, a fan-out from a script). A batch is all or nothing: every
//! item is checked (schema, version, policy, plan, open-task limit) before any is
//! stored, and an error names the item (`tasks[3]: …`, `details.index`). Each item keeps
//! its own idempotency key, so resending a batch replays the items that were queued.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ocsuite_module_sdk::{SideEffect, parse_requested_version};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Status, Task};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::TaskId;
use crate::json::ApiJson;
use crate::modules;
use crate::realtime::Event;
use crate::state::AppState;
use crate::store::TenantTx;
use crate::tenancy::extract::Member;

/// Most tasks a tenant may have waiting or running at once.
pub const MAX_OPEN_TASKS: i64 = 10_000;
/// Most tasks one `execute-many` request queues.
pub const MAX_BATCH: usize = 100;
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteManyIn {
    /// 1 to 100 tasks, queued together or not at all.
    pub tasks: Vec<ExecuteIn>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecutedMany {
    /// One per requested task, in the order given.
    pub tasks: Vec<Executed>,
}

/// A checked item: a new task to store, or the earlier task its idempotency key names.
enum Planned {
    New {
        id: TaskId,
        resolved: modules::Resolved,
        run_at: DateTime<Utc>,
    },
    Replay(Executed),
}

/// Checks one item and resolves its capability, reading only.
async fn plan(
    state: &AppState,
    read: &mut TenantTx,
    input: &ExecuteIn,
    now: DateTime<Utc>,
) -> Result<Planned> {
    if !(-10..=10).contains(&input.priority) {
        return Err(AppError::invalid(
            "priority",
            "priority must be between -10 and 10",
        ));
    }
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
    if let Some(key) = &input.idempotency_key
        && let Some(existing) = super::by_idempotency_key(read, key).await?
    {
        return replay(existing, input).map(Planned::Replay);
    }
    let resolved =
        modules::resolve(&state.registry, read, &input.capability, requested.as_ref()).await?;
    modules::validate(&resolved.input, &input.input, "input")?;
    Ok(Planned::New {
        id: TaskId::new(),
        resolved,
        run_at,
    })
}

/// Refuses `adding` more tasks when the tenant's open tasks or today's plan allowance
/// would be exceeded.
async fn ensure_room(
    state: &AppState,
    read: &mut TenantTx,
    ctx: &Member,
    adding: usize,
) -> Result<()> {
    let open = match state.open_tasks.fresh(&ctx.tenant_id) {
        Some(n) => n,
        None => {
            let n = super::open_count(read, MAX_OPEN_TASKS).await?;
            state.open_tasks.set(&ctx.tenant_id, n);
            n
        }
    };
    if open.saturating_add(adding as i64) > MAX_OPEN_TASKS {
        return Err(AppError::Detailed {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_open_tasks",
            message: format!(
                "this company already has {open} of at most {MAX_OPEN_TASKS} tasks waiting or running; retry when some have finished, or cancel some"
            ),
            details: json!({"limit": MAX_OPEN_TASKS, "open": open, "retry_after_seconds": 5}),
        });
    }
    state
        .plans
        .ensure_room(read, crate::plans::Limit::TasksPerDay, adding as u64)
        .await
}

/// Stores one planned task (policy check, row, job, event, audit) in `tx`.
async fn store(
    state: &AppState,
    mut tx: TenantTx,
    ctx: &Member,
    input: &ExecuteIn,
    id: &TaskId,
    resolved: &modules::Resolved,
    run_at: DateTime<Utc>,
) -> Result<(TenantTx, Event)> {
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
        tx = crate::policy::authorize(&state.policies, tx, ctx, "capability.run", resource).await?;
    }
    let ev = super::insert_queued(
        &mut tx,
        id,
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
        ctx,
        "task.queued",
        "task",
        id.as_str(),
        json!({"capability": resolved.spec.name, "version": resolved.spec.version.to_string(), "side_effect": side_effect}),
    )
    .await?;
    Ok((tx, ev))
}

/// After the commit: counts, events out, workers woken.
fn queued(state: &AppState, ctx: &Member, events: Vec<Event>) {
    for _ in &events {
        state.open_tasks.add(&ctx.tenant_id);
    }
    if !events.is_empty() {
        state.bus.after_commit(events);
        state.jobs_wake.notify_one();
    }
}

fn accepted(id: TaskId) -> Executed {
    Executed {
        task: TaskRef {
            id,
            status: Status::Queued,
        },
        replayed: false,
    }
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
    // The checks only read (on SQLite outside the writer's turn, see `Store::writable`);
    // a racing duplicate idempotency key is caught by its unique index.
    let mut read = state.store.tenant_read(&ctx.tenant_id).await?;
    let (id, resolved, run_at) = match plan(&state, &mut read, &input, Utc::now()).await? {
        Planned::Replay(done) => return Ok((StatusCode::OK, Json(done))),
        Planned::New {
            id,
            resolved,
            run_at,
        } => (id, resolved, run_at),
    };
    ensure_room(&state, &mut read, &ctx, 1).await?;
    let tx = state.store.writable(read).await?;
    let created = async {
        let (tx, ev) = store(&state, tx, &ctx, &input, &id, &resolved, run_at).await?;
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
            return Ok((StatusCode::OK, Json(replay(existing, &input)?)));
        }
        Err(e) => return Err(e),
    };
    queued(&state, &ctx, vec![ev]);
    Ok((StatusCode::ACCEPTED, Json(accepted(id))))
}

/// Queues up to 100 capabilities in one transaction: all or none.
#[utoipa::path(post, path = "/tasks/execute-many", request_body = ExecuteManyIn, tag = "tasks",
    responses((status = 202, body = ExecutedMany, description = "queued (items whose idempotency key matched an earlier task are replayed)"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn execute_many(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(batch): ApiJson<ExecuteManyIn>,
) -> Result<(StatusCode, Json<ExecutedMany>)> {
    if batch.tasks.is_empty() || batch.tasks.len() > MAX_BATCH {
        return Err(AppError::invalid(
            "tasks",
            format!(
                "tasks must hold 1-{MAX_BATCH} items (it holds {}); split larger batches",
                batch.tasks.len()
            ),
        ));
    }
    let keys: Vec<&str> = batch
        .tasks
        .iter()
        .filter_map(|t| t.idempotency_key.as_deref())
        .collect();
    if let Some((i, _)) = keys
        .iter()
        .enumerate()
        .find(|(i, k)| keys[..*i].contains(k))
    {
        return Err(AppError::invalid(
            "tasks",
            format!(
                "two items share the idempotency_key {:?}; give each task its own",
                keys[i]
            ),
        ));
    }
    let now = Utc::now();
    let mut read = state.store.tenant_read(&ctx.tenant_id).await?;
    let mut planned = Vec::with_capacity(batch.tasks.len());
    for (i, input) in batch.tasks.iter().enumerate() {
        planned.push(
            plan(&state, &mut read, input, now)
                .await
                .map_err(|e| e.at_item("tasks", i))?,
        );
    }
    let new = planned
        .iter()
        .filter(|p| matches!(p, Planned::New { .. }))
        .count();
    if new > 0 {
        ensure_room(&state, &mut read, &ctx, new).await?;
    }
    let mut tx = state.store.writable(read).await?;
    let mut events = Vec::with_capacity(new);
    let mut out = Vec::with_capacity(planned.len());
    for (i, (input, p)) in batch.tasks.iter().zip(planned).enumerate() {
        match p {
            Planned::Replay(done) => out.push(done),
            Planned::New {
                id,
                resolved,
                run_at,
            } => {
                let (next, ev) = store(&state, tx, &ctx, input, &id, &resolved, run_at)
                    .await
                    .map_err(|e| batch_error(e, i))?;
                tx = next;
                events.push(ev);
                out.push(accepted(id));
            }
        }
    }
    tx.commit()
        .await
        .map_err(|e| batch_error(e.into(), usize::MAX))?;
    queued(&state, &ctx, events);
    Ok((StatusCode::ACCEPTED, Json(ExecutedMany { tasks: out })))
}

/// An error storing item `i` of a batch (`usize::MAX`: at the commit) as the client
/// reads it. A unique violation is another request taking one of the batch's
/// idempotency keys at the same moment: nothing of the batch was stored, and resending
/// it replays what the other request queued.
fn batch_error(e: AppError, i: usize) -> AppError {
    match e {
        AppError::Database(d) if crate::error::is_unique_violation(&d) => AppError::Conflict(
            "another request used one of these idempotency keys at the same moment; nothing was queued: resend the batch"
                .into(),
        ),
        e if i == usize::MAX => e,
        e => e.at_item("tasks", i),
    }
}

/// The answer to a repeated idempotency key: the first task, unless the request differs.
fn replay(existing: Task, input: &ExecuteIn) -> Result<Executed> {
    if existing.capability != input.capability || existing.input != input.input {
        return Err(AppError::Conflict(
            "this idempotency_key was already used for a different request; use a new key".into(),
        ));
    }
    Ok(Executed {
        task: TaskRef {
            id: existing.id,
            status: existing.status,
        },
        replayed: true,
    })
}
