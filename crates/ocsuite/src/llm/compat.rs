//! What each model server accepts, learned per model, and the request body that follows.
//!
//! OpenAI-compatible servers agree on streaming and disagree on the rest: some reject
//! `response_format: json_schema` (accepting only `json_object`, or nothing), some reject
//! `tools`, some reject `stream_options`. Rather than a table of vendors (which goes
//! stale and cannot know a self-hoster's build), the client starts with the richest
//! request and steps down one level when the server's error **names** the feature:
//!
//! - structured output: `json_schema` (strict) → `json_object` with the schema in the
//!   prompt and in llama.cpp's `schema` field → the schema in the prompt only (the
//!   callers validate, salvage and re-ask anyway);
//! - tools: native `tools` → a JSON protocol through structured output
//!   (`{"answer", "tool_calls": [{"name", "arguments"}]}`), decoded here back into
//!   ordinary tool calls;
//! - `stream_options.include_usage` → left out (usage is then estimated).
//!
//! What worked is remembered per model for the life of the process and logged once; it
//! is shown per model in `GET /api/v1/c-suite`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};

use super::{ChatMessage, ChatRequest, Role, ToolCall};

/// How to ask for structured output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Structured {
    JsonSchema,
    JsonObject,
    PromptOnly,
}

/// How to offer tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tools {
    Native,
    /// A JSON answer carrying the calls, through structured output.
    Json,
}

/// What a model's server accepts, as far as the process has learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ModelSupport {
    pub structured_output: Structured,
    pub tools: Tools,
    /// Whether `stream_options.include_usage` is sent.
    pub stream_usage: bool,
    /// True once a server refused something for this model (so this is learned, not
    /// the default).
    pub learned: bool,
}

impl Default for ModelSupport {
    fn default() -> Self {
        Self {
            structured_output: Structured::JsonSchema,
            tools: Tools::Native,
            stream_usage: true,
            learned: false,
        }
    }
}

/// A feature a server refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Structured,
    Tools,
    StreamOptions,
}

/// What a request body used, to tell which refusal is about what.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub structured: bool,
    pub tools: bool,
    pub stream_options: bool,
    /// The answer is the JSON tool protocol: buffer it and decode it at the end.
    pub json_tools: bool,
}

/// The per-model memory of what works.
#[derive(Default)]
pub struct Memory(Mutex<HashMap<String, ModelSupport>>);

impl Memory {
    pub fn get(&self, model: &str) -> ModelSupport {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(model).copied().unwrap_or_default()
    }

    /// Steps `model` down one level on `feature`; false when there is no lower level
    /// (the refusal is then the caller's error).
    pub fn downgrade(&self, model: &str, feature: Feature, why: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = m.entry(model.to_owned()).or_default();
        let before = *s;
        match feature {
            Feature::Structured => {
                s.structured_output = match s.structured_output {
                    Structured::JsonSchema => Structured::JsonObject,
                    _ => Structured::PromptOnly,
                }
            }
            Feature::Tools => s.tools = Tools::Json,
            Feature::StreamOptions => s.stream_usage = false,
        }
        if *s == before {
            return false;
        }
        s.learned = true;
        tracing::warn!(model, ?feature, structured_output = ?s.structured_output, tools = ?s.tools,
            stream_usage = s.stream_usage, reason = why,
            "the model server refused a request feature; asking differently from now on");
        true
    }
}

/// The feature an upstream's error message names, among those the request used.
pub fn refused_feature(detail: &str, sent: &Sent) -> Option<Feature> {
    let d = detail.to_lowercase();
    if sent.stream_options && d.contains("stream_options") {
        return Some(Feature::StreamOptions);
    }
    if sent.structured
        && [
            "response_format",
            "json_schema",
            "schema",
            "grammar",
            "json_object",
        ]
        .iter()
        .any(|w| d.contains(w))
    {
        return Some(Feature::Structured);
    }
    if sent.tools && (d.contains("tool") || d.contains("function")) {
        return Some(Feature::Tools);
    }
    None
}

/// The name of the JSON tool protocol's schema.
const TOOL_PROTOCOL: &str = "tool_protocol";

/// The chat-completions body for `req` as `support` says to ask, and what it used.
pub fn body(req: &ChatRequest, support: ModelSupport) -> (Value, Sent) {
    let mut sent = Sent::default();
    let json_tools = !req.tools.is_empty() && support.tools == Tools::Json;
    let mut messages: Vec<ChatMessage> = req.messages.clone();
    // The schema the answer must match: the caller's, or the tool protocol's.
    let schema = if json_tools {
        sent.json_tools = true;
        messages = messages.into_iter().map(flatten).collect();
        add_to_system(&mut messages, &protocol_prompt(req));
        Some((TOOL_PROTOCOL, protocol_schema(req)))
    } else {
        req.json_schema.as_ref().map(|s| (s.name, s.schema.clone()))
    };
    if let Some((_, schema)) = &schema
        && support.structured_output != Structured::JsonSchema
    {
        add_to_system(
            &mut messages,
            &format!(
                "Reply with only a JSON object, no prose and no code fence, that matches this JSON Schema:\n{schema}"
            ),
        );
    }
    let mut body = json!({
        "model": req.model,
        "messages": messages.iter().map(wire).collect::<Vec<_>>(),
        "stream": true,
    });
    if support.stream_usage {
        body["stream_options"] = json!({"include_usage": true});
        sent.stream_options = true;
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = req.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if let Some((name, schema)) = schema {
        match support.structured_output {
            Structured::JsonSchema => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": true},
                });
                sent.structured = true;
            }
            Structured::JsonObject => {
                // `schema` is llama.cpp's way to constrain a json_object answer; others
                // ignore it or refuse it (which steps down once more).
                body["response_format"] = json!({"type": "json_object", "schema": schema});
                sent.structured = true;
            }
            Structured::PromptOnly => {}
        }
    }
    if !req.tools.is_empty() && !json_tools {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        sent.tools = true;
    }
    (body, sent)
}

