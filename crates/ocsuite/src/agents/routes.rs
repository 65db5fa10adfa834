//! HTTP handlers for the agent builder and persona customisation (admins).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Agent, Customization, ModelSettings};
use crate::audit;
use crate::auth::users::clean_name;
use crate::error::{AppError, ErrorBody, Result};
use crate::json::ApiJson;
use crate::personas;
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(customize, reset))
        .routes(routes!(list, create))
        .routes(routes!(update))
}

const MAX_INSTRUCTIONS: usize = 8000;
const MAX_ADDITIONS: usize = 4000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentIn {
    /// URL name (`growth-coach`): 2-32 of `a-z`, `0-9`, `-`.
    pub slug: String,
    pub name: String,
    /// Role title (`Head of Growth`).
    pub title: String,
    /// The agent's brief: what it does and how (at most 8000 characters).
    pub instructions: String,
    /// Model id; absent: the server's `OCSUITE_LLM_MODEL`.
    #[serde(default)]
    pub model: Option<String>,
    /// 0-2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// 1-32000.
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Capabilities it may call (`module.capability`).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// A persona customisation as sent: the same fields as [`Customization`], spelled out
/// rather than flattened, so the published schema is one plain object a client (or a
/// schema-driven fuzzer) can fill in.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomizationIn {
    /// Added to the persona's prompt as company instructions (at most 4000 characters).
    #[serde(default)]
    pub prompt_additions: Option<String>,
    /// Model id; absent: the server's `OCSUITE_LLM_MODEL`.
    #[serde(default)]
    pub model: Option<String>,
    /// 0-2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// 1-32000.
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Capabilities this officer may call beyond document search and the module
    /// summaries (`module.capability`); absent: its role's defaults.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub title: Option<String>,
    pub instructions: Option<String>,
    /// Model id; `""` goes back to the server's `OCSUITE_LLM_MODEL`.
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub capabilities: Option<Vec<String>>,
    /// False disables the agent: it can no longer be chatted with.
    pub enabled: Option<bool>,
}

fn instructions(s: &str) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > MAX_INSTRUCTIONS {
        return Err(AppError::invalid(
            "instructions",
            format!("instructions must be 1-{MAX_INSTRUCTIONS} characters"),
        ));
    }
    Ok(t.to_owned())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Agents {
    pub agents: Vec<Agent>,
}

/// The tenant's custom agents.
#[utoipa::path(get, path = "/agents", tag = "agents", responses((status = 200, body = Agents)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Agents>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let agents = super::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Agents { agents }))
}

