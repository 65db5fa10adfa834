//! HTTP handlers: the caller's notifications, marking them read, and the dev mailbox.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Notification;
use crate::error::{AppError, ErrorBody, Result};
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(mark_read))
        .routes(routes!(mailbox))
        .routes(routes!(get_preferences, put_preferences))
}

/// The caller's channels per category in this company (defaults filled in).
#[utoipa::path(get, path = "/me/notification-preferences", tag = "notifications",
    responses((status = 200, body = super::preferences::Preferences), (status = 403, body = ErrorBody)))]
pub async fn get_preferences(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<super::preferences::Preferences>> {
    let user = user_of(&ctx)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let p = super::preferences::get(&mut tx, user).await?;
    tx.commit().await?;
    Ok(Json(p))
}

/// Sets the caller's channels for the categories given; the others keep theirs.
#[utoipa::path(put, path = "/me/notification-preferences", request_body = super::preferences::Preferences,
    tag = "notifications",
    responses((status = 200, body = super::preferences::Preferences), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn put_preferences(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(input): ApiJson<super::preferences::Preferences>,
) -> Result<Json<super::preferences::Preferences>> {
    let user = user_of(&ctx)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let p = super::preferences::put(&mut tx, user, &input).await?;
    tx.commit().await?;
    Ok(Json(p))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only unread ones.
    #[serde(default)]
    pub unread: bool,
    /// 1-200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Notifications {
    pub notifications: Vec<Notification>,
    pub unread: usize,
}

fn user_of(ctx: &TenantCtx) -> Result<&crate::ids::UserId> {
    ctx.actor.user_id().ok_or_else(|| {
        AppError::Forbidden("notifications belong to people; API keys have none".into())
    })
}

/// The caller's notifications in this company, newest first.
#[utoipa::path(get, path = "/notifications", params(ListQuery), tag = "notifications",
    responses((status = 200, body = Notifications), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Notifications>> {
    let user = user_of(&ctx)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-200"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let notifications = super::list(&mut tx, user, q.unread, limit).await?;
    let unread = super::list(&mut tx, user, true, 200).await?.len();
    tx.commit().await?;
    Ok(Json(Notifications {
        notifications,
        unread,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadIn {
    /// These notifications; absent marks them all.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadOut {
    pub marked: u64,
}

/// Marks notifications read.
#[utoipa::path(post, path = "/notifications/read", request_body = ReadIn, tag = "notifications",
    responses((status = 200, body = ReadOut)))]
pub async fn mark_read(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(input): ApiJson<ReadIn>,
) -> Result<Json<ReadOut>> {
    let user = user_of(&ctx)?.clone();
    if input.ids.as_ref().is_some_and(|i| i.len() > 500) {
        return Err(AppError::invalid("ids", "at most 500 ids at once"));
    }
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let marked = super::mark_read(&mut tx, &user, input.ids.as_deref()).await?;
    tx.commit().await?;
    Ok(Json(ReadOut { marked }))
}

#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OutboxMessage {
    pub id: String,
    pub to_email: String,
    pub subject: String,
    pub body: String,
    /// `pending`, `sent`, `failed`, or `held` (no SMTP configured: kept here).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Mailbox {
    /// Whether SMTP is configured (otherwise messages are `held` here).
    pub smtp_configured: bool,
    pub messages: Vec<OutboxMessage>,
}

/// The company's outgoing email, newest first: the development mailbox when SMTP is not
/// configured, the delivery log when it is (admins).
#[utoipa::path(get, path = "/mailbox", tag = "notifications",
    responses((status = 200, body = Mailbox), (status = 403, body = ErrorBody)))]
pub async fn mailbox(State(state): State<AppState>, ctx: Admin) -> Result<Json<Mailbox>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let messages: Vec<OutboxMessage> = tx
        .fetch_all(
            scoped("SELECT id, to_email, subject, body, status, attempts, last_error, created_at, sent_at FROM outbox \
                 WHERE tenant_id = $1 ORDER BY id DESC LIMIT 200"),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(Mailbox {
        smtp_configured: state.mailer.is_configured(),
        messages,
    }))
}
