//! Tenant API keys: for scripts and integrations acting inside one tenant.
//!
//! The key is shown once at creation; only its digest is stored, with a short display
//! prefix so people can tell keys apart. A key's role is at most its creator's and
//! never owner: keys cannot manage ownership.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{Role, TenantCtx};
use crate::audit;
use crate::auth::{ApiKeyAuth, tokens};
use crate::error::{AppError, Result};
use crate::ids::ApiKeyId;
use crate::store::{Store, TenantTx, scoped};

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKeyOut {
    #[sqlx(try_from = "String")]
    pub id: ApiKeyId,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyCreated {
    pub id: ApiKeyId,
    /// The secret key, shown only in this response.
    pub key: String,
    pub name: String,
    pub role: Role,
    pub prefix: String,
}

pub async fn create(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    name: &str,
    role: Role,
) -> Result<ApiKeyCreated> {
    if role == Role::Owner {
        return Err(AppError::invalid(
            "role",
            "API keys can be admin, member or viewer, not owner",
        ));
    }
    if !ctx.role.at_least(role) {
        return Err(AppError::Forbidden(
            "an API key cannot have a stronger role than its creator".into(),
        ));
    }
    let tenant = tx.tenant_id().clone();
    let id = ApiKeyId::new();
    let key = tokens::new_tenant_token(tokens::API_KEY_PREFIX, &tenant);
    let secret_start = key.len() - 43;
    let prefix = format!(
        "{}{}…",
        tokens::API_KEY_PREFIX,
        &key[secret_start..secret_start + 6]
    );
    tx.execute(
        scoped("INSERT INTO api_keys (tenant_id, id, name, role, key_hash, prefix, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&id)
            .bind(name)
            .bind(role)
            .bind(tokens::digest(&key))
            .bind(prefix.as_str())
            .bind(ctx.actor.id())
            .bind(Utc::now()),
    )
    .await?;
    audit::record(
        tx,
        ctx,
        "api_key.create",
        "api_key",
        id.as_str(),
        serde_json::json!({ "name": name, "role": role }),
    )
    .await?;
    Ok(ApiKeyCreated {
        id,
        key,
        name: name.to_owned(),
        role,
        prefix,
    })
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<ApiKeyOut>> {
    Ok(tx
        .fetch_all(scoped(
            "SELECT id, name, role, prefix, created_by, created_at, last_used_at FROM api_keys \
                 WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY created_at",
        ))
        .await?)
}

pub async fn revoke(tx: &mut TenantTx, ctx: &TenantCtx, id: &ApiKeyId) -> Result<()> {
    let n = tx
        .execute(
            scoped("UPDATE api_keys SET revoked_at = $2 WHERE tenant_id = $1 AND id = $3 AND revoked_at IS NULL")
                .bind(Utc::now())
                .bind(id),
        )
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("API key"));
    }
    audit::record(
        tx,
        ctx,
        "api_key.revoke",
        "api_key",
        id.as_str(),
        serde_json::json!({}),
    )
    .await
}

#[derive(sqlx::FromRow)]
struct KeyLookup {
    id: String,
    role: String,
    last_used_at: Option<DateTime<Utc>>,
    seen_ips: Option<String>,
}

/// Resolves a presented API key; `None` when unknown or revoked.
pub async fn authenticate(
    store: &Store,
    key: &str,
    meta: &crate::auth::ClientMeta,
) -> Result<Option<ApiKeyAuth>> {
    let Some(tenant) = tokens::tenant_of(tokens::API_KEY_PREFIX, key) else {
        return Ok(None);
    };
    let mut tx = store.tenant_read(&tenant).await?;
    let row: Option<KeyLookup> = tx
        .fetch_optional(
            scoped("SELECT id, role, last_used_at, seen_ips FROM api_keys WHERE tenant_id = $1 AND key_hash = $2 AND revoked_at IS NULL")
                .bind(tokens::digest(key)),
        )
        .await?;
    tx.commit().await?;
    let Some(r) = row else { return Ok(None) };
    let key_id = ApiKeyId::try_from(r.id).map_err(AppError::internal)?;
    let now = Utc::now();
    // A key used from an address it was never used from is a security event (its
    // company's admins see it); the key remembers its latest 20 addresses.
    let mut seen: Vec<String> = r
        .seen_ips
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let new_address = meta.ip.as_ref().filter(|ip| !seen.contains(ip)).cloned();
    if new_address.is_some()
        || r.last_used_at
            .is_none_or(|t| now - t > Duration::seconds(60))
    {
        let mut tx = store.tenant(&tenant).await?;
        if let Some(ip) = new_address {
            seen.push(ip);
            if seen.len() > 20 {
                seen.remove(0);
            }
            tx.execute(
                scoped("UPDATE api_keys SET seen_ips = $2 WHERE tenant_id = $1 AND id = $3")
                    .bind(serde_json::to_string(&seen).unwrap_or_default())
                    .bind(&key_id),
            )
            .await?;
            crate::audit::security_event_about(
                &mut tx,
                None,
                None,
                "api_key.new_address",
                meta,
                Some(&tenant),
            )
            .await?;
        }
        tx.execute(
            scoped("UPDATE api_keys SET last_used_at = $2 WHERE tenant_id = $1 AND id = $3")
                .bind(now)
                .bind(&key_id),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(Some(ApiKeyAuth {
        key_id,
        tenant_id: tenant,
        role: Role::try_from(r.role).map_err(AppError::internal)?,
    }))
}

/// Keeps a key's role at most its creator's after the creator's membership changed:
/// `now` is the creator's role from here on, `None` when they left or were removed.
/// Their keys, and the keys those keys created, are revoked (`None`) or capped at the
/// new role, each with an audit entry, in the caller's transaction. A key that keeps
/// working for someone who is gone, or keeps admin rights its creator lost, is exactly
/// what an admin removing or demoting a person does not expect.
pub async fn follow_creator(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    creator: &str,
    now: Option<Role>,
) -> Result<()> {
    let at = Utc::now();
    let mut creators = vec![creator.to_owned()];
    while let Some(creator) = creators.pop() {
        let keys: Vec<(String, String)> = tx
            .fetch_all(
                scoped("SELECT id, role FROM api_keys WHERE tenant_id = $1 AND created_by = $2 AND revoked_at IS NULL")
                    .bind(creator.as_str()),
            )
            .await?;
        for (id, role) in keys {
            let role = Role::try_from(role).map_err(AppError::internal)?;
            match now {
                None => {
                    tx.execute(
                        scoped(
                            "UPDATE api_keys SET revoked_at = $2 WHERE tenant_id = $1 AND id = $3",
                        )
                        .bind(at)
                        .bind(id.as_str()),
                    )
                    .await?;
                    audit::record(
                        tx,
                        ctx,
                        "api_key.revoke",
                        "api_key",
                        &id,
                        serde_json::json!({ "reason": "its creator is no longer a member" }),
                    )
                    .await?;
                }
                Some(limit) if !limit.at_least(role) => {
                    tx.execute(
                        scoped("UPDATE api_keys SET role = $2 WHERE tenant_id = $1 AND id = $3")
                            .bind(limit)
                            .bind(id.as_str()),
                    )
                    .await?;
                    audit::record(
                        tx,
                        ctx,
                        "api_key.role_cap",
                        "api_key",
                        &id,
                        serde_json::json!({ "from": role, "to": limit, "reason": "its creator's role was lowered" }),
                    )
                    .await?;
                }
                Some(_) => continue,
            }
            creators.push(id);
        }
    }
    Ok(())
}
