//! The board room (a meeting streamed side by side), a past meeting, and chat.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::{Redirected, Shell, Viewer, render};
use crate::board::{ActionItem, Meeting, Turn};
use crate::ids::MeetingId;
use crate::personas::Persona;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "board.html")]
struct RoomPage {
    shell: Shell,
    personas: Vec<Persona>,
    agents: Vec<(String, String)>,
    meetings: Vec<Meeting>,
}

async fn agents(state: &AppState, v: &Viewer) -> Result<Vec<(String, String)>, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let list = crate::agents::list(&mut tx).await?;
    tx.commit().await?;
    Ok(list
        .into_iter()
        .filter(|a| a.enabled)
        .map(|a| (a.slug, a.name))
        .collect())
}

pub async fn room(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let agents = agents(&state, &v).await?;
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let meetings = crate::board::list(&mut tx, 10).await?;
    tx.commit().await?;
    Ok(render(&RoomPage {
        shell: Shell::new(&v, "Board room", "board"),
        personas: crate::personas::builtins(),
        agents,
        meetings,
    }))
}

#[derive(Template)]
#[template(path = "meeting.html")]
struct MeetingPage {
    shell: Shell,
    meeting: Meeting,
    turns: Vec<SpokenTurn>,
    items: Vec<ActionItem>,
}

impl MeetingPage {
    fn cites(&self) -> String {
        cites_json(&self.meeting.citations)
    }
}

/// A transcript turn with its speaker's display name (`CFO`, or the agent's name).
struct SpokenTurn {
    speaker: String,
    turn: Turn,
}

pub async fn meeting(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Response, Redirected> {
    let Some(id) = MeetingId::parse(&id) else {
        return Err(crate::error::AppError::NotFound("meeting").into());
    };
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let meeting = crate::board::get(&mut tx, &id).await?;
    let mut names: std::collections::HashMap<String, String> = Default::default();
    let mut turns = Vec::new();
    for turn in crate::board::turns(&mut tx, &id).await? {
        if !names.contains_key(&turn.persona) {
            let name = crate::agents::speaker(&mut tx, &turn.persona)
                .await?
                .map_or_else(|| turn.persona.clone(), |s| s.persona.name);
            names.insert(turn.persona.clone(), name);
        }
        let speaker = names[&turn.persona].clone();
        turns.push(SpokenTurn { speaker, turn });
    }
    let items = crate::board::action_items(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(render(&MeetingPage {
        shell: Shell::new(&v, "Board meeting", "board"),
        meeting,
        turns,
        items,
    }))
}

#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage {
    shell: Shell,
    personas: Vec<Persona>,
    agents: Vec<(String, String)>,
    conversations: Vec<crate::chat::Conversation>,
    current: Option<crate::chat::Conversation>,
    messages: Vec<crate::chat::Message>,
    /// The current status of tasks the conversation's agent proposed.
    now: std::collections::HashMap<String, (String, Option<String>)>,
}

/// Citations as the page hands them to its script (`data-citations`).
fn cites_json(c: &crate::knowledge::grounding::Citations) -> String {
    serde_json::to_string(c).unwrap_or_else(|_| "[]".into())
}

impl ChatPage {
    fn cites(&self, m: &crate::chat::Message) -> String {
        cites_json(&m.citations)
    }

    /// An answer's tool calls for its script (`data-tool-calls`), each with its task's
    /// status now (`now`), so a proposal approved since shows as such.
    fn tool_calls(&self, m: &crate::chat::Message) -> String {
        let calls: Vec<serde_json::Value> = m
            .tool_calls
            .iter()
            .cloned()
            .map(|mut c| {
                if let Some((status, _)) = c["task_id"].as_str().and_then(|t| self.now.get(t)) {
                    c["now"] = serde_json::json!(status);
                }
                c
            })
            .collect();
        serde_json::to_string(&calls).unwrap_or_else(|_| "[]".into())
    }

    /// A conversation's speaker as people name it: `CFO`, or the agent's name.
    fn speaker<'a>(&'a self, slug: &'a str) -> &'a str {
        self.personas
            .iter()
            .find(|p| p.slug == slug)
            .map(|p| p.name.as_str())
            .or_else(|| {
                self.agents
                    .iter()
                    .find(|(s, _)| s == slug)
                    .map(|(_, n)| n.as_str())
            })
            .unwrap_or(slug)
    }
}

#[derive(serde::Deserialize)]
pub struct ChatQuery {
    c: Option<String>,
}

/// Chat: the conversation list, the open conversation, and the box to continue it.
pub async fn chat(
    State(state): State<AppState>,
    v: Viewer,
    axum::extract::Query(q): axum::extract::Query<ChatQuery>,
) -> Result<Response, Redirected> {
    let agents = agents(&state, &v).await?;
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let conversations = crate::chat::list(&mut tx, None, 30).await?;
    let (current, messages, now) = match q.c.as_deref().map(crate::ids::ConversationId::parse) {
        Some(Some(id)) => (
            Some(crate::chat::get(&mut tx, &id).await?),
            crate::chat::messages(&mut tx, &id).await?,
            crate::chat::proposed_now(&mut tx, &id).await?,
        ),
        Some(None) => return Err(crate::error::AppError::NotFound("conversation").into()),
        None => (None, Vec::new(), Default::default()),
    };
    tx.commit().await?;
    Ok(render(&ChatPage {
        shell: Shell::new(&v, "Chat", "chat"),
        personas: crate::personas::builtins(),
        agents,
        conversations,
        current,
        messages,
        now,
    }))
}
