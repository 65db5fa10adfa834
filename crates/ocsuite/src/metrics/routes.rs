//! `GET /api/v1/metrics`: the modules' latest snapshots, for the dashboard.

use axum::Json;
use axum::extract::State;
use ocsuite_module_sdk::MetricSnapshot;
use serde::Serialize;

use crate::app::AppState;
use crate::error::Result;
use crate::tenancy::TenantCtx;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Snapshots {
    #[schema(value_type = Vec<Object>)]
    pub snapshots: Vec<MetricSnapshot>,
}

/// The latest figures of each module (pipeline, revenue, burn, runway, email), as stored
/// when the data last changed.
#[utoipa::path(get, path = "/api/v1/metrics", tag = "modules", responses((status = 200, body = Snapshots)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Snapshots>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let snapshots = super::latest(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Snapshots { snapshots }))
}
