//! HTTP handlers for chat: the streaming endpoint (the turn itself is `turn.rs`) and
//! conversation management.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{self, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::{Conversation, Message};
use crate::agents::{self, routes::PersonaOut};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{ConversationId, MessageId};
use crate::json::{ApiJson, ApiQuery};
use crate::personas::{self};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Member;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(personas))
        .routes(routes!(chat))
        .routes(routes!(list))
        .routes(routes!(get, rename, delete))
        .routes(routes!(rate))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatIn {
    pub message: String,
    /// Continue this conversation; absent starts a new one.
    #[serde(default)]
    pub conversation_id: Option<String>,
}

/// Chats with a persona; the answer streams as Server-Sent Events: `message_start`,
/// `delta` (many), `usage`, `message_end` — or `error`.
#[utoipa::path(post, path = "/c-suite/{persona}/chat", request_body = ChatIn, tag = "chat",
    responses((status = 200, description = "text/event-stream"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    ctx: Member,
    Path(slug): Path<String>,
    ApiJson(input): ApiJson<ChatIn>,
) -> Result<impl IntoResponse> {
    let events = super::turn::start(
        &state,
        &ctx,
        &slug,
        &input.message,
        input.conversation_id.as_deref(),
    )
    .await?;
    let stream = ReceiverStream::new(events)
        .map(|e| Ok::<_, Infallible>(sse::Event::default().event(e.name).data(e.data.to_string())));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub persona: Option<String>,
    /// 1-200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Conversations {
    pub conversations: Vec<Conversation>,
}

/// The tenant's conversations, most recently active first.
#[utoipa::path(get, path = "/conversations", params(ListQuery), tag = "chat",
    responses((status = 200, body = Conversations)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Conversations>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-200"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let conversations = super::list(&mut tx, q.persona.as_deref(), limit).await?;
    tx.commit().await?;
    Ok(Json(Conversations { conversations }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConversationDetail {
    pub conversation: Conversation,
    pub messages: Vec<Message>,
}

fn conversation_id(id: &str) -> Result<ConversationId> {
    ConversationId::parse(id).ok_or(AppError::NotFound("conversation"))
}

/// One conversation with its messages, oldest first.
#[utoipa::path(get, path = "/conversations/{id}", tag = "chat",
    responses((status = 200, body = ConversationDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<ConversationDetail>> {
    let id = conversation_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let conversation = super::get(&mut tx, &id).await?;
    let messages = super::messages(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(ConversationDetail {
        conversation,
        messages,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameIn {
    /// 1-200 characters.
    pub title: String,
}

/// Renames a conversation.
#[utoipa::path(patch, path = "/conversations/{id}", request_body = RenameIn, tag = "chat",
    responses((status = 200, body = Conversation), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rename(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RenameIn>,
) -> Result<Json<Conversation>> {
    let id = conversation_id(&id)?;
    let title = crate::auth::users::clean_name("title", &input.title, 200)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let c = super::rename(&mut tx, &id, &title).await?;
    tx.commit().await?;
    Ok(Json(c))
}

/// Deletes a conversation and its messages.
#[utoipa::path(delete, path = "/conversations/{id}", tag = "chat",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = conversation_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::delete(&mut tx, &id).await?;
    crate::audit::record(
        &mut tx,
        &ctx,
        "conversation.delete",
        "conversation",
        id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateIn {
    /// `up` or `down`.
    pub rating: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Rates an assistant message.
#[utoipa::path(post, path = "/messages/{id}/rating", request_body = RateIn, tag = "chat",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rate(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RateIn>,
) -> Result<StatusCode> {
    let id = MessageId::parse(&id).ok_or(AppError::NotFound("message"))?;
    let rating = match input.rating.as_str() {
        "up" => 1,
        "down" => -1,
        _ => return Err(AppError::invalid("rating", "rating must be `up` or `down`")),
    };
    let comment = input
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if comment.is_some_and(|c| c.chars().count() > 2000) {
        return Err(AppError::invalid(
            "comment",
            "comment must be at most 2000 characters",
        ));
    }
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::rate(&mut tx, &id, rating, comment).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The built-in personas, each with this tenant's customisation if any. Custom agents
/// are listed at `GET /api/v1/agents`.
#[utoipa::path(get, path = "/c-suite", tag = "chat",
    responses((status = 200, body = Vec<PersonaOut>)))]
pub async fn personas(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<Vec<PersonaOut>>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let catalog = crate::modules::catalog(&state.registry, &mut tx).await?;
    let mut out = Vec::new();
    for persona in personas::builtins() {
        let customization = agents::customization(&mut tx, &persona.slug).await?;
        let speaker = agents::speaker(&mut tx, &persona.slug)
            .await?
            .ok_or(AppError::NotFound("persona"))?;
        let model = speaker
            .persona
            .model
            .clone()
            .unwrap_or_else(|| state.config.llm_model.clone());
        let tools = agents::tools::Toolbox::from_catalog(&catalog, speaker.capabilities)
            .tools
            .iter()
            .map(|t| t.spec.name.clone())
            .collect();
        out.push(PersonaOut {
            persona,
            customization,
            model_support: state
                .llm
                .support(&model)
                .map(|support| agents::routes::ModelSupportOut { model, support }),
            tools,
        });
    }
    tx.commit().await?;
    Ok(Json(out))
}
