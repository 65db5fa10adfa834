//! `POST|GET /api/v1/exports`, `GET /api/v1/exports/{id}[/download]` (admins).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ExportOut;
use crate::error::{AppError, Result};
use crate::ids::ExportId;
use crate::state::AppState;
use crate::tenancy::extract::Admin;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
        .routes(routes!(download))
}

fn parse(id: &str) -> Result<ExportId> {
    ExportId::parse(id).ok_or(AppError::NotFound("export"))
}

/// Starts building an archive of everything the company owns (its data as JSON Lines
/// per table, the audit log, the receipts with proofs and checkpoints, a signed
/// manifest). Works while the company is suspended.
#[utoipa::path(post, path = "/exports", tag = "exports",
    responses((status = 202, body = ExportOut), (status = 403, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Admin,
) -> Result<(StatusCode, Json<ExportOut>)> {
    let out = super::request(&state, &ctx).await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// The company's exports, newest first.
#[utoipa::path(get, path = "/exports", tag = "exports",
    responses((status = 200, body = Vec<ExportOut>)))]
pub async fn list(State(state): State<AppState>, ctx: Admin) -> Result<Json<Vec<ExportOut>>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = super::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// One export and its state.
#[utoipa::path(get, path = "/exports/{id}", tag = "exports",
    params(("id" = String, Path, description = "Export id (exp_…)")),
    responses((status = 200, body = ExportOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<Json<ExportOut>> {
    let id = parse(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// The archive (a zip), until it expires: 409 while it is built, 410 after.
#[utoipa::path(get, path = "/exports/{id}/download", tag = "exports",
    params(("id" = String, Path, description = "Export id (exp_…)")),
    responses((status = 200, content_type = "application/zip", body = Vec<u8>),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 410, body = crate::error::ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let id = parse(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let bytes = super::download(&mut tx, &id).await?;
    tx.commit().await?;
    let name = format!(
        "attachment; filename=\"ocsuite-export-{}-{}.zip\"",
        ctx.tenant_id,
        id.as_str()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        bytes,
    ))
}
