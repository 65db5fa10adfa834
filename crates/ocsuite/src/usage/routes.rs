//! `GET /api/v1/usage` and the super-admin plan switch.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Plan, PlanLimits, UsageRow, consumed, month_bounds};
use crate::auth::SuperAdmin;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::TenantId;
use crate::json::ApiJson;
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::TenantCtx;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(set_plan))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageOut {
    pub plan: Plan,
    pub limits: PlanLimits,
    /// First instant of the current month (UTC); the budget resets at `resets_at`.
    pub period_start: DateTime<Utc>,
    pub resets_at: DateTime<Utc>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Tokens held by answers still streaming.
    pub in_flight_tokens: i64,
    /// `limits.monthly_tokens` minus used and in-flight tokens (never below 0).
    pub remaining_tokens: i64,
    /// Millionths of a US dollar this month, from the configured price table.
    pub cost_micros: i64,
    /// This month by day, persona and model.
    pub rows: Vec<UsageRow>,
}

/// The tenant's model usage this month against its plan.
#[utoipa::path(get, path = "/usage", tag = "usage", responses((status = 200, body = UsageOut)))]
pub async fn show(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<UsageOut>> {
    let now = Utc::now();
    let (period_start, resets_at) = month_bounds(now);
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let (plan,): (String,) = tx
        .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
        .await?;
    let plan = Plan::parse(&plan).unwrap_or(Plan::Free);
    let rows = super::since(&mut tx, &period_start.format("%Y-%m-%d").to_string()).await?;
    let (used, held) = consumed(&mut tx, now).await?;
    tx.commit().await?;
    let limits = state.meter.limits(plan);
    Ok(Json(UsageOut {
        plan,
        limits,
        period_start,
        resets_at,
        requests: rows.iter().map(|r| r.requests).sum(),
        prompt_tokens: rows.iter().map(|r| r.prompt_tokens).sum(),
        completion_tokens: rows.iter().map(|r| r.completion_tokens).sum(),
        in_flight_tokens: held,
        remaining_tokens: (i64::try_from(limits.monthly_tokens).unwrap_or(i64::MAX) - used - held)
            .max(0),
        cost_micros: rows.iter().map(|r| r.cost_micros).sum(),
        rows,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanIn {
    pub plan: Plan,
}

/// Moves a tenant to another plan (platform super-admins).
#[utoipa::path(put, path = "/admin/tenants/{id}/plan", request_body = PlanIn, tag = "usage",
    responses((status = 200, body = PlanIn), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_plan(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<PlanIn>,
) -> Result<Json<serde_json::Value>> {
    let tenant = TenantId::parse(&id)
        .filter(|t| !crate::tenancy::is_reserved(t))
        .ok_or(AppError::NotFound("tenant"))?;
    let mut tx = state.store.tenant(&tenant).await?;
    let n = tx
        .execute(scoped("UPDATE tenants SET plan = $2 WHERE id = $1").bind(input.plan.as_str()))
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("tenant"));
    }
    crate::audit::insert(
        &mut tx,
        ("support_admin", me.user.id.as_str()),
        "tenant.plan",
        "tenant",
        tenant.as_str(),
        json!({"plan": input.plan.as_str()}),
        None,
    )
    .await?;
    // Allowed even when the company has more than the new plan allows: it keeps what it
    // has, its admins are told what is over, and new ones are refused.
    let report = crate::plans::report(&state.plans, &mut tx).await?;
    let over: Vec<&crate::plans::LimitUse> = report.limits.iter().filter(|l| l.over).collect();
    let mut events = Vec::new();
    if !over.is_empty() {
        let list = over
            .iter()
            .map(|l| {
                format!(
                    "{} {} of {}",
                    l.used,
                    l.limit.key().replace('_', " "),
                    l.allowed.unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let admins = crate::notifications::members(&mut tx, true).await?;
        events = crate::notifications::notify_all(
            &mut tx,
            &admins,
            crate::notifications::Broadcast {
                kind: "plan.over",
                title: format!("Your company is over the {} plan", input.plan.as_str()),
                body: format!(
                    "It keeps what it has ({list}), but cannot add more of these until it is under the limit or on a larger plan."
                ),
                meeting_id: None,
                task_id: None,
                email: true,
            },
        )
        .await?;
    }
    let over: Vec<&str> = over.iter().map(|l| l.limit.key()).collect();
    tx.commit().await?;
    state.bus.after_commit(events);
    Ok(Json(json!({"plan": input.plan.as_str(), "over": over})))
}
