//! Invitations to a tenant by email.
//!
//! The token is shown once to the inviter (to send or share); only its digest is
//! stored. It is single use, expires after seven days, and can only be accepted by a
//! signed-in user whose email is the invited one.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{Role, TenantCtx, members};
use crate::audit;
use crate::auth::{AuthUser, ClientMeta, tokens};
use crate::error::{AppError, Result};
use crate::ids::InviteId;
use crate::store::{Store, TenantTx, scoped};

pub const TTL_DAYS: i64 = 7;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct InviteOut {
    #[sqlx(try_from = "String")]
    pub id: InviteId,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new invite and its one-time token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InviteCreated {
    #[serde(flatten)]
    pub invite: InviteOut,
    /// Shown once: `POST /api/v1/invites/{token}/accept` with it.
    pub token: String,
}

pub async fn create(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    email: &str,
    role: Role,
) -> Result<InviteCreated> {
    if role == Role::Owner && ctx.role != Role::Owner {
        return Err(AppError::Forbidden(
            "only an owner can invite another owner".into(),
        ));
    }
    let tenant = tx.tenant_id().clone();
    let already: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT m.user_id FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND u.email = $2")
                .bind(email),
        )
        .await?;
    if already.is_some() {
        return Err(AppError::Conflict(format!(
            "{email} is already a member of this tenant"
        )));
    }
    let id = InviteId::new();
    let token = tokens::new_tenant_token(tokens::INVITE_PREFIX, &tenant);
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO invites (tenant_id, id, email, role, token_hash, invited_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&id)
            .bind(email)
            .bind(role)
            .bind(tokens::digest(&token))
            .bind(ctx.actor.id())
            .bind(now)
            .bind(now + Duration::days(TTL_DAYS)),
    )
    .await?;
    audit::record(
        tx,
        ctx,
        "invite.create",
        "invite",
        id.as_str(),
        serde_json::json!({ "email": email, "role": role }),
    )
    .await?;
    let invite = get(tx, &id).await?;
    Ok(InviteCreated { invite, token })
}

pub async fn get(tx: &mut TenantTx, id: &InviteId) -> Result<InviteOut> {
    tx.fetch_optional(
        scoped("SELECT id, email, role, created_at, expires_at, accepted_at, revoked_at FROM invites WHERE tenant_id = $1 AND id = $2")
            .bind(id),
    )
    .await?
    .ok_or(AppError::NotFound("invite"))
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<InviteOut>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT id, email, role, created_at, expires_at, accepted_at, revoked_at FROM invites WHERE tenant_id = $1 ORDER BY created_at DESC"),
        )
        .await?)
}

pub async fn revoke(tx: &mut TenantTx, ctx: &TenantCtx, id: &InviteId) -> Result<()> {
    let n = tx
        .execute(
            scoped("UPDATE invites SET revoked_at = $2 WHERE tenant_id = $1 AND id = $3 AND revoked_at IS NULL AND accepted_at IS NULL")
                .bind(Utc::now())
                .bind(id),
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("pending invite"));
    }
    audit::record(
        tx,
        ctx,
        "invite.revoke",
        "invite",
        id.as_str(),
        serde_json::json!({}),
    )
    .await
}

#[derive(sqlx::FromRow)]
struct InviteSecretRow {
    id: String,
    email: String,
    role: String,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Accepts an invite for `user`; returns the tenant joined and the role granted.
pub async fn accept(
    store: &Store,
    user: &AuthUser,
    meta: &ClientMeta,
    token: &str,
) -> Result<(crate::ids::TenantId, Role)> {
    let tenant =
        tokens::tenant_of(tokens::INVITE_PREFIX, token).ok_or(AppError::NotFound("invite"))?;
    let mut tx = store.tenant(&tenant).await?;
    let row: InviteSecretRow = tx
        .fetch_optional(
            scoped("SELECT id, email, role, expires_at, accepted_at, revoked_at FROM invites WHERE tenant_id = $1 AND token_hash = $2")
                .bind(tokens::digest(token)),
        )
        .await?
        .ok_or(AppError::NotFound("invite"))?;
    if row.accepted_at.is_some() {
        return Err(AppError::Gone("this invite has already been used".into()));
    }
    if row.revoked_at.is_some() {
        return Err(AppError::Gone(
            "this invite was revoked; ask for a new one".into(),
        ));
    }
    if row.expires_at <= Utc::now() {
        return Err(AppError::Gone(
            "this invite has expired; ask for a new one".into(),
        ));
    }
    if row.email != user.email {
        return Err(AppError::Forbidden(
            "this invite was sent to a different email address; sign in with that account".into(),
        ));
    }
    let role = Role::try_from(row.role).map_err(AppError::internal)?;
    members::add(&mut tx, &user.id, role).await?;
    let used = tx
        .execute(
            scoped("UPDATE invites SET accepted_at = $2, accepted_by = $3 WHERE tenant_id = $1 AND id = $4 AND accepted_at IS NULL")
                .bind(Utc::now())
                .bind(&user.id)
                .bind(row.id.as_str()),
        )
        .await?;
    if used == 0 {
        return Err(AppError::Gone("this invite has already been used".into()));
    }
    let ctx = TenantCtx {
        tenant_id: tenant.clone(),
        role,
        actor: super::Actor::User(user.id.clone()),
        meta: meta.clone(),
    };
    audit::record(
        &mut tx,
        &ctx,
        "invite.accept",
        "invite",
        &row.id,
        serde_json::json!({ "role": role }),
    )
    .await?;
    tx.commit().await?;
    Ok((tenant, role))
}
