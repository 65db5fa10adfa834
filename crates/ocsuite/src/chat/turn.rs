//! One chat turn, from question to stored answer: checks, prompt, budget hold, the model
//! call, relaying its stream, storing both messages and settling the tokens. The
//! handler (`routes.rs`) only turns the events into Server-Sent Events.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::json;
use tokio::sync::mpsc;

use super::NewMessage;
use crate::agents::{self, tools::CallOutcome, tools::Toolbox};
use crate::error::{AppError, Result};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::knowledge::grounding::Grounding;
use crate::llm::{ChatMessage, ChatRequest, Role, StreamEvent, ToolCall, Usage};
use crate::personas::{self, Persona};
use crate::state::AppState;
use crate::tenancy::{TenantCtx, tenants};
use crate::usage;

/// Most tokens an answer may take when the persona sets no limit.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// One event of the turn's stream: `message_start`, `citations`, `delta`, `tool_call`,
/// `tool_result`, `usage`, `message_end` or `error`, with its JSON data.
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
    let began = std::time::Instant::now();
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
    let toolbox = Toolbox::load(&state.registry, &mut tx, speaker.capabilities.clone()).await?;
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
            let now = if earlier.iter().any(|m| !m.tool_calls.is_empty()) {
                super::proposed_now(&mut tx, &id).await?
            } else {
                HashMap::new()
            };
            (c, super::history(&earlier, &now), false)
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
    messages.extend(earlier);
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
        tools: toolbox.specs(),
    };
    let upstream = state.llm.stream(request.clone());
    crate::telemetry::chat_overhead(began.elapsed());
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
                    tool_calls: None,
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
        toolbox,
        max_tokens,
        reserve,
    };
    tokio::spawn(turn.run(request, upstream, out));
    Ok(rx)
}

/// Most tool steps (model calls that end in tool calls) one answer may take.
pub const MAX_TOOL_STEPS: u32 = 5;
/// Most calls the model may make in one step; the rest are refused.
const MAX_CALLS_PER_STEP: usize = 8;
/// A step needs at least this many completion tokens left to be worth making.
const MIN_STEP_TOKENS: u32 = 64;

/// One assistant turn: relays the provider's stream to the client, runs the tools the
/// model calls (at most [`MAX_TOOL_STEPS`] steps), and stores the answer.
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
    toolbox: Toolbox,
    /// Completion tokens the whole answer may use, across its tool steps.
    max_tokens: u32,
    /// Tokens held for the answer; steps beyond it must fit the tenant's budget.
    reserve: u32,
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

/// How one model call ended.
struct Step {
    text: String,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    end: std::result::Result<String, (String, String)>,
}

/// What the tool steps of one answer have done so far.
#[derive(Default)]
struct ToolState {
    outcomes: Vec<CallOutcome>,
    /// (name, arguments) of every call made, to catch a model repeating itself.
    made: Vec<(String, String)>,
    /// Calls whose arguments were wrong, per tool: the second ends tool use.
    wrong: HashMap<String, u32>,
    /// Why tool use ended early, when it did.
    stop: Option<String>,
}

impl Turn {
    async fn run(
        self,
        mut request: ChatRequest,
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
        let mut usage = Usage::default();
        let mut tools = ToolState::default();
        let mut steps = 0u32;
        let end = loop {
            let step = relay(&mut client, &mut upstream).await;
            drop(std::mem::replace(&mut upstream, mpsc::channel(1).1));
            text.push_str(&step.text);
            let u = step.usage.unwrap_or_else(|| Usage {
                prompt_tokens: crate::llm::estimate_prompt_tokens(&request.messages),
                completion_tokens: crate::llm::estimate_tokens(&step.text),
                estimated: true,
            });
            usage.prompt_tokens += u.prompt_tokens;
            usage.completion_tokens += u.completion_tokens;
            usage.estimated |= u.estimated;
            match step.end {
                Err(e) => break Err(e),
                Ok(finish) if step.calls.is_empty() || request.tools.is_empty() => {
                    break Ok(finish);
                }
                Ok(_) => {}
            }
            steps += 1;
            self.act(&mut client, &mut request, step.text, step.calls, &mut tools)
                .await;
            if !client.alive {
                break Err((
                    "client_gone".into(),
                    "the client disconnected before the answer finished".into(),
                ));
            }
            let left = self.max_tokens.saturating_sub(usage.completion_tokens);
            if left < MIN_STEP_TOKENS {
                break Err((
                    "token_budget".into(),
                    "the answer used its token budget while calling tools; ask again for the rest"
                        .into(),
                ));
            }
            if steps >= MAX_TOOL_STEPS && tools.stop.is_none() {
                tools.stop = Some(format!(
                    "the limit of {MAX_TOOL_STEPS} tool steps per answer"
                ));
            }
            if let Some(why) = &tools.stop
                && !request.tools.is_empty()
            {
                request.tools.clear();
                request.messages.push(ChatMessage::new(
                    Role::System,
                    format!("No more tool calls in this answer ({why}). Answer the user now with what you have, and say what you could not look up or do."),
                ));
            }
            request.max_tokens = Some(left);
            let need = crate::llm::estimate_prompt_tokens(&request.messages) + left;
            if let Err(e) = self.fits_budget(usage, need).await {
                break Err(("budget_exceeded".into(), e));
            }
            upstream = self.state.llm.stream(request.clone());
        };
        self.finish(client, &request, text, usage, tools.outcomes, end, started)
            .await;
    }

