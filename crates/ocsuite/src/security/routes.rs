//! HTTP handler: a company's security events (its admins).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::SecurityEventOut;
use crate::error::{AppError, ErrorBody, Result};
use crate::json::ApiQuery;
use crate::state::AppState;
use crate::tenancy::extract::Admin;
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
    /// One action (`login.failed`, `tenant.denied` …).
    pub action: Option<String>,
    /// 1-500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecurityEvents {
    pub items: Vec<SecurityEventOut>,
}

/// Security events about this company and its members' sign-ins, newest first.
#[utoipa::path(get, path = "/security-events", tag = "audit", params(ListQuery),
    responses((status = 200, body = SecurityEvents), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<SecurityEvents>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let items = super::list(&mut tx, q.action.as_deref(), limit).await?;
    tx.commit().await?;
    Ok(Json(SecurityEvents { items }))
}
