//! HTTP handlers for the module catalog and MCP server registration.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::mcp::{self, McpServer};
use super::{CatalogModule, catalog, set_enabled};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::McpServerId;
use crate::json::ApiJson;
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(list_servers, register))
        .routes(routes!(remove))
        .routes(routes!(refresh))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Catalog {
    pub modules: Vec<CatalogModule>,
}

/// Every module this tenant can use, with each capability's schemas.
#[utoipa::path(get, path = "/modules", tag = "modules",
    responses((status = 200, body = Catalog)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Catalog>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let modules = catalog(&state.registry, &mut tx).await?;
    tx.commit().await?;
    Ok(Json(Catalog { modules }))
}

/// Switches a module on for this tenant.
#[utoipa::path(post, path = "/modules/{name}/enable", tag = "modules",
    responses((status = 200, body = CatalogModule), (status = 404, body = ErrorBody)))]
pub async fn enable(
    State(state): State<AppState>,
    ctx: Admin,
    Path(name): Path<String>,
) -> Result<Json<CatalogModule>> {
    toggle(state, ctx, name, true).await
}

/// Switches a module off: its capabilities can no longer be queued or run.
#[utoipa::path(post, path = "/modules/{name}/disable", tag = "modules",
    responses((status = 200, body = CatalogModule), (status = 404, body = ErrorBody)))]
pub async fn disable(
    State(state): State<AppState>,
    ctx: Admin,
    Path(name): Path<String>,
) -> Result<Json<CatalogModule>> {
    toggle(state, ctx, name, false).await
}

async fn toggle(
    state: AppState,
    ctx: Admin,
    name: String,
    enabled: bool,
) -> Result<Json<CatalogModule>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if !catalog(&state.registry, &mut tx)
        .await?
        .iter()
        .any(|m| m.name == name)
    {
        return Err(AppError::NotFound("module"));
    }
    set_enabled(&mut tx, &name, enabled).await?;
    let action = if enabled {
        "module.enable"
    } else {
        "module.disable"
    };
    audit::record(&mut tx, &ctx, action, "module", &name, json!({})).await?;
    let module = catalog(&state.registry, &mut tx)
        .await?
        .into_iter()
        .find(|m| m.name == name)
        .ok_or(AppError::NotFound("module"))?;
    tx.commit().await?;
    Ok(Json(module))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerIn {
    /// Module name: prefixes each tool's capability (`name.tool`).
    pub name: String,
    /// The server's streamable-HTTP endpoint.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`; stored encrypted, never shown again.
    #[serde(default)]
    pub bearer_token: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct McpServers {
    pub servers: Vec<McpServer>,
}

/// The tenant's registered MCP servers.
#[utoipa::path(get, path = "/mcp-servers", tag = "modules",
    responses((status = 200, body = McpServers)))]
pub async fn list_servers(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<McpServers>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let servers = mcp::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(McpServers { servers }))
}

/// Registers an MCP server: connects, lists its tools, and adds them as capabilities.
#[utoipa::path(post, path = "/mcp-servers", request_body = McpServerIn, tag = "modules",
    responses((status = 201, body = McpServer), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "invalid, or the server could not be reached (`mcp_unreachable`)")))]
pub async fn register(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<McpServerIn>,
) -> Result<(StatusCode, Json<McpServer>)> {
    // The plan first: no point reaching the server if the company may not add one.
    let mut read = state.store.tenant_read(&ctx.tenant_id).await?;
    state
        .plans
        .ensure_room(&mut read, crate::plans::Limit::McpServers, 1)
        .await?;
    read.commit().await?;
    let builtin: Vec<&str> = state
        .registry
        .all()
        .iter()
        .map(|m| m.manifest().name.as_str())
        .collect();
    mcp::check_registration(&input.name, &input.url, &builtin)?;
    let token = input.bearer_token.as_deref().filter(|t| !t.is_empty());
    if token.is_some_and(|t| t.len() > 4096) {
        return Err(AppError::invalid(
            "bearer_token",
            "the token is longer than 4096 bytes",
        ));
    }
    // The decision is taken (and logged) before the server is contacted.
    let decided = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "mcp_server".into(),
        id: input.name.clone(),
        operation: "create".into(),
        ..Default::default()
    };
    crate::policy::authorize(&state.policies, decided, &ctx, "mcp.register", resource)
        .await?
        .commit()
        .await?;
    let dest = super::ssrf::check_destination(&input.url, state.config.mcp_private_allowed())
        .await
        .map_err(|m| AppError::invalid("url", m))?;
    let (info, tools) = mcp::discover(&input.name, &dest, token)
        .await
        .map_err(|m| AppError::Detailed {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "mcp_unreachable",
            message: m,
            details: json!({"url": input.url}),
        })?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let created_by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let id = mcp::insert(
        &mut tx,
        &state.crypto,
        &input.name,
        &input.url,
        token,
        &info,
        &tools,
        &created_by,
    )
    .await
    .map_err(|e| match e {
        AppError::Database(ref d) if crate::error::is_unique_violation(d) => AppError::Conflict(
            format!("an MCP server named `{}` is already registered", input.name),
        ),
        e => e,
    })?;
    audit::record(
        &mut tx,
        &ctx,
        "mcp.register",
        "mcp_server",
        id.as_str(),
        json!({"name": input.name, "url": input.url, "tools": tools.len()}),
    )
    .await?;
    let server = mcp::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(server)))
}

/// Re-reads the server's tool list.
#[utoipa::path(post, path = "/mcp-servers/{id}/refresh", tag = "modules",
    responses((status = 200, body = McpServer), (status = 404, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<Json<McpServer>> {
    let id = McpServerId::parse(&id).ok_or(AppError::NotFound("MCP server"))?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let server = mcp::get(&mut tx, &id).await?;
    let token = mcp::credential(&mut tx, &state.crypto, &id).await?;
    tx.commit().await?;
    let result =
        match super::ssrf::check_destination(&server.url, state.config.mcp_private_allowed()).await
        {
            Ok(dest) => mcp::discover(&server.name, &dest, token.as_deref()).await,
            Err(e) => Err(e),
        };
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    mcp::record_refresh(&mut tx, &id, &result).await?;
    audit::record(
        &mut tx,
        &ctx,
        "mcp.refresh",
        "mcp_server",
        id.as_str(),
        json!({"ok": result.is_ok()}),
    )
    .await?;
    let server = mcp::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(server))
}

/// Removes the server and its stored credential.
#[utoipa::path(delete, path = "/mcp-servers/{id}", tag = "modules",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = McpServerId::parse(&id).ok_or(AppError::NotFound("MCP server"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if !mcp::delete(&mut tx, &id).await? {
        return Err(AppError::NotFound("MCP server"));
    }
    audit::record(
        &mut tx,
        &ctx,
        "mcp.delete",
        "mcp_server",
        id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
