//! HTTP handlers: a company's entitlements and its use of each (any member), and every
//! plan's (operators).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{Entitlements, EntitlementsOut, ORDER, report};
use crate::auth::SuperAdmin;
use crate::error::{ErrorBody, Result};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mine))
        .routes(routes!(all))
}

/// What the company's plan allows and how much of it the company uses.
#[utoipa::path(get, path = "/entitlements", tag = "usage",
    responses((status = 200, body = EntitlementsOut), (status = 404, body = ErrorBody)))]
pub async fn mine(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<EntitlementsOut>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    Ok(Json(report(&state.plans, &mut tx).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PlanEntitlements {
    pub plan: String,
    pub entitlements: Entitlements,
}

/// Every plan's entitlements as configured (operators).
#[utoipa::path(get, path = "/admin/plans", tag = "console",
    responses((status = 200, body = Vec<PlanEntitlements>), (status = 404, body = ErrorBody)))]
pub async fn all(State(state): State<AppState>, _me: SuperAdmin) -> Json<Vec<PlanEntitlements>> {
    Json(
        ORDER
            .iter()
            .map(|p| PlanEntitlements {
                plan: p.as_str().into(),
                entitlements: state.plans.of(*p),
            })
            .collect(),
    )
}
