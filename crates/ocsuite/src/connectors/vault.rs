//! The token vault: the only code that decrypts connector tokens.
//!
//! [`Vault::access_token`] hands a caller (a module, a sync) a valid access token for a
//! tenant's connection: decrypted for that call only, refreshed first when it expires
//! within a minute. A refresh runs under a lease on the connector row
//! (`refresh_lock_until`), taken in a short transaction and never held across the HTTP
//! call, so two workers — in one process or many — never refresh at once (a provider
//! that rotates refresh tokens would otherwise see the old one reused and revoke the
//! grant). The loser waits for the winner's tokens. A refresh the provider refuses
//! (`invalid_grant`) marks the connection expired: only a person reconnecting fixes it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ocsuite_module_sdk::TaskError;
use serde::{Deserialize, Serialize};

use super::oauth::{OAuth, OAuthError, Tokens};
use super::{Provider, Providers, Row, SECRET_PURPOSE, by_provider, mark_dead, record_error};
use crate::audit;
use crate::crypto::secrets;
use crate::crypto::{Binding, Crypto, KeyScope};
use crate::error::{AppError, Result};
use crate::ids::{ConnectorId, TenantId};
use crate::store::{Store, TenantTx, scoped};

/// A token is refreshed when it expires within this margin.
const MIN_VALIDITY: chrono::Duration = chrono::Duration::seconds(60);
/// How long a refresh lease lasts; longer than the OAuth client's whole timeout.
const LEASE: chrono::Duration = chrono::Duration::seconds(30);
/// How long a caller waits for another worker's refresh before giving up (retryably).
const WAIT_FOR_REFRESH: Duration = Duration::from_secs(20);

/// An access token for one call. `Debug` never shows it; dropping it wipes it.
pub struct AccessToken(String);

impl AccessToken {
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

impl Drop for AccessToken {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        for b in bytes.iter_mut() {
            *b = std::hint::black_box(0);
        }
    }
}

/// The token pair as sealed at rest. It names its connector, so a ciphertext moved to
/// another connector's row is refused even before the AEAD binding would refuse it.
#[derive(Serialize, Deserialize)]
struct Sealed {
    connector: String,
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed([redacted])")
    }
}

/// Why no token could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("no {0} account is connected")]
    NotConnected(String),
    #[error("provider {0} is not configured on this server")]
    UnknownProvider(String),
    #[error("the {provider} connection must be reconnected by an admin: {reason}")]
    Reconnect { provider: String, reason: String },
    #[error("refreshing the {provider} token failed: {error}")]
    Refresh { provider: String, error: OAuthError },
    #[error("another worker is still refreshing the {0} token")]
    Busy(String),
    #[error("the stored {0} tokens cannot be decrypted (tampered with or moved); reconnect")]
    Undecryptable(String),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<sqlx::Error> for VaultError {
    fn from(e: sqlx::Error) -> Self {
        Self::App(e.into())
    }
}

impl VaultError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refresh { error, .. } => error.is_transient(),
            Self::Busy(_) | Self::App(_) => true,
            _ => false,
        }
    }
}

impl From<VaultError> for TaskError {
    fn from(e: VaultError) -> Self {
        if e.is_retryable() {
            TaskError::Retryable(e.to_string())
        } else {
            TaskError::Permanent(e.to_string())
        }
    }
}

/// What a health check found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub provider: String,
    pub account: Option<String>,
    pub scopes: Vec<String>,
    pub refreshed: bool,
}

pub struct Vault {
    providers: Arc<Providers>,
    oauth: OAuth,
    store: Store,
    crypto: Crypto,
}

