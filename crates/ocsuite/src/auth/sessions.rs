//! Login sessions, stored in our own table (see `docs/decisions.md`).
//!
//! The browser holds the token in an HttpOnly cookie; API clients send it as a bearer
//! token. Revocation is a row update, effective on the very next request.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::ClientMeta;
use super::tokens;
use crate::error::Result;
use crate::ids::{ImpersonationId, SessionId, TenantId, UserId};
use crate::store::{Store, Tx, sql};

/// Who a valid session token belongs to.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub is_super_admin: bool,
}

#[derive(Clone, Debug)]
pub struct SessionAuth {
    pub session_id: SessionId,
    pub user: AuthUser,
    pub active_tenant: Option<TenantId>,
    pub impersonating: Option<super::Impersonating>,
}

#[derive(sqlx::FromRow)]
struct SessionLookup {
    id: String,
    user_id: String,
    active_tenant_id: Option<String>,
    expires_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    email: String,
    name: String,
    is_super_admin: bool,
    impersonation_id: Option<String>,
    impersonated_tenant: Option<String>,
    impersonation_until: Option<DateTime<Utc>>,
}

/// A session as its owner sees it in the session list.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SessionOut {
    #[sqlx(try_from = "String")]
    pub id: SessionId,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[sqlx(skip)]
    pub current: bool,
}

/// Creates a session; returns its id and the bearer token (shown once).
pub async fn create(
    tx: &mut Tx,
    user: &UserId,
    meta: &ClientMeta,
    ttl_hours: u32,
) -> Result<(SessionId, String, DateTime<Utc>)> {
    let id = SessionId::new();
    let token = tokens::new_session_token();
    let now = Utc::now();
    let expires = now + Duration::hours(i64::from(ttl_hours));
    tx.execute(
        sql("INSERT INTO sessions (id, user_id, token_hash, user_agent, ip, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)")
            .bind(&id)
            .bind(user)
            .bind(tokens::digest(&token))
            .bind(meta.user_agent.clone())
            .bind(meta.ip.clone())
            .bind(now)
            .bind(expires),
    )
    .await?;
    Ok((id, token, expires))
}

/// Resolves a presented session token. Expired and revoked sessions resolve to `None`.
/// `last_seen_at` is refreshed at most once a minute, so reads stay reads.
pub async fn authenticate(store: &Store, token: &str) -> Result<Option<SessionAuth>> {
    let mut tx = store.platform_read().await?;
    let row: Option<SessionLookup> = tx
        .fetch_optional(
            sql("SELECT s.id, s.user_id, s.active_tenant_id, s.expires_at, s.last_seen_at, u.email, u.name, u.is_super_admin, \
                        s.impersonation_id, s.impersonated_tenant, s.impersonation_until \
                 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.token_hash = $1 AND s.revoked_at IS NULL")
                .bind(tokens::digest(token)),
        )
        .await?;
    drop(tx);
    let Some(r) = row else { return Ok(None) };
    let now = Utc::now();
    if r.expires_at <= now {
        return Ok(None);
    }
    let (Some(session_id), Some(user_id)) = (SessionId::parse(&r.id), UserId::parse(&r.user_id))
    else {
        return Ok(None);
    };
    if now - r.last_seen_at > Duration::seconds(60) {
        let mut tx = store.platform().await?;
        tx.execute(
            sql("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&session_id),
        )
        .await?;
        tx.commit().await?;
    }
    // Only a super-admin's session can carry one, and only until it runs out.
    let impersonating = match (
        r.impersonation_id,
        r.impersonated_tenant,
        r.impersonation_until,
    ) {
        (Some(id), Some(t), Some(until)) if until > now && r.is_super_admin => {
            match (ImpersonationId::parse(&id), TenantId::parse(&t)) {
                (Some(id), Some(tenant)) => Some(super::Impersonating { id, tenant, until }),
                _ => None,
            }
        }
        _ => None,
    };
    Ok(Some(SessionAuth {
        impersonating,
        session_id,
        user: AuthUser {
            id: user_id,
            email: r.email,
            name: r.name,
            is_super_admin: r.is_super_admin,
        },
        active_tenant: r.active_tenant_id.as_deref().and_then(TenantId::parse),
    }))
}

/// Whether `user` has had a session from this client (its user agent) before.
pub async fn seen_device(tx: &mut Tx, user: &UserId, meta: &ClientMeta) -> Result<bool> {
    let row: Option<(String,)> = tx
        .fetch_optional(
            sql("SELECT id FROM sessions WHERE user_id = $1 AND COALESCE(user_agent, '') = $2 LIMIT 1")
                .bind(user)
                .bind(meta.user_agent.clone().unwrap_or_default()),
        )
        .await?;
    Ok(row.is_some())
}

/// Revokes one of `user`'s sessions; false when there is no such live session.
pub async fn revoke(tx: &mut Tx, user: &UserId, id: &SessionId) -> Result<bool> {
    let n = tx
        .execute(
            sql("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
                .bind(Utc::now())
                .bind(id)
                .bind(user),
        )
        .await?;
    Ok(n > 0)
}

/// Revokes all of `user`'s sessions except `keep`; returns how many.
pub async fn revoke_others(tx: &mut Tx, user: &UserId, keep: Option<&SessionId>) -> Result<u64> {
    Ok(tx
        .execute(
            sql("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3")
                .bind(Utc::now())
                .bind(user)
                .bind(keep.map(|k| k.as_str()).unwrap_or("")),
        )
        .await?)
}

pub async fn list(
    tx: &mut Tx,
    user: &UserId,
    current: Option<&SessionId>,
) -> Result<Vec<SessionOut>> {
    let mut rows: Vec<SessionOut> = tx
        .fetch_all(
            sql("SELECT id, user_agent, ip, created_at, last_seen_at, expires_at FROM sessions \
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC")
                .bind(user)
                .bind(Utc::now()),
        )
        .await?;
    for r in &mut rows {
        r.current = Some(&r.id) == current;
    }
    Ok(rows)
}

/// Remembers which tenant the browser last worked in (the `X-Tenant-Id` fallback).
pub async fn set_active_tenant(tx: &mut Tx, id: &SessionId, tenant: &TenantId) -> Result<()> {
    tx.execute(
        sql("UPDATE sessions SET active_tenant_id = $1 WHERE id = $2")
            .bind(tenant)
            .bind(id),
    )
    .await?;
    Ok(())
}
