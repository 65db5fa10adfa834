//! HTTP handlers: call a meeting (SSE), list meetings, read one, rate one.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{self, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::meeting;
use super::plan::{self, MeetingIn};
use super::{ActionItem, Meeting, Turn, action_items, turns};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::MeetingId;
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Member;
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
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let (plan, tx) = plan::prepare(&state, &ctx.tenant_id, ctx.role, by, input, received).await?;
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
