//! Board meetings: the whole board argues an agenda, the chair decides, and the
//! decision becomes action items — tasks proposed for approval, or manual follow-ups.
//!
//! A meeting ([`meeting::run`]) streams as SSE while it runs and is stored as it goes:
//! the `meetings` row when it starts; every turn (`meeting_turns`) with the synthesis;
//! then the action items, their proposed tasks and the final figures, in one
//! transaction. A client that disconnects does not stop the meeting; its result is at
//! `GET /api/v1/board-meetings/{id}`, where each action item shows its task's live
//! state.

pub mod items;
pub mod meeting;
pub mod plan;
pub mod prompts;
mod record;
pub mod routes;
mod tools;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::{AppError, Result};
use crate::ids::MeetingId;
use crate::store::cross_tenant;
use crate::store::{TenantTx, scoped};

/// Most members at one table.
pub const MAX_MEMBERS: usize = 8;
pub const MAX_AGENDA_CHARS: usize = 4000;
pub const MAX_CONTEXT_CHARS: usize = 8000;

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Meeting {
    pub id: String,
    pub agenda: String,
    pub context: Option<String>,
    #[sqlx(try_from = "String")]
    #[schema(value_type = Vec<String>)]
    pub personas: JsonList,
    pub rounds: i64,
    pub chair: String,
    /// `running`, `complete` or `failed`.
    pub status: String,
    pub synthesis: Option<String>,
    pub error: Option<String>,
    /// Run by the offline provider (no model configured).
    pub offline: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub duration_ms: Option<i64>,
    pub overhead_ms: Option<i64>,
    pub rating: Option<i64>,
    pub rating_comment: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The passages the members read; `[n]` in turns and synthesis refers to item n.
    #[sqlx(try_from = "Option<String>")]
    #[schema(value_type = Vec<crate::knowledge::grounding::Citation>)]
    pub citations: crate::knowledge::grounding::Citations,
}

/// A JSON array of strings stored as text.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct JsonList(pub Vec<String>);

impl TryFrom<String> for JsonList {
    type Error = serde_json::Error;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        serde_json::from_str(&s).map(JsonList)
    }
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Turn {
    pub seq: i64,
    pub persona: String,
    /// 1 and 2 are the members' rounds; 0 is the chair's synthesis.
    pub round: i64,
    pub content: String,
    /// `complete` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ActionItem {
    pub id: String,
    pub title: String,
    pub description: String,
    pub owner_persona: String,
    pub capability: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// `low`, `medium` or `high`.
    pub priority: String,
    /// `YYYY-MM-DD`.
    pub due_date: Option<String>,
    pub expected_impact: String,
    /// The proposed task (absent for a manual follow-up).
    pub task_id: Option<String>,
    /// The task's live status.
    pub task_status: Option<String>,
    pub task_error: Option<String>,
    /// Why a proposed capability did not become a task.
    pub note: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: String,
    title: String,
    description: String,
    owner_persona: String,
    capability: Option<String>,
    input: Option<String>,
    priority: String,
    due_date: Option<String>,
    expected_impact: String,
    task_id: Option<String>,
    note: Option<String>,
    task_status: Option<String>,
    task_error: Option<String>,
}

pub async fn get(tx: &mut TenantTx, id: &MeetingId) -> Result<Meeting> {
    tx.fetch_optional(
        scoped("SELECT id, agenda, context, personas, rounds, chair, status, synthesis, error, offline, prompt_tokens, completion_tokens, \
             duration_ms, overhead_ms, rating, rating_comment, created_by, created_at, finished_at, citations \
             FROM meetings WHERE tenant_id = $1 AND id = $2")
            .bind(id),
    )
    .await?
    .ok_or(AppError::NotFound("meeting"))
}

pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<Meeting>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT id, agenda, context, personas, rounds, chair, status, synthesis, error, offline, prompt_tokens, completion_tokens, \
                 duration_ms, overhead_ms, rating, rating_comment, created_by, created_at, finished_at, citations \
                 FROM meetings WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(limit),
        )
        .await?)
}

pub async fn turns(tx: &mut TenantTx, id: &MeetingId) -> Result<Vec<Turn>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT seq, persona, round, content, status, error, model, prompt_tokens, completion_tokens, latency_ms \
                 FROM meeting_turns WHERE tenant_id = $1 AND meeting_id = $2 ORDER BY seq")
                .bind(id),
        )
        .await?)
}

/// The meeting's action items, each with its task's current state.
pub async fn action_items(tx: &mut TenantTx, id: &MeetingId) -> Result<Vec<ActionItem>> {
    let rows: Vec<ItemRow> = tx
        .fetch_all(
            scoped("SELECT a.id, a.title, a.description, a.owner_persona, a.capability, a.input, a.priority, a.due_date, \
                   a.expected_impact, a.task_id, a.note, t.status AS task_status, t.error AS task_error \
                 FROM action_items a LEFT JOIN tasks t ON t.tenant_id = a.tenant_id AND t.id = a.task_id \
                 WHERE a.tenant_id = $1 AND a.meeting_id = $2 ORDER BY a.seq")
                .bind(id),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ActionItem {
            id: r.id,
            title: r.title,
            description: r.description,
            owner_persona: r.owner_persona,
            capability: r.capability,
            input: r.input.and_then(|i| serde_json::from_str(&i).ok()),
            priority: r.priority,
            due_date: r.due_date,
            expected_impact: r.expected_impact,
            task_id: r.task_id,
            task_status: r.task_status,
            task_error: r.task_error,
            note: r.note,
        })
        .collect())
}

/// A meeting still `running` after this long was cut off by a stopped server.
pub const STALE_AFTER_MINUTES: i64 = 30;

/// Marks meetings a stopped server left `running` as failed (every tenant; run by
/// housekeeping). Returns how many.
pub async fn fail_stale(store: &crate::store::Store) -> Result<u64> {
    let now = Utc::now();
    let before = now - chrono::Duration::minutes(STALE_AFTER_MINUTES);
    let mut tx = store.platform().await?;
    let n = cross_tenant::fail_stale_meetings(&mut tx, before, now).await?;
    tx.commit().await?;
    Ok(n)
}

/// Rates a finished meeting (1-5, with an optional comment); the latest rating counts.
pub async fn rate(
    tx: &mut TenantTx,
    id: &MeetingId,
    rating: i64,
    comment: Option<&str>,
    by: &str,
) -> Result<()> {
    let n = tx
        .execute(
            scoped("UPDATE meetings SET rating = $2, rating_comment = $3, rated_by = $4, rated_at = $5 \
                 WHERE tenant_id = $1 AND id = $6")
                .bind(rating)
                .bind(comment)
                .bind(by)
                .bind(Utc::now())
                .bind(id),
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("meeting"));
    }
    Ok(())
}
