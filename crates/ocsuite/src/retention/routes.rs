//! `GET|PUT /api/v1/retention`, `POST /api/v1/retention/apply` (admins).

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Applied, Retention, RetentionIn};
use crate::error::Result;
use crate::json::ApiJson;
use crate::state::AppState;
use crate::tenancy::extract::Admin;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, save))
        .routes(routes!(apply_now))
}

/// The company's retention windows (days; `null`: kept for ever).
#[utoipa::path(get, path = "/retention", tag = "retention",
    responses((status = 200, body = Retention)))]
pub async fn show(State(state): State<AppState>, ctx: Admin) -> Result<Json<Retention>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = super::get(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Sets the windows (each in days, or `null`); the next hourly pass applies them.
#[utoipa::path(put, path = "/retention", tag = "retention", request_body = RetentionIn,
    responses((status = 200, body = Retention), (status = 403, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn save(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<RetentionIn>,
) -> Result<Json<Retention>> {
    Ok(Json(super::save(&state, &ctx, &input).await?))
}

/// Applies the windows now, instead of at the next hourly pass; says what went.
#[utoipa::path(post, path = "/retention/apply", tag = "retention",
    responses((status = 200, body = Applied), (status = 403, body = crate::error::ErrorBody)))]
pub async fn apply_now(State(state): State<AppState>, ctx: Admin) -> Result<Json<Applied>> {
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "retention".into(),
        id: ctx.tenant_id.to_string(),
        operation: "apply".into(),
        ..Default::default()
    };
    let tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "retention.update", resource).await?;
    tx.commit().await?;
    let out = super::apply(&state, &ctx.tenant_id, state.clock.now()).await?;
    Ok(Json(out))
}
