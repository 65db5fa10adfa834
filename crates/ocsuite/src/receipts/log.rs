//! A company's log: integrating receipts into the tree, checkpoints and proofs.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::keys::LogSigner;
use super::merkle::{self, Hash, NodeKey};
use super::note;
use crate::crypto::Crypto;
use crate::error::{AppError, Result};
use crate::ids::TenantId;
use crate::store::{Backend, Store, TenantTx, cross_tenant, scoped};

/// Receipts given positions per transaction on PostgreSQL, where the transaction blocks
/// no other writer.
const BATCH: i64 = 2_000;

/// The same on SQLite, where the transaction holds the one writer and every request's
/// write queues behind it: 2,000 receipts kept it for a few hundred milliseconds on a
/// small machine, the tail of every write path's latency under load. A hundred or so
/// keep a turn to a few milliseconds, and the background run paces them (see
/// [`integrate_pending`]).
const SQLITE_BATCH: i64 = 128;

/// At most this many transactions of a backlog go by without a signed checkpoint (one
/// is also signed by the transaction that empties the backlog), so a burst does not add
/// a checkpoint row per small transaction.
const SIGN_EVERY: u32 = 8;

/// How often every process integrates waiting receipts and signs checkpoints (the
/// issue asks for a checkpoint at least every minute while a log grows).
pub const INTEGRATE_EVERY: Duration = Duration::from_secs(10);

/// A signed checkpoint as stored.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointOut {
    pub origin: String,
    pub size: u64,
    /// Base64 of the root hash.
    pub root: String,
    /// The C2SP signed note.
    pub note: String,
    pub key_id: String,
    pub created_at: DateTime<Utc>,
}

/// The origin line of a company's log, fixed when its first receipt is integrated (a
/// later change of host or key keeps the log's name).
pub fn origin(key_name: &str, tenant: &TenantId) -> String {
    format!("{key_name}/{tenant}")
}

fn hex32(s: &str) -> Result<Hash> {
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AppError::internal("a stored hash is not 32 bytes of hex"))
}

/// Reads the nodes `keys` from the company's tree.
pub async fn fetch_nodes(tx: &mut TenantTx, keys: &[NodeKey]) -> Result<HashMap<NodeKey, Hash>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let q = cross_tenant::log_nodes_get(tx, keys);
    let rows: Vec<(i64, i64, String)> = tx.fetch_all(q).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for (level, idx, h) in rows {
        let key = (
            u32::try_from(level).map_err(AppError::internal)?,
            u64::try_from(idx).map_err(AppError::internal)?,
        );
        out.insert(key, hex32(&h)?);
    }
    if out.len() != keys.len() {
        return Err(AppError::internal("the log is missing tree nodes"));
    }
    Ok(out)
}

/// Gives every waiting receipt of the company a position, stores the tree's new nodes
/// and signs a checkpoint of the new size. Returns the log's size.
///
/// A backlog goes in transactions of [`BATCH`] ([`SQLITE_BATCH`] on SQLite) receipts;
/// a checkpoint is signed by the one that empties it and by every [`SIGN_EVERY`]th.
/// If a run stopped between the two (a crash), the next run finds the head past the
/// newest checkpoint and signs it then.
pub async fn integrate(
    store: &Store,
    crypto: &Crypto,
    signer: &LogSigner,
    tenant: &TenantId,
) -> Result<u64> {
    integrate_with(store, crypto, signer, tenant, false).await
}

