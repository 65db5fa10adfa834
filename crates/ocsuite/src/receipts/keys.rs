//! The platform's Ed25519 keys that sign the logs' checkpoints.
//!
//! One key is active at a time (a unique partial index holds it); rotation retires it
//! and makes a new one in one transaction. Retired keys stay published, so checkpoints
//! they signed keep verifying. The private half is encrypted under the platform scope
//! like TOTP seeds (`ocsuite keys rotate` re-encrypts it with the rest).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::Serialize;
use tokio::sync::RwLock;

use super::note;
use crate::crypto::secrets::{LOG_KEY_PURPOSE, current_version};
use crate::crypto::{Binding, Crypto, KeyScope};
use crate::error::{AppError, Result};
use crate::ids::LogKeyId;
use crate::store::{Store, Tx, sql};

/// The key that signs now.
pub struct ActiveKey {
    pub id: LogKeyId,
    pub name: String,
    pub signing: SigningKey,
}

/// This process's copy of the active key, loaded (or made) on first use and reloaded
/// with the other cached settings, so a rotation on another node reaches this one.
pub struct LogSigner {
    name: String,
    cached: RwLock<Option<Arc<ActiveKey>>>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: LogKeyId,
    name: String,
    private_key: Vec<u8>,
}

impl LogSigner {
    /// `public_url`'s host names the keys and logs (`<host>/ocsuite-log`).
    pub fn new(public_url: Option<&str>) -> Self {
        let host = public_url
            .and_then(|u| reqwest::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "ocsuite.local".to_owned());
        Self {
            name: format!("{host}/ocsuite-log"),
            cached: RwLock::new(None),
        }
    }

    pub async fn active(&self, store: &Store, crypto: &Crypto) -> Result<Arc<ActiveKey>> {
        if let Some(k) = self.cached.read().await.as_ref() {
            return Ok(k.clone());
        }
        self.reload(store, crypto).await
    }

    /// Reads the active key again, making the first one if there is none.
    pub async fn reload(&self, store: &Store, crypto: &Crypto) -> Result<Arc<ActiveKey>> {
        let mut tx = store.platform().await?;
        let row = match active_row(&mut tx).await? {
            Some(r) => r,
            None => {
                insert_key(&mut tx, crypto, &self.name).await?;
                active_row(&mut tx)
                    .await?
                    .ok_or_else(|| AppError::internal("no active log key after making one"))?
            }
        };
        tx.commit().await?;
        let key = Arc::new(open(crypto, row)?);
        *self.cached.write().await = Some(key.clone());
        Ok(key)
    }

    /// Picks up a key rotated elsewhere (another node, `ocsuite receipts rotate-key`):
    /// a read, and a reload only when the active key changed.
    pub async fn refresh(&self, store: &Store, crypto: &Crypto) -> Result<()> {
        let Some(cached) = self.cached.read().await.as_ref().map(|k| k.id.clone()) else {
            return Ok(());
        };
        let mut tx = store.platform_read().await?;
        let active: Option<(LogKeyId,)> = tx
            .fetch_optional(sql("SELECT id FROM log_keys WHERE active = TRUE"))
            .await?;
        tx.commit().await?;
        if active.is_some_and(|(id,)| id != cached) {
            self.reload(store, crypto).await?;
        }
        Ok(())
    }

    /// Retires the active key and makes a new one; returns the new key's id.
    pub async fn rotate(&self, store: &Store, crypto: &Crypto) -> Result<LogKeyId> {
        let mut tx = store.platform().await?;
        tx.execute(
            sql("UPDATE log_keys SET active = FALSE, retired_at = $1 WHERE active = TRUE")
                .bind(Utc::now()),
        )
        .await?;
        let id = insert_key(&mut tx, crypto, &self.name).await?;
        tx.commit().await?;
        self.reload(store, crypto).await?;
        Ok(id)
    }
}

async fn active_row(tx: &mut Tx) -> Result<Option<KeyRow>> {
    Ok(tx
        .fetch_optional(sql(
            "SELECT id, name, private_key FROM log_keys WHERE active = TRUE",
        ))
        .await?)
}

/// Makes a key unless another process just made one (the unique index keeps one
/// active); returns the id it tried.
async fn insert_key(tx: &mut Tx, crypto: &Crypto, name: &str) -> Result<LogKeyId> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let id = LogKeyId::new();
    let version = current_version(tx).await?;
    let ct = crypto.encrypt(KeyScope::Platform, version, binding(&id), &key.to_bytes());
    tx.execute(
        sql("INSERT INTO log_keys (id, name, public_key, private_key, active, created_at) VALUES ($1, $2, $3, $4, TRUE, $5) \
             ON CONFLICT DO NOTHING")
            .bind(&id)
            .bind(name)
            .bind(key.verifying_key().to_bytes().to_vec())
            .bind(ct)
            .bind(Utc::now()),
    )
    .await?;
    Ok(id)
}

fn binding(id: &LogKeyId) -> Binding<'_> {
    Binding {
        purpose: LOG_KEY_PURPOSE,
        row_id: id.as_str(),
    }
}

fn open(crypto: &Crypto, row: KeyRow) -> Result<ActiveKey> {
    let plain = crypto
        .decrypt(KeyScope::Platform, binding(&row.id), &row.private_key)
        .map_err(AppError::internal)?;
    let bytes: [u8; 32] = plain
        .0
        .as_slice()
        .try_into()
        .map_err(|_| AppError::internal("a log key is not 32 bytes"))?;
    Ok(ActiveKey {
        id: row.id,
        name: row.name,
        signing: SigningKey::from_bytes(&bytes),
    })
}

/// A published key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishedKey {
    pub id: String,
    pub name: String,
    /// The C2SP verifier key: `name+hash+base64(0x01 ‖ public key)`.
    pub verifier_key: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// Every key that ever signed, newest first.
pub async fn published(store: &Store) -> Result<Vec<PublishedKey>> {
    let mut tx = store.platform_read().await?;
    type Published = (
        String,
        String,
        Vec<u8>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Published> = tx
        .fetch_all(sql(
            "SELECT id, name, public_key, created_at, retired_at FROM log_keys ORDER BY created_at DESC",
        ))
        .await?;
    rows.into_iter()
        .map(|(id, name, public, created_at, retired_at)| {
            let public: [u8; 32] = public
                .as_slice()
                .try_into()
                .map_err(|_| AppError::internal("a stored public key is not 32 bytes"))?;
            Ok(PublishedKey {
                verifier_key: note::verifier_key(&name, &public),
                id,
                name,
                created_at,
                retired_at,
            })
        })
        .collect()
}

/// `ocsuite receipts rotate-key`: retires the signing key and makes a new one.
pub async fn admin_rotate(config: crate::config::Config) -> Result<LogKeyId> {
    let master = crate::master_key(&config).map_err(AppError::internal)?;
    crate::store::migrate(&config).await?;
    let store = Store::connect(&config.database_url, 2).await?;
    let crypto = Crypto::new(master);
    crate::crypto::secrets::ensure_initial_version(&store).await?;
    let signer = LogSigner::new(config.public_url.as_deref());
    let id = signer.rotate(&store, &crypto).await;
    store.close().await;
    id
}
