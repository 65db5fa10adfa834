//! HTTP handlers for tenants, members, invites and API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::api_keys::{self, ApiKeyCreated, ApiKeyOut};
use super::invites::{self, InviteCreated, InviteOut};
use super::members::{self, MemberOut};
use super::tenants::{self, Profile, TenantOut};
use super::{Role, TenantCtx};
use crate::auth::users::{clean_name, normalize_email};
use crate::auth::{ClientMeta, CurrentUser, sessions};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{ApiKeyId, InviteId, TenantId, UserId};
use crate::json::ApiJson;
use crate::state::AppState;
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, update_tenant))
        .routes(routes!(list_members, invite_member))
        .routes(routes!(change_role, remove_member))
        .routes(routes!(list_invites, create_invite))
        .routes(routes!(revoke_invite))
        .routes(routes!(accept_invite))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantIn {
    /// Company name, 1–200 characters.
    pub name: String,
    #[serde(default)]
    pub profile: Profile,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub profile: Option<Profile>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteIn {
    pub email: String,
    /// Defaults to `member`.
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleIn {
    pub role: Role,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    pub name: String,
    /// Defaults to `member`.
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub tenant_id: TenantId,
    pub role: Role,
}

/// Creates a company; the caller becomes its owner and it becomes their active tenant.
#[utoipa::path(post, path = "/tenants", request_body = TenantIn, tag = "tenants",
    responses((status = 201, body = TenantOut), (status = 422, body = ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    ApiJson(input): ApiJson<TenantIn>,
) -> Result<(StatusCode, Json<TenantOut>)> {
    let name = clean_name("name", &input.name, 200)?;
    let profile = input.profile.validated()?;
    let out = tenants::create(&state.store, &me.user.id, &meta, &name, profile).await?;
    if let Some(s) = &me.session {
        let mut tx = state.store.platform().await?;
        sessions::set_active_tenant(&mut tx, s, &out.id).await?;
        tx.commit().await?;
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// The tenants the caller belongs to, with their role in each.
#[utoipa::path(get, path = "/tenants", tag = "tenants", responses((status = 200, body = Vec<TenantOut>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Json<Vec<TenantOut>>> {
    let mut tx = state.store.user(&me.user.id).await?;
    let out = tenants::list_for_user(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// The current tenant (from `X-Tenant-Id`).
#[utoipa::path(get, path = "/tenant", tag = "tenants", responses((status = 200, body = TenantOut), (status = 404, body = ErrorBody)))]
pub async fn get_tenant(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<TenantOut>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = tenants::get(&mut tx, ctx.role).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Renames the tenant or replaces its profile (admins).
#[utoipa::path(patch, path = "/tenant", request_body = TenantPatch, tag = "tenants", responses((status = 200, body = TenantOut)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<TenantPatch>,
) -> Result<Json<TenantOut>> {
    let name = input
        .name
        .map(|n| clean_name("name", &n, 200))
        .transpose()?;
    let profile = input.profile.map(Profile::validated).transpose()?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let out = tenants::update(&mut tx, &ctx, name, profile).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Members of the tenant.
#[utoipa::path(get, path = "/members", tag = "members", responses((status = 200, body = Vec<MemberOut>)))]
pub async fn list_members(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<Vec<MemberOut>>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = members::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(out))
}

fn member_id(raw: &str) -> Result<UserId> {
    UserId::parse(raw).ok_or(AppError::NotFound("member"))
}

/// Changes a member's role (admins; owner changes need an owner).
#[utoipa::path(patch, path = "/members/{user_id}", request_body = RoleIn, tag = "members",
    params(("user_id" = String, Path)), responses((status = 200, body = MemberOut), (status = 409, body = ErrorBody)))]
pub async fn change_role(
    State(state): State<AppState>,
    ctx: Admin,
    Path(user_id): Path<String>,
    ApiJson(input): ApiJson<RoleIn>,
) -> Result<Json<MemberOut>> {
    if input.role == Role::Owner {
        ctx.deny_support("making someone an owner")?;
    }
    let target = member_id(&user_id)?;
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "member".into(),
        id: target.to_string(),
        operation: "update".into(),
        target_role: input.role.as_str().into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "member.role_change", resource).await?;
    let out = members::change_role(&mut tx, &ctx, &target, input.role).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Removes a member, or leaves when the id is the caller's own.
#[utoipa::path(delete, path = "/members/{user_id}", tag = "members",
    params(("user_id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn remove_member(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(user_id): Path<String>,
) -> Result<StatusCode> {
    let target = member_id(&user_id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    members::remove(&mut tx, &ctx, &target).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invites a person by email (admins). `POST /api/v1/members` does the same.
#[utoipa::path(post, path = "/invites", request_body = InviteIn, tag = "members",
    responses((status = 201, body = InviteCreated), (status = 409, body = ErrorBody)))]
pub async fn create_invite(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<InviteIn>,
) -> Result<(StatusCode, Json<InviteCreated>)> {
    ctx.deny_support("inviting people (the invite would outlast the session)")?;
    let email = normalize_email(&input.email)?;
    let role = input.role.unwrap_or(Role::Member);
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    // An invitation grants a role: the policy decides it like a role change.
    let resource = crate::policy::Resource {
        kind: "member".into(),
        id: email.clone(),
        operation: "create".into(),
        target_role: role.as_str().into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "member.role_change", resource).await?;
    state
        .plans
        .ensure_room(&mut tx, crate::plans::Limit::Seats, 1)
        .await?;
    let out = invites::create(&mut tx, &ctx, &email, role).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Adds a member (admins): the same as `POST /invites`, since nobody joins a tenant
/// without accepting.
#[utoipa::path(post, path = "/members", request_body = InviteIn, tag = "members",
    responses((status = 201, body = InviteCreated), (status = 409, body = ErrorBody)))]
pub async fn invite_member(
    state: State<AppState>,
    ctx: Admin,
    input: ApiJson<InviteIn>,
) -> Result<(StatusCode, Json<InviteCreated>)> {
    create_invite(state, ctx, input).await
}

/// Pending and past invites (admins).
#[utoipa::path(get, path = "/invites", tag = "members", responses((status = 200, body = Vec<InviteOut>)))]
pub async fn list_invites(
    State(state): State<AppState>,
    ctx: Admin,
) -> Result<Json<Vec<InviteOut>>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = invites::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Revokes a pending invite (admins).
#[utoipa::path(delete, path = "/invites/{id}", tag = "members", params(("id" = String, Path)), responses((status = 204)))]
pub async fn revoke_invite(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = InviteId::parse(&id).ok_or(AppError::NotFound("invite"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    invites::revoke(&mut tx, &ctx, &id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts an invite as the signed-in user (whose email must be the invited one).
#[utoipa::path(post, path = "/invites/{token}/accept", tag = "members", params(("token" = String, Path)),
    responses((status = 200, body = Accepted), (status = 410, body = ErrorBody)))]
pub async fn accept_invite(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(token): Path<String>,
) -> Result<Json<Accepted>> {
    let (tenant_id, role) = invites::accept(&state.store, &me.user, &meta, &token).await?;
    if let Some(s) = &me.session {
        let mut tx = state.store.platform().await?;
        sessions::set_active_tenant(&mut tx, s, &tenant_id).await?;
        tx.commit().await?;
    }
    Ok(Json(Accepted { tenant_id, role }))
}

/// Creates an API key (admins); the key is in this response only.
#[utoipa::path(post, path = "/api-keys", request_body = ApiKeyIn, tag = "api-keys",
    responses((status = 201, body = ApiKeyCreated), (status = 403, body = ErrorBody)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<ApiKeyIn>,
) -> Result<(StatusCode, Json<ApiKeyCreated>)> {
    ctx.deny_support("creating API keys")?;
    let name = clean_name("name", &input.name, 100)?;
    let role = input.role.unwrap_or(Role::Member);
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "api_key".into(),
        operation: "create".into(),
        target_role: role.as_str().into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "api_key.create", resource).await?;
    state
        .plans
        .ensure_room(&mut tx, crate::plans::Limit::ApiKeys, 1)
        .await?;
    let out = api_keys::create(&mut tx, &ctx, &name, role).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Live API keys of the tenant (admins), without their secrets.
#[utoipa::path(get, path = "/api-keys", tag = "api-keys", responses((status = 200, body = Vec<ApiKeyOut>)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    ctx: Admin,
) -> Result<Json<Vec<ApiKeyOut>>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = api_keys::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// Revokes an API key (admins); it stops working on the next request.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)), responses((status = 204)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = ApiKeyId::parse(&id).ok_or(AppError::NotFound("API key"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    api_keys::revoke(&mut tx, &ctx, &id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
