//! HTTP handlers: operators start and exit support sessions; a company's admins list
//! the ones held in their company.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ImpersonationOut, MAX_MINUTES, Start};
use crate::auth::{ClientMeta, SuperAdmin};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::TenantId;
use crate::json::ApiJson;
use crate::state::AppState;
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(exit))
        .routes(routes!(list))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartIn {
    pub tenant_id: String,
    /// Why, for the company's owners and its audit log (10-500 characters).
    pub reason: String,
    /// 1-60.
    pub minutes: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Started {
    pub id: String,
    pub tenant_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Starts a "view as" session in a company (super-admins, from a signed-in session).
#[utoipa::path(post, path = "/admin/impersonations", request_body = StartIn, tag = "console",
    responses((status = 201, body = Started), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    meta: ClientMeta,
    ApiJson(input): ApiJson<StartIn>,
) -> Result<(StatusCode, Json<Started>)> {
    if me.impersonating.is_some() {
        return Err(crate::tenancy::support_denied(
            "starting another support session; exit the current one first",
        ));
    }
    let Some(session) = me.session.clone() else {
        return Err(AppError::bad_request(
            "session_required",
            "a support session hangs on a signed-in session: log in with a password, not an identity-provider token",
        ));
    };
    let tenant = TenantId::parse(input.tenant_id.trim()).ok_or_else(|| {
        AppError::invalid(
            "tenant_id",
            "tenant_id must be a tenant id of the form ten_<32 hex digits>",
        )
    })?;
    if crate::tenancy::is_reserved(&tenant) {
        return Err(AppError::NotFound("tenant"));
    }
    let reason = input.reason.trim();
    if !(10..=500).contains(&reason.chars().count()) {
        return Err(AppError::invalid(
            "reason",
            "give the reason in 10 to 500 characters; the company's owners will read it",
        ));
    }
    if !(1..=MAX_MINUTES).contains(&input.minutes) {
        return Err(AppError::invalid(
            "minutes",
            format!("a support session lasts 1 to {MAX_MINUTES} minutes"),
        ));
    }
    let mut tx = state.store.tenant(&tenant).await?;
    let exists: Option<(String,)> = tx
        .fetch_optional(crate::store::scoped("SELECT id FROM tenants WHERE id = $1"))
        .await?;
    if exists.is_none() {
        return Err(AppError::NotFound("tenant"));
    }
    // The company's policy may refuse support sessions (`support.start`).
    let as_support = crate::tenancy::TenantCtx {
        tenant_id: tenant.clone(),
        role: crate::tenancy::Role::Admin,
        actor: crate::tenancy::Actor::SupportAdmin(me.user.id.clone()),
        meta: meta.clone(),
    };
    let resource = crate::policy::Resource {
        kind: "support".into(),
        id: tenant.to_string(),
        operation: "create".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &as_support, "support.start", resource)
            .await?;
    let (imp, events) = super::start(
        &mut tx,
        &Start {
            admin: &me.user.id,
            admin_email: &me.user.email,
            session: &session,
            reason,
            minutes: input.minutes,
        },
        Utc::now(),
    )
    .await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "impersonation.start",
        &format!("tenant:{tenant}"),
        json!({ "reason": reason, "minutes": input.minutes, "impersonation_id": imp.id }),
    )
    .await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    let mut tx = state.store.platform().await?;
    super::bind_session(&mut tx, &session, &me.user.id, Some(&imp), &meta).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(Started {
            id: imp.id.to_string(),
            tenant_id: tenant.to_string(),
            expires_at: imp.until,
        }),
    ))
}

/// Ends the caller's support session (the banner's Exit button).
#[utoipa::path(delete, path = "/admin/impersonations/current", tag = "console",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn exit(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    meta: ClientMeta,
) -> Result<StatusCode> {
    let (Some(imp), Some(session)) = (me.impersonating.as_ref(), me.session.as_ref()) else {
        return Err(AppError::NotFound("support session"));
    };
    super::finish(&state.store, imp, &me.user.id, session, "exit", &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ImpersonationList {
    pub items: Vec<ImpersonationOut>,
}

/// The support sessions held in this company, newest first (its admins).
#[utoipa::path(get, path = "/impersonations", tag = "console",
    responses((status = 200, body = ImpersonationList), (status = 403, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, ctx: Admin) -> Result<Json<ImpersonationList>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let items = super::list(&mut tx, 100).await?;
    tx.commit().await?;
    Ok(Json(ImpersonationList { items }))
}
