//! Encrypted tenant secrets at rest, key versions, and online key rotation.
//!
//! Connectors (OAuth tokens) and external modules (MCP credentials) keep their secrets
//! here. A secret is decrypted inside the request that uses it and dropped with it;
//! nothing decrypted is cached.

use chrono::Utc;
use serde::Serialize;

use super::{Binding, Crypto, KeyScope, Plaintext};
use crate::error::{AppError, Result};
use crate::ids::{SecretId, TenantId, UserId};
use crate::store::cross_tenant;
use crate::store::{Store, TenantTx, Tx, scoped, sql};

/// What a receipt log's signing key is bound to (`receipts::keys`).
pub const LOG_KEY_PURPOSE: &str = "log-key";

/// The version new ciphertexts are made with (the newest row of `key_versions`).
pub async fn current_version(tx: &mut Tx) -> Result<u32> {
    let (v,): (Option<i64>,) = tx
        .fetch_one(sql("SELECT MAX(version) FROM key_versions"))
        .await?;
    u32::try_from(v.unwrap_or(1)).map_err(AppError::internal)
}

/// Makes sure version 1 exists (run after migrations).
pub async fn ensure_initial_version(store: &Store) -> Result<()> {
    let mut tx = store.platform().await?;
    tx.execute(
        sql("INSERT INTO key_versions (version, created_at) VALUES (1, $1) ON CONFLICT (version) DO NOTHING")
            .bind(Utc::now()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Stores (or replaces) a secret for the tenant of `tx`.
pub async fn put(
    tx: &mut TenantTx,
    crypto: &Crypto,
    key_version: u32,
    purpose: &str,
    name: &str,
    plaintext: &[u8],
) -> Result<SecretId> {
    let tenant = tx.tenant_id().clone();
    let existing: Option<(String,)> = tx
        .fetch_optional(
            scoped(
                "SELECT id FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2 AND name = $3",
            )
            .bind(purpose)
            .bind(name),
        )
        .await?;
    let id = match existing {
        Some((id,)) => SecretId::try_from(id).map_err(AppError::internal)?,
        None => SecretId::new(),
    };
    let ct = crypto.encrypt(
        KeyScope::Tenant(&tenant),
        key_version,
        Binding {
            purpose,
            row_id: id.as_str(),
        },
        plaintext,
    );
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO tenant_secrets (tenant_id, id, purpose, name, ciphertext, key_version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET ciphertext = $5, key_version = $6, updated_at = $7")
            .bind(&id)
            .bind(purpose)
            .bind(name)
            .bind(ct)
            .bind(i64::from(key_version))
            .bind(now),
    )
    .await?;
    Ok(id)
}

/// Reads and decrypts a secret of the tenant of `tx`.
pub async fn get(
    tx: &mut TenantTx,
    crypto: &Crypto,
    purpose: &str,
    name: &str,
) -> Result<Option<Plaintext>> {
    let tenant = tx.tenant_id().clone();
    let row: Option<(String, Vec<u8>)> = tx
        .fetch_optional(
            scoped("SELECT id, ciphertext FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2 AND name = $3")
                .bind(purpose)
                .bind(name),
        )
        .await?;
    let Some((id, ct)) = row else {
        return Ok(None);
    };
    crypto
        .decrypt(
            KeyScope::Tenant(&tenant),
            Binding {
                purpose,
                row_id: &id,
            },
            &ct,
        )
        .map(Some)
        .map_err(AppError::internal)
}

#[derive(Debug, Serialize)]
pub struct RotationReport {
    pub new_version: u32,
    pub tenant_secrets: u64,
    pub user_secrets: u64,
    /// Receipt-log signing keys.
    pub log_keys: u64,
}

/// Decrypts every stored secret (tenant secrets, two-factor seeds, receipt-log signing
/// keys) and keeps none of them: proof that `crypto`'s master key opens what the
/// database holds, which a restore checks before it says it worked. Runs on the owner
/// connection like [`rotate`]. Returns how many were opened; fails naming the first
/// few that were not.
pub async fn verify_all(owner: &Store, crypto: &Crypto) -> Result<u64> {
    let mut opened = 0u64;
    let mut failed: Vec<String> = Vec::new();
    let mut tx = owner.platform_read().await?;
    let (mut after_tenant, mut after_id) = (String::new(), String::new());
    loop {
        let rows: Vec<SecretRow> =
            cross_tenant::secrets_after(&mut tx, &after_tenant, &after_id).await?;
        let Some(last) = rows.last() else {
            break;
        };
        (after_tenant, after_id) = (last.tenant_id.clone(), last.id.clone());
        for r in &rows {
            let Ok(tenant) = TenantId::try_from(r.tenant_id.clone()) else {
                failed.push(format!("secret {} (bad company id)", r.id));
                continue;
            };
            let binding = Binding {
                purpose: &r.purpose,
                row_id: &r.id,
            };
            match crypto.decrypt(KeyScope::Tenant(&tenant), binding, &r.ciphertext) {
                Ok(_) => opened += 1,
                Err(_) => failed.push(format!("secret {} of {}", r.id, r.tenant_id)),
            }
        }
    }
    let users: Vec<(String, Vec<u8>)> = tx
        .fetch_all(sql(
            "SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL",
        ))
        .await?;
    for (id, ct) in users {
        let Ok(user) = UserId::try_from(id.clone()) else {
            failed.push(format!("two-factor seed of {id} (bad user id)"));
            continue;
        };
        match crypto.decrypt(KeyScope::Platform, crate::auth::totp::binding(&user), &ct) {
            Ok(_) => opened += 1,
            Err(_) => failed.push(format!("two-factor seed of {id}")),
        }
    }
    let keys: Vec<(String, Vec<u8>)> = tx
        .fetch_all(sql("SELECT id, private_key FROM log_keys"))
        .await?;
    for (id, ct) in keys {
        let binding = Binding {
            purpose: LOG_KEY_PURPOSE,
            row_id: &id,
        };
        match crypto.decrypt(KeyScope::Platform, binding, &ct) {
            Ok(_) => opened += 1,
            Err(_) => failed.push(format!("log signing key {id}")),
        }
    }
    tx.commit().await?;
    if !failed.is_empty() {
        let n = failed.len();
        failed.truncate(5);
        return Err(AppError::Internal(format!(
            "{n} stored secrets do not decrypt with this master key: {}{}",
            failed.join(", "),
            if n > 5 { ", …" } else { "" }
        )));
    }
    Ok(opened)
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    tenant_id: String,
    id: String,
    purpose: String,
    ciphertext: Vec<u8>,
}

/// Adds a key version and re-encrypts every secret under it, in batches, while the
/// server keeps running: each row is swapped only if it still holds the ciphertext we
/// read (compare-and-set), so a concurrent write by the server is never overwritten.
///
/// Runs on the owner connection (PostgreSQL: the `owner_maintenance` policies let the
/// migration owner see every tenant's rows).
pub async fn rotate(owner: &Store, crypto: &Crypto) -> Result<RotationReport> {
    let mut tx = owner.platform().await?;
    let new_version = current_version(&mut tx).await? + 1;
    tx.execute(
        sql("INSERT INTO key_versions (version, created_at) VALUES ($1, $2)")
            .bind(i64::from(new_version))
            .bind(Utc::now()),
    )
    .await?;
    tx.commit().await?;

    let mut tenant_secrets = 0u64;
    loop {
        let mut tx = owner.platform().await?;
        let rows: Vec<SecretRow> =
            cross_tenant::secrets_below(&mut tx, i64::from(new_version)).await?;
        if rows.is_empty() {
            break;
        }
        for r in rows {
            let tenant = TenantId::try_from(r.tenant_id.clone()).map_err(AppError::internal)?;
            let binding = Binding {
                purpose: &r.purpose,
                row_id: &r.id,
            };
            let plain = crypto
                .decrypt(KeyScope::Tenant(&tenant), binding, &r.ciphertext)
                .map_err(|e| {
                    AppError::internal(format!("secret {} of {}: {e}", r.id, r.tenant_id))
                })?;
            let ct = crypto.encrypt(KeyScope::Tenant(&tenant), new_version, binding, &plain.0);
            tenant_secrets += cross_tenant::reencrypt_secret(
                &mut tx,
                &tenant,
                &r.id,
                r.ciphertext,
                ct,
                i64::from(new_version),
            )
            .await?;
        }
        tx.commit().await?;
    }

    let mut user_secrets = 0u64;
    let mut tx = owner.platform().await?;
    let users: Vec<(String, Vec<u8>)> = tx
        .fetch_all(sql(
            "SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL",
        ))
        .await?;
    for (id, ct) in users {
        if Crypto::version_of(&ct).map_err(AppError::internal)? >= new_version {
            continue;
        }
        let user = UserId::try_from(id).map_err(AppError::internal)?;
        let binding = crate::auth::totp::binding(&user);
        let plain = crypto
            .decrypt(KeyScope::Platform, binding, &ct)
            .map_err(AppError::internal)?;
        let new_ct = crypto.encrypt(KeyScope::Platform, new_version, binding, &plain.0);
        user_secrets += tx
            .execute(
                sql("UPDATE users SET totp_secret = $1 WHERE id = $2 AND totp_secret = $3")
                    .bind(new_ct)
                    .bind(&user)
                    .bind(ct),
            )
            .await?;
    }
    let keys: Vec<(String, Vec<u8>)> = tx
        .fetch_all(sql("SELECT id, private_key FROM log_keys"))
        .await?;
    let mut log_keys = 0u64;
    for (id, ct) in keys {
        if Crypto::version_of(&ct).map_err(AppError::internal)? >= new_version {
            continue;
        }
        let binding = Binding {
            purpose: LOG_KEY_PURPOSE,
            row_id: &id,
        };
        let plain = crypto
            .decrypt(KeyScope::Platform, binding, &ct)
            .map_err(AppError::internal)?;
        let new_ct = crypto.encrypt(KeyScope::Platform, new_version, binding, &plain.0);
        log_keys += tx
            .execute(
                sql("UPDATE log_keys SET private_key = $1 WHERE id = $2 AND private_key = $3")
                    .bind(new_ct)
                    .bind(&id)
                    .bind(ct),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(RotationReport {
        new_version,
        tenant_secrets,
        user_secrets,
        log_keys,
    })
}
