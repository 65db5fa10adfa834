//! HTTP handlers: the company's triggers (admins write, members read), firing one by
//! hand, and its run history.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Action, Condition, NewTrigger, Run, Trigger};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::TriggerId;
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::store::TenantTx;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most triggers one company may keep.
const MAX_TRIGGERS: usize = 100;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(run_now))
        .routes(routes!(runs))
}

fn trigger_id(id: &str) -> Result<TriggerId> {
    TriggerId::parse(id).ok_or(AppError::NotFound("trigger"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Triggers {
    pub triggers: Vec<Trigger>,
}

/// The company's triggers, oldest first (the weekly digest is one).
#[utoipa::path(get, path = "/triggers", tag = "triggers", responses((status = 200, body = Triggers)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Triggers>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let triggers = super::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Triggers { triggers }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerIn {
    pub name: String,
    pub condition: Condition,
    pub action: Action,
    #[serde(default)]
    pub paused: bool,
}

/// Checks what depends on the company: the personas an action names and the capability
/// it proposes (which must be enabled now).
async fn check_for_tenant(state: &AppState, tx: &mut TenantTx, action: &Action) -> Result<()> {
    super::check_action(action)?;
    let personas: Vec<&String> = match action {
        Action::BoardMeeting {
            personas: Some(p), ..
        } => p.iter().collect(),
        Action::Brief { persona, .. } => vec![persona],
        _ => vec![],
    };
    for slug in personas {
        if crate::agents::speaker(tx, slug).await?.is_none() {
            return Err(AppError::unprocessable(
                "unknown_persona",
                "action.persona",
                format!(
                    "no persona or enabled agent `{}` in this company (see GET /api/v1/c-suite and /api/v1/agents)",
                    slug.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    if let Action::Propose { capability, input } = action {
        let resolved = crate::modules::resolve(&state.registry, tx, capability, None)
            .await
            .map_err(|e| {
                AppError::unprocessable(
                    "unknown_capability",
                    "action.capability",
                    format!(
                        "cannot propose `{}`: {e}",
                        capability.chars().take(80).collect::<String>()
                    ),
                )
            })?;
        crate::modules::validate(&resolved.input, input, "action.input")?;
    }
    Ok(())
}

/// Adds a trigger. Invalid cron, time zone, metric or event → 422 naming the field.
#[utoipa::path(post, path = "/triggers", request_body = TriggerIn, tag = "triggers",
    responses((status = 201, body = Trigger), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<TriggerIn>,
) -> Result<(StatusCode, Json<Trigger>)> {
    let name = super::check_name(&input.name)?;
    let mut condition = input.condition;
    condition.normalise()?;
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "trigger".into(),
        id: name.clone(),
        operation: "create".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "trigger.edit", resource).await?;
    check_for_tenant(&state, &mut tx, &input.action).await?;
    state
        .plans
        .ensure_room(&mut tx, crate::plans::Limit::Triggers, 1)
        .await?;
    if super::list(&mut tx).await?.len() >= MAX_TRIGGERS {
        return Err(AppError::Conflict(format!(
            "a company can keep at most {MAX_TRIGGERS} triggers; delete one first"
        )));
    }
    let trigger = super::insert(
        &mut tx,
        NewTrigger {
            name,
            condition,
            action: input.action,
            paused: input.paused,
            created_by: format!("{}:{}", ctx.actor.kind(), ctx.actor.id()),
        },
        state.clock.now(),
    )
    .await?;
    audit::record(
        &mut tx,
        &ctx,
        "trigger.create",
        "trigger",
        trigger.id.as_str(),
        json!({"name": trigger.name, "condition": trigger.condition, "action": trigger.action}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(trigger)))
}

#[utoipa::path(get, path = "/triggers/{id}", tag = "triggers",
    responses((status = 200, body = Trigger), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<Trigger>> {
    let id = trigger_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let t = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(t))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerPatch {
    pub name: Option<String>,
    pub condition: Option<Condition>,
    pub action: Option<Action>,
    pub paused: Option<bool>,
}

/// Changes a trigger. A new condition, or unpausing, reschedules it from now.
#[utoipa::path(patch, path = "/triggers/{id}", request_body = TriggerPatch, tag = "triggers",
    responses((status = 200, body = Trigger), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<TriggerPatch>,
) -> Result<Json<Trigger>> {
    let id = trigger_id(&id)?;
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "trigger".into(),
        id: id.to_string(),
        operation: "update".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "trigger.edit", resource).await?;
    let mut t = super::get(&mut tx, &id).await?;
    let mut reschedule = false;
    if let Some(name) = patch.name {
        t.name = super::check_name(&name)?;
    }
    if let Some(mut c) = patch.condition {
        c.normalise()?;
        t.condition = c;
        reschedule = true;
    }
    if let Some(a) = patch.action {
        check_for_tenant(&state, &mut tx, &a).await?;
        t.action = a;
    }
    if let Some(p) = patch.paused {
        reschedule |= t.paused && !p;
        t.paused = p;
    }
    let t = super::save(&mut tx, &t, reschedule, state.clock.now()).await?;
    audit::record(
        &mut tx,
        &ctx,
        "trigger.update",
        "trigger",
        id.as_str(),
        json!({"name": t.name, "paused": t.paused, "condition": t.condition, "action": t.action}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(t))
}

#[utoipa::path(delete, path = "/triggers/{id}", tag = "triggers",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = trigger_id(&id)?;
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "trigger".into(),
        id: id.to_string(),
        operation: "delete".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "trigger.edit", resource).await?;
    super::delete(&mut tx, &id).await?;
    audit::record(
        &mut tx,
        &ctx,
        "trigger.delete",
        "trigger",
        id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunOut {
    pub run: Run,
}

/// Fires the trigger now, whatever its condition says (to try an automation out). A
/// paused trigger fires too: pausing stops the condition, not a person.
#[utoipa::path(post, path = "/triggers/{id}/run", tag = "triggers",
    responses((status = 202, body = RunOut), (status = 404, body = ErrorBody)))]
pub async fn run_now(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunOut>)> {
    let id = trigger_id(&id)?;
    let now = state.clock.now();
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let t = super::get(&mut tx, &id).await?;
    let run = super::start_run(
        &mut tx,
        &id,
        super::Firing {
            reason: "manual",
            key: format!("manual:{}", uuid::Uuid::now_v7().simple()),
            evidence: super::manual_evidence(&t),
            scheduled_for: now,
        },
        now,
    )
    .await?
    .ok_or_else(|| AppError::internal("a fresh manual key collided"))?;
    let run = super::get_run(&mut tx, &run)
        .await?
        .ok_or(AppError::NotFound("run"))?;
    audit::record(
        &mut tx,
        &ctx,
        "trigger.run",
        "trigger",
        id.as_str(),
        json!({"run_id": run.id}),
    )
    .await?;
    tx.commit().await?;
    state.jobs_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(RunOut { run })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// 1-200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Runs {
    pub runs: Vec<Run>,
}

/// The trigger's runs, newest first.
#[utoipa::path(get, path = "/triggers/{id}/runs", params(RunsQuery), tag = "triggers",
    responses((status = 200, body = Runs), (status = 404, body = ErrorBody)))]
pub async fn runs(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<Runs>> {
    let id = trigger_id(&id)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-200"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    super::get(&mut tx, &id).await?;
    let runs = super::runs(&mut tx, &id, limit).await?;
    tx.commit().await?;
    Ok(Json(Runs { runs }))
}
