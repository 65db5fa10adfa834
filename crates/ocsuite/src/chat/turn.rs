//! One chat turn, from question to stored answer: checks, prompt, budget hold, the model
//! call, relaying its stream, storing both messages and settling the tokens. The
//! handler (`routes.rs`) only turns the events into Server-Sent Events.

use std::time::Instant;

use serde_json::json;
use tokio::sync::mpsc;

use super::{NewMessage, history};
use crate::agents;
use crate::error::{AppError, Result};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::knowledge::grounding::Grounding;
use crate::llm::{ChatMessage, ChatRequest, Role, StreamEvent, Usage};
use crate::personas::{self, Persona};
use crate::state::AppState;
use crate::tenancy::{TenantCtx, tenants};
use crate::usage;

/// Most tokens an answer may take when the persona sets no limit.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// One event of the turn's stream: `message_start`, `citations`, `delta`, `tool_call`,
/// `usage`, `message_end` or `error`, with its JSON data.
pub struct TurnEvent {
    pub name: &'static str,
    pub data: serde_json::Value,
}

/// Starts a turn: `message` to the persona or agent `slug`, in a new conversation or
/// `conversation_id`. Refuses (nothing stored) an empty or too long message, an unknown
/// persona or conversation, or a request over budget; otherwise the model call is
/// under way and the events arrive on the returned channel.
pub async fn start(
    state: &AppState,
    ctx: &TenantCtx,
    slug: &str,
    message: &str,
    conversation_id: Option<&str>,
) -> Result<mpsc::Receiver<TurnEvent>> {
    let text = message.trim();
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
    // Retrieval first: it may wait on the embedding model, and holds no transaction.
    let grounding = Grounding::retrieve(&state.knowledge, &ctx.tenant_id, text).await;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let speaker = agents::speaker(&mut tx, slug)
        .await?
        .ok_or(AppError::NotFound("persona"))?;
    let persona = speaker.persona;
    // Reads first; the model call starts before anything is written, and the writes
    // (question, conversation, reservation) commit while the first token is on its way.
    let (conversation, earlier, is_new) = match conversation_id {
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
            grounding.prompt_block().as_deref(),
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
                    citations: None,
                },
            )
            .await?;
            let reservation = usage::hold(&mut tx, reserve).await?;
            tx.commit().await?;
            Ok::<_, AppError>(reservation)
        })
    };

    let (out, rx) = mpsc::channel::<TurnEvent>(64);
    let turn = Turn {
        state: state.clone(),
        question,
        tenant: ctx.tenant_id.clone(),
        conversation: conversation.id.clone(),
        message: MessageId::new(),
        persona,
        by,
        grounding,
    };
    tokio::spawn(turn.run(request, upstream, out));
    Ok(rx)
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
    /// The passages retrieved for the question; sent as `citations` before the answer.
    grounding: Grounding,
}

/// The client's end of the stream; `alive` turns false once it is gone.
struct Client {
    out: mpsc::Sender<TurnEvent>,
    alive: bool,
}

impl Client {
    async fn send(&mut self, ev: TurnEvent) {
        if self.alive {
            self.alive = self.out.send(ev).await.is_ok();
        }
    }
}

fn event(name: &'static str, data: serde_json::Value) -> TurnEvent {
    TurnEvent { name, data }
}

impl Turn {
    async fn run(
        mut self,
        request: ChatRequest,
        mut upstream: mpsc::Receiver<StreamEvent>,
        out: mpsc::Sender<TurnEvent>,
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
        client
            .send(event("citations", self.grounding.event()))
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
                citations: self.grounding.stored(),
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
