//! HTTP handlers under `/api/v1/leadtracker`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::summary::{PipelineSummary, Window};
use super::{Lead, LeadInput, Move, Stage};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::LeadId;
use crate::imports::{Report, Upload};
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::{Admin, Member};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(move_stage))
        .routes(routes!(get_stages, put_stages))
        .routes(routes!(summary))
        .merge(crate::imports::with_upload_limit(
            OpenApiRouter::new().routes(routes!(import)),
        ))
}

fn lead_id(id: &str) -> Result<LeadId> {
    LeadId::parse(id).ok_or(AppError::NotFound("lead"))
}

fn actor(ctx: &TenantCtx) -> String {
    format!("{}:{}", ctx.actor.kind(), ctx.actor.id())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub stage: Option<String>,
    /// Matches name, company or email.
    pub q: Option<String>,
    /// 1-500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Leads {
    pub leads: Vec<Lead>,
}

/// Leads, newest first.
#[utoipa::path(get, path = "/leadtracker/leads", params(ListQuery), tag = "leadtracker",
    responses((status = 200, body = Leads)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Leads>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-500"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let leads = super::list(
        &mut tx,
        q.stage.as_deref(),
        q.q.as_deref().filter(|s| !s.is_empty()),
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Leads { leads }))
}

/// Adds a lead.
#[utoipa::path(post, path = "/leadtracker/leads", request_body = LeadInput, tag = "leadtracker",
    responses((status = 201, body = Lead), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(input): ApiJson<LeadInput>,
) -> Result<(StatusCode, Json<Lead>)> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let stages = super::stages(&mut tx).await?;
    let currency = crate::tenancy::tenants::currency(&mut tx).await?;
    let checked = input.check(None, &stages, &currency)?;
    let id = super::insert(&mut tx, &checked, "manual", &actor(&ctx), Utc::now()).await?;
    super::refresh_metrics(&mut tx).await?;
    let lead = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(lead)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LeadDetail {
    pub lead: Lead,
    pub history: Vec<Move>,
}

/// One lead with its stage history.
#[utoipa::path(get, path = "/leadtracker/leads/{id}", tag = "leadtracker",
    responses((status = 200, body = LeadDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<LeadDetail>> {
    let id = lead_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let lead = super::get(&mut tx, &id).await?;
    let history = super::history(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(LeadDetail { lead, history }))
}

/// Edits a lead's fields; a `stage` here moves it like `POST …/stage`.
#[utoipa::path(patch, path = "/leadtracker/leads/{id}", request_body = LeadInput, tag = "leadtracker",
    responses((status = 200, body = Lead), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<LeadInput>,
) -> Result<Json<Lead>> {
    let id = lead_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let lead = super::get(&mut tx, &id).await?;
    let stages = super::stages(&mut tx).await?;
    let checked = input.check(Some(&lead), &stages, &lead.currency)?;
    super::update(&mut tx, &id, &checked).await?;
    if checked.stage != lead.stage {
        super::change_stage(&mut tx, &id, &checked.stage, None, &actor(&ctx), None).await?;
    }
    super::refresh_metrics(&mut tx).await?;
    let lead = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(lead))
}

/// Deletes a lead and its history.
#[utoipa::path(delete, path = "/leadtracker/leads/{id}", tag = "leadtracker",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = lead_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if !super::delete(&mut tx, &id).await? {
        return Err(AppError::NotFound("lead"));
    }
    super::refresh_metrics(&mut tx).await?;
    audit::record(&mut tx, &ctx, "lead.delete", "lead", id.as_str(), json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageIn {
    pub stage: String,
    pub note: Option<String>,
    /// When it happened, if not now (not in the future, not before the last move).
    pub changed_at: Option<DateTime<Utc>>,
}

/// Moves a lead to another stage.
#[utoipa::path(post, path = "/leadtracker/leads/{id}/stage", request_body = StageIn, tag = "leadtracker",
    responses((status = 200, body = Lead), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn move_stage(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<StageIn>,
) -> Result<Json<Lead>> {
    let id = lead_id(&id)?;
    let note = input
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 1000) {
        return Err(AppError::invalid(
            "note",
            "note must be at most 1000 characters",
        ));
    }
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let (lead, from) = super::change_stage(
        &mut tx,
        &id,
        input.stage.trim(),
        input.changed_at,
        &actor(&ctx),
        note,
    )
    .await?;
    if from.is_some() {
        super::refresh_metrics(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(Json(lead))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    pub stages: Vec<Stage>,
}

/// The pipeline's stages, in order.
#[utoipa::path(get, path = "/leadtracker/stages", tag = "leadtracker", responses((status = 200, body = Stages)))]
pub async fn get_stages(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Stages>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let stages = super::stages(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Stages { stages }))
}

/// Replaces the pipeline's stages (admins). Removing a stage that holds leads is a 409.
#[utoipa::path(put, path = "/leadtracker/stages", request_body = Stages, tag = "leadtracker",
    responses((status = 200, body = Stages), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_stages(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<Stages>,
) -> Result<Json<Stages>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::set_stages(&mut tx, &input.stages).await?;
    super::refresh_metrics(&mut tx).await?;
    audit::record(
        &mut tx,
        &ctx,
        "leadtracker.stages",
        "pipeline",
        "stages",
        json!({"stages": input.stages}),
    )
    .await?;
    let stages = super::stages(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Stages { stages }))
}

/// Imports leads from CSV: a preview first (`confirm: false`), then the good rows.
#[utoipa::path(post, path = "/leadtracker/import", request_body = Upload, tag = "leadtracker",
    responses((status = 200, body = Report), (status = 422, body = ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(input): ApiJson<Upload>,
) -> Result<Json<Report>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let report = super::import::run(
        &mut tx,
        &input.csv,
        &input.mapping,
        input.confirm,
        &actor(&ctx),
    )
    .await?;
    if report.confirmed {
        audit::record(
            &mut tx,
            &ctx,
            "leadtracker.import",
            "leads",
            "import",
            json!({"imported": report.imported, "duplicates": report.duplicates, "errors": report.error_count}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(report))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Days the won/lost figures cover (default 30).
    pub period_days: Option<i64>,
    /// Days in an open stage before a lead is stale (default 14).
    pub stale_days: Option<i64>,
    /// The end of the period (default now).
    pub as_of: Option<DateTime<Utc>>,
}

/// The pipeline summary, computed now.
#[utoipa::path(get, path = "/leadtracker/summary", params(SummaryQuery), tag = "leadtracker",
    responses((status = 200, body = PipelineSummary), (status = 422, body = ErrorBody)))]
pub async fn summary(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> Result<Json<PipelineSummary>> {
    let mut w = Window::default_at(q.as_of.unwrap_or_else(Utc::now));
    for (v, field, slot) in [
        (q.period_days, "period_days", &mut w.period_days),
        (q.stale_days, "stale_days", &mut w.stale_days),
    ] {
        if let Some(v) = v {
            if !(1..=3660).contains(&v) {
                return Err(AppError::invalid(field, format!("{field} must be 1-3660")));
            }
            *slot = v;
        }
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let currency = crate::tenancy::tenants::currency(&mut tx).await?;
    let stages = super::stages(&mut tx).await?;
    let (leads, moves) = super::everything(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(super::summary::compute(
        &stages, &leads, &moves, &currency, &w,
    )))
}
