//! HTTP handlers under `/api/v1/email`: campaigns, their recipients, sending and
//! cancelling, and the suppression list.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CampaignInput, Recipient};
use crate::audit;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{CampaignId, TaskId};
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::TenantCtx;
use crate::tenancy::extract::{Admin, Member};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(send))
        .routes(routes!(cancel))
        .routes(routes!(recipients))
        .routes(routes!(list_suppressions, suppress))
        .routes(routes!(unsuppress))
}

fn campaign_id(id: &str) -> Result<CampaignId> {
    CampaignId::parse(id).ok_or(AppError::NotFound("campaign"))
}

fn actor(ctx: &TenantCtx) -> String {
    format!("{}:{}", ctx.actor.kind(), ctx.actor.id())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Campaigns {
    /// Each campaign with its `stats`.
    #[schema(value_type = Vec<Object>)]
    pub campaigns: Vec<Value>,
}

/// Campaigns, newest first, with their counts.
#[utoipa::path(get, path = "/email/campaigns", tag = "email", responses((status = 200, body = Campaigns)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<Campaigns>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let mut campaigns = Vec::new();
    for c in super::list(&mut tx, 200).await? {
        let s = super::stats(&mut tx, &c.id).await?;
        campaigns.push(super::with_stats(c, s));
    }
    tx.commit().await?;
    Ok(Json(Campaigns { campaigns }))
}

/// Creates a draft campaign.
#[utoipa::path(post, path = "/email/campaigns", request_body = CampaignInput, tag = "email",
    responses((status = 201, body = Object), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(input): ApiJson<CampaignInput>,
) -> Result<(StatusCode, Json<Value>)> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let stages = crate::leadtracker::stages(&mut tx).await?;
    let checked = input.check(None, &stages)?;
    let id = super::insert(&mut tx, &checked, "manual", &actor(&ctx)).await?;
    let c = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(super::with_stats(c, super::Stats::default())),
    ))
}

/// A campaign with its counts and how many it would reach now.
#[utoipa::path(get, path = "/email/campaigns/{id}", tag = "email",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let id = campaign_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let c = super::get(&mut tx, &id).await?;
    let s = super::stats(&mut tx, &id).await?;
    let (reach, skipped) = super::reach(&mut tx, &c.audience.0).await?;
    tx.commit().await?;
    let mut v = super::with_stats(c, s);
    v["audience_reach"] = json!({"recipients": reach, "skipped": skipped});
    Ok(Json(v))
}

/// Edits a draft.
#[utoipa::path(patch, path = "/email/campaigns/{id}", request_body = CampaignInput, tag = "email",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<CampaignInput>,
) -> Result<Json<Value>> {
    let id = campaign_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let c = super::get(&mut tx, &id).await?;
    if c.status != "draft" {
        return Err(AppError::Conflict(format!(
            "only a draft can be edited; this campaign is {}",
            c.status
        )));
    }
    let stages = crate::leadtracker::stages(&mut tx).await?;
    let checked = input.check(Some(&c), &stages)?;
    super::update(&mut tx, &id, &checked).await?;
    let c = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(super::with_stats(c, super::Stats::default())))
}

