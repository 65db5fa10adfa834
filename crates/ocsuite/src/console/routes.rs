//! HTTP handlers of the operator console (super-admins; 404 to everyone else).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::deletion::{self, Deletion};
use super::health::{self, Health};
use super::{TenantFacts, TenantSummary};
use crate::audit::AuditOut;
use crate::auth::SuperAdmin;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{DeletionId, TenantId};
use crate::json::{ApiJson, ApiQuery};
use crate::queue::Depth;
use crate::security::SecurityEventOut;
use crate::state::AppState;
use crate::store::sql;
use crate::tenancy::members::MemberOut;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(suspend))
        .routes(routes!(unsuspend))
        .routes(routes!(health_check))
        .routes(routes!(security_events))
        .routes(routes!(platform_audit))
        .routes(routes!(request_deletion))
        .routes(routes!(list_deletions))
        .routes(routes!(show_deletion, cancel_deletion))
        .routes(routes!(approve_deletion))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Part of a name or an owner's email, or a whole tenant id.
    #[serde(default)]
    pub q: String,
    /// 1-200 (default 50).
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantSummary>,
    /// How many companies match in all.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Companies, newest first: search by name, owner email or id.
#[utoipa::path(get, path = "/admin/tenants", tag = "console", params(ListQuery),
    responses((status = 200, body = TenantList), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _me: SuperAdmin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TenantList>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            "limit must be between 1 and 200",
        ));
    }
    if q.offset < 0 {
        return Err(AppError::invalid("offset", "offset cannot be negative"));
    }
    if q.q.chars().count() > 200 {
        return Err(AppError::invalid("q", "a search is at most 200 characters"));
    }
    let mut tx = state.store.platform_read().await?;
    let (items, total) = super::search(&mut tx, &q.q, limit, q.offset, Utc::now()).await?;
    tx.commit().await?;
    Ok(Json(TenantList {
        items,
        total,
        limit,
        offset: q.offset,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageDay {
    pub day: String,
    pub tokens: i64,
    pub cost_micros: i64,
    pub requests: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantPage {
    pub tenant: TenantFacts,
    /// `active` or `suspended`.
    pub status: String,
    pub members: Vec<MemberOut>,
    /// Model usage per day over the last 30 days.
    pub usage: Vec<UsageDay>,
    /// The latest 20 entries of its audit log.
    pub audit: Vec<AuditOut>,
    pub queues: Vec<Depth>,
    /// Its latest support sessions.
    pub impersonations: Vec<crate::impersonation::ImpersonationOut>,
}

/// The tenant in a path, 404 for a malformed id or the reserved HQ tenant.
pub(crate) fn tenant_in_path(id: &str) -> Result<TenantId> {
    TenantId::parse(id)
        .filter(|t| !crate::tenancy::is_reserved(t))
        .ok_or(AppError::NotFound("tenant"))
}

/// One company: members, usage over time, recent audit and queue health.
#[utoipa::path(get, path = "/admin/tenants/{id}", tag = "console",
    responses((status = 200, body = TenantPage), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    _me: SuperAdmin,
    Path(id): Path<String>,
) -> Result<Json<TenantPage>> {
    let tenant = tenant_in_path(&id)?;
    let mut tx = state.store.tenant_read(&tenant).await?;
    let facts = super::facts(&mut tx)
        .await?
        .ok_or(AppError::NotFound("tenant"))?;
    let members = crate::tenancy::members::list(&mut tx).await?;
    let from = (Utc::now() - Duration::days(30)).date_naive();
    let usage = super::usage_by_day(&mut tx, from)
        .await?
        .into_iter()
        .map(|(day, tokens, cost_micros, requests)| UsageDay {
            day,
            tokens,
            cost_micros,
            requests,
        })
        .collect();
    let audit = crate::audit::list(&mut tx, 20, None).await?;
    let queues = crate::queue::tenant_depths(&mut tx).await?;
    let impersonations = crate::impersonation::list(&mut tx, 10).await?;
    tx.commit().await?;
    Ok(Json(TenantPage {
        status: if facts.suspended_at.is_some() {
            "suspended"
        } else {
            "active"
        }
        .into(),
        tenant: facts,
        members,
        usage,
        audit,
        queues,
        impersonations,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendIn {
    /// Why, in words the company's people will read (3-500 characters).
    pub reason: String,
}

/// Suspends a company: its writes get 403 `tenant_suspended`, its jobs and triggers
/// wait, its people see the reason on every page and can still read their data.
#[utoipa::path(post, path = "/admin/tenants/{id}/suspend", request_body = SuspendIn, tag = "console",
    responses((status = 200, body = TenantFacts), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn suspend(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<SuspendIn>,
) -> Result<Json<TenantFacts>> {
    let tenant = tenant_in_path(&id)?;
    let reason = input.reason.trim();
    if !(3..=500).contains(&reason.chars().count()) {
        return Err(AppError::invalid(
            "reason",
            "say why in 3 to 500 characters; the company's people will read it",
        ));
    }
    let mut tx = state.store.tenant(&tenant).await?;
    super::suspend(&mut tx, &me.user.id, reason, Utc::now()).await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "tenant.suspend",
        &format!("tenant:{tenant}"),
        json!({ "reason": reason }),
    )
    .await?;
    let facts = super::facts(&mut tx)
        .await?
        .ok_or(AppError::NotFound("tenant"))?;
    tx.commit().await?;
    state.suspensions.set(&tenant, Some(reason.to_owned()));
    state.jobs_wake.notify_waiters();
    Ok(Json(facts))
}

/// Lifts a suspension: writes, jobs and triggers resume.
#[utoipa::path(post, path = "/admin/tenants/{id}/unsuspend", tag = "console",
    responses((status = 200, body = TenantFacts), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn unsuspend(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(id): Path<String>,
) -> Result<Json<TenantFacts>> {
    let tenant = tenant_in_path(&id)?;
    let mut tx = state.store.tenant(&tenant).await?;
    super::unsuspend(&mut tx, &me.user.id).await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "tenant.unsuspend",
        &format!("tenant:{tenant}"),
        json!({}),
    )
    .await?;
    let facts = super::facts(&mut tx)
        .await?
        .ok_or(AppError::NotFound("tenant"))?;
    tx.commit().await?;
    state.suspensions.set(&tenant, None);
    state.jobs_wake.notify_waiters();
    Ok(Json(facts))
}

/// Platform health: queues, dead letters, models, connectors, security events.
#[utoipa::path(get, path = "/admin/health", tag = "console",
    responses((status = 200, body = Health), (status = 404, body = ErrorBody)))]
pub async fn health_check(State(state): State<AppState>, _me: SuperAdmin) -> Result<Json<Health>> {
    Ok(Json(health::check(&state).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SecurityQuery {
    /// One action (`login.failed`, `impersonation.start` …).
    pub action: Option<String>,
    /// One person's email.
    pub email: Option<String>,
    /// 1-500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecurityEvents {
    pub items: Vec<SecurityEventOut>,
}

/// Security events across the platform, newest first, with filters.
#[utoipa::path(get, path = "/admin/security-events", tag = "console", params(SecurityQuery),
    responses((status = 200, body = SecurityEvents), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn security_events(
    State(state): State<AppState>,
    _me: SuperAdmin,
    ApiQuery(q): ApiQuery<SecurityQuery>,
) -> Result<Json<SecurityEvents>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let mut tx = state.store.platform_read().await?;
    let items =
        health::security_events(&mut tx, q.action.as_deref(), q.email.as_deref(), limit).await?;
    tx.commit().await?;
    Ok(Json(SecurityEvents { items }))
}

#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PlatformAuditEntry {
    pub id: String,
    pub actor_id: String,
    pub action: String,
    pub target: String,
    pub details: String,
    pub created_at: chrono::DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PlatformAudit {
    pub items: Vec<PlatformAuditEntry>,
}

/// The platform's own audit log (operator actions), newest first.
#[utoipa::path(get, path = "/admin/audit", tag = "console",
    responses((status = 200, body = PlatformAudit), (status = 404, body = ErrorBody)))]
pub async fn platform_audit(
    State(state): State<AppState>,
    _me: SuperAdmin,
) -> Result<Json<PlatformAudit>> {
    let mut tx = state.store.platform_read().await?;
    let items = tx
        .fetch_all(sql(
            "SELECT id, actor_id, action, target, details, created_at FROM platform_audit \
              ORDER BY created_at DESC, id DESC LIMIT 200",
        ))
        .await?;
    tx.commit().await?;
    Ok(Json(PlatformAudit { items }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletionIn {
    /// Why (10-500 characters), for the approver and the platform audit log.
    pub reason: String,
}

/// Asks for a company to be deleted; a different super-admin must approve within 24 h.
#[utoipa::path(post, path = "/admin/tenants/{id}/deletion", request_body = DeletionIn, tag = "console",
    responses((status = 201, body = Deletion), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn request_deletion(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DeletionIn>,
) -> Result<(StatusCode, Json<Deletion>)> {
    let tenant = tenant_in_path(&id)?;
    let reason = input.reason.trim();
    if !(10..=500).contains(&reason.chars().count()) {
        return Err(AppError::invalid(
            "reason",
            "say why in 10 to 500 characters; the approver reads it",
        ));
    }
    let mut tx = state.store.tenant(&tenant).await?;
    let did = deletion::request(&mut tx, &me.user.id, reason, Utc::now()).await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "tenant.delete_request",
        &format!("tenant:{tenant}"),
        json!({ "reason": reason, "deletion_id": did }),
    )
    .await?;
    let d = deletion::get(&mut tx, &did).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(d)))
}

fn deletion_in_path(id: &str) -> Result<DeletionId> {
    DeletionId::parse(id).ok_or(AppError::NotFound("deletion request"))
}

/// Approves another super-admin's request: the purge runs as a job and leaves its
/// manifest on the request and in the platform audit log.
#[utoipa::path(post, path = "/admin/deletions/{id}/approve", tag = "console",
    responses((status = 200, body = Deletion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn approve_deletion(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(id): Path<String>,
) -> Result<Json<Deletion>> {
    let did = deletion_in_path(&id)?;
    let hq = crate::knowledge::hq_tenant();
    let mut tx = state.store.tenant(&hq).await?;
    let d = deletion::get(&mut tx, &did).await?;
    deletion::approve(&mut tx, &d, &me.user.id, Utc::now()).await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "tenant.delete_approve",
        &format!("tenant:{}", d.target_tenant),
        json!({ "deletion_id": did, "requested_by": d.requested_by }),
    )
    .await?;
    let d = deletion::get(&mut tx, &did).await?;
    tx.commit().await?;
    state.jobs_wake.notify_one();
    Ok(Json(d))
}

/// Withdraws a request that still waits.
#[utoipa::path(delete, path = "/admin/deletions/{id}", tag = "console",
    responses((status = 200, body = Deletion), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_deletion(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    Path(id): Path<String>,
) -> Result<Json<Deletion>> {
    let did = deletion_in_path(&id)?;
    let mut tx = state.store.platform().await?;
    let d = deletion::get(&mut tx, &did).await?;
    deletion::cancel(&mut tx, &d).await?;
    crate::audit::record_platform(
        &mut tx,
        me.user.id.as_str(),
        "tenant.delete_cancel",
        &format!("tenant:{}", d.target_tenant),
        json!({ "deletion_id": did }),
    )
    .await?;
    let d = deletion::get(&mut tx, &did).await?;
    tx.commit().await?;
    Ok(Json(d))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Deletions {
    pub items: Vec<Deletion>,
}

/// Deletion requests, newest first.
#[utoipa::path(get, path = "/admin/deletions", tag = "console",
    responses((status = 200, body = Deletions), (status = 404, body = ErrorBody)))]
pub async fn list_deletions(
    State(state): State<AppState>,
    _me: SuperAdmin,
) -> Result<Json<Deletions>> {
    let mut tx = state.store.platform_read().await?;
    let items = deletion::list(&mut tx, 100).await?;
    tx.commit().await?;
    Ok(Json(Deletions { items }))
}

/// A deletion request.
#[utoipa::path(get, path = "/admin/deletions/{id}", tag = "console",
    responses((status = 200, body = Deletion), (status = 404, body = ErrorBody)))]
pub async fn show_deletion(
    State(state): State<AppState>,
    _me: SuperAdmin,
    Path(id): Path<String>,
) -> Result<Json<Deletion>> {
    let did = deletion_in_path(&id)?;
    let mut tx = state.store.platform_read().await?;
    let d = deletion::get(&mut tx, &did).await?;
    tx.commit().await?;
    Ok(Json(d))
}