/// Creates a custom agent (admins).
#[utoipa::path(post, path = "/agents", request_body = AgentIn, tag = "agents",
    responses((status = 201, body = Agent), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<AgentIn>,
) -> Result<(StatusCode, Json<Agent>)> {
    super::check_slug(&input.slug)?;
    super::check_capabilities(&input.capabilities)?;
    let now = Utc::now();
    let agent = Agent {
        slug: input.slug.clone(),
        name: clean_name("name", &input.name, 100)?,
        title: clean_name("title", &input.title, 100)?,
        instructions: instructions(&input.instructions)?,
        settings: ModelSettings {
            model: input.model,
            temperature: input.temperature,
            max_tokens: input.max_tokens,
        }
        .validated()?,
        capabilities: input.capabilities,
        enabled: true,
        created_by: format!("{}:{}", ctx.actor.kind(), ctx.actor.id()),
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if super::get(&mut tx, &agent.slug).await?.is_some() {
        return Err(AppError::Conflict(format!(
            "an agent `{}` already exists",
            agent.slug
        )));
    }
    super::save(&mut tx, &agent).await?;
    audit::record(
        &mut tx,
        &ctx,
        "agent.create",
        "agent",
        &agent.slug,
        json!({"name": agent.name}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// Edits a custom agent, or disables/enables it (admins).
#[utoipa::path(patch, path = "/agents/{slug}", request_body = AgentPatch, tag = "agents",
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: Admin,
    Path(slug): Path<String>,
    ApiJson(p): ApiJson<AgentPatch>,
) -> Result<Json<Agent>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let mut a = super::get(&mut tx, &slug)
        .await?
        .ok_or(AppError::NotFound("agent"))?;
    if let Some(n) = &p.name {
        a.name = clean_name("name", n, 100)?;
    }
    if let Some(t) = &p.title {
        a.title = clean_name("title", t, 100)?;
    }
    if let Some(i) = &p.instructions {
        a.instructions = instructions(i)?;
    }
    if p.model.is_some() {
        a.settings.model = p.model;
    }
    if p.temperature.is_some() {
        a.settings.temperature = p.temperature;
    }
    if p.max_tokens.is_some() {
        a.settings.max_tokens = p.max_tokens;
    }
    a.settings = a.settings.validated()?;
    if let Some(c) = p.capabilities {
        super::check_capabilities(&c)?;
        a.capabilities = c;
    }
    if let Some(e) = p.enabled {
        a.enabled = e;
    }
    a.updated_at = Utc::now();
    super::save(&mut tx, &a).await?;
    audit::record(
        &mut tx,
        &ctx,
        "agent.update",
        "agent",
        &a.slug,
        json!({"enabled": a.enabled}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(a))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PersonaOut {
    #[serde(flatten)]
    pub persona: personas::Persona,
    /// The tenant's customisation, if any.
    pub customization: Option<Customization>,
    /// The model this officer uses and how its server is asked for structured output
    /// and tools (learned from the server's refusals); absent offline.
    pub model_support: Option<ModelSupportOut>,
    /// The capabilities this officer may call now (basics plus role or tenant choice).
    pub tools: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelSupportOut {
    pub model: String,
    #[serde(flatten)]
    pub support: crate::llm::compat::ModelSupport,
}

/// Customises a built-in persona for this tenant (admins); the default stays intact.
#[utoipa::path(put, path = "/c-suite/{persona}/customization", request_body = CustomizationIn, tag = "agents",
    responses((status = 200, body = Customization), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn customize(
    State(state): State<AppState>,
    ctx: Admin,
    Path(slug): Path<String>,
    ApiJson(input): ApiJson<CustomizationIn>,
) -> Result<Json<Customization>> {
    if let Some(caps) = &input.capabilities {
        super::check_capabilities(caps)?;
    }
    let mut c = Customization {
        capabilities: input.capabilities,
        prompt_additions: input.prompt_additions,
        settings: ModelSettings {
            model: input.model,
            temperature: input.temperature,
            max_tokens: input.max_tokens,
        },
    };
    personas::builtin(&slug).ok_or(AppError::NotFound("persona"))?;
    c.prompt_additions = c
        .prompt_additions
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty());
    if c.prompt_additions
        .as_ref()
        .is_some_and(|a| a.chars().count() > MAX_ADDITIONS)
    {
        return Err(AppError::invalid(
            "prompt_additions",
            format!("prompt_additions must be at most {MAX_ADDITIONS} characters"),
        ));
    }
    c.settings = c.settings.validated()?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::set_customization(&mut tx, &slug, &c).await?;
    audit::record(
        &mut tx,
        &ctx,
        "persona.customize",
        "persona",
        &slug,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(c))
}

/// Removes this tenant's customisation of a built-in persona.
#[utoipa::path(delete, path = "/c-suite/{persona}/customization", tag = "agents",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn reset(
    State(state): State<AppState>,
    ctx: Admin,
    Path(slug): Path<String>,
) -> Result<StatusCode> {
    personas::builtin(&slug).ok_or(AppError::NotFound("persona"))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if !super::reset_customization(&mut tx, &slug).await? {
        return Err(AppError::NotFound("customization"));
    }
    audit::record(&mut tx, &ctx, "persona.reset", "persona", &slug, json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
