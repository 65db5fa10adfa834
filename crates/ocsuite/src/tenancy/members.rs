//! Members of a tenant and their roles.
//!
//! Membership changes first touch the tenant row, which serialises them per tenant on
//! both backends; that makes "the last owner cannot leave or be demoted" hold even when
//! two owners are changed concurrently.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Role, TenantCtx};
use crate::audit;
use crate::error::{AppError, Result};
use crate::ids::{TenantId, UserId};
use crate::store::cross_tenant;
use crate::store::{Store, TenantTx, scoped};

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MemberOut {
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

/// `user`'s role in `tenant` (`None`: not a member) and whether the tenant exists, in
/// one round trip outside any transaction: every tenant-scoped request asks this first.
/// On PostgreSQL through `ocsuite_member_role`, since row-level security hides
/// memberships until a tenant or user scope is set.
pub async fn lookup(
    store: &Store,
    tenant: &TenantId,
    user: &UserId,
) -> Result<(Option<Role>, bool)> {
    let mut conn = store.platform_read().await?;
    let (role, exists) = cross_tenant::member_role(&mut conn, tenant, user).await?;
    let role = role
        .map(Role::try_from)
        .transpose()
        .map_err(AppError::internal)?;
    Ok((role, exists))
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<MemberOut>> {
    Ok(tx
        .fetch_all(scoped(
            "SELECT m.user_id, u.email, u.name, m.role, m.created_at AS joined_at \
                 FROM memberships m JOIN users u ON u.id = m.user_id \
                 WHERE m.tenant_id = $1 ORDER BY m.created_at",
        ))
        .await?)
}

async fn lock_tenant(tx: &mut TenantTx) -> Result<()> {
    tx.execute(scoped("UPDATE tenants SET updated_at = $2 WHERE id = $1").bind(Utc::now()))
        .await?;
    Ok(())
}

async fn role_of(tx: &mut TenantTx, user: &UserId) -> Result<Role> {
    let row: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2").bind(user),
        )
        .await?;
    let (r,) = row.ok_or(AppError::NotFound("member"))?;
    Role::try_from(r).map_err(AppError::internal)
}

async fn owner_count(tx: &mut TenantTx) -> Result<i64> {
    let (n,): (i64,) = tx
        .fetch_one(scoped(
            "SELECT COUNT(*) FROM memberships WHERE tenant_id = $1 AND role = 'owner'",
        ))
        .await?;
    Ok(n)
}

/// Adds `user` with `role` (invite acceptance).
pub async fn add(tx: &mut TenantTx, user: &UserId, role: Role) -> Result<()> {
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(user)
            .bind(role)
            .bind(now),
    )
    .await
    .map_err(|e| {
        if crate::error::is_unique_violation(&e) {
            AppError::Conflict("you are already a member of this tenant".into())
        } else {
            e.into()
        }
    })?;
    Ok(())
}

pub async fn change_role(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    target: &UserId,
    new: Role,
) -> Result<MemberOut> {
    lock_tenant(tx).await?;
    let old = role_of(tx, target).await?;
    if (old == Role::Owner || new == Role::Owner) && ctx.role != Role::Owner {
        return Err(AppError::Forbidden(
            "only an owner can grant or change the owner role".into(),
        ));
    }
    if old == Role::Owner && new != Role::Owner && owner_count(tx).await? <= 1 {
        return Err(AppError::Conflict(
            "the last owner cannot be demoted; make another member owner first".into(),
        ));
    }
    tx.execute(
        scoped("UPDATE memberships SET role = $2, updated_at = $3 WHERE tenant_id = $1 AND user_id = $4")
            .bind(new)
            .bind(Utc::now())
            .bind(target),
    )
    .await?;
    audit::record(
        tx,
        ctx,
        "member.role_change",
        "user",
        target.as_str(),
        serde_json::json!({ "from": old, "to": new }),
    )
    .await?;
    super::api_keys::follow_creator(tx, ctx, target.as_str(), Some(new)).await?;
    list(tx)
        .await?
        .into_iter()
        .find(|m| &m.user_id == target)
        .ok_or(AppError::NotFound("member"))
}

/// Removes a member; any member may remove themselves (leave).
pub async fn remove(tx: &mut TenantTx, ctx: &TenantCtx, target: &UserId) -> Result<()> {
    let leaving = ctx.actor.user_id() == Some(target);
    if !leaving {
        ctx.require(Role::Admin)?;
    }
    lock_tenant(tx).await?;
    let role = role_of(tx, target).await?;
    if role == Role::Owner && !leaving && ctx.role != Role::Owner {
        return Err(AppError::Forbidden(
            "only an owner can remove an owner".into(),
        ));
    }
    if role == Role::Owner && owner_count(tx).await? <= 1 {
        return Err(AppError::Conflict(
            "the last owner cannot leave or be removed; make another member owner first".into(),
        ));
    }
    tx.execute(
        scoped("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2").bind(target),
    )
    .await?;
    audit::record(
        tx,
        ctx,
        if leaving {
            "member.leave"
        } else {
            "member.remove"
        },
        "user",
        target.as_str(),
        serde_json::json!({ "role": role }),
    )
    .await?;
    super::api_keys::follow_creator(tx, ctx, target.as_str(), None).await?;
    Ok(())
}
