//! HTTP handlers: operators create, list and withdraw owner invites; the invitee
//! accepts one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{NewInvite, OwnerInvite};
use crate::auth::users::{clean_name, normalize_email};
use crate::auth::{ClientMeta, CurrentUser, SuperAdmin, sessions};
use crate::error::{AppError, ErrorBody, Result};
use crate::json::ApiJson;
use crate::state::AppState;
use crate::tenancy::tenants::TenantOut;
use crate::usage::Plan;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
        .routes(routes!(accept))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerInviteIn {
    pub email: String,
    /// The company the invitee will own (1-200 characters).
    pub company_name: String,
    #[serde(default = "free")]
    pub plan: Plan,
}

fn free() -> Plan {
    Plan::Free
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OwnerInviteCreated {
    #[serde(flatten)]
    pub invite: OwnerInvite,
    /// The link the email carries (shown once, to pass on by other means if needed).
    pub link: String,
}

/// Invites someone to start a company on a plan; the invitation goes by email.
#[utoipa::path(post, path = "/admin/owner-invites", request_body = OwnerInviteIn, tag = "console",
    responses((status = 201, body = OwnerInviteCreated), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    ApiJson(input): ApiJson<OwnerInviteIn>,
) -> Result<(StatusCode, Json<OwnerInviteCreated>)> {
    let email = normalize_email(&input.email)?;
    let company = clean_name("company_name", &input.company_name, 200)?;
    let (invite, link) = super::create(
        &state.store,
        &state.config.base_url(),
        NewInvite {
            email: &email,
            company_name: &company,
            plan: input.plan,
            by: &me.user,
        },
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(OwnerInviteCreated { invite, link }),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OwnerInvites {
    pub items: Vec<OwnerInvite>,
}

/// Owner invites with their status, newest first.
#[utoipa::path(get, path = "/admin/owner-invites", tag = "console",
    responses((status = 200, body = OwnerInvites), (status = 404, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _me: SuperAdmin) -> Result<Json<OwnerInvites>> {
    let mut tx = state.store.platform_read().await?;
    let items = super::list(&mut tx, 200).await?;
    tx.commit().await?;
    Ok(Json(OwnerInvites { items }))
}

/// Withdraws a pending owner invite.
#[utoipa::path(delete, path = "/admin/owner-invites/{id}", tag = "console",
    responses((status = 200, body = OwnerInvite), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(id): Path<String>,
) -> Result<Json<OwnerInvite>> {
    if crate::ids::InviteId::parse(&id).is_none() {
        return Err(AppError::NotFound("owner invite"));
    }
    let mut tx = state.store.platform().await?;
    let out = super::revoke(&mut tx, &id, &me.user).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Accepts an owner invite, signed in as the invited email: creates the company with
/// the caller as its owner on the invite's plan, and makes it the session's company.
#[utoipa::path(post, path = "/owner-invites/{token}/accept", tag = "tenants",
    responses((status = 201, body = TenantOut), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn accept(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(token): Path<String>,
) -> Result<(StatusCode, Json<TenantOut>)> {
    let out = super::accept(&state.store, &token, &me.user, &meta).await?;
    if let Some(s) = &me.session {
        let mut tx = state.store.platform().await?;
        sessions::set_active_tenant(&mut tx, s, &out.id).await?;
        tx.commit().await?;
    }
    Ok((StatusCode::CREATED, Json(out)))
}
