//! HTTP handlers: the approval queue, approve/reject/undo, and the approval policy.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Decision, Mode, Policy, Preview, decide, policy, preview, set_policy, spec_of};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::TaskId;
use crate::json::ApiJson;
use crate::state::AppState;
use crate::store::scoped;
use crate::tasks::{self, NewTask, Status, Task};
use crate::tenancy::extract::{Admin, Member};
use crate::tenancy::{Role, TenantCtx};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(undo))
        .routes(routes!(list))
        .routes(routes!(get_policy, put_policy))
}

const MAX_RATIONALE: usize = 2000;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Approvals {
    pub approvals: Vec<Preview>,
}

/// Proposed tasks waiting for a decision, oldest first, each with what will run, the
/// exact input, side effect, risk hints, undo, and whether the caller may approve.
#[utoipa::path(get, path = "/approvals", tag = "approvals",
    responses((status = 200, body = Approvals)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Approvals>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let policy = policy(&mut tx).await?;
    let mut waiting = tasks::list(&mut tx, Some(Status::Proposed), 200, None).await?;
    waiting.reverse();
    let mut approvals = Vec::with_capacity(waiting.len());
    for t in waiting {
        approvals.push(preview(&state.registry, &mut tx, t, ctx.role, &policy).await?);
    }
    tx.commit().await?;
    Ok(Json(Approvals { approvals }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionIn {
    /// Why (required to reject; kept with the decision and in the audit log).
    #[serde(default)]
    pub rationale: Option<String>,
}

fn clean_rationale(r: Option<&str>) -> Result<Option<String>> {
    let r = r.map(str::trim).filter(|r| !r.is_empty());
    if r.is_some_and(|r| r.chars().count() > MAX_RATIONALE) {
        return Err(AppError::invalid(
            "rationale",
            format!("rationale must be at most {MAX_RATIONALE} characters"),
        ));
    }
    Ok(r.map(str::to_owned))
}

fn task_id(id: &str) -> Result<TaskId> {
    TaskId::parse(id).ok_or(AppError::NotFound("task"))
}

/// Approves a proposed task: it is queued (once, however many approve at the same time).
#[utoipa::path(post, path = "/tasks/{id}/approve", request_body = DecisionIn, tag = "approvals",
    responses((status = 200, body = Task), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "already decided")))]
pub async fn approve(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DecisionIn>,
) -> Result<Json<Task>> {
    let rationale = clean_rationale(input.rationale.as_deref())?;
    decide_route(state, ctx, &id, rationale, true).await
}

/// Rejects a proposed task, with a rationale.
#[utoipa::path(post, path = "/tasks/{id}/reject", request_body = DecisionIn, tag = "approvals",
    responses((status = 200, body = Task), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reject(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DecisionIn>,
) -> Result<Json<Task>> {
    let rationale = clean_rationale(input.rationale.as_deref())?.ok_or_else(|| {
        AppError::invalid("rationale", "say why you reject it: rationale is required")
    })?;
    decide_route(state, ctx, &id, Some(rationale), false).await
}

async fn decide_route(
    state: AppState,
    ctx: Member,
    id: &str,
    rationale: Option<String>,
    approve: bool,
) -> Result<Json<Task>> {
    let id = task_id(id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let task = tasks::get(&mut tx, &id).await?;
    if task.status != Status::Proposed {
        return Err(AppError::Conflict(format!(
            "this task is {}, not waiting for approval",
            task.status.as_str()
        )));
    }
    let spec = spec_of(&state.registry, &mut tx, &task).await?;
    let needed = super::min_role(&mut tx, spec.side_effect).await?;
    if !ctx.role.at_least(needed) {
        return Err(AppError::Forbidden(format!(
            "{} tasks need the {} role or higher to decide; you are {}",
            spec.side_effect.as_str(),
            needed.as_str(),
            ctx.role.as_str()
        )));
    }
    let resource = crate::policy::Resource {
        kind: "task".into(),
        id: id.to_string(),
        capability: task.capability.clone(),
        side_effect: spec.side_effect.as_str().into(),
        amount: crate::policy::input_amount(&task.input),
        recipients: crate::policy::input_recipients(&task.input),
        ..Default::default()
    };
    let action = if approve {
        "task.approve"
    } else {
        "task.reject"
    };
    let mut tx = crate::policy::authorize(&state.policies, tx, &ctx, action, resource).await?;
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let decision = if approve {
        Decision::Approve {
            rationale: rationale.as_deref(),
        }
    } else {
        Decision::Reject {
            rationale: rationale.as_deref().unwrap_or_default(),
        }
    };
    let ev = decide(&mut tx, &task, spec.max_attempts, &by, decision).await?;
    audit::record(
        &mut tx,
        &ctx,
        if approve { "task.approve" } else { "task.reject" },
        "task",
        id.as_str(),
        json!({"capability": task.capability, "side_effect": spec.side_effect, "rationale": rationale}),
    )
    .await?;
    let task = tasks::get(&mut tx, &id).await?;
    tx.commit().await?;
    state.bus.after_commit(vec![ev]);
    if approve {
        state.jobs_wake.notify_one();
    }
    Ok(Json(task))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UndoOut {
    /// The compensating task, proposed for approval like any other.
    pub task: Task,
}

/// Undoes a succeeded task whose capability declares a compensation: proposes the
/// compensating capability with the original output, to be approved like any task.
/// Capabilities without one answer 409 with the module's manual instructions.
#[utoipa::path(post, path = "/tasks/{id}/undo", tag = "approvals",
    responses((status = 202, body = UndoOut), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "not undoable (the message carries the manual instructions)")))]
