//! `GET /api/v1/audit`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::AuditOut;
use crate::error::{AppError, Result};
use crate::ids::AuditId;
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
pub struct AuditQuery {
    /// Page size, 1–500 (default 100).
    pub limit: Option<u32>,
    /// Return entries older than this audit id.
    pub before: Option<String>,
}

/// The tenant's audit trail, newest first (admins and owners).
#[utoipa::path(get, path = "/audit", params(AuditQuery), tag = "audit",
    responses((status = 200, body = Vec<AuditOut>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditOut>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let before = match q.before.as_deref() {
        Some(b) => Some(
            AuditId::parse(b)
                .ok_or_else(|| AppError::invalid("before", "before must be an audit id (aud_…)"))?,
        ),
        None => None,
    };
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = super::list(&mut tx, limit, before.as_ref()).await?;
    tx.commit().await?;
    Ok(Json(out))
}