impl Vault {
    pub fn new(providers: Providers, store: Store, crypto: Crypto) -> Self {
        Self {
            providers: Arc::new(providers),
            oauth: OAuth::new(),
            store,
            crypto,
        }
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    pub fn oauth(&self) -> &OAuth {
        &self.oauth
    }

    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    fn provider(&self, name: &str) -> Result<&Arc<Provider>, VaultError> {
        self.providers
            .get(name)
            .ok_or_else(|| VaultError::UnknownProvider(name.to_owned()))
    }

    /// A valid access token for the tenant's `provider` connection.
    pub async fn access_token(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<AccessToken, VaultError> {
        self.token(tenant, provider, false).await.map(|(t, _)| t)
    }

    /// The token, refreshed first when near expiry (or always, with `force`); also
    /// whether this call refreshed it.
    async fn token(
        &self,
        tenant: &TenantId,
        provider: &str,
        force: bool,
    ) -> Result<(AccessToken, bool), VaultError> {
        let p = self.provider(provider)?.clone();
        let waited_since = tokio::time::Instant::now();
        let mut force = force;
        loop {
            let now = Utc::now();
            let mut tx = self.store.tenant(tenant).await?;
            let row = by_provider(&mut tx, provider)
                .await?
                .ok_or_else(|| VaultError::NotConnected(provider.to_owned()))?;
            check_usable(&row, provider)?;
            if !force && is_fresh(&row, now) {
                let sealed = self.load(&mut tx, &row.id, provider).await?;
                tx.commit().await?;
                return Ok((AccessToken(sealed.access_token.clone()), false));
            }
            let claimed = tx
                .execute(
                    scoped("UPDATE connectors SET refresh_lock_until = $2 WHERE tenant_id = $1 AND id = $3 \
                         AND (refresh_lock_until IS NULL OR refresh_lock_until < $4)")
                        .bind(now + LEASE)
                        .bind(&row.id)
                        .bind(now),
                )
                .await?
                == 1;
            if !claimed {
                tx.commit().await?;
                if waited_since.elapsed() > WAIT_FOR_REFRESH {
                    return Err(VaultError::Busy(provider.to_owned()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Whoever held the lease refreshed: their token is fresh now.
                force = false;
                continue;
            }
            // Holding the lease: read again, since a refresh may have finished between
            // the first read and the claim.
            let row = by_provider(&mut tx, provider)
                .await?
                .ok_or_else(|| VaultError::NotConnected(provider.to_owned()))?;
            let sealed = self.load(&mut tx, &row.id, provider).await?;
            if !force && is_fresh(&row, Utc::now()) {
                release(&mut tx, &row.id).await?;
                tx.commit().await?;
                return Ok((AccessToken(sealed.access_token.clone()), false));
            }
            tx.commit().await?;
            return self
                .refresh(tenant, &p, &row, sealed)
                .await
                .map(|t| (t, true));
        }
    }

    /// Refreshes with the lease held; always releases it.
    async fn refresh(
        &self,
        tenant: &TenantId,
        p: &Provider,
        row: &Row,
        sealed: Sealed,
    ) -> Result<AccessToken, VaultError> {
        let Some(refresh_token) = sealed.refresh_token.clone() else {
            let reason = "the access token expired and the provider issued no refresh token";
            let mut tx = self.store.tenant(tenant).await?;
            mark_dead(&mut tx, &row.id, "expired", reason).await?;
            release(&mut tx, &row.id).await?;
            tx.commit().await?;
            return Err(VaultError::Reconnect {
                provider: p.name.clone(),
                reason: reason.into(),
            });
        };
        let result = self.oauth.refresh(p, &refresh_token).await;
        let mut tx = self.store.tenant(tenant).await?;
        let out = match result {
            Ok(t) => {
                let token = AccessToken(t.access_token.clone());
                self.save(&mut tx, &row.id, &t, Some(refresh_token)).await?;
                audit::record_system(
                    &mut tx,
                    "connector.refresh",
                    "connector",
                    row.id.as_str(),
                    serde_json::json!({"provider": p.name}),
                )
                .await?;
                Ok(token)
            }
            Err(e) if e.grant_refused() => {
                let reason = format!("the provider refused the refresh token ({e})");
                mark_dead(&mut tx, &row.id, "expired", &reason).await?;
                audit::record_system(
                    &mut tx,
                    "connector.expired",
                    "connector",
                    row.id.as_str(),
                    serde_json::json!({"provider": p.name, "reason": reason}),
                )
                .await?;
                Err(VaultError::Reconnect {
                    provider: p.name.clone(),
                    reason,
                })
            }
            Err(e) => {
                record_error(&mut tx, &row.id, &format!("token refresh failed: {e}")).await?;
                audit::record_system(
                    &mut tx,
                    "connector.refresh_failed",
                    "connector",
                    row.id.as_str(),
                    serde_json::json!({"provider": p.name, "error": e.to_string()}),
                )
                .await?;
                Err(VaultError::Refresh {
                    provider: p.name.clone(),
                    error: e,
                })
            }
        };
        release(&mut tx, &row.id).await?;
        tx.commit().await?;
        out
    }

    /// Stores freshly issued tokens on the connector: sealed in `tenant_secrets`, their
    /// lifetimes and scopes on the row. A response without a refresh token keeps
    /// `previous_refresh` (providers send one only at consent, or when rotating).
    pub async fn save(
        &self,
        tx: &mut TenantTx,
        id: &ConnectorId,
        t: &Tokens,
        previous_refresh: Option<String>,
    ) -> Result<()> {
        let refresh = t.refresh_token.clone().or(previous_refresh);
        let sealed = Sealed {
            connector: id.to_string(),
            access_token: t.access_token.clone(),
            refresh_token: refresh.clone(),
        };
        let plain = serde_json::to_vec(&sealed).map_err(AppError::internal)?;
        let version = secrets::current_version(tx).await?;
        secrets::put(
            tx,
            &self.crypto,
            version,
            SECRET_PURPOSE,
            id.as_str(),
            &plain,
        )
        .await?;
        let now = Utc::now();
        let secs =
            |d: Duration| chrono::Duration::seconds(d.as_secs().min(10 * 365 * 86400) as i64);
        tx.execute(
            scoped(
                "UPDATE connectors SET status = 'connected', access_expires_at = $2, \
                 refresh_expires_at = CASE WHEN $3 THEN $4 ELSE refresh_expires_at END, \
                 has_refresh_token = $5, scopes = COALESCE($6, scopes), last_refresh_at = $7, \
                 last_error = NULL, last_error_at = NULL, updated_at = $7 \
                 WHERE tenant_id = $1 AND id = $8",
            )
            .bind(t.expires_in.map(|d| now + secs(d)))
            .bind(t.refresh_token.is_some() || t.refresh_expires_in.is_some())
            .bind(t.refresh_expires_in.map(|d| now + secs(d)))
            .bind(refresh.is_some())
            .bind(t.scopes.as_ref().map(|s| s.join(" ")))
            .bind(now)
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn load(
        &self,
        tx: &mut TenantTx,
        id: &ConnectorId,
        provider: &str,
    ) -> Result<Sealed, VaultError> {
        let tenant = tx.tenant_id().clone();
        let row: Option<(String, Vec<u8>)> = tx
            .fetch_optional(
                scoped("SELECT id, ciphertext FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2 AND name = $3")
                    .bind(SECRET_PURPOSE)
                    .bind(id),
            )
            .await?;
        let Some((secret_id, ct)) = row else {
            return Err(VaultError::NotConnected(provider.to_owned()));
        };
        let plain = self
            .crypto
            .decrypt(
                KeyScope::Tenant(&tenant),
                Binding {
                    purpose: SECRET_PURPOSE,
                    row_id: &secret_id,
                },
                &ct,
            )
            .map_err(|_| VaultError::Undecryptable(provider.to_owned()))?;
        let sealed: Sealed = serde_json::from_slice(&plain.0)
            .map_err(|_| VaultError::Undecryptable(provider.to_owned()))?;
        if sealed.connector != id.as_str() {
            return Err(VaultError::Undecryptable(provider.to_owned()));
        }
        Ok(sealed)
    }

    /// Both tokens, for revocation at disconnect.
    pub async fn tokens_for_revocation(
        &self,
        tx: &mut TenantTx,
        id: &ConnectorId,
        provider: &str,
    ) -> Result<(String, Option<String>), VaultError> {
        let s = self.load(tx, id, provider).await?;
        Ok((s.access_token.clone(), s.refresh_token.clone()))
    }

    /// Proves the connection works: a valid token (refreshed if need be) that the
    /// provider's userinfo endpoint accepts. Records the account and sync time.
    pub async fn check(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<CheckReport, VaultError> {
        let p = self.provider(provider)?.clone();
        let (token, mut refreshed) = self.token(tenant, provider, false).await?;
        let account = match self.oauth.account(&p, token.secret()).await {
            // Refused although not expired (revoked, or rotated elsewhere): one forced
            // refresh tells a dead grant from a stale token.
            Err(OAuthError::Refused { .. }) => {
                drop(token);
                let (token, _) = self.token(tenant, provider, true).await?;
                refreshed = true;
                self.oauth.account(&p, token.secret()).await
            }
            other => other,
        };
        let mut tx = self.store.tenant(tenant).await?;
        let row = by_provider(&mut tx, provider)
            .await?
            .ok_or_else(|| VaultError::NotConnected(provider.to_owned()))?;
        let account = match account {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("health check failed: {e}");
                if matches!(e, OAuthError::Refused { .. }) {
                    mark_dead(&mut tx, &row.id, "revoked", &msg).await?;
                    tx.commit().await?;
                    return Err(VaultError::Reconnect {
                        provider: provider.to_owned(),
                        reason: msg,
                    });
                }
                record_error(&mut tx, &row.id, &msg).await?;
                tx.commit().await?;
                return Err(VaultError::Refresh {
                    provider: provider.to_owned(),
                    error: e,
                });
            }
        };
        let now = Utc::now();
        tx.execute(
            scoped(
                "UPDATE connectors SET account = COALESCE($2, account), last_sync_at = $3, \
                 status = CASE WHEN status = 'error' THEN 'connected' ELSE status END, \
                 last_error = CASE WHEN status = 'error' THEN NULL ELSE last_error END, \
                 last_error_at = CASE WHEN status = 'error' THEN NULL ELSE last_error_at END, \
                 updated_at = $3 WHERE tenant_id = $1 AND id = $4",
            )
            .bind(account.clone())
            .bind(now)
            .bind(&row.id),
        )
        .await?;
        tx.commit().await?;
        Ok(CheckReport {
            provider: provider.to_owned(),
            account: account.or(row.account),
            scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
            refreshed,
        })
    }
}

fn is_fresh(row: &Row, now: chrono::DateTime<Utc>) -> bool {
    row.access_expires_at.is_none_or(|t| t > now + MIN_VALIDITY)
}

fn check_usable(row: &Row, provider: &str) -> Result<(), VaultError> {
    if row.status == "expired" || row.status == "revoked" {
        return Err(VaultError::Reconnect {
            provider: provider.to_owned(),
            reason: row
                .last_error
                .clone()
                .unwrap_or_else(|| format!("the connection is {}", row.status)),
        });
    }
    Ok(())
}

async fn release(tx: &mut TenantTx, id: &ConnectorId) -> Result<()> {
    tx.execute(
        scoped("UPDATE connectors SET refresh_lock_until = NULL WHERE tenant_id = $1 AND id = $2")
            .bind(id),
    )
    .await?;
    Ok(())
}

/// What a module gets: tokens of its task's tenant, and no other.
#[derive(Clone)]
pub struct TokenSource {
    vault: Arc<Vault>,
    tenant: TenantId,
}

impl TokenSource {
    pub fn new(vault: Arc<Vault>, tenant: TenantId) -> Self {
        Self { vault, tenant }
    }

    pub async fn access_token(&self, provider: &str) -> Result<AccessToken, TaskError> {
        Ok(self.vault.access_token(&self.tenant, provider).await?)
    }

    /// The configured provider `name`, if any.
    pub fn provider(&self, name: &str) -> Option<Arc<super::Provider>> {
        self.vault.providers().get(name).cloned()
    }

    pub async fn check(&self, provider: &str) -> Result<CheckReport, TaskError> {
        Ok(self.vault.check(&self.tenant, provider).await?)
    }
}
