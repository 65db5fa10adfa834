//! Erasures: one person's data removed from a company, under dual control.
//!
//! One admin asks (the person's email address and why); a different admin approves
//! within [`APPROVAL_WINDOW_HOURS`]; then the `erase-person` job (in the HQ company's
//! queue, so it runs while the company is suspended) removes what is the person's and
//! strips them from the records that must stay ([`job`]). It ends with an
//! `erasure.completed` audit entry whose receipt lists what was removed. Receipts that
//! named the person keep only the commitments of those fields, so the log's proofs
//! still verify.
//!
//! Requesting and approving are privileged actions (`erasure.request`,
//! `erasure.approve`); a support session may do neither (a platform floor).

pub mod erase;
pub mod job;
pub mod routes;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{AppError, Result};
use crate::ids::{ApiKeyId, ErasureId, TenantId};
use crate::queue::NewJob;
use crate::state::AppState;
use crate::store::{TenantTx, scoped};
use crate::tenancy::{Actor, TenantCtx};

/// How long a request waits for its second admin.
pub const APPROVAL_WINDOW_HOURS: i64 = 72;
/// The queue erasure jobs run on (in the HQ company).
pub const ERASE_QUEUE: &str = "erase-person";

/// A request as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ErasureOut {
    pub id: String,
    /// The address, masked (`j…@example.com`); the address itself is dropped once done.
    pub email_hint: String,
    /// Whether the address belongs to someone who signed in to this company (while the
    /// request is open; once done, nothing links the request to an account).
    #[sqlx(skip)]
    pub has_account: bool,
    #[serde(skip)]
    pub user_id: Option<String>,
    pub reason: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    /// A different admin must approve before this.
    pub expires_at: DateTime<Utc>,
    /// `requested`, `approved` (the job is queued or running), `done`, `cancelled`,
    /// `expired` or `failed`.
    pub status: String,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What was removed (tables and counts), once done.
    #[schema(value_type = Option<Object>)]
    #[sqlx(skip)]
    pub manifest: Option<Value>,
    #[serde(skip)]
    #[sqlx(rename = "manifest")]
    pub manifest_text: Option<String>,
    /// The receipt that closes the erasure (`GET /receipts/{id}`).
    pub receipt_id: Option<String>,
    pub error: Option<String>,
}

macro_rules! columns {
    () => {
        "id, email_hint, user_id, reason, requested_by, requested_at, expires_at, status, \
         approved_by, approved_at, finished_at, manifest, receipt_id, error"
    };
}

fn finish(mut e: ErasureOut, now: DateTime<Utc>) -> ErasureOut {
    if e.status == "requested" && e.expires_at <= now {
        e.status = "expired".into();
    }
    e.has_account = e.user_id.is_some();
    e.manifest = e
        .manifest_text
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok());
    e
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureIn {
    /// The person's email address.
    pub email: String,
    /// Why (an erasure request received, a member who left); shown to the approver.
    pub reason: String,
}

/// `j…@example.com`: enough for the approver to recognise the request.
fn hint(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".into(),
    }
}

/// The record that stays once the address is gone: a hash of it, salted by the company.
fn subject_hash(tenant: &TenantId, email: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"ocsuite-erasure/v1\0");
    h.update(tenant.as_str().as_bytes());
    h.update([0u8]);
    h.update(email.as_bytes());
    hex::encode(h.finalize())
}

fn checked(input: &ErasureIn) -> Result<(String, String)> {
    let email = input.email.trim().to_lowercase();
    // Quotes and backslashes are refused: JSON escapes them, and an erasure finds the
    // address in stored JSON by its plain text.
    let ok = email.len() <= 254
        && !email
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\')
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if !ok {
        return Err(AppError::invalid(
            "email",
            "an email address like name@example.com",
        ));
    }
    let reason = input.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::invalid(
            "reason",
            "say why, in at most 500 characters",
        ));
    }
    Ok((email, reason))
}

/// Who the address is here: their user id when they have an account that is a member
/// or acted in this company, and their role when a member.
async fn subject(tx: &mut TenantTx, email: &str) -> Result<(Option<String>, Option<String>)> {
    let row: Option<(String, Option<String>)> = tx
        .fetch_optional(
            scoped(
                "SELECT u.id, m.role FROM users u LEFT JOIN memberships m \
                 ON m.user_id = u.id AND m.tenant_id = $1 WHERE lower(u.email) = $2",
            )
            .bind(email),
        )
        .await?;
    let Some((user, role)) = row else {
        return Ok((None, None));
    };
    if role.is_some() {
        return Ok((Some(user), role));
    }
    let acted: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT id FROM audit_log WHERE tenant_id = $1 AND actor_id = $2 LIMIT 1")
                .bind(&user),
        )
        .await?;
    Ok((acted.map(|_| user), None))
}

