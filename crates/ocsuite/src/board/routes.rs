//! HTTP handlers: call a meeting (SSE), list meetings, read one, rate one.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{self, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::meeting::{self, Plan};
use super::prompts::CapabilityLine;
use super::{
    ActionItem, MAX_AGENDA_CHARS, MAX_CONTEXT_CHARS, MAX_MEMBERS, Meeting, Turn, action_items,
    turns,
};
use crate::agents::{self, Speaker};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::MeetingId;
use crate::json::{ApiJson, ApiQuery};
use crate::llm::{ChatMessage, Role as LlmRole};
use crate::modules;
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::extract::Member;
use crate::tenancy::{TenantCtx, tenants};
use crate::usage;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hold))
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(rate))
}

/// Capabilities offered to the model for action items (the prompt stays bounded).
const MAX_PROMPT_CAPABILITIES: usize = 40;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeetingIn {
    /// What the board should decide.
    pub agenda: String,
    /// Members by slug (built-in personas or custom agents); default CEO, CFO, CMO.
    #[serde(default)]
    pub personas: Option<Vec<String>>,
    /// 1 (positions) or 2 (positions, then answers to each other); default 1.
    #[serde(default)]
    pub rounds: Option<u32>,
    /// Background for this meeting (figures, constraints).
    #[serde(default)]
    pub context: Option<String>,
    /// Who closes the meeting; default the CEO.
    #[serde(default)]
    pub chair: Option<String>,
}

fn bad(code: &'static str, message: impl Into<String>) -> AppError {
    AppError::bad_request(code, message)
}

