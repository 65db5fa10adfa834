//! The LLM gateway: one way to stream a chat completion, whatever serves it.
//!
//! A [`Provider`] turns a [`ChatRequest`] into a channel of [`StreamEvent`]s: text deltas,
//! tool calls, the usage report, then `Done` — or one terminal `Error` saying what went
//! wrong. The producer runs in its own task; dropping the receiver (the client went away)
//! stops it and drops the upstream request.
//!
//! Providers: [`openai::OpenAi`] for any OpenAI-compatible server (Fireworks, OpenAI,
//! Ollama, vLLM, llama.cpp, LiteLLM), with timeouts, retries before the first token and
//! a circuit breaker; and [`offline::Offline`], used when no API key is configured, which
//! answers deterministically and says how to configure a model.
//!
//! Servers differ in what they accept (`response_format` kinds, `tools`,
//! `stream_options`); [`compat`] learns per model what works and asks accordingly, so
//! callers always get text deltas and tool calls the same way.

pub mod compat;
pub mod measured;
pub mod offline;
pub mod openai;
mod sse;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::Config;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    #[default]
    User,
    Assistant,
    /// A tool's result, answering the assistant's call `tool_call_id`.
    Tool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// The calls an assistant message made (it may have text too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `Tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            ..Self::default()
        }
    }

    /// The assistant's turn that asked for `calls` (with any text it wrote first).
    pub fn calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
            tool_calls: calls,
            tool_call_id: None,
        }
    }

    /// The result of the call `id`, as data for the model.
    pub fn tool_result(id: &str, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(id.to_owned()),
        }
    }
}

/// A function the model may call: OpenAI's `tools[].function`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolSpec {
    /// `^[a-zA-Z0-9_-]{1,64}$`, as every server requires.
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// One completion to stream.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Ask for JSON matching this schema (OpenAI `response_format: json_schema`); servers
    /// that support it constrain decoding, so the answer parses. The caller validates
    /// anyway.
    pub json_schema: Option<JsonSchema>,
    /// Functions the model may call; empty: none. The provider offers them natively or,
    /// where the server refuses `tools`, through a JSON protocol; either way calls arrive
    /// as [`StreamEvent::ToolCall`].
    pub tools: Vec<ToolSpec>,
}

/// A named JSON Schema for structured output.
#[derive(Clone, Debug)]
pub struct JsonSchema {
    pub name: &'static str,
    pub schema: serde_json::Value,
}

/// A function call the model asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text, possibly invalid).
    pub arguments: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// True when the upstream sent no usage and these are our own count.
    pub estimated: bool,
}

/// Why a stream ended early. `code` is stable and goes to clients.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    pub code: &'static str,
    pub message: String,
}

impl LlmError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    ToolCall(ToolCall),
    Usage(Usage),
    /// The normal end, with the upstream's finish reason (`stop`, `length`, `tool_calls`).
    Done {
        finish_reason: String,
    },
    /// The abnormal end.
    Error(LlmError),
}

/// Something that streams chat completions.
pub trait Provider: Send + Sync + 'static {
    /// `openai` or `offline`.
    fn name(&self) -> &'static str;
    /// Starts streaming `req`. The channel ends after `Done` or `Error`.
    fn stream(&self, req: ChatRequest) -> mpsc::Receiver<StreamEvent>;
    /// How this provider asks `model` for structured output and tools, as learned so
    /// far; None where the question does not apply (offline).
    fn support(&self, _model: &str) -> Option<compat::ModelSupport> {
        None
    }
    /// One embedding vector per input text, in order.
    fn embed<'a>(
        &'a self,
        model: &'a str,
        texts: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>>;
}

/// Reads a whole completion: its text, usage and error.
pub async fn collect(mut rx: mpsc::Receiver<StreamEvent>) -> (String, Usage, Option<String>) {
    let mut text = String::new();
    let mut usage = None;
    let mut error = Some("the model stream ended without finishing".to_owned());
    while let Some(ev) = rx.recv().await {
        match ev {
            StreamEvent::Delta(d) => text.push_str(&d),
            StreamEvent::Usage(u) => usage = Some(u),
            StreamEvent::ToolCall(_) => {}
            StreamEvent::Done { .. } => error = None,
            StreamEvent::Error(e) => error = Some(e.message),
        }
    }
    let usage = usage.unwrap_or(Usage {
        prompt_tokens: 0,
        completion_tokens: estimate_tokens(&text),
        estimated: true,
    });
    (text, usage, error)
}

/// The configured provider: OpenAI-compatible with a key, offline without one.
pub fn from_config(config: &Config) -> Arc<dyn Provider> {
    match config
        .llm_api_key
        .as_ref()
        .filter(|k| !k.expose().trim().is_empty())
    {
        Some(key) => Arc::new(openai::OpenAi::new(openai::Settings {
            base_url: config.llm_base_url.trim_end_matches('/').to_owned(),
            api_key: key.clone(),
            connect_timeout: std::time::Duration::from_secs(config.llm_connect_timeout_secs.into()),
            read_timeout: std::time::Duration::from_secs(config.llm_read_timeout_secs.into()),
            max_retries: config.llm_max_retries,
        })),
        None => Arc::new(offline::Offline),
    }
}

/// A rough token count for text (≈ 4 characters a token), for budgets and for upstreams
/// that report no usage.
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count() as u32;
    chars.div_ceil(4).max(u32::from(!text.is_empty()))
}

pub fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    messages
        .iter()
        .map(|m| {
            estimate_tokens(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
                    .sum::<u32>()
                + 4
        })
        .sum()
}