fn owner_refused() -> AppError {
    AppError::Conflict(
        "an owner cannot be erased: make another member owner, change this person's role, then ask again"
            .into(),
    )
}

pub async fn get(tx: &mut TenantTx, id: &ErasureId, now: DateTime<Utc>) -> Result<ErasureOut> {
    let q = concat!(
        "SELECT ",
        columns!(),
        " FROM erasures WHERE tenant_id = $1 AND id = $2"
    );
    let row: Option<ErasureOut> = tx.fetch_optional(scoped(q).bind(id)).await?;
    row.map(|e| finish(e, now))
        .ok_or(AppError::NotFound("erasure"))
}

/// The newest requests first.
pub async fn list(tx: &mut TenantTx, now: DateTime<Utc>) -> Result<Vec<ErasureOut>> {
    let q = concat!(
        "SELECT ",
        columns!(),
        " FROM erasures WHERE tenant_id = $1 ORDER BY requested_at DESC, id DESC LIMIT 100"
    );
    let rows: Vec<ErasureOut> = tx.fetch_all(scoped(q)).await?;
    Ok(rows.into_iter().map(|e| finish(e, now)).collect())
}

fn resource(id: &ErasureId, operation: &str) -> crate::policy::Resource {
    crate::policy::Resource {
        kind: "erasure".into(),
        id: id.to_string(),
        operation: operation.into(),
        ..Default::default()
    }
}

