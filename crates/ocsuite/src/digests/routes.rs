//! HTTP handlers: the company's digests.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::Digest;
use crate::error::{AppError, Result};
use crate::json::ApiQuery;
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1-100, default 20.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Digests {
    pub digests: Vec<Digest>,
}

/// The digests sent to the company, newest first.
#[utoipa::path(get, path = "/digests", params(ListQuery), tag = "alerts", responses((status = 200, body = Digests)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Digests>> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-100"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let digests = super::list(&mut tx, limit).await?;
    tx.commit().await?;
    Ok(Json(Digests { digests }))
}
