//! Conversations with personas: storage and the prompt history.
//!
//! The user's message is stored before the model is called; the assistant's when the
//! stream ends — complete, or `partial` when the client went away or the upstream broke
//! after some text, or `failed` when nothing arrived — with the tokens, model and latency.

pub mod routes;
pub mod turn;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{AppError, Result};
use crate::ids::{ConversationId, MessageId};
use crate::knowledge::grounding::Citations;
use crate::llm::{self, ChatMessage, Role};
use crate::store::{TenantTx, scoped};

/// Oldest turns are dropped from the prompt once the history exceeds this many tokens.
pub const HISTORY_TOKEN_BUDGET: u32 = 6000;
/// The longest message a person may send, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16_000;

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Conversation {
    #[schema(value_type = String)]
    pub id: ConversationId,
    pub persona: String,
    pub title: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    #[schema(value_type = String)]
    pub id: MessageId,
    /// `user` or `assistant`.
    pub role: String,
    pub persona: String,
    pub content: String,
    pub model: Option<String>,
    /// `complete`, `partial` or `failed`.
    pub status: String,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: Option<i64>,
    /// 1 (thumbs up) or -1 (thumbs down).
    pub rating: Option<i64>,
    pub rating_comment: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The passages this answer drew on; `[n]` in `content` refers to item n.
    #[schema(value_type = Vec<crate::knowledge::grounding::Citation>)]
    pub citations: Citations,
    /// The tools this answer called, in order, with how each ended.
    #[schema(value_type = Vec<crate::agents::tools::CallOutcome>)]
    pub tool_calls: Vec<serde_json::Value>,
}

