//! The audit trail.
//!
//! Tenant state changes write an `audit_log` row in the same transaction as the change,
//! so a change without its audit row cannot commit. Each row is sealed into a signed
//! receipt in the same transaction (`crate::receipts`). Sign-in events that belong to no
//! tenant (login, logout, MFA changes) go to `security_events`.

pub mod routes;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::auth::ClientMeta;
use crate::error::{AppError, Result};
use crate::ids::{AuditId, ReceiptId, UserId};
use crate::store::{TenantTx, Tx, scoped, sql};
use crate::tenancy::TenantCtx;

/// Writes one audit row for the tenant of `tx`.
pub async fn record(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: Value,
) -> Result<()> {
    insert(
        tx,
        (ctx.actor.kind(), ctx.actor.id()),
        action,
        target_type,
        target_id,
        details,
        ctx.meta.request_id.clone(),
    )
    .await
    .map(|_| ())
}

/// Writes one audit row for a change the system made on its own (a worker finishing a
/// task), not on behalf of a request.
pub async fn record_system(
    tx: &mut TenantTx,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: Value,
) -> Result<()> {
    record_system_sealed(tx, action, target_type, target_id, details)
        .await
        .map(|_| ())
}

/// [`record_system`], returning the id of the receipt that seals the row (a job that
/// ends with a receipt names it).
pub async fn record_system_sealed(
    tx: &mut TenantTx,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: Value,
) -> Result<ReceiptId> {
    insert(
        tx,
        ("system", "worker"),
        action,
        target_type,
        target_id,
        details,
        None,
    )
    .await
}

/// [`record_system`] for many entries at once (a queue round's outcomes): one insert of
/// the audit rows and one of their receipts, all with the same time. Each entry is
/// `(action, target_type, target_id, details)`.
pub async fn record_system_many(
    tx: &mut TenantTx,
    entries: &[(&str, &str, &str, Value)],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let (actor_type, actor_id) = ("system", "worker");
    let at = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let rows: Vec<(AuditId, String)> = entries
        .iter()
        .map(|(_, _, _, details)| (AuditId::new(), details.to_string()))
        .collect();
    let json_rows: Vec<Value> = entries
        .iter()
        .zip(&rows)
        .map(|((action, target_type, target_id, _), (id, details))| {
            serde_json::json!({
                "id": id, "actor_type": actor_type, "actor_id": actor_id, "action": action,
                "target_type": target_type, "target_id": target_id, "details": details,
                "request_id": null,
            })
        })
        .collect();
    let q = crate::store::cross_tenant::insert_audit_entries(tx)
        .bind(Value::from(json_rows).to_string())
        .bind(at);
    tx.defer(q).await?;
    let receipts: Vec<crate::receipts::Entry<'_>> = entries
        .iter()
        .zip(&rows)
        .map(
            |((action, target_type, target_id, _), (id, details))| crate::receipts::Entry {
                audit_id: id.as_str(),
                actor: (actor_type, actor_id),
                action,
                target: (target_type, target_id),
                details,
                request_id: None,
                at,
            },
        )
        .collect();
    crate::receipts::append_many(tx, at, &receipts).await?;
    Ok(())
}

pub(crate) async fn insert(
    tx: &mut TenantTx,
    (actor_type, actor_id): (&str, &str),
    action: &str,
    target_type: &str,
    target_id: &str,
    details: Value,
    request_id: Option<String>,
) -> Result<ReceiptId> {
    // Microseconds: what PostgreSQL keeps, so the receipt's time equals the row's.
    let (id, at, details) = (
        AuditId::new(),
        chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
        details.to_string(),
    );
    // Nothing reads it back in this transaction: it travels with the next statement.
    tx.defer(
        scoped("INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id, details, request_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&id)
            .bind(actor_type)
            .bind(actor_id)
            .bind(action)
            .bind(target_type)
            .bind(target_id)
            .bind(details.clone())
            .bind(request_id.clone())
            .bind(at),
    )
    .await?;
    // Its signed receipt, in the same transaction.
    let receipt = crate::receipts::append(
        tx,
        &crate::receipts::Entry {
            audit_id: id.as_str(),
            actor: (actor_type, actor_id),
            action,
            target: (target_type, target_id),
            details: &details,
            request_id: request_id.as_deref(),
            at,
        },
    )
    .await?;
    Ok(receipt)
}

/// Writes one row of the platform's own audit log: an operator's action that belongs
/// to no tenant (a feature flag changed).
pub async fn record_platform(
    tx: &mut Tx,
    actor_id: &str,
    action: &str,
    target: &str,
    details: Value,
) -> Result<()> {
    tx.execute(
        sql("INSERT INTO platform_audit (id, actor_id, action, target, details, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(AuditId::new())
            .bind(actor_id)
            .bind(action)
            .bind(target)
            .bind(details.to_string())
            .bind(Utc::now()),
    )
    .await?;
    Ok(())
}

/// Records a sign-in related event for a user (or for an email with no account).
pub async fn security_event(
    tx: &mut Tx,
    user: Option<&UserId>,
    email: Option<&str>,
    action: &str,
    meta: &ClientMeta,
) -> Result<()> {
    security_event_about(tx, user, email, action, meta, None).await
}

/// [`security_event`] about one company (its admins see it).
pub async fn security_event_about(
    tx: &mut Tx,
    user: Option<&UserId>,
    email: Option<&str>,
    action: &str,
    meta: &ClientMeta,
    tenant: Option<&crate::ids::TenantId>,
) -> Result<()> {
    tx.execute(
        sql("INSERT INTO security_events (id, user_id, email, action, ip, request_id, created_at, about_tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(AuditId::new())
            .bind(user.map(|u| u.as_str().to_owned()))
            .bind(email)
            .bind(action)
            .bind(meta.ip.clone())
            .bind(meta.request_id.clone())
            .bind(Utc::now())
            .bind(tenant.map(|t| t.as_str().to_owned())),
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    actor_type: String,
    actor_id: String,
    action: String,
    target_type: String,
    target_id: String,
    details: String,
    request_id: Option<String>,
    created_at: DateTime<Utc>,
}

/// One audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditOut {
    pub id: String,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    #[schema(value_type = Object)]
    pub details: Value,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Newest first; `before` is an audit id from a previous page.
pub async fn list(
    tx: &mut TenantTx,
    limit: u32,
    before: Option<&AuditId>,
) -> Result<Vec<AuditOut>> {
    let rows: Vec<AuditRow> = tx
        .fetch_all(
            scoped("SELECT id, actor_type, actor_id, action, target_type, target_id, details, request_id, created_at \
                 FROM audit_log WHERE tenant_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3")
                .bind(before.map(|b| b.as_str().to_owned()).unwrap_or_default())
                .bind(i64::from(limit)),
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AuditOut {
                details: serde_json::from_str(&r.details).map_err(AppError::internal)?,
                id: r.id,
                actor_type: r.actor_type,
                actor_id: r.actor_id,
                action: r.action,
                target_type: r.target_type,
                target_id: r.target_id,
                request_id: r.request_id,
                created_at: r.created_at,
            })
        })
        .collect()
}