pub async fn undo(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<UndoOut>)> {
    let id = task_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let task = tasks::get(&mut tx, &id).await?;
    if task.status != Status::Succeeded {
        return Err(AppError::Conflict(format!(
            "only a succeeded task can be undone; this one is {}",
            task.status.as_str()
        )));
    }
    let spec = spec_of(&state.registry, &mut tx, &task).await?;
    let compensation = match &spec.undo {
        ocsuite_module_sdk::Undo::Capability { capability } => capability.clone(),
        ocsuite_module_sdk::Undo::Instructions { text } => {
            return Err(AppError::Conflict(format!(
                "{} cannot be undone automatically. To reverse it: {text}",
                spec.name
            )));
        }
        ocsuite_module_sdk::Undo::None => {
            return Err(AppError::Conflict(format!(
                "{} cannot be undone",
                spec.name
            )));
        }
    };
    let already: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT id FROM tasks WHERE tenant_id = $1 AND undo_of = $2 AND status NOT IN ('rejected', 'failed', 'dead', 'cancelled')")
                .bind(&id),
        )
        .await?;
    if let Some((other,)) = already {
        return Err(AppError::Conflict(format!(
            "an undo of this task already exists: {other}"
        )));
    }
    let comp = crate::modules::resolve(&state.registry, &mut tx, &compensation, None).await?;
    let input = task.result.clone().unwrap_or_else(|| json!({}));
    crate::modules::validate(&comp.input, &input, "the original task's output")?;
    let policy = policy(&mut tx).await?;
    let undo_id = TaskId::new();
    let version = comp.spec.version.to_string();
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let (_, events) = super::propose(
        &mut tx,
        &undo_id,
        &NewTask {
            capability: &comp.spec.name,
            version: &version,
            input: &input,
            max_attempts: comp.spec.max_attempts,
            idempotency_key: None,
            created_by: &by,
            status: Status::Proposed,
            meeting_id: task.meeting_id.as_deref(),
            conversation_id: task.conversation_id.as_deref(),
            undo_of: Some(&id),
        },
        &comp.spec,
        &policy,
    )
    .await?;
    audit::record(
        &mut tx,
        &ctx,
        "task.undo_proposed",
        "task",
        id.as_str(),
        json!({"undo_task": undo_id, "capability": comp.spec.name}),
    )
    .await?;
    let created = tasks::get(&mut tx, &undo_id).await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    state.jobs_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(UndoOut { task: created })))
}

/// The tenant's approval policy.
#[utoipa::path(get, path = "/approval-policy", tag = "approvals",
    responses((status = 200, body = Policy)))]
pub async fn get_policy(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Policy>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let p = policy(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(p))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// Side-effect class → lowest approving role (`member`, `admin`, `owner`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub min_roles: BTreeMap<String, Role>,
    /// Capability → `ask` or `auto` (read-only capabilities only).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub modes: BTreeMap<String, Mode>,
}

/// Changes the approval policy (admins).
#[utoipa::path(put, path = "/approval-policy", request_body = PolicyIn, tag = "approvals",
    responses((status = 200, body = Policy), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_policy(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<PolicyIn>,
) -> Result<Json<Policy>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let p = set_policy(&mut tx, &state.registry, &input.min_roles, &input.modes).await?;
    audit::record(
        &mut tx,
        &ctx,
        "approval_policy.update",
        "tenant",
        ctx.tenant_id.as_str(),
        json!({"min_roles": input.min_roles, "modes": input.modes}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(p))
}