/// One message as OpenAI's wire format has it.
fn wire(m: &ChatMessage) -> Value {
    match m.role {
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.as_deref().unwrap_or_default(),
            "content": m.content,
        }),
        Role::Assistant if !m.tool_calls.is_empty() => json!({
            "role": "assistant",
            "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
            "tool_calls": m.tool_calls.iter().map(|c| json!({
                "id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })).collect::<Vec<_>>(),
        }),
        _ => json!({"role": m.role, "content": m.content}),
    }
}

/// Tool turns as plain turns, for a server that knows no tool messages.
fn flatten(m: ChatMessage) -> ChatMessage {
    match m.role {
        Role::Tool => ChatMessage::new(
            Role::User,
            format!(
                "Result of tool call {}:\n{}",
                m.tool_call_id.unwrap_or_default(),
                m.content
            ),
        ),
        Role::Assistant if !m.tool_calls.is_empty() => {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments}))
                .collect();
            ChatMessage::new(
                Role::Assistant,
                json!({"answer": m.content, "tool_calls": calls}).to_string(),
            )
        }
        _ => m,
    }
}

fn add_to_system(messages: &mut Vec<ChatMessage>, text: &str) {
    match messages.iter_mut().find(|m| m.role == Role::System) {
        Some(m) => {
            m.content.push_str("\n\n");
            m.content.push_str(text);
        }
        None => messages.insert(0, ChatMessage::new(Role::System, text)),
    }
}

fn protocol_prompt(req: &ChatRequest) -> String {
    let mut s = String::from(
        "You can call tools. To call one or more, reply with {\"answer\": \"\", \"tool_calls\": [{\"name\": <tool>, \"arguments\": <the arguments object as a JSON string>}]}; their results come back in the next message. To answer, reply with {\"answer\": <your answer>, \"tool_calls\": []}.\nTools:",
    );
    for t in &req.tools {
        s.push_str(&format!(
            "\n- {}: {} Arguments schema: {}",
            t.name, t.description, t.parameters
        ));
    }
    s
}

fn protocol_schema(req: &ChatRequest) -> Value {
    let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
    json!({
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "tool_calls": {"type": "array", "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "enum": names}, "arguments": {"type": "string"}},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            }},
        },
        "required": ["answer", "tool_calls"],
        "additionalProperties": false,
    })
}

/// Decodes a JSON-protocol answer into its text and calls. An answer that is not the
/// protocol (the model wrote prose) is all text, so nothing it said is lost.
pub fn decode_protocol(text: &str) -> (String, Vec<ToolCall>) {
    let trimmed = text.trim();
    let candidate = match (trimmed.find('{'), trimmed.rfind('}')) {
        (Some(a), Some(b)) if a < b => &trimmed[a..=b],
        _ => return (text.to_owned(), Vec::new()),
    };
    let Ok(v) = serde_json::from_str::<Value>(candidate) else {
        return (text.to_owned(), Vec::new());
    };
    if !v.is_object() || (v.get("answer").is_none() && v.get("tool_calls").is_none()) {
        return (text.to_owned(), Vec::new());
    }
    let answer = v["answer"].as_str().unwrap_or_default().to_owned();
    let calls = v["tool_calls"]
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, c)| ToolCall {
                    id: format!("call_{}", i + 1),
                    name: c["name"].as_str().unwrap_or_default().to_owned(),
                    // Arguments as a string (the schema) or, from a looser model, an object.
                    arguments: match &c["arguments"] {
                        Value::String(s) => s.clone(),
                        Value::Null => "{}".into(),
                        other => other.to_string(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    (answer, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_what_to_drop() {
        let all = Sent {
            structured: true,
            tools: true,
            stream_options: true,
            json_tools: false,
        };
        let cases = [
            (
                "response_format type json_schema is not supported",
                Some(Feature::Structured),
            ),
            (
                "'response_format.type' must be 'json_object' or 'text'",
                Some(Feature::Structured),
            ),
            (
                "Unrecognized request argument supplied: tools",
                Some(Feature::Tools),
            ),
            (
                "stream_options is not supported",
                Some(Feature::StreamOptions),
            ),
            ("model not found", None),
        ];
        for (detail, want) in cases {
            assert_eq!(refused_feature(detail, &all), want, "{detail}");
        }
        // A feature the request did not use is never blamed.
        assert_eq!(
            refused_feature("tools are not supported", &Sent::default()),
            None
        );
    }

    #[test]
    fn memory_steps_down_once_per_level() {
        let m = Memory::default();
        assert!(m.downgrade("m", Feature::Structured, "x"));
        assert_eq!(m.get("m").structured_output, Structured::JsonObject);
        assert!(m.downgrade("m", Feature::Structured, "x"));
        assert!(!m.downgrade("m", Feature::Structured, "x"));
        assert_eq!(m.get("m").structured_output, Structured::PromptOnly);
        assert!(m.get("m").learned && !m.get("other").learned);
    }

    #[test]
    fn protocol_answers_decode_to_calls_or_text() {
        let (a, c) = decode_protocol(
            r#"{"answer": "", "tool_calls": [{"name": "crm__find", "arguments": "{\"q\":\"x\"}"}]}"#,
        );
        assert_eq!(a, "");
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].name.as_str(), c[0].arguments.as_str()),
            ("crm__find", r#"{"q":"x"}"#)
        );
        let (a, c) = decode_protocol("Just prose, {not json}.");
        assert_eq!((a.as_str(), c.len()), ("Just prose, {not json}.", 0));
    }
}
