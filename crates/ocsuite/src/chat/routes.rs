//! HTTP handlers for chat: the streaming endpoint and conversation management.

use std::convert::Infallible;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{self, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Conversation, Message, NewMessage, history};
use crate::agents::{self, routes::PersonaOut};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::json::{ApiJson, ApiQuery};
use crate::llm::{ChatMessage, ChatRequest, Role, StreamEvent, Usage};
use crate::personas::{self, Persona};
use crate::state::AppState;
use crate::tenancy::{Role as TenantRole, TenantCtx, tenants};
use crate::usage;
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

/// `max_tokens` for a persona or agent that sets none.
const DEFAULT_MAX_TOKENS: u32 = 1024;

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
    ctx: TenantCtx,
    Path(slug): Path<String>,
    ApiJson(input): ApiJson<ChatIn>,
) -> Result<impl IntoResponse> {
    ctx.require(TenantRole::Member)?;
    let text = input.message.trim();
    if text.is_empty() {
        return Err(AppError::bad_request(
            "empty_message",
            "message is empty: write something to ask",
        ));
    }
    if text.chars().count() > super::MAX_MESSAGE_CHARS {
        return Err(AppError::bad_request(
            "message_too_long",
            format!(
                "message is longer than {} characters; shorten it or split it",
                super::MAX_MESSAGE_CHARS
            ),
        ));
    }
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let speaker = agents::speaker(&mut tx, &slug)
        .await?
        .ok_or(AppError::NotFound("persona"))?;
    let persona = speaker.persona;
    // Reads first; the model call starts before anything is written, and the writes
    // (question, conversation, reservation) commit while the first token is on its way.
    let (conversation, earlier, is_new) = match input.conversation_id.as_deref() {
        Some(id) => {
            let id = ConversationId::parse(id).ok_or(AppError::NotFound("conversation"))?;
            let c = super::get(&mut tx, &id).await?;
            if c.persona != persona.slug {
                return Err(AppError::Conflict(format!(
                    "conversation {id} is with the {}; continue it at /c-suite/{}/chat",
                    c.persona.to_uppercase(),
                    c.persona
                )));
            }
            let earlier = super::messages(&mut tx, &id).await?;
            (c, earlier, false)
        }
        None => (super::draft(&persona.slug, text, &by), Vec::new(), true),
    };
    let company = tenants::get(&mut tx, ctx.role).await?;
    let figures = crate::metrics::prompt_figures(&mut tx).await?;

    let model = persona
        .model
        .clone()
        .unwrap_or_else(|| state.config.llm_model.clone());
    let mut messages = vec![ChatMessage::new(
        Role::System,
        personas::system_prompt(
            &persona,
            &company.name,
            &company.profile,
            speaker.additions.as_deref(),
            figures.as_deref(),
        ),
    )];
    messages.extend(history(&earlier));
    messages.push(ChatMessage::new(Role::User, text));
    let max_tokens = persona.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let reserve = crate::llm::estimate_prompt_tokens(&messages) + max_tokens;
    // Over budget or rate: refused before the model is called; nothing is stored.
    usage::check(&mut tx, &state.meter, reserve).await?;
    let request = ChatRequest {
        model: if state.llm.name() == "offline" {
            "offline".into()
        } else {
            model
        },
        messages,
        temperature: persona.temperature,
        max_tokens: Some(max_tokens),
        json_schema: None,
    };
    let upstream = state.llm.stream(request.clone());
    // The question, the conversation and the token hold are written and committed beside
    // the stream, so neither the response nor the first token waits for them. The budget
    // check above holds the tenant lock in this same transaction until that commit.
    let question = {
        let (conversation, text, slug, by) = (
            conversation.clone(),
            text.to_owned(),
            persona.slug.clone(),
            by.clone(),
        );
        tokio::spawn(async move {
            if is_new {
                super::insert(&mut tx, &conversation).await?;
            }
            super::add_message(
                &mut tx,
                &MessageId::new(),
                &NewMessage {
                    conversation: &conversation.id,
                    role: Role::User,
                    persona: &slug,
                    content: &text,
                    model: None,
                    status: "complete",
                    finish_reason: None,
                    error: None,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    latency_ms: None,
                    created_by: &by,
                },
            )
            .await?;
            let reservation = usage::hold(&mut tx, reserve).await?;
            tx.commit().await?;
            Ok::<_, AppError>(reservation)
        })
    };

    let (out, rx) = mpsc::channel::<std::result::Result<sse::Event, Infallible>>(64);
    let turn = Turn {
        state: state.clone(),
        question,
        tenant: ctx.tenant_id.clone(),
        conversation: conversation.id.clone(),
        message: MessageId::new(),
        persona,
        by,
    };
    tokio::spawn(turn.run(request, upstream, out));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// One assistant turn: relays the provider's stream to the client and stores the answer.
struct Turn {
    state: AppState,
    /// Stores the question and holds the tokens; yields the reservation to release.
    question: tokio::task::JoinHandle<Result<String>>,
    tenant: TenantId,
    conversation: ConversationId,
    message: MessageId,
    persona: Persona,
    by: String,
}

/// The client's end of the SSE stream; `alive` turns false once it is gone.
struct Client {
    out: mpsc::Sender<std::result::Result<sse::Event, Infallible>>,
    alive: bool,
}

impl Client {
    async fn send(&mut self, ev: std::result::Result<sse::Event, Infallible>) {
        if self.alive {
            self.alive = self.out.send(ev).await.is_ok();
        }
    }
}

fn event(name: &str, data: serde_json::Value) -> std::result::Result<sse::Event, Infallible> {
    Ok(sse::Event::default().event(name).data(data.to_string()))
}

impl Turn {
    async fn run(
        mut self,
        request: ChatRequest,
        mut upstream: mpsc::Receiver<StreamEvent>,
        out: mpsc::Sender<std::result::Result<sse::Event, Infallible>>,
    ) {
        let started = Instant::now();
        let mut client = Client { out, alive: true };
        client
            .send(event(
                "message_start",
                json!({"conversation_id": self.conversation, "message_id": self.message,
                       "persona": self.persona.slug, "model": request.model}),
            ))
            .await;
        let mut text = String::new();
        let mut usage: Option<Usage> = None;
        let mut end: std::result::Result<String, (String, String)> = Err((
            "upstream_cut".into(),
            "the model stream ended without finishing".into(),
        ));
        loop {
            if !client.alive {
                end = Err((
                    "client_gone".into(),
                    "the client disconnected before the answer finished".into(),
                ));
                break;
            }
            let ev = tokio::select! {
                ev = upstream.recv() => ev,
                // The client left while the model was quiet.
                _ = client.out.closed() => { client.alive = false; continue; }
            };
            let Some(ev) = ev else { break };
            match ev {
                StreamEvent::Delta(d) => {
                    text.push_str(&d);
                    client.send(event("delta", json!({"text": d}))).await;
                }
                StreamEvent::ToolCall(t) => {
                    client.send(event("tool_call", json!(t))).await;
                }
                StreamEvent::Usage(u) => {
                    usage = Some(u);
                    client
                        .send(event("usage", json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "estimated": u.estimated})))
                        .await;
                }
                StreamEvent::Done { finish_reason } => {
                    end = Ok(finish_reason);
                    break;
                }
                StreamEvent::Error(e) => {
                    end = Err((e.code.to_owned(), e.message));
                    break;
                }
            }
        }
        drop(upstream);
        let usage = usage.unwrap_or_else(|| Usage {
            prompt_tokens: crate::llm::estimate_prompt_tokens(&request.messages),
            completion_tokens: crate::llm::estimate_tokens(&text),
            estimated: true,
        });
        let (status, finish, error) = match &end {
            Ok(f) => ("complete", Some(f.as_str()), None),
            Err((_, m)) if !text.is_empty() => ("partial", None, Some(m.as_str())),
            Err((_, m)) => ("failed", None, Some(m.as_str())),
        };
        let reservation = match (&mut self.question).await {
            Ok(Ok(r)) => r,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the question could not be stored".into(),
                };
                tracing::error!(error = %why, conversation = %self.conversation, "storing a question failed");
                client
                    .send(event(
                        "error",
                        json!({"code": "not_stored", "message": "your question could not be saved, so this answer was not kept; try again", "message_id": self.message}),
                    ))
                    .await;
                return;
            }
        };
        let stored = self
            .store_answer(
                &reservation,
                &request.model,
                &text,
                status,
                finish,
                error,
                usage,
                started.elapsed().as_millis() as i64,
            )
            .await;
        if let Err(e) = &stored {
            tracing::error!(error = %e, conversation = %self.conversation, "storing an answer failed");
        }
        match end {
            Ok(finish_reason) => {
                client
                    .send(event(
                        "message_end",
                        json!({"message_id": self.message, "finish_reason": finish_reason}),
                    ))
                    .await;
            }
            Err((code, message)) => {
                client
                    .send(event(
                        "error",
                        json!({"code": code, "message": message, "message_id": self.message}),
                    ))
                    .await;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_answer(
        &self,
        reservation: &str,
        model: &str,
        text: &str,
        status: &str,
        finish: Option<&str>,
        error: Option<&str>,
        usage: Usage,
        latency_ms: i64,
    ) -> Result<()> {
        let mut tx = self.state.store.tenant(&self.tenant).await?;
        super::add_message(
            &mut tx,
            &self.message,
            &NewMessage {
                conversation: &self.conversation,
                role: Role::Assistant,
                persona: &self.persona.slug,
                content: text,
                model: Some(model),
                status,
                finish_reason: finish,
                error,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                latency_ms: Some(latency_ms),
                created_by: &self.by,
            },
        )
        .await?;
        usage::settle(
            &mut tx,
            &self.state.meter,
            reservation,
            &self.persona.slug,
            model,
            usage,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
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
    ctx: TenantCtx,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RenameIn>,
) -> Result<Json<Conversation>> {
    ctx.require(TenantRole::Member)?;
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
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    ctx.require(TenantRole::Member)?;
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
    ctx: TenantCtx,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RateIn>,
) -> Result<StatusCode> {
    ctx.require(TenantRole::Member)?;
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
    let mut out = Vec::new();
    for persona in personas::builtins() {
        let customization = agents::customization(&mut tx, &persona.slug).await?;
        out.push(PersonaOut {
            persona,
            customization,
        });
    }
    tx.commit().await?;
    Ok(Json(out))
}
