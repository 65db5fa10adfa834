//! HTTP handlers: the banner for signed-in people; setting and clearing it for
//! operators (super-admins), audited in the platform log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Banner, Level};
use crate::auth::{CurrentUser, SuperAdmin};
use crate::error::{AppError, ErrorBody, Result};
use crate::json::ApiJson;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const MAX_TEXT: usize = 300;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get))
        .routes(routes!(set, clear))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BannerOut {
    /// None when no banner shows now.
    pub banner: Option<Banner>,
}

/// The system banner shown now, if any.
#[utoipa::path(get, path = "/banner", tag = "banner", responses((status = 200, body = BannerOut)))]
pub async fn get(State(state): State<AppState>, _me: CurrentUser) -> Json<BannerOut> {
    Json(BannerOut {
        banner: state.banner.current(Utc::now()),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BannerIn {
    pub level: Level,
    pub text: String,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
}

/// Shows a banner on every page (super-admins).
#[utoipa::path(put, path = "/admin/banner", request_body = BannerIn, tag = "banner",
    responses((status = 200, body = BannerOut), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    ApiJson(input): ApiJson<BannerIn>,
) -> Result<Json<BannerOut>> {
    let text = input.text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err(AppError::invalid(
            "text",
            format!("text must be 1 to {MAX_TEXT} characters"),
        ));
    }
    if input.ends_at.is_some_and(|e| e <= Utc::now()) {
        return Err(AppError::invalid(
            "ends_at",
            "ends_at must be in the future",
        ));
    }
    let mut tx = state.store.platform().await?;
    super::set(
        &mut tx,
        input.level,
        text,
        input.ends_at,
        me.user.id.as_str(),
    )
    .await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "banner.set",
        "banner",
        json!({"level": input.level, "text": text, "ends_at": input.ends_at}),
    )
    .await?;
    tx.commit().await?;
    state.banner.reload(&state.store).await?;
    Ok(Json(BannerOut {
        banner: state.banner.current(Utc::now()),
    }))
}

/// Removes the banner (super-admins).
#[utoipa::path(delete, path = "/admin/banner", tag = "banner",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn clear(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
) -> Result<StatusCode> {
    let mut tx = state.store.platform().await?;
    if !super::clear(&mut tx).await? {
        return Err(AppError::NotFound("banner"));
    }
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "banner.clear",
        "banner",
        json!({}),
    )
    .await?;
    tx.commit().await?;
    state.banner.reload(&state.store).await?;
    Ok(StatusCode::NO_CONTENT)
}