#[derive(sqlx::FromRow)]
struct ConversationRow {
    id: String,
    persona: String,
    title: String,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ConversationRow {
    fn into_out(self) -> Option<Conversation> {
        Some(Conversation {
            id: ConversationId::parse(&self.id)?,
            persona: self.persona,
            title: self.title,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    role: String,
    persona: String,
    content: String,
    model: Option<String>,
    status: String,
    finish_reason: Option<String>,
    error: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    latency_ms: Option<i64>,
    rating: Option<i64>,
    rating_comment: Option<String>,
    created_at: DateTime<Utc>,
    #[sqlx(try_from = "Option<String>")]
    citations: Citations,
    tool_calls: Option<String>,
}

impl MessageRow {
    fn into_out(self) -> Option<Message> {
        Some(Message {
            id: MessageId::parse(&self.id)?,
            role: self.role,
            persona: self.persona,
            content: self.content,
            model: self.model,
            status: self.status,
            finish_reason: self.finish_reason,
            error: self.error,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            latency_ms: self.latency_ms,
            rating: self.rating,
            rating_comment: self.rating_comment,
            created_at: self.created_at,
            citations: self.citations,
            tool_calls: self
                .tool_calls
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
        })
    }
}

/// A title from the first message: its first line, at most 80 characters.
fn title_from(message: &str) -> String {
    let line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("New conversation");
    let t: String = line.trim().chars().take(80).collect();
    if t.is_empty() {
        "New conversation".into()
    } else {
        t
    }
}

/// A new conversation, not yet stored (see [`insert`]).
pub fn draft(persona: &str, first_message: &str, by: &str) -> Conversation {
    let now = Utc::now();
    Conversation {
        id: ConversationId::new(),
        persona: persona.to_owned(),
        title: title_from(first_message),
        created_by: by.to_owned(),
        created_at: now,
        updated_at: now,
    }
}

pub async fn insert(tx: &mut TenantTx, c: &Conversation) -> Result<()> {
    tx.execute(
        scoped("INSERT INTO conversations (tenant_id, id, persona, title, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)")
            .bind(&c.id)
            .bind(c.persona.as_str())
            .bind(c.title.as_str())
            .bind(c.created_by.as_str())
            .bind(c.created_at),
    )
    .await?;
    Ok(())
}

pub async fn get(tx: &mut TenantTx, id: &ConversationId) -> Result<Conversation> {
    let row: Option<ConversationRow> = tx
        .fetch_optional(
            scoped("SELECT id, persona, title, created_by, created_at, updated_at FROM conversations WHERE tenant_id = $1 AND id = $2")
                .bind(id),
        )
        .await?;
    row.and_then(ConversationRow::into_out)
        .ok_or(AppError::NotFound("conversation"))
}

/// Newest first; optionally one persona's.
pub async fn list(
    tx: &mut TenantTx,
    persona: Option<&str>,
    limit: i64,
) -> Result<Vec<Conversation>> {
    let rows: Vec<ConversationRow> = tx
        .fetch_all(
            scoped("SELECT id, persona, title, created_by, created_at, updated_at FROM conversations \
                 WHERE tenant_id = $1 AND ($2 IS NULL OR persona = $2) ORDER BY updated_at DESC, id DESC LIMIT $3")
                .bind(persona)
                .bind(limit),
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(ConversationRow::into_out)
        .collect())
}

pub async fn rename(tx: &mut TenantTx, id: &ConversationId, title: &str) -> Result<Conversation> {
    let n = tx
        .execute(
            scoped("UPDATE conversations SET title = $2, updated_at = $3 WHERE tenant_id = $1 AND id = $4")
                .bind(title)
                .bind(Utc::now())
                .bind(id),
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("conversation"));
    }
    get(tx, id).await
}

pub async fn delete(tx: &mut TenantTx, id: &ConversationId) -> Result<()> {
    tx.execute(
        scoped("DELETE FROM messages WHERE tenant_id = $1 AND conversation_id = $2").bind(id),
    )
    .await?;
    let n = tx
        .execute(scoped("DELETE FROM conversations WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("conversation"));
    }
    Ok(())
}

pub async fn messages(tx: &mut TenantTx, id: &ConversationId) -> Result<Vec<Message>> {
    let rows: Vec<MessageRow> = tx
        .fetch_all(
            scoped("SELECT id, role, persona, content, model, status, finish_reason, error, prompt_tokens, completion_tokens, latency_ms, rating, rating_comment, created_at, citations, tool_calls \
                 FROM messages WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY created_at, id")
                .bind(id),
        )
        .await?;
    Ok(rows.into_iter().filter_map(MessageRow::into_out).collect())
}

/// A message to store.
pub struct NewMessage<'a> {
    pub conversation: &'a ConversationId,
    pub role: Role,
    pub persona: &'a str,
    pub content: &'a str,
    pub model: Option<&'a str>,
    pub status: &'a str,
    pub finish_reason: Option<&'a str>,
    pub error: Option<&'a str>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub latency_ms: Option<i64>,
    pub created_by: &'a str,
    /// The citations as stored (a JSON array), for an answer that used passages.
    pub citations: Option<String>,
    /// The tool calls as stored (a JSON array of outcomes), for an answer that made some.
    pub tool_calls: Option<String>,
}

pub async fn add_message(tx: &mut TenantTx, id: &MessageId, m: &NewMessage<'_>) -> Result<()> {
    let now = Utc::now();
    let role = match m.role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System => "system",
        Role::Tool => "tool",
    };
    tx.execute(
        scoped("INSERT INTO messages (tenant_id, id, conversation_id, role, persona, content, model, status, finish_reason, error, prompt_tokens, completion_tokens, latency_ms, created_by, created_at, citations, tool_calls) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)")
            .bind(id)
            .bind(m.conversation)
            .bind(role)
            .bind(m.persona)
            .bind(m.content)
            .bind(m.model)
            .bind(m.status)
            .bind(m.finish_reason)
            .bind(m.error)
            .bind(m.prompt_tokens)
            .bind(m.completion_tokens)
            .bind(m.latency_ms)
            .bind(m.created_by)
            .bind(now)
            .bind(m.citations.clone())
            .bind(m.tool_calls.clone()),
    )
    .await?;
    tx.execute(
        scoped("UPDATE conversations SET updated_at = $2 WHERE tenant_id = $1 AND id = $3")
            .bind(now)
            .bind(m.conversation),
    )
    .await?;
    Ok(())
}

pub async fn rate(
    tx: &mut TenantTx,
    id: &MessageId,
    rating: i64,
    comment: Option<&str>,
) -> Result<()> {
    let n = tx
        .execute(
            scoped("UPDATE messages SET rating = $2, rating_comment = $3 WHERE tenant_id = $1 AND id = $4 AND role = 'assistant'")
                .bind(rating)
                .bind(comment)
                .bind(id),
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("message"));
    }
    Ok(())
}

/// The conversation as prompt messages, newest kept, within [`HISTORY_TOKEN_BUDGET`].
/// Failed assistant turns are left out; partial ones are kept (the person saw them).
/// An answer that called tools carries a note of what they did and, for a proposed
/// task, what has become of it since (`now`: task id → status and error), so an
/// approval or a failure reaches the next turn.
pub fn history(
    messages: &[Message],
    now: &std::collections::HashMap<String, (String, Option<String>)>,
) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    let mut used = 0u32;
    for m in messages.iter().rev() {
        if m.tool_calls.is_empty() && (m.status == "failed" || m.content.is_empty()) {
            continue;
        }
        let mut content = m.content.clone();
        if !m.tool_calls.is_empty() {
            content.push_str(&tool_note(&m.tool_calls, now));
        }
        let cost = llm::estimate_tokens(&content) + 4;
        if used + cost > HISTORY_TOKEN_BUDGET && !out.is_empty() {
            break;
        }
        used += cost;
        let role = if m.role == "assistant" {
            Role::Assistant
        } else {
            Role::User
        };
        out.push(ChatMessage::new(role, content));
    }
    out.reverse();
    out
}

/// "[Tools used: …]" for an earlier answer.
fn tool_note(
    calls: &[serde_json::Value],
    now: &std::collections::HashMap<String, (String, Option<String>)>,
) -> String {
    let mut note = String::from("\n\n[Tools used in this answer:");
    for c in calls {
        let cap = c["capability"].as_str().unwrap_or("an unknown tool");
        let status = c["status"].as_str().unwrap_or("failed");
        let task = c["task_id"].as_str();
        note.push_str(&format!("\n- {cap}: {status}"));
        if let Some(t) = task {
            note.push_str(&format!(" (task {t})"));
            // "proposed" is what "awaiting_approval" looks like on the task.
            if let Some((s, e)) = now.get(t).filter(|(s, _)| s != status && s != "proposed") {
                note.push_str(&format!("; since then: {s}"));
                if let Some(e) = e {
                    note.push_str(&format!(" ({})", e.chars().take(200).collect::<String>()));
                }
            }
        }
    }
    note.push(']');
    crate::personas::defang(&note)
}

/// The current status (and error) of the tasks earlier answers proposed.
pub async fn proposed_now(
    tx: &mut TenantTx,
    conversation: &ConversationId,
) -> Result<std::collections::HashMap<String, (String, Option<String>)>> {
    let rows: Vec<(String, String, Option<String>)> = tx
        .fetch_all(
            scoped("SELECT id, status, error FROM tasks WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY id DESC LIMIT 200")
                .bind(conversation),
        )
        .await?;
    Ok(rows.into_iter().map(|(id, s, e)| (id, (s, e))).collect())
}
