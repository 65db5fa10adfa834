//! `GET /api/v1/usage`.

use axum::Json;
use axum::extract::State;
use chrono::{Datelike, Utc};
use serde::Serialize;

use super::UsageRow;
use crate::app::AppState;
use crate::error::Result;
use crate::tenancy::TenantCtx;

#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageOut {
    /// First day of the current month (UTC), `YYYY-MM-DD`.
    pub period_start: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// This month by day, persona and model.
    pub rows: Vec<UsageRow>,
}

/// The tenant's model usage this month.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", responses((status = 200, body = UsageOut)))]
pub async fn show(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<UsageOut>> {
    let now = Utc::now();
    let period_start = format!("{:04}-{:02}-01", now.year(), now.month());
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let rows = super::since(&mut tx, &period_start).await?;
    tx.commit().await?;
    Ok(Json(UsageOut {
        period_start,
        requests: rows.iter().map(|r| r.requests).sum(),
        prompt_tokens: rows.iter().map(|r| r.prompt_tokens).sum(),
        completion_tokens: rows.iter().map(|r| r.completion_tokens).sum(),
        rows,
    }))
}