/// Holds a board meeting; streams it as Server-Sent Events (see `board::meeting`).
#[utoipa::path(post, path = "/c-suite/board-meeting", request_body = MeetingIn, tag = "board",
    responses((status = 200, description = "text/event-stream"), (status = 400, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn hold(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(input): ApiJson<MeetingIn>,
) -> Result<impl IntoResponse> {
    let received = std::time::Instant::now();
    let agenda = input.agenda.trim().to_owned();
    if agenda.is_empty() {
        return Err(bad(
            "empty_agenda",
            "agenda is empty: say what the board should decide",
        ));
    }
    if agenda.chars().count() > MAX_AGENDA_CHARS {
        return Err(bad(
            "agenda_too_long",
            format!("agenda is longer than {MAX_AGENDA_CHARS} characters"),
        ));
    }
    let context = input
        .context
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if context
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CONTEXT_CHARS)
    {
        return Err(bad(
            "context_too_long",
            format!("context is longer than {MAX_CONTEXT_CHARS} characters"),
        ));
    }
    let rounds = input.rounds.unwrap_or(1);
    if !(1..=2).contains(&rounds) {
        return Err(bad("invalid_rounds", "rounds must be 1 or 2"));
    }
    let slugs = input
        .personas
        .unwrap_or_else(|| vec!["ceo".into(), "cfo".into(), "cmo".into()]);
    if slugs.is_empty() {
        return Err(bad("no_members", "name at least one persona to sit"));
    }
    if slugs.len() > MAX_MEMBERS {
        return Err(bad(
            "too_many_members",
            format!("at most {MAX_MEMBERS} members can sit at one meeting"),
        ));
    }

    // Retrieval first: it may wait on the embedding model, and holds no transaction.
    let question = match &context {
        Some(c) => format!("{agenda}\n{c}"),
        None => agenda.clone(),
    };
    let grounding = crate::knowledge::grounding::Grounding::retrieve(
        &state.knowledge,
        &ctx.tenant_id,
        &question,
    )
    .await;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let mut members: Vec<Speaker> = Vec::new();
    for slug in &slugs {
        if members.iter().any(|m| &m.persona.slug == slug) {
            return Err(bad("duplicate_member", format!("{slug} is listed twice")));
        }
        let s = agents::speaker(&mut tx, slug).await?.ok_or_else(|| {
            bad(
                "unknown_persona",
                format!(
                    "no persona or enabled agent `{}` in this company (see GET /api/v1/c-suite and /api/v1/agents)",
                    slug.chars().take(64).collect::<String>()
                ),
            )
        })?;
        members.push(s);
    }
    let chair_slug = input.chair.unwrap_or_else(|| "ceo".into());
    let seated = members
        .iter()
        .find(|m| m.persona.slug == chair_slug)
        .cloned();
    let chair = match seated {
        Some(s) => Some(s),
        None => agents::speaker(&mut tx, &chair_slug).await?,
    };
    let chair = chair.ok_or_else(|| {
        bad(
            "unknown_persona",
            format!(
                "no persona `{}` to chair",
                chair_slug.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let company = tenants::get(&mut tx, ctx.role).await?;
    let figures = crate::metrics::prompt_figures(&mut tx).await?;
    let catalog = modules::catalog(&state.registry, &mut tx).await?;
    let can_echo = catalog
        .iter()
        .any(|m| m.enabled && m.capabilities.iter().any(|c| c.name == "diagnostics.echo"));
    // Members may look things up in their turns (read-only tools); they propose work
    // through the meeting's action items, not mid-turn.
    let toolboxes: Vec<agents::tools::Toolbox> = members
        .iter()
        .map(|m| agents::tools::Toolbox::from_catalog(&catalog, m.capabilities.clone()).read_only())
        .collect();
    let capabilities: Vec<CapabilityLine> = catalog
        .iter()
        .filter(|m| m.enabled && m.name != "diagnostics")
        .flat_map(|m| m.capabilities.iter())
        .take(MAX_PROMPT_CAPABILITIES)
        .map(|c| CapabilityLine {
            name: c.name.clone(),
            side_effect: c.side_effect.as_str().to_owned(),
            description: c.description.clone(),
            input_schema: c.input_schema.to_string(),
        })
        .collect();

    // Reserve what the whole meeting may use: every turn, the synthesis and two
    // extraction calls, each at its prompt estimate plus its answer limit.
    let probe = vec![
        ChatMessage::new(
            LlmRole::System,
            crate::personas::system_prompt(
                &chair.persona,
                &company.name,
                &company.profile,
                chair.additions.as_deref(),
                figures.as_deref(),
                grounding.prompt_block().as_deref(),
            ),
        ),
        ChatMessage::new(
            LlmRole::User,
            format!("{agenda}{}", context.clone().unwrap_or_default()),
        ),
    ];
    let per_call = crate::llm::estimate_prompt_tokens(&probe) + 1500;
    let calls = members.len() as u32 * rounds + 3;
    let reserve = per_call.saturating_mul(calls);
    usage::check(&mut tx, &state.meter, reserve).await?;
    let reservation = usage::hold(&mut tx, reserve).await?;

    let id = MeetingId::new();
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let offline = state.llm.name() == "offline";
    tx.execute(
        scoped("INSERT INTO meetings (tenant_id, id, agenda, context, personas, rounds, chair, status, offline, prompt_tokens, \
             completion_tokens, created_by, created_at, citations) VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, 0, 0, $9, $10, $11)")
            .bind(&id)
            .bind(agenda.as_str())
            .bind(context.clone())
            .bind(json!(slugs).to_string())
            .bind(i64::from(rounds))
            .bind(chair.persona.slug.as_str())
            .bind(offline)
            .bind(by.as_str())
            .bind(chrono::Utc::now())
            .bind(grounding.stored()),
    )
    .await?;

    let plan = Plan {
        state: state.clone(),
        tenant: ctx.tenant_id.clone(),
        id,
        agenda,
        context,
        members,
        chair,
        rounds,
        company: company.name,
        profile: company.profile,
        figures,
        documents: grounding.prompt_block(),
        grounding,
        by,
        reservation,
        offline,
        capabilities,
        toolboxes,
        can_echo,
        received,
    };
    let (out, rx) = mpsc::channel::<std::result::Result<sse::Event, Infallible>>(256);
    // The meeting row and the token hold commit beside the first model calls (see
    // `meeting::run`); everything that could refuse the meeting has run.
    tokio::spawn(meeting::run(plan, tx, out));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1-100, default 20.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Meetings {
    pub meetings: Vec<Meeting>,
}

/// The tenant's meetings, newest first.
#[utoipa::path(get, path = "/board-meetings", params(ListQuery), tag = "board",
    responses((status = 200, body = Meetings)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Meetings>> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-100"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let meetings = super::list(&mut tx, limit).await?;
    tx.commit().await?;
    Ok(Json(Meetings { meetings }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeetingDetail {
    pub meeting: Meeting,
    /// Every turn in order; round 0 is the chair's synthesis.
    pub transcript: Vec<Turn>,
    /// With each proposed task's live status.
    pub action_items: Vec<ActionItem>,
}

fn meeting_id(id: &str) -> Result<MeetingId> {
    MeetingId::parse(id).ok_or(AppError::NotFound("meeting"))
}

/// One meeting: transcript, synthesis, action items and their tasks' states.
#[utoipa::path(get, path = "/board-meetings/{id}", tag = "board",
    responses((status = 200, body = MeetingDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<MeetingDetail>> {
    let id = meeting_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let meeting = super::get(&mut tx, &id).await?;
    let transcript = turns(&mut tx, &id).await?;
    let action_items = action_items(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(MeetingDetail {
        meeting,
        transcript,
        action_items,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatingIn {
    /// 1 (useless) to 5 (excellent).
    pub rating: i64,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Rates a meeting.
#[utoipa::path(post, path = "/board-meetings/{id}/rating", request_body = RatingIn, tag = "board",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rate(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RatingIn>,
) -> Result<StatusCode> {
    let id = meeting_id(&id)?;
    if !(1..=5).contains(&input.rating) {
        return Err(AppError::invalid("rating", "rating must be 1 to 5"));
    }
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
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::rate(&mut tx, &id, input.rating, comment, &by).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