/// [`integrate`]; `paced`: on SQLite, wait between transactions (the background run,
/// which nobody waits for; a request that needs the log now does not wait).
async fn integrate_with(
    store: &Store,
    crypto: &Crypto,
    signer: &LogSigner,
    tenant: &TenantId,
    paced: bool,
) -> Result<u64> {
    // The key first: loading it may write, and on SQLite the transaction below holds
    // the one writer.
    let key = signer.active(store, crypto).await?;
    let sqlite = store.backend() == Backend::Sqlite;
    let batch = if sqlite { SQLITE_BATCH } else { BATCH };
    let mut unsigned = 0u32;
    loop {
        let mut tx = store.tenant(tenant).await?;
        let turn = std::time::Instant::now();
        tx.execute(
            scoped("INSERT INTO log_heads (tenant_id, size, origin, updated_at) VALUES ($1, 0, $2, $3) ON CONFLICT (tenant_id) DO NOTHING")
                .bind(origin(&key.name, tenant))
                .bind(Utc::now()),
        )
        .await?;
        let q = cross_tenant::log_head_for_update(&tx);
        let (size, log_origin): (i64, String) = tx.fetch_one(q).await?;
        let size = u64::try_from(size).map_err(AppError::internal)?;
        let pending: Vec<(String, String)> = tx
            .fetch_all(
                scoped("SELECT id, leaf_hash FROM receipts WHERE tenant_id = $1 AND seq IS NULL ORDER BY created_at, id LIMIT $2")
                    .bind(batch),
            )
            .await?;
        if pending.is_empty() {
            if size > 0 && latest_size(&mut tx).await? < size {
                let frontier = merkle::needed(|r| {
                    merkle::root(r, size);
                });
                let mut nodes = fetch_nodes(&mut tx, &frontier).await?;
                let root = merkle::root(&mut nodes, size);
                sign_checkpoint(&mut tx, &key, &log_origin, size, &root).await?;
                tx.commit().await?;
            }
            return Ok(size);
        }
        let frontier = merkle::needed(|r| {
            if size > 0 {
                merkle::root(r, size);
            }
        });
        let mut nodes = fetch_nodes(&mut tx, &frontier).await?;
        let mut new_nodes: Vec<(u32, u64, String)> = Vec::with_capacity(pending.len() * 2);
        let mut seqs: Vec<(&str, u64)> = Vec::with_capacity(pending.len());
        for (i, (id, leaf)) in pending.iter().enumerate() {
            let index = size + i as u64;
            seqs.push((id, index));
            for (level, idx) in merkle::completed_by(index) {
                let h = if level == 0 {
                    hex32(leaf)?
                } else {
                    let l = nodes.get(&(level - 1, idx * 2)).copied();
                    let r = nodes.get(&(level - 1, idx * 2 + 1)).copied();
                    let (Some(l), Some(r)) = (l, r) else {
                        return Err(AppError::internal("a tree node's children are missing"));
                    };
                    merkle::node_hash(&l, &r)
                };
                nodes.insert((level, idx), h);
                new_nodes.push((level, idx, hex::encode(h)));
            }
        }
        let new_size = size + pending.len() as u64;
        let put = cross_tenant::log_nodes_put(&tx)
            .bind(serde_json::to_string(&new_nodes).map_err(AppError::internal)?);
        tx.execute(put).await?;
        cross_tenant::receipts_set_seq(&mut tx, &seqs).await?;
        let new_size_i = i64::try_from(new_size).map_err(AppError::internal)?;
        tx.execute(
            scoped("UPDATE log_heads SET size = $2, updated_at = $3 WHERE tenant_id = $1")
                .bind(new_size_i)
                .bind(Utc::now()),
        )
        .await?;
        let drained = (pending.len() as i64) < batch;
        unsigned += 1;
        if drained || unsigned >= SIGN_EVERY {
            let root = merkle::root(&mut nodes, new_size);
            sign_checkpoint(&mut tx, &key, &log_origin, new_size, &root).await?;
            unsigned = 0;
        }
        tx.commit().await?;
        if drained {
            return Ok(new_size);
        }
        if paced && sqlite {
            // Leave the writer to everyone else for three times as long as this
            // transaction held it, so a backlog never takes more than a quarter of it.
            tokio::time::sleep(turn.elapsed() * 3).await;
        }
    }
}

/// The size of the newest signed checkpoint (0 before the first).
async fn latest_size(tx: &mut TenantTx) -> Result<u64> {
    let (size,): (Option<i64>,) = tx
        .fetch_one(scoped(
            "SELECT MAX(size) FROM log_checkpoints WHERE tenant_id = $1",
        ))
        .await?;
    u64::try_from(size.unwrap_or(0)).map_err(AppError::internal)
}

