//! HTTP handlers: the company's webhook endpoints (admins), a test message, and each
//! endpoint's delivery log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Delivery, NewWebhook, Webhook};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::WebhookId;
use crate::json::{ApiJson, ApiQuery};
use crate::notifications::preferences::CATEGORIES;
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most endpoints one company may keep.
const MAX_WEBHOOKS: usize = 20;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(delete))
        .routes(routes!(test))
        .routes(routes!(deliveries))
}

fn webhook_id(id: &str) -> Result<WebhookId> {
    WebhookId::parse(id).ok_or(AppError::NotFound("webhook"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Webhooks {
    pub webhooks: Vec<Webhook>,
}

/// The company's endpoints. Only admins see whole URLs: a chat's incoming-webhook URL
/// is itself the key to post into that channel, so members see its host.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", responses((status = 200, body = Webhooks)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Webhooks>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let mut webhooks = super::list(&mut tx).await?;
    tx.commit().await?;
    if !ctx.role.at_least(crate::tenancy::Role::Admin) {
        for w in &mut webhooks {
            w.url = reqwest::Url::parse(&w.url)
                .ok()
                .and_then(|u| u.host_str().map(|h| format!("{}://{h}/…", u.scheme())))
                .unwrap_or_else(|| "…".into());
        }
    }
    Ok(Json(Webhooks { webhooks }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    pub url: String,
    /// `standard` (Standard Webhooks, the default) or `text` (`{"text": …}` for Slack
    /// and Teams incoming webhooks).
    #[serde(default)]
    pub format: Option<String>,
    /// Which categories it receives: alerts.critical, alerts.warning, alerts.info,
    /// approvals, task_outcomes, digests.
    pub categories: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    pub webhook: Webhook,
    /// The signing secret: shown only now. Verify `webhook-signature` with it.
    pub secret: String,
}

/// Adds an endpoint. Its URL must be http(s) and, unless the operator allows private
/// networks, on the public internet (422 `url_not_allowed`).
#[utoipa::path(post, path = "/webhooks", request_body = WebhookIn, tag = "webhooks",
    responses((status = 201, body = Created), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<WebhookIn>,
) -> Result<(StatusCode, Json<Created>)> {
    ctx.deny_support("creating a webhook, whose signing secret it would see")?;
    let url = input.url.trim().to_owned();
    let parsed = reqwest::Url::parse(&url).map_err(|e| {
        AppError::unprocessable("invalid_url", "url", format!("url is not a URL: {e}"))
    })?;
    if !matches!(parsed.scheme(), "https" | "http") || url.len() > 2000 {
        return Err(AppError::unprocessable(
            "invalid_url",
            "url",
            "url must be an http(s) URL of at most 2000 characters",
        ));
    }
    crate::modules::ssrf::check_destination(&url, state.config.mcp_private_allowed())
        .await
        .map_err(|m| {
            AppError::unprocessable(
                "url_not_allowed",
                "url",
                format!("this URL cannot receive webhooks: {m}"),
            )
        })?;
    let format = input.format.unwrap_or_else(|| "standard".into());
    if format != "standard" && format != "text" {
        return Err(AppError::unprocessable(
            "invalid_format",
            "format",
            "format must be `standard` (Standard Webhooks) or `text` (Slack, Teams)",
        ));
    }
    if input.categories.is_empty() {
        return Err(AppError::unprocessable(
            "no_categories",
            "categories",
            format!("choose at least one category: {}", CATEGORIES.join(", ")),
        ));
    }
    if let Some(bad) = input
        .categories
        .iter()
        .find(|c| !CATEGORIES.contains(&c.as_str()))
    {
        return Err(AppError::unprocessable(
            "unknown_category",
            "categories",
            format!(
                "unknown category `{}`; the categories are {}",
                bad.chars().take(64).collect::<String>(),
                CATEGORIES.join(", ")
            ),
        ));
    }
    let description = input
        .description
        .unwrap_or_default()
        .trim()
        .chars()
        .take(200)
        .collect();
    let mut categories = input.categories;
    categories.sort();
    categories.dedup();
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "webhook".into(),
        id: String::new(),
        operation: "create".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "webhook.edit", resource).await?;
    if super::list(&mut tx).await?.len() >= MAX_WEBHOOKS {
        return Err(AppError::Conflict(format!(
            "a company can keep at most {MAX_WEBHOOKS} webhook endpoints; delete one first"
        )));
    }
    let (webhook, secret) = super::create(
        &mut tx,
        &state.crypto,
        NewWebhook {
            url,
            format,
            categories,
            description,
            created_by: format!("{}:{}", ctx.actor.kind(), ctx.actor.id()),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        &ctx,
        "webhook.create",
        "webhook",
        webhook.id.as_str(),
        json!({"url": webhook.url, "format": webhook.format, "categories": webhook.categories}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(Created { webhook, secret })))
}

#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = webhook_id(&id)?;
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "webhook".into(),
        id: id.to_string(),
        operation: "delete".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "webhook.edit", resource).await?;
    super::delete(&mut tx, &id).await?;
    audit::record(
        &mut tx,
        &ctx,
        "webhook.delete",
        "webhook",
        id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryOut {
    pub delivery: Delivery,
}

/// Sends a `webhook.test` message now; follow it in the delivery log.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks",
    responses((status = 202, body = DeliveryOut), (status = 404, body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryOut>)> {
    let id = webhook_id(&id)?;
    let now = chrono::Utc::now();
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let w = super::get(&mut tx, &id).await?;
    let delivery = super::queue_delivery(
        &mut tx,
        &id,
        &w.format,
        "webhook.test",
        &json!({"message": "A test message from ocsuite: this endpoint is set up.", "webhook_id": id}),
        "A test message from ocsuite: this endpoint is set up.",
        now,
    )
    .await?;
    let delivery = super::delivery(&mut tx, &delivery).await?;
    tx.commit().await?;
    state.jobs_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(DeliveryOut { delivery })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// 1-200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}

/// The endpoint's messages, newest first, with each one's status and last error.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", params(DeliveriesQuery), tag = "webhooks",
    responses((status = 200, body = Deliveries), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Deliveries>> {
    let id = webhook_id(&id)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-200"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    super::get(&mut tx, &id).await?;
    let deliveries = super::deliveries(&mut tx, &id, limit).await?;
    tx.commit().await?;
    Ok(Json(Deliveries { deliveries }))
}
