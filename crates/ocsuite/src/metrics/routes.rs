//! `GET /api/v1/metrics`: the modules' latest snapshots, for the dashboard.

use axum::Json;
use axum::extract::State;
use ocsuite_module_sdk::MetricSnapshot;
use serde::Serialize;

use crate::error::Result;
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Snapshots {
    #[schema(value_type = Vec<Object>)]
    pub snapshots: Vec<MetricSnapshot>,
}

/// The latest figures of each module (pipeline, revenue, burn, runway, email), as stored
/// when the data last changed.
#[utoipa::path(get, path = "/metrics", tag = "modules", responses((status = 200, body = Snapshots)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Snapshots>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let snapshots = super::latest(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Snapshots { snapshots }))
}
