//! Tenants (companies) and their business profile.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Role, TenantCtx};
use crate::audit;
use crate::auth::users::clean_name;
use crate::error::{AppError, Result};
use crate::ids::{TenantId, UserId};
use crate::store::cross_tenant;
use crate::store::{Store, TenantTx, UserTx, scoped};

/// Where the company is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Idea,
    PreRevenue,
    EarlyRevenue,
    Growth,
    Established,
}

/// What every persona prompt knows about the company.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub industry: Option<String>,
    #[serde(default)]
    pub stage: Option<Stage>,
    #[serde(default)]
    pub goals: Vec<String>,
    #[serde(default)]
    pub team_size: Option<u32>,
    /// ISO 4217 code, e.g. `EUR` (default `USD`).
    #[serde(default)]
    pub currency: Option<String>,
}

impl Profile {
    /// Trims and checks every field; the error names the field to fix.
    pub fn validated(mut self) -> Result<Self> {
        if let Some(i) = &self.industry {
            self.industry = Some(clean_name("profile.industry", i, 100)?);
        }
        if self.goals.len() > 10 {
            return Err(AppError::invalid("profile.goals", "at most 10 goals"));
        }
        self.goals = self
            .goals
            .iter()
            .map(|g| clean_name("profile.goals", g, 300))
            .collect::<Result<_>>()?;
        if let Some(n) = self.team_size
            && !(1..=1_000_000).contains(&n)
        {
            return Err(AppError::invalid(
                "profile.team_size",
                "team_size must be between 1 and 1000000",
            ));
        }
        let currency = self
            .currency
            .as_deref()
            .unwrap_or("USD")
            .trim()
            .to_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(AppError::invalid(
                "profile.currency",
                "currency must be a three-letter ISO 4217 code such as USD or EUR",
            ));
        }
        self.currency = Some(currency);
        Ok(self)
    }
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    #[sqlx(try_from = "String")]
    id: TenantId,
    name: String,
    profile: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A tenant as the API shows it; `role` is the caller's role in it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantOut {
    pub id: TenantId,
    pub name: String,
    pub profile: Profile,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn to_out(r: TenantRow, role: Role) -> Result<TenantOut> {
    Ok(TenantOut {
        profile: serde_json::from_str(&r.profile).map_err(AppError::internal)?,
        id: r.id,
        name: r.name,
        role,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// Creates a tenant with `owner` as its first owner, audited, in one transaction.
pub async fn create(
    store: &Store,
    owner: &UserId,
    meta: &crate::auth::ClientMeta,
    name: &str,
    profile: Profile,
) -> Result<TenantOut> {
    let id = TenantId::new();
    let mut tx = store.tenant(&id).await?;
    let out = create_in(&mut tx, owner, meta, name, profile, Utc::now()).await?;
    tx.commit().await?;
    Ok(out)
}

/// [`create`] inside the caller's transaction on the new tenant (its id is the
/// transaction's), for callers that do more in the same commit (an owner invite).
pub async fn create_in(
    tx: &mut TenantTx,
    owner: &UserId,
    meta: &crate::auth::ClientMeta,
    name: &str,
    profile: Profile,
    now: chrono::DateTime<Utc>,
) -> Result<TenantOut> {
    let id = tx.tenant_id().clone();
    let profile_json = serde_json::to_string(&profile).map_err(AppError::internal)?;
    tx.execute(
        scoped("INSERT INTO tenants (id, name, profile, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(name)
            .bind(profile_json)
            .bind(now),
    )
    .await?;
    tx.execute(
        scoped("INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(owner)
            .bind(Role::Owner)
            .bind(now),
    )
    .await?;
    // Every company starts with the weekly digest (Mondays 08:00 UTC; the scheduler
    // gives it its first due time). The same row the 0010 migration gave older ones.
    tx.execute(
        scoped("INSERT INTO triggers (tenant_id, id, name, kind, condition, action, created_by, created_at, updated_at) \
             VALUES ($1, $2, 'Weekly digest', 'schedule', '{\"kind\":\"schedule\",\"cron\":\"0 8 * * MON\",\"timezone\":\"UTC\"}', \
             '{\"kind\":\"digest\"}', 'system', $3, $3)")
            .bind(crate::ids::TriggerId::new())
            .bind(now),
    )
    .await?;
    let ctx = TenantCtx {
        tenant_id: id.clone(),
        role: Role::Owner,
        actor: super::Actor::User(owner.clone()),
        meta: meta.clone(),
    };
    audit::record(
        tx,
        &ctx,
        "tenant.create",
        "tenant",
        id.as_str(),
        serde_json::json!({ "name": name }),
    )
    .await?;
    get(tx, Role::Owner).await
}

/// The tenant of `tx`, shown with the caller's `role`.
pub async fn get(tx: &mut TenantTx, role: Role) -> Result<TenantOut> {
    let row: TenantRow = tx
        .fetch_optional(scoped(
            "SELECT id, name, profile, created_at, updated_at FROM tenants WHERE id = $1",
        ))
        .await?
        .ok_or(AppError::NotFound("tenant"))?;
    to_out(row, role)
}

/// The tenant's (company's) name.
pub async fn name(tx: &mut TenantTx) -> Result<String> {
    let (name,): (String,) = tx
        .fetch_optional(scoped("SELECT name FROM tenants WHERE id = $1"))
        .await?
        .ok_or(AppError::NotFound("tenant"))?;
    Ok(name)
}

/// The tenant's reporting currency (its profile's, `USD` when unset or unknown).
pub async fn currency(tx: &mut TenantTx) -> Result<String> {
    let row: Option<(String,)> = tx
        .fetch_optional(scoped("SELECT profile FROM tenants WHERE id = $1"))
        .await?;
    let profile: Profile = row
        .and_then(|(p,)| serde_json::from_str(&p).ok())
        .unwrap_or_default();
    Ok(profile
        .currency
        .and_then(|c| crate::money::currency(&c).ok())
        .unwrap_or_else(|| "USD".into()))
}

/// Whether the tenant of `tx` exists (used for super-admin support access).
pub async fn exists(tx: &mut TenantTx) -> Result<bool> {
    let row: Option<(String,)> = tx
        .fetch_optional(scoped("SELECT id FROM tenants WHERE id = $1"))
        .await?;
    Ok(row.is_some())
}

#[derive(sqlx::FromRow)]
struct TenantWithRole {
    id: String,
    name: String,
    profile: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    role: String,
}

/// Every tenant the user of `tx` belongs to.
pub async fn list_for_user(tx: &mut UserTx) -> Result<Vec<TenantOut>> {
    let rows: Vec<TenantWithRole> = cross_tenant::user_tenants(tx).await?;
    rows.into_iter()
        .map(|r| {
            let role = Role::try_from(r.role).map_err(AppError::internal)?;
            let id = TenantId::try_from(r.id).map_err(AppError::internal)?;
            to_out(
                TenantRow {
                    id,
                    name: r.name,
                    profile: r.profile,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                },
                role,
            )
        })
        .collect()
}

/// Renames the tenant and/or replaces its profile.
pub async fn update(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    name: Option<String>,
    profile: Option<Profile>,
) -> Result<TenantOut> {
    let current = get(tx, ctx.role).await?;
    let name = name.unwrap_or(current.name);
    let profile = profile.unwrap_or(current.profile);
    tx.execute(
        scoped("UPDATE tenants SET name = $2, profile = $3, updated_at = $4 WHERE id = $1")
            .bind(name.as_str())
            .bind(serde_json::to_string(&profile).map_err(AppError::internal)?)
            .bind(Utc::now()),
    )
    .await?;
    audit::record(
        tx,
        ctx,
        "tenant.update",
        "tenant",
        ctx.tenant_id.as_str(),
        serde_json::json!({ "name": name, "profile": profile }),
    )
    .await?;
    get(tx, ctx.role).await
}