    /// Runs the calls of one step, tells the client about each, and adds the step and
    /// its results to the request for the next.
    async fn act(
        &self,
        client: &mut Client,
        request: &mut ChatRequest,
        text: String,
        calls: Vec<ToolCall>,
        tools: &mut ToolState,
    ) {
        let caller = agents::tools::Caller {
            tenant: &self.tenant,
            agent: &self.persona.slug,
            conversation: Some(self.conversation.as_str()),
            meeting: None,
        };
        let mut results = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            let capability = self.toolbox.capability_of(&call.name);
            let input: serde_json::Value =
                serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!(call.arguments));
            client
                .send(event(
                    "tool_call",
                    json!({"id": call.id, "name": call.name, "capability": capability, "input": input}),
                ))
                .await;
            let key = (call.name.clone(), call.arguments.trim().to_owned());
            let outcome = if i >= MAX_CALLS_PER_STEP {
                refuse(
                    call,
                    capability,
                    format!("at most {MAX_CALLS_PER_STEP} tool calls per step"),
                )
            } else if tools.made.contains(&key) {
                tools.stop = Some("the same tool was called again with the same arguments".into());
                refuse(
                    call,
                    capability,
                    "you already made this exact call in this answer; use its result above".into(),
                )
            } else {
                tools.made.push(key);
                agents::tools::call(&self.state, &caller, &self.toolbox, call).await
            };
            if agents::tools::is_fixable(&outcome) {
                let n = tools.wrong.entry(call.name.clone()).or_default();
                *n += 1;
                if *n >= 2 {
                    tools.stop = Some(format!("the arguments for {} were wrong twice", call.name));
                }
            }
            client.send(event("tool_result", json!(outcome))).await;
            results.push(ChatMessage::tool_result(&call.id, outcome.for_model()));
            tools.outcomes.push(outcome);
        }
        request.messages.push(ChatMessage::calls(text, calls));
        request.messages.extend(results);
    }

    /// Whether a further step of `need` tokens fits: within the tokens held for the
    /// answer, or else within what is left of the tenant's monthly budget.
    async fn fits_budget(&self, used: Usage, need: u32) -> std::result::Result<(), String> {
        let total = used.prompt_tokens + used.completion_tokens + need;
        if total <= self.reserve {
            return Ok(());
        }
        let headroom = async {
            let mut tx = self.state.store.tenant_read(&self.tenant).await?;
            let h = usage::headroom(&mut tx, &self.state.meter).await?;
            tx.commit().await?;
            Ok::<_, AppError>(h)
        }
        .await
        .unwrap_or(0);
        if i64::from(total - self.reserve) <= headroom {
            Ok(())
        } else {
            Err(
                "the monthly token budget does not cover another tool step; the answer stops here"
                    .into(),
            )
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        mut self,
        mut client: Client,
        request: &ChatRequest,
        text: String,
        usage: Usage,
        outcomes: Vec<CallOutcome>,
        end: std::result::Result<String, (String, String)>,
        started: Instant,
    ) {
        client
            .send(event("usage", json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "estimated": usage.estimated})))
            .await;
        let (status, finish, error) = match &end {
            Ok(f) => ("complete", Some(f.as_str()), None),
            Err((_, m)) if !text.is_empty() || !outcomes.is_empty() => {
                ("partial", None, Some(m.as_str()))
            }
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
        let calls = (!outcomes.is_empty())
            .then(|| serde_json::to_string(&outcomes).ok())
            .flatten();
        let stored = self
            .store_answer(
                &reservation,
                &request.model,
                &text,
                (status, finish, error),
                usage,
                started.elapsed().as_millis() as i64,
                calls,
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
        (status, finish, error): (&str, Option<&str>, Option<&str>),
        usage: Usage,
        latency_ms: i64,
        tool_calls: Option<String>,
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
                tool_calls,
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

/// A call turned down before it ran.
fn refuse(call: &ToolCall, capability: Option<String>, why: String) -> CallOutcome {
    CallOutcome {
        id: call.id.clone(),
        capability,
        input: serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null),
        status: "refused",
        task_id: None,
        output: None,
        error: Some(why),
    }
}

/// Relays one model call to the client: text as `delta`s; tool calls collected.
async fn relay(client: &mut Client, upstream: &mut mpsc::Receiver<StreamEvent>) -> Step {
    let mut step = Step {
        text: String::new(),
        calls: Vec::new(),
        usage: None,
        end: Err((
            "upstream_cut".into(),
            "the model stream ended without finishing".into(),
        )),
    };
    loop {
        if !client.alive {
            step.end = Err((
                "client_gone".into(),
                "the client disconnected before the answer finished".into(),
            ));
            return step;
        }
        let ev = tokio::select! {
            ev = upstream.recv() => ev,
            // The client left while the model was quiet.
            _ = client.out.closed() => { client.alive = false; continue; }
        };
        let Some(ev) = ev else { return step };
        match ev {
            StreamEvent::Delta(d) => {
                step.text.push_str(&d);
                client.send(event("delta", json!({"text": d}))).await;
            }
            StreamEvent::ToolCall(t) => step.calls.push(t),
            StreamEvent::Usage(u) => step.usage = Some(u),
            StreamEvent::Done { finish_reason } => {
                step.end = Ok(finish_reason);
                return step;
            }
            StreamEvent::Error(e) => {
                step.end = Err((e.code.to_owned(), e.message));
                return step;
            }
        }
    }
}