/// Deletes a campaign that is not scheduled or sending (cancel it first).
#[utoipa::path(delete, path = "/email/campaigns/{id}", tag = "email",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = campaign_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let c = super::get(&mut tx, &id).await?;
    if matches!(c.status.as_str(), "scheduled" | "sending") {
        return Err(AppError::Conflict(format!(
            "the campaign is {}; cancel it before deleting it",
            c.status
        )));
    }
    tx.execute(
        scoped("DELETE FROM email_recipients WHERE tenant_id = $1 AND campaign_id = $2").bind(&id),
    )
    .await?;
    tx.execute(scoped("DELETE FROM email_campaigns WHERE tenant_id = $1 AND id = $2").bind(&id))
        .await?;
    audit::record(
        &mut tx,
        &ctx,
        "campaign.delete",
        "campaign",
        id.as_str(),
        json!({"name": c.name}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendIn {
    /// When to start (default now; at most 30 days ahead).
    pub at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Sending {
    #[schema(value_type = Object)]
    pub campaign: Value,
    #[schema(value_type = String)]
    pub task_id: TaskId,
}

/// Sends (or schedules) a draft: an `email.campaign_send` task is queued. The caller needs
/// the role the approval policy requires for external sends.
#[utoipa::path(post, path = "/email/campaigns/{id}/send", request_body = SendIn, tag = "email",
    responses((status = 202, body = Sending), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<SendIn>,
) -> Result<(StatusCode, Json<Sending>)> {
    let id = campaign_id(&id)?;
    let now = Utc::now();
    let at = match input.at {
        Some(t) if t > now + chrono::Duration::days(30) => {
            return Err(AppError::invalid("at", "at may be at most 30 days ahead"));
        }
        Some(t) => t.max(now),
        None => now,
    };
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let needed =
        crate::approvals::min_role(&mut tx, ocsuite_module_sdk::SideEffect::ExternalSend).await?;
    if !ctx.role.at_least(needed) {
        return Err(AppError::Forbidden(format!(
            "sending a campaign needs the {} role or higher (approval policy); you are {}",
            needed.as_str(),
            ctx.role.as_str()
        )));
    }
    let c = super::get(&mut tx, &id).await?;
    if c.status != "draft" {
        return Err(AppError::Conflict(format!(
            "only a draft can be sent; this campaign is {}",
            c.status
        )));
    }
    super::module::channel_ready(&state, &mut tx, &c.channel).await?;
    let (reach, _) = super::reach(&mut tx, &c.audience.0).await?;
    if reach == 0 {
        return Err(AppError::Conflict(
            "nobody to send to: the audience is empty or every address is suppressed".into(),
        ));
    }
    let resolved =
        crate::modules::resolve(&state.registry, &mut tx, "email.campaign_send", None).await?;
    let task = TaskId::new();
    let resource = crate::policy::Resource {
        kind: "capability".into(),
        id: task.to_string(),
        capability: resolved.spec.name.clone(),
        side_effect: resolved.spec.side_effect.as_str().into(),
        recipients: i64::try_from(reach).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "capability.run", resource).await?;
    let input = json!({"campaign_id": id});
    let ev = crate::tasks::insert_queued(
        &mut tx,
        &task,
        &resolved.spec,
        &input,
        None,
        &actor(&ctx),
        0,
        at,
    )
    .await?;
    tx.execute(
        scoped("UPDATE email_campaigns SET status = 'scheduled', scheduled_at = $2, task_id = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $5")
            .bind(at)
            .bind(&task)
            .bind(now)
            .bind(&id),
    )
    .await?;
    audit::record(
        &mut tx,
        &ctx,
        "campaign.send",
        "campaign",
        id.as_str(),
        json!({"task_id": task, "at": at, "recipients": reach}),
    )
    .await?;
    let c = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    state.bus.after_commit(vec![ev]);
    state.jobs_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(Sending {
            campaign: super::with_stats(c, super::Stats::default()),
            task_id: task,
        }),
    ))
}

/// Cancels a scheduled or sending campaign: recipients not yet sent are not sent.
#[utoipa::path(post, path = "/email/campaigns/{id}/cancel", tag = "email",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let id = campaign_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let c = super::get(&mut tx, &id).await?;
    if !matches!(c.status.as_str(), "scheduled" | "sending") {
        return Err(AppError::Conflict(format!(
            "only a scheduled or sending campaign can be cancelled; this one is {}",
            c.status
        )));
    }
    super::set_status(&mut tx, &id, "cancelled").await?;
    tx.execute(
        scoped("UPDATE email_recipients SET status = 'cancelled', reason = 'the campaign was cancelled' \
                           WHERE tenant_id = $1 AND campaign_id = $2 AND status = 'pending'")
            .bind(&id),
    )
    .await?;
    audit::record(
        &mut tx,
        &ctx,
        "campaign.cancel",
        "campaign",
        id.as_str(),
        json!({}),
    )
    .await?;
    let c = super::get(&mut tx, &id).await?;
    let s = super::stats(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(super::with_stats(c, s)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecipientsQuery {
    /// `pending`, `sent`, `failed`, `skipped` or `cancelled`.
    pub status: Option<String>,
    /// 1-5000 (default 500).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Recipients {
    pub recipients: Vec<Recipient>,
}

/// Each recipient's status, with the reason for a skip or failure.
#[utoipa::path(get, path = "/email/campaigns/{id}/recipients", params(RecipientsQuery), tag = "email",
    responses((status = 200, body = Recipients), (status = 404, body = ErrorBody)))]
pub async fn recipients(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RecipientsQuery>,
) -> Result<Json<Recipients>> {
    let id = campaign_id(&id)?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=5000).contains(&limit) {
        return Err(AppError::invalid("limit", "limit must be 1-5000"));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    super::get(&mut tx, &id).await?;
    let recipients = super::recipients(&mut tx, &id, q.status.as_deref(), limit).await?;
    tx.commit().await?;
    Ok(Json(Recipients { recipients }))
}

#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Suppression {
    pub email: String,
    /// `unsubscribed`, `bounced` or `manual`.
    pub reason: String,
    pub campaign_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Suppressions {
    pub suppressions: Vec<Suppression>,
}

/// Addresses that never receive campaign or single emails.
#[utoipa::path(get, path = "/email/suppressions", tag = "email", responses((status = 200, body = Suppressions)))]
pub async fn list_suppressions(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<Suppressions>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let suppressions = tx
        .fetch_all(
            scoped("SELECT email, reason, campaign_id, created_at FROM email_suppressions WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 5000"),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(Suppressions { suppressions }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressIn {
    pub email: String,
}

/// Blocks an address by hand.
#[utoipa::path(post, path = "/email/suppressions", request_body = SuppressIn, tag = "email",
    responses((status = 201), (status = 200, description = "already suppressed"), (status = 422, body = ErrorBody)))]
pub async fn suppress(
    State(state): State<AppState>,
    ctx: Member,
    ApiJson(i): ApiJson<SuppressIn>,
) -> Result<StatusCode> {
    let email =
        crate::leadtracker::check_email(&i.email).map_err(|m| AppError::invalid("email", m))?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let added = super::suppress(&mut tx, &email, "manual", None).await?;
    if added {
        audit::record(&mut tx, &ctx, "email.suppress", "email", &email, json!({})).await?;
    }
    tx.commit().await?;
    Ok(if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

/// Lifts a suppression (admins: it overrides a person's unsubscribe).
#[utoipa::path(delete, path = "/email/suppressions/{email}", tag = "email",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn unsuppress(
    State(state): State<AppState>,
    ctx: Admin,
    Path(email): Path<String>,
) -> Result<StatusCode> {
    let email = email.trim().to_lowercase();
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let n = tx
        .execute(
            scoped("DELETE FROM email_suppressions WHERE tenant_id = $1 AND email = $2")
                .bind(&email),
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("suppression"));
    }
    audit::record(
        &mut tx,
        &ctx,
        "email.unsuppress",
        "email",
        &email,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
