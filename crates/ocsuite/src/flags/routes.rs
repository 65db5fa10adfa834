//! HTTP handlers: flags for operators (super-admins), and the caller's evaluated flags
//! for the web app.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Flag, FlagIn, Stage, Subject};
use crate::auth::SuperAdmin;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{TenantId, UserId};
use crate::json::ApiJson;
use crate::state::AppState;
use crate::store::sql;
use crate::tenancy::TenantCtx;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const MAX_TARGETS: usize = 1000;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, delete))
        .routes(routes!(features))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FlagsOut {
    pub flags: Vec<Flag>,
}

/// Every flag (super-admins).
#[utoipa::path(get, path = "/admin/flags", tag = "flags",
    responses((status = 200, body = FlagsOut), (status = 404, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _me: SuperAdmin) -> Result<Json<FlagsOut>> {
    let mut tx = state.store.platform_read().await?;
    let flags = super::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(FlagsOut { flags }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagBody {
    #[serde(default)]
    pub description: Option<String>,
    pub stage: Stage,
    /// The global kill switch.
    #[serde(default)]
    pub killed: bool,
    /// 0-100: the share of companies a beta flag reaches (sticky per company).
    #[serde(default)]
    pub rollout_percent: u32,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// free, pro, enterprise.
    #[serde(default)]
    pub plans: Vec<String>,
}

fn check_key(key: &str) -> Result<()> {
    let ok = (1..=64).contains(&key.len())
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(AppError::unprocessable(
            "invalid_key",
            "key",
            "a flag key is 1-64 characters of a-z, 0-9, `-`, `_` and `.`",
        ))
    }
}

/// Creates or changes a flag (super-admins); audited in the platform log. Targeting a
/// company or person that does not exist → 422.
#[utoipa::path(put, path = "/admin/flags/{key}", request_body = FlagBody, tag = "flags",
    responses((status = 200, body = Flag), (status = 201, body = Flag), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<FlagBody>,
) -> Result<(StatusCode, Json<Flag>)> {
    check_key(&key)?;
    if body.rollout_percent > 100 {
        return Err(AppError::unprocessable(
            "invalid_percent",
            "rollout_percent",
            "rollout_percent is 0 to 100",
        ));
    }
    if body.users.len() + body.tenants.len() + body.plans.len() > MAX_TARGETS {
        return Err(AppError::unprocessable(
            "too_many_targets",
            "tenants",
            format!("at most {MAX_TARGETS} targets in all; use a plan or a percentage for more"),
        ));
    }
    if let Some(p) = body
        .plans
        .iter()
        .find(|p| crate::usage::Plan::parse(p).is_none())
    {
        return Err(AppError::unprocessable(
            "unknown_plan",
            "plans",
            format!(
                "no plan `{}`; the plans are free, pro and enterprise",
                p.chars().take(32).collect::<String>()
            ),
        ));
    }
    for t in &body.tenants {
        let found = match TenantId::parse(t).filter(|t| !crate::tenancy::is_reserved(t)) {
            Some(id) => {
                // The tenants table is row-level secured: look inside its own scope.
                let mut tx = state.store.tenant_read(&id).await?;
                let row = tx
                    .fetch_optional::<(String,)>(crate::store::scoped(
                        "SELECT id FROM tenants WHERE id = $1",
                    ))
                    .await?;
                tx.commit().await?;
                row.is_some()
            }
            None => false,
        };
        if !found {
            return Err(AppError::unprocessable(
                "unknown_tenant",
                "tenants",
                format!("no company `{}`", t.chars().take(64).collect::<String>()),
            ));
        }
    }
    let mut tx = state.store.platform().await?;
    for u in &body.users {
        let found = match UserId::parse(u) {
            Some(id) => tx
                .fetch_optional::<(String,)>(sql("SELECT id FROM users WHERE id = $1").bind(&id))
                .await?
                .is_some(),
            None => false,
        };
        if !found {
            return Err(AppError::unprocessable(
                "unknown_user",
                "users",
                format!("no user `{}`", u.chars().take(64).collect::<String>()),
            ));
        }
    }
    let input = FlagIn {
        description: body
            .description
            .unwrap_or_default()
            .trim()
            .chars()
            .take(500)
            .collect(),
        stage: body.stage,
        killed: body.killed,
        rollout_percent: body.rollout_percent,
        users: body.users,
        tenants: body.tenants,
        plans: body.plans,
    };
    let existed = super::put(&mut tx, &key, &input, me.user.id.as_str()).await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        if existed { "flag.update" } else { "flag.create" },
        &format!("flag:{key}"),
        json!({"stage": input.stage, "killed": input.killed, "rollout_percent": input.rollout_percent,
               "users": input.users, "tenants": input.tenants, "plans": input.plans}),
    )
    .await?;
    let flag = super::list(&mut tx)
        .await?
        .into_iter()
        .find(|f| f.key == key)
        .ok_or(AppError::NotFound("flag"))?;
    tx.commit().await?;
    state.flags.reload(&state.store).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(flag)))
}

/// Removes a flag (super-admins): it reads as off everywhere.
#[utoipa::path(delete, path = "/admin/flags/{key}", tag = "flags",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(key): Path<String>,
) -> Result<StatusCode> {
    let mut tx = state.store.platform().await?;
    super::delete(&mut tx, &key).await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "flag.delete",
        &format!("flag:{key}"),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    state.flags.reload(&state.store).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Features {
    /// Every flag's answer for the caller in this company.
    pub features: BTreeMap<String, bool>,
}

/// The caller's flags in this company, evaluated by this server (for the web app).
#[utoipa::path(get, path = "/features", tag = "flags", responses((status = 200, body = Features)))]
pub async fn features(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Features>> {
    let plan = {
        let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
        let (plan,): (String,) = tx
            .fetch_one(crate::store::scoped(
                "SELECT plan FROM tenants WHERE id = $1",
            ))
            .await?;
        tx.commit().await?;
        plan
    };
    let subject = Subject {
        user: ctx.actor.user_id().map(UserId::as_str),
        tenant: Some(ctx.tenant_id.as_str()),
        plan: Some(plan.as_str()),
    };
    let all = state.flags.all();
    let features = all
        .values()
        .map(|f| (f.key.clone(), f.evaluate(&subject).0))
        .collect();
    Ok(Json(Features { features }))
}
