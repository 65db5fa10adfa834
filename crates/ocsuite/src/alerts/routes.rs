//! HTTP handlers: the alert inbox and what a member can do with an alert.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Alert, Change, Filter};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{AlertId, MeetingId};
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Member;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest snooze.
const MAX_SNOOZE_DAYS: i64 = 90;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(ack))
        .routes(routes!(snooze))
        .routes(routes!(resolve))
        .routes(routes!(escalate))
}

fn alert_id(id: &str) -> Result<AlertId> {
    AlertId::parse(id).ok_or(AppError::NotFound("alert"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// active (default: not resolved), open, acknowledged, snoozed, resolved, all.
    #[param(inline)]
    pub status: Option<Filter>,
    /// 1-200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Alerts {
    pub alerts: Vec<Alert>,
    /// Alerts that need someone now (the nav badge).
    pub open: i64,
}

/// The inbox: the most severe and newest first.
#[utoipa::path(get, path = "/alerts", params(ListQuery), tag = "alerts", responses((status = 200, body = Alerts)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Alerts>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-200"));
    }
    let now = state.clock.now();
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let alerts = super::list(&mut tx, q.status.unwrap_or_default(), limit, now).await?;
    let open = super::open_count(&mut tx, now).await?;
    tx.commit().await?;
    Ok(Json(Alerts { alerts, open }))
}

#[utoipa::path(get, path = "/alerts/{id}", tag = "alerts",
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<Alert>> {
    let id = alert_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let a = super::get(&mut tx, &id, state.clock.now()).await?;
    tx.commit().await?;
    Ok(Json(a))
}

async fn apply(
    state: &AppState,
    ctx: &TenantCtx,
    id: &str,
    change: Change<'_>,
    action: &str,
) -> Result<Json<Alert>> {
    let id = alert_id(id)?;
    let now = state.clock.now();
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let detail = match &change {
        Change::Snooze(until) => json!({"until": until}),
        Change::Resolve(note) => json!({"note": note}),
        _ => json!({}),
    };
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let a = super::change(&mut tx, &id, change, &by, now).await?;
    audit::record(&mut tx, ctx, action, "alert", id.as_str(), detail).await?;
    tx.commit().await?;
    Ok(Json(a))
}

/// Someone is on it.
#[utoipa::path(post, path = "/alerts/{id}/ack", tag = "alerts",
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn ack(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<Json<Alert>> {
    apply(&state, &ctx, &id, Change::Acknowledge, "alert.acknowledge").await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeIn {
    /// Until this time…
    pub until: Option<DateTime<Utc>>,
    /// …or for this many hours.
    pub hours: Option<u32>,
}

/// Hides the alert until a time; it counts as open again after it.
#[utoipa::path(post, path = "/alerts/{id}/snooze", request_body = SnoozeIn, tag = "alerts",
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn snooze(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<SnoozeIn>,
) -> Result<Json<Alert>> {
    let now = state.clock.now();
    let until = match (input.until, input.hours) {
        (Some(u), None) => u,
        (None, Some(h)) => now + Duration::hours(i64::from(h)),
        _ => {
            return Err(AppError::invalid(
                "until",
                "give either `until` (a time) or `hours`",
            ));
        }
    };
    if until <= now {
        return Err(AppError::invalid(
            "until",
            "the snooze must end in the future",
        ));
    }
    if until > now + Duration::days(MAX_SNOOZE_DAYS) {
        return Err(AppError::invalid(
            "until",
            format!("a snooze lasts at most {MAX_SNOOZE_DAYS} days"),
        ));
    }
    apply(&state, &ctx, &id, Change::Snooze(until), "alert.snooze").await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveIn {
    /// What was done about it.
    #[serde(default)]
    pub note: Option<String>,
}

/// Closes the alert, with a note on what was done.
#[utoipa::path(post, path = "/alerts/{id}/resolve", request_body = ResolveIn, tag = "alerts",
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ResolveIn>,
) -> Result<Json<Alert>> {
    let note = input
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 2000) {
        return Err(AppError::invalid(
            "note",
            "the note is longer than 2000 characters",
        ));
    }
    apply(&state, &ctx, &id, Change::Resolve(note), "alert.resolve").await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Escalated {
    pub alert: Alert,
    pub meeting_id: MeetingId,
}

/// Holds a board meeting on the alert: its title is the agenda and its evidence the
/// context. The meeting runs in the background; the alert is acknowledged and links it.
#[utoipa::path(post, path = "/alerts/{id}/escalate", tag = "alerts",
    responses((status = 202, body = Escalated), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn escalate(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Escalated>)> {
    let alert_id = alert_id(&id)?;
    let now = state.clock.now();
    let alert = {
        let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
        let a = super::get(&mut tx, &alert_id, now).await?;
        tx.commit().await?;
        a
    };
    if alert.status == "resolved" {
        return Err(AppError::Conflict(
            "this alert is resolved; it cannot be escalated".into(),
        ));
    }
    let context = format!("{}\n\n{}", alert.body, alert.evidence.as_text());
    let input = crate::board::plan::MeetingIn {
        agenda: format!("Alert: {}. What should we do?", alert.title)
            .chars()
            .take(crate::board::MAX_AGENDA_CHARS)
            .collect(),
        personas: None,
        rounds: None,
        context: Some(
            context
                .chars()
                .take(crate::board::MAX_CONTEXT_CHARS)
                .collect(),
        ),
        chair: None,
    };
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let (plan, tx) = crate::board::plan::prepare(
        &state,
        &ctx.tenant_id,
        ctx.role,
        by.clone(),
        input,
        std::time::Instant::now(),
    )
    .await?;
    let meeting_id = plan.id.clone();
    tokio::spawn(crate::board::plan::run_unwatched(plan, tx));
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let alert = super::change(&mut tx, &alert_id, Change::Escalated(&meeting_id), &by, now).await?;
    audit::record(
        &mut tx,
        &ctx,
        "alert.escalate",
        "alert",
        alert_id.as_str(),
        json!({"meeting_id": meeting_id}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(Escalated { alert, meeting_id })))
}
