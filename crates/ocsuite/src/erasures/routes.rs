//! `POST|GET /api/v1/erasures`, `GET /api/v1/erasures/{id}`,
//! `POST /api/v1/erasures/{id}/approve|cancel` (admins).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ErasureIn, ErasureOut};
use crate::error::{AppError, Result};
use crate::ids::ErasureId;
use crate::json::ApiJson;
use crate::state::AppState;
use crate::tenancy::extract::Admin;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
        .routes(routes!(approve))
        .routes(routes!(cancel))
}

fn parse(id: &str) -> Result<ErasureId> {
    ErasureId::parse(id).ok_or(AppError::NotFound("erasure"))
}

/// Asks for one person (by email address) to be erased from the company; a different
/// admin must approve. 409 for an owner or while a request for the address waits.
#[utoipa::path(post, path = "/erasures", tag = "erasures", request_body = ErasureIn,
    responses((status = 201, body = ErasureOut), (status = 403, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<ErasureIn>,
) -> Result<(StatusCode, Json<ErasureOut>)> {
    let out = super::request(&state, &ctx, &input).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// The company's erasure requests, newest first.
#[utoipa::path(get, path = "/erasures", tag = "erasures",
    responses((status = 200, body = Vec<ErasureOut>)))]
pub async fn list(State(state): State<AppState>, ctx: Admin) -> Result<Json<Vec<ErasureOut>>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = super::list(&mut tx, state.clock.now()).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// One request, with what was removed once done.
#[utoipa::path(get, path = "/erasures/{id}", tag = "erasures",
    params(("id" = String, Path, description = "Erasure id (era_…)")),
    responses((status = 200, body = ErasureOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<Json<ErasureOut>> {
    let id = parse(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = super::get(&mut tx, &id, state.clock.now()).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Approves a request (a different admin from the one who asked): the erasure runs as
/// a job. 403 `same_admin`, 409 unless it waits, 410 once its window has passed.
#[utoipa::path(post, path = "/erasures/{id}/approve", tag = "erasures",
    params(("id" = String, Path, description = "Erasure id (era_…)")),
    responses((status = 202, body = ErasureOut), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 410, body = crate::error::ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ErasureOut>)> {
    let id = parse(&id)?;
    let out = super::approve(&state, &ctx, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// Withdraws a waiting request.
#[utoipa::path(post, path = "/erasures/{id}/cancel", tag = "erasures",
    params(("id" = String, Path, description = "Erasure id (era_…)")),
    responses((status = 200, body = ErasureOut), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<Json<ErasureOut>> {
    let id = parse(&id)?;
    Ok(Json(super::cancel(&state, &ctx, &id).await?))
}
