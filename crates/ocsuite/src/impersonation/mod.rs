//! Support's "view as": a super-admin enters one company for up to an hour, with a
//! reason, and acts there as its admin under actor type `support_admin`.
//!
//! The session carries the impersonation (`sessions.impersonation_*`), so a request in
//! it costs no extra read; outside one, a super-admin is nobody in a company (404 like
//! any stranger). Every request in it lands in the company's own audit log
//! (`tenancy::extract`), its owners are told when it starts, and it cannot reveal
//! secrets, touch ownership, create API keys or start another ([`TenantCtx::deny_support`]).
//! It ends on exit, on expiry (the session stops carrying it) or on logout.
//!
//! [`TenantCtx::deny_support`]: crate::tenancy::TenantCtx::deny_support

pub mod routes;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;

use crate::audit;
use crate::auth::{ClientMeta, Impersonating};
use crate::error::{AppError, Result};
use crate::ids::{ImpersonationId, SessionId, UserId};
use crate::notifications::{self, Broadcast};
use crate::realtime::Event;
use crate::store::{TenantTx, Tx, scoped, sql};
use crate::tenancy::Role;

/// The longest a "view as" session may last.
pub const MAX_MINUTES: i64 = 60;

/// One support session as the company and the operators see it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ImpersonationOut {
    pub id: String,
    pub admin_id: String,
    pub admin_email: String,
    pub reason: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `exit`, `logout` or `session ended` (the session was revoked).
    pub end_reason: Option<String>,
    #[serde(skip)]
    pub session_revoked_at: Option<DateTime<Utc>>,
    /// `active`, `ended` or `expired`.
    #[sqlx(skip)]
    pub status: String,
}

fn with_status(mut r: ImpersonationOut, now: DateTime<Utc>) -> ImpersonationOut {
    if r.ended_at.is_none()
        && let Some(at) = r.session_revoked_at.filter(|at| *at < r.expires_at)
    {
        // Its session was revoked (signed out elsewhere): access ended then.
        r.ended_at = Some(at);
        r.end_reason = Some("session ended".into());
    }
    r.status = if r.ended_at.is_some() {
        "ended"
    } else if r.expires_at <= now {
        "expired"
    } else {
        "active"
    }
    .into();
    r
}

/// The company's latest support sessions, newest first.
pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<ImpersonationOut>> {
    let rows: Vec<ImpersonationOut> = tx
        .fetch_all(
            scoped(
                "SELECT i.id, i.admin_id, i.admin_email, i.reason, i.started_at, i.expires_at, i.ended_at, \
                        i.end_reason, s.revoked_at AS session_revoked_at \
                   FROM impersonations i LEFT JOIN sessions s ON s.id = i.session_id \
                  WHERE i.tenant_id = $1 ORDER BY i.started_at DESC, i.id DESC LIMIT $2",
            )
            .bind(limit),
        )
        .await?;
    let now = Utc::now();
    Ok(rows.into_iter().map(|r| with_status(r, now)).collect())
}

/// Who starts one, and how.
pub struct Start<'a> {
    pub admin: &'a UserId,
    pub admin_email: &'a str,
    pub session: &'a SessionId,
    pub reason: &'a str,
    pub minutes: i64,
}

/// Opens a support session in the company of `tx` (which must exist): the row, the
/// company's audit entry and its owners' notification, in one transaction.
pub async fn start(
    tx: &mut TenantTx,
    s: &Start<'_>,
    now: DateTime<Utc>,
) -> Result<(Impersonating, Vec<Event>)> {
    let exists: Option<(String,)> = tx
        .fetch_optional(scoped("SELECT name FROM tenants WHERE id = $1"))
        .await?;
    let Some((company,)) = exists else {
        return Err(AppError::NotFound("tenant"));
    };
    let id = ImpersonationId::new();
    let until = now + Duration::minutes(s.minutes);
    tx.execute(
        scoped(
            "INSERT INTO impersonations (tenant_id, id, admin_id, admin_email, session_id, reason, started_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(s.admin)
        .bind(s.admin_email)
        .bind(s.session)
        .bind(s.reason)
        .bind(now)
        .bind(until),
    )
    .await?;
    audit::insert(
        tx,
        ("support_admin", s.admin.as_str()),
        "impersonation.start",
        "impersonation",
        id.as_str(),
        json!({ "reason": s.reason, "minutes": s.minutes, "expires_at": until, "admin_email": s.admin_email }),
        None,
    )
    .await?;
    let owners: Vec<UserId> = crate::tenancy::members::list(tx)
        .await?
        .into_iter()
        .filter(|m| m.role == Role::Owner)
        .map(|m| m.user_id)
        .collect();
    let events = notifications::notify_all(
        tx,
        &owners,
        Broadcast {
            kind: "impersonation.started",
            title: format!("ocsuite support is viewing {company}"),
            body: format!(
                "{} opened a support session until {} UTC. Reason: {}. Every action they take is in your audit log.",
                s.admin_email,
                until.format("%Y-%m-%d %H:%M"),
                s.reason
            ),
            meeting_id: None,
            task_id: None,
            email: true,
        },
    )
    .await?;
    Ok((
        Impersonating {
            id,
            tenant: tx.tenant_id().clone(),
            until,
        },
        events,
    ))
}

/// Marks a support session ended (`exit`, `logout`) in its company's log. Idempotent:
/// an already ended or expired one is left as it is.
pub async fn end(
    tx: &mut TenantTx,
    imp: &Impersonating,
    admin: &UserId,
    why: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let n = tx
        .execute(
            scoped(
                "UPDATE impersonations SET ended_at = $3, end_reason = $4 \
                  WHERE tenant_id = $1 AND id = $2 AND ended_at IS NULL",
            )
            .bind(&imp.id)
            .bind(now)
            .bind(why),
        )
        .await?;
    if n > 0 {
        audit::insert(
            tx,
            ("support_admin", admin.as_str()),
            "impersonation.end",
            "impersonation",
            imp.id.as_str(),
            json!({ "reason": why }),
            None,
        )
        .await?;
    }
    Ok(())
}

/// Points `session` at the support session (or clears it), and records the security
/// event.
pub async fn bind_session(
    tx: &mut Tx,
    session: &SessionId,
    user: &UserId,
    imp: Option<&Impersonating>,
    meta: &ClientMeta,
) -> Result<()> {
    tx.execute(
        sql("UPDATE sessions SET impersonation_id = $1, impersonated_tenant = $2, impersonation_until = $3, \
                    active_tenant_id = $2 WHERE id = $4")
            .bind(imp.map(|i| i.id.as_str().to_owned()))
            .bind(imp.map(|i| i.tenant.as_str().to_owned()))
            .bind(imp.map(|i| i.until))
            .bind(session),
    )
    .await?;
    let action = if imp.is_some() {
        "impersonation.start"
    } else {
        "impersonation.end"
    };
    audit::security_event(tx, Some(user), None, action, meta).await?;
    Ok(())
}

/// Ends `imp` everywhere: the company's row and audit, then the session. For exit and
/// logout.
pub async fn finish(
    store: &crate::store::Store,
    imp: &Impersonating,
    admin: &UserId,
    session: &SessionId,
    why: &str,
    meta: &ClientMeta,
) -> Result<()> {
    let mut tx = store.tenant(&imp.tenant).await?;
    end(&mut tx, imp, admin, why, Utc::now()).await?;
    tx.commit().await?;
    let mut tx = store.platform().await?;
    bind_session(&mut tx, session, admin, None, meta).await?;
    tx.commit().await?;
    Ok(())
}