/// Asks for a person to be erased. 409 for an owner, or while a request for the same
/// address waits.
pub async fn request(state: &AppState, ctx: &TenantCtx, input: &ErasureIn) -> Result<ErasureOut> {
    let (email, reason) = checked(input)?;
    let id = ErasureId::new();
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let mut tx = crate::policy::authorize(
        &state.policies,
        tx,
        ctx,
        "erasure.request",
        resource(&id, "create"),
    )
    .await?;
    let (user, role) = subject(&mut tx, &email).await?;
    if role.as_deref() == Some("owner") {
        return Err(owner_refused());
    }
    let now = state.clock.now();
    tx.execute(
        scoped("UPDATE erasures SET status = 'expired', email = NULL, user_id = NULL WHERE tenant_id = $1 AND status = 'requested' AND expires_at <= $2")
            .bind(now),
    )
    .await?;
    let inserted = tx
        .execute(
            scoped(
                "INSERT INTO erasures (tenant_id, id, email, email_hint, subject_hash, user_id, reason, requested_by, \
                 requested_at, expires_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'requested')",
            )
            .bind(&id)
            .bind(email.as_str())
            .bind(hint(&email))
            .bind(subject_hash(&ctx.tenant_id, &email))
            .bind(user)
            .bind(reason.as_str())
            .bind(ctx.actor.id())
            .bind(now)
            .bind(now + Duration::hours(APPROVAL_WINDOW_HOURS)),
        )
        .await;
    match inserted {
        Ok(_) => {}
        Err(e) if crate::error::is_unique_violation(&e) => {
            return Err(AppError::Conflict(
                "an erasure of this person is already waiting; approve or cancel it".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    // The address stays out of the log: the request names only itself.
    crate::audit::record(
        &mut tx,
        ctx,
        "erasure.request",
        "erasure",
        id.as_str(),
        json!({}),
    )
    .await?;
    let out = get(&mut tx, &id, now).await?;
    tx.commit().await?;
    Ok(out)
}

/// A different admin approves, signed in as a person: 403 for the one who asked (also
/// through an API key they made) and for API keys, 410 once the window has passed,
/// 409 unless it waits. Queues the job in the HQ company's queue.
pub async fn approve(state: &AppState, ctx: &TenantCtx, id: &ErasureId) -> Result<ErasureOut> {
    // A person approves, never a key: a key would let whoever made it approve their own
    // request.
    let Actor::User(approver) = &ctx.actor else {
        return Err(AppError::Detailed {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "person_required",
            message: "an erasure is approved by a signed-in admin, not with an API key".into(),
            details: json!({}),
        });
    };
    let now = state.clock.now();
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let e = get(&mut tx, id, now).await?;
    if person_behind(&mut tx, &e.requested_by).await? == approver.as_str() {
        return Err(AppError::Detailed {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "same_admin",
            message: "a different admin must approve an erasure you asked for".into(),
            details: json!({}),
        });
    }
    match e.status.as_str() {
        "requested" => {}
        "expired" => {
            return Err(AppError::Gone(format!(
                "this request waited more than {APPROVAL_WINDOW_HOURS} hours; ask again"
            )));
        }
        other => {
            return Err(AppError::Conflict(format!(
                "this request is {other}, not waiting for approval"
            )));
        }
    }
    let mut tx = crate::policy::authorize(
        &state.policies,
        tx,
        ctx,
        "erasure.approve",
        resource(id, "update"),
    )
    .await?;
    let n = tx
        .execute(
            scoped(
                "UPDATE erasures SET status = 'approved', approved_by = $3, approved_at = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'requested'",
            )
            .bind(id)
            .bind(ctx.actor.id())
            .bind(now),
        )
        .await?;
    if n == 0 {
        return Err(AppError::Conflict(
            "this request was decided meanwhile".into(),
        ));
    }
    crate::audit::record(
        &mut tx,
        ctx,
        "erasure.approve",
        "erasure",
        id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    if let Err(err) = queue(state, &ctx.tenant_id, id).await {
        let mut tx = state.store.tenant(&ctx.tenant_id).await?;
        mark_failed(&mut tx, id, "the erasure could not be queued; ask again").await?;
        tx.commit().await?;
        return Err(err);
    }
    state.jobs_wake.notify_one();
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = get(&mut tx, id, now).await?;
    tx.commit().await?;
    Ok(out)
}

/// The person an actor id stands for: an API key's maker, or the id itself.
async fn person_behind(tx: &mut TenantTx, actor: &str) -> Result<String> {
    if !actor.starts_with(ApiKeyId::PREFIX) {
        return Ok(actor.to_owned());
    }
    let row: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT created_by FROM api_keys WHERE tenant_id = $1 AND id = $2").bind(actor),
        )
        .await?;
    Ok(row.map_or_else(|| actor.to_owned(), |(by,)| by))
}

async fn queue(state: &AppState, tenant: &TenantId, id: &ErasureId) -> Result<()> {
    let hq = TenantId::parse(crate::tenancy::HQ_TENANT)
        .ok_or_else(|| AppError::internal("the HQ tenant id is malformed"))?;
    let mut tx = state.store.tenant(&hq).await?;
    crate::queue::enqueue(
        &mut tx,
        NewJob {
            queue: ERASE_QUEUE,
            payload: crate::queue::payload(&job::EraseJob {
                tenant_id: tenant.clone(),
                erasure_id: id.clone(),
            }),
            priority: 0,
            run_at: Utc::now(),
            max_attempts: 5,
            id: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Withdraws a waiting request (any admin; as `erasure.request` for the policy).
pub async fn cancel(state: &AppState, ctx: &TenantCtx, id: &ErasureId) -> Result<ErasureOut> {
    let now = state.clock.now();
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let e = get(&mut tx, id, now).await?;
    let mut tx = crate::policy::authorize(
        &state.policies,
        tx,
        ctx,
        "erasure.request",
        resource(id, "cancel"),
    )
    .await?;
    if e.status != "requested" {
        return Err(AppError::Conflict(format!(
            "this request is {}, not waiting for approval",
            e.status
        )));
    }
    tx.execute(
        scoped("UPDATE erasures SET status = 'cancelled', email = NULL, user_id = NULL WHERE tenant_id = $1 AND id = $2 AND status = 'requested'")
            .bind(id),
    )
    .await?;
    crate::audit::record(
        &mut tx,
        ctx,
        "erasure.cancel",
        "erasure",
        id.as_str(),
        json!({}),
    )
    .await?;
    let out = get(&mut tx, id, now).await?;
    tx.commit().await?;
    Ok(out)
}

pub(crate) async fn mark_failed(tx: &mut TenantTx, id: &ErasureId, error: &str) -> Result<()> {
    tx.execute(
        scoped("UPDATE erasures SET status = 'failed', email = NULL, user_id = NULL, error = $3, finished_at = $4 WHERE tenant_id = $1 AND id = $2 AND status = 'approved'")
            .bind(id)
            .bind(error)
            .bind(Utc::now()),
    )
    .await?;
    Ok(())
}