/// Signs and stores the checkpoint of the log at `size` with `root`.
async fn sign_checkpoint(
    tx: &mut TenantTx,
    key: &super::keys::ActiveKey,
    log_origin: &str,
    size: u64,
    root: &Hash,
) -> Result<()> {
    let body = note::checkpoint_body(log_origin, size, root);
    let signed = note::sign(&body, &key.name, &key.signing);
    tx.execute(
        scoped("INSERT INTO log_checkpoints (tenant_id, size, root, note, key_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(i64::try_from(size).map_err(AppError::internal)?)
            .bind(hex::encode(root))
            .bind(signed)
            .bind(&key.id)
            .bind(Utc::now()),
    )
    .await?;
    Ok(())
}

/// Integrates every company with waiting receipts (each process, every
/// [`INTEGRATE_EVERY`]). On SQLite a backlog's transactions are paced: run back to back,
/// 37 of them after a burst took the writer for 550 ms and every request's write waited
/// up to 250 ms behind them (the bench's paced phase).
pub async fn integrate_pending(store: &Store, crypto: &Crypto, signer: &LogSigner) -> Result<()> {
    let mut tx = store.platform_read().await?;
    let tenants = cross_tenant::log_pending_tenants(&mut tx, 500).await?;
    drop(tx);
    for t in tenants {
        let tenant = TenantId::try_from(t).map_err(AppError::internal)?;
        // One company's failure does not hold the others' logs back.
        if let Err(e) = integrate_with(store, crypto, signer, &tenant, true).await {
            tracing::warn!(tenant = %tenant, error = %e, "integrating a company's receipts failed");
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    size: i64,
    root: String,
    note: String,
    key_id: String,
    created_at: DateTime<Utc>,
}

impl CheckpointRow {
    fn out(self) -> Result<CheckpointOut> {
        let origin = self.note.lines().next().unwrap_or_default().to_owned();
        Ok(CheckpointOut {
            origin,
            size: u64::try_from(self.size).map_err(AppError::internal)?,
            root: B64.encode(hex32(&self.root)?),
            note: self.note,
            key_id: self.key_id,
            created_at: self.created_at,
        })
    }
}

/// The newest checkpoint, if the log has one.
pub async fn latest_checkpoint(tx: &mut TenantTx) -> Result<Option<CheckpointOut>> {
    let row: Option<CheckpointRow> = tx
        .fetch_optional(scoped(
            "SELECT size, root, note, key_id, created_at FROM log_checkpoints WHERE tenant_id = $1 ORDER BY size DESC LIMIT 1",
        ))
        .await?;
    row.map(CheckpointRow::out).transpose()
}

/// The newest checkpoints, up to `limit`, oldest first.
pub async fn recent_checkpoints(tx: &mut TenantTx, limit: i64) -> Result<Vec<CheckpointOut>> {
    let rows: Vec<CheckpointRow> = tx
        .fetch_all(
            scoped(
                "SELECT size, root, note, key_id, created_at FROM log_checkpoints WHERE tenant_id = $1 ORDER BY size DESC LIMIT $2",
            )
            .bind(limit),
        )
        .await?;
    let mut out = rows
        .into_iter()
        .map(CheckpointRow::out)
        .collect::<Result<Vec<_>>>()?;
    out.reverse();
    Ok(out)
}

/// The checkpoint of exactly `size` entries, if one was signed.
pub async fn checkpoint_at(tx: &mut TenantTx, size: u64) -> Result<Option<CheckpointOut>> {
    let size = i64::try_from(size).map_err(AppError::internal)?;
    let row: Option<CheckpointRow> = tx
        .fetch_optional(
            scoped("SELECT size, root, note, key_id, created_at FROM log_checkpoints WHERE tenant_id = $1 AND size = $2")
                .bind(size),
        )
        .await?;
    row.map(CheckpointRow::out).transpose()
}

fn b64_all(hashes: Vec<Hash>) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

/// The inclusion proof of entry `index` in the first `size` entries, base64 hashes.
pub async fn inclusion(tx: &mut TenantTx, index: u64, size: u64) -> Result<Vec<String>> {
    let keys = merkle::needed(|r| {
        merkle::inclusion_proof(r, index, size);
    });
    let mut nodes = fetch_nodes(tx, &keys).await?;
    Ok(b64_all(merkle::inclusion_proof(&mut nodes, index, size)))
}

/// The consistency proof from `old` to `new` entries, base64 hashes.
pub async fn consistency(tx: &mut TenantTx, old: u64, new: u64) -> Result<Vec<String>> {
    let keys = merkle::needed(|r| {
        merkle::consistency_proof(r, old, new);
    });
    let mut nodes = fetch_nodes(tx, &keys).await?;
    Ok(b64_all(merkle::consistency_proof(&mut nodes, old, new)))
}

/// The root of the first `size` entries, from stored nodes.
pub async fn root_at(tx: &mut TenantTx, size: u64) -> Result<Hash> {
    let keys = merkle::needed(|r| {
        merkle::root(r, size);
    });
    let mut nodes = fetch_nodes(tx, &keys).await?;
    Ok(merkle::root(&mut nodes, size))
}
