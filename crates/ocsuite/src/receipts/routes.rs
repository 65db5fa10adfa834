//! `GET /api/v1/receipts…` (a company's admins) and `/.well-known/ocsuite-log-keys`
//! (anyone).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Revealed;
use super::bundle::{self, Bundle, Reveal};
use super::keys::{self, PublishedKey};
use super::log::{self, CheckpointOut};
use crate::error::{AppError, Result};
use crate::ids::{ReceiptId, TenantId};
use crate::json::ApiQuery;
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::extract::Admin;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(checkpoint))
        .routes(routes!(consistency))
        .routes(routes!(export))
        .routes(routes!(get_one))
}

/// Positions every waiting receipt of the company and signs a checkpoint, so what the
/// caller reads next is proven.
pub async fn integrate(state: &AppState, tenant: &TenantId) -> Result<u64> {
    log::integrate(&state.store, &state.crypto, &state.log_signer, tenant).await
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Page size, 1–500 (default 100).
    pub limit: Option<u32>,
    /// Receipts older than this receipt id.
    pub before: Option<String>,
    /// Only this action (`task.approve`).
    pub action: Option<String>,
}

/// A receipt in the list.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ReceiptSummary {
    pub id: String,
    /// Its position in the log, once integrated (within seconds).
    pub index: Option<i64>,
    pub action: String,
    pub actor_type: String,
    pub actor_id: String,
    pub created_at: DateTime<Utc>,
    /// Its fields' values were erased; the log keeps their commitments.
    pub purged: bool,
}

/// The company's receipts, newest first.
#[utoipa::path(get, path = "/receipts", params(ListQuery), tag = "receipts",
    responses((status = 200, body = Vec<ReceiptSummary>), (status = 403, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<ReceiptSummary>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let before = match q.before.as_deref() {
        Some(b) => ReceiptId::parse(b)
            .ok_or_else(|| AppError::invalid("before", "before must be a receipt id (rct_…)"))?
            .to_string(),
        None => String::new(),
    };
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let rows: Vec<ReceiptSummary> = tx
        .fetch_all(
            scoped(
                "SELECT id, seq AS \"index\", action, actor_type, actor_id, created_at, purged_at IS NOT NULL AS purged \
                 FROM receipts WHERE tenant_id = $1 AND ($2 = '' OR id < $2) AND ($3 = '' OR action = $3) \
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(before)
            .bind(q.action.unwrap_or_default())
            .bind(i64::from(limit)),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// The company's newest signed checkpoint (a C2SP `tlog-checkpoint` in a signed note).
#[utoipa::path(get, path = "/receipts/checkpoint", tag = "receipts",
    responses((status = 200, body = CheckpointOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn checkpoint(State(state): State<AppState>, ctx: Admin) -> Result<Json<CheckpointOut>> {
    integrate(&state, &ctx.tenant_id).await?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let cp = log::latest_checkpoint(&mut tx).await?;
    tx.commit().await?;
    cp.map(Json)
        .ok_or_else(|| AppError::NotFound("checkpoint (the log has no entries yet)"))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ConsistencyQuery {
    /// The older tree size (≥ 1).
    pub from: u64,
    /// The newer tree size (≤ the newest checkpoint's).
    pub to: u64,
}

/// A consistency proof between two sizes of the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsistencyOut {
    pub from: u64,
    pub to: u64,
    /// RFC 9162 consistency proof, base64 hashes.
    pub proof: Vec<String>,
    /// The roots of both trees, base64.
    pub from_root: String,
    pub to_root: String,
    /// The signed checkpoints of those sizes, where one was signed.
    pub from_checkpoint: Option<String>,
    pub to_checkpoint: Option<String>,
}

/// Proves that the log of `from` entries is a prefix of the log of `to` entries.
#[utoipa::path(get, path = "/receipts/consistency", params(ConsistencyQuery), tag = "receipts",
    responses((status = 200, body = ConsistencyOut), (status = 422, body = crate::error::ErrorBody)))]
pub async fn consistency(
    State(state): State<AppState>,
    ctx: Admin,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyOut>> {
    let size = integrate(&state, &ctx.tenant_id).await?;
    if q.from == 0 || q.from > q.to {
        return Err(AppError::invalid(
            "from",
            "from must be at least 1 and at most to",
        ));
    }
    if q.to > size {
        return Err(AppError::invalid(
            "to",
            format!("to must be at most {size}, the log's size"),
        ));
    }
    let b64 = |h: super::merkle::Hash| {
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, h)
    };
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = ConsistencyOut {
        from: q.from,
        to: q.to,
        proof: log::consistency(&mut tx, q.from, q.to).await?,
        from_root: b64(log::root_at(&mut tx, q.from).await?),
        to_root: b64(log::root_at(&mut tx, q.to).await?),
        from_checkpoint: log::checkpoint_at(&mut tx, q.from).await?.map(|c| c.note),
        to_checkpoint: log::checkpoint_at(&mut tx, q.to).await?.map(|c| c.note),
    };
    tx.commit().await?;
    Ok(Json(out))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ExportQuery {
    /// Comma-separated fields to show (`action,actor_id,time`); the others keep only
    /// their commitments. Default: all.
    pub reveal: Option<String>,
}

/// The fields a receipt has.
pub const FIELDS: &[&str] = &[
    "action",
    "actor_id",
    "actor_type",
    "audit_id",
    "details",
    "request_id",
    "target_id",
    "target_type",
    "time",
];

/// Parses `reveal`, refusing unknown field names.
pub fn reveal_list(reveal: Option<&str>) -> Result<Option<Vec<String>>> {
    let Some(r) = reveal else { return Ok(None) };
    let names: Vec<String> = r
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = names.iter().find(|n| !FIELDS.contains(&n.as_str())) {
        return Err(AppError::invalid(
            "reveal",
            format!("unknown field {bad:?}; fields are {}", FIELDS.join(", ")),
        ));
    }
    Ok(Some(names))
}

/// The company's whole log as a receipt bundle, for `ocsuite receipts verify`.
#[utoipa::path(get, path = "/receipts/export", params(ExportQuery), tag = "receipts",
    responses((status = 200, body = Bundle), (status = 422, body = crate::error::ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    ctx: Admin,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Json<Bundle>> {
    let reveal = reveal_list(q.reveal.as_deref())?;
    integrate(&state, &ctx.tenant_id).await?;
    let keys = published_keys(&state).await?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let b = bundle::build(
        &mut tx,
        keys,
        reveal.as_deref().map_or(Reveal::All, Reveal::Only),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(b))
}

/// The platform's verifier keys, making the first key if none exists yet.
pub async fn published_keys(state: &AppState) -> Result<Vec<String>> {
    state.log_signer.active(&state.store, &state.crypto).await?;
    Ok(keys::published(&state.store)
        .await?
        .into_iter()
        .map(|k| k.verifier_key)
        .collect())
}

/// One receipt with its proof.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiptOut {
    pub id: String,
    pub index: u64,
    pub action: String,
    pub actor_type: String,
    pub actor_id: String,
    pub created_at: DateTime<Utc>,
    /// Each field's value and salt (empty once purged).
    pub fields: BTreeMap<String, Revealed>,
    /// Each field's commitment, base64.
    pub commitments: BTreeMap<String, String>,
    /// The RFC 6962 leaf hash, base64.
    pub leaf_hash: String,
    /// Inclusion proof against `checkpoint`, base64 hashes.
    pub inclusion: Vec<String>,
    pub checkpoint: CheckpointOut,
}

#[derive(sqlx::FromRow)]
struct ReceiptRow {
    id: String,
    seq: Option<i64>,
    action: String,
    actor_type: String,
    actor_id: String,
    created_at: DateTime<Utc>,
    fields: Option<String>,
    commitments: String,
    leaf_hash: String,
}

/// One receipt, its inclusion proof and the signed checkpoint it proves against.
#[utoipa::path(get, path = "/receipts/{id}", tag = "receipts",
    params(("id" = String, Path, description = "Receipt id (rct_…)")),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody, description = "not in the signed log yet; retry")))]
pub async fn get_one(
    State(state): State<AppState>,
    ctx: Admin,
    Path(id): Path<String>,
) -> Result<Json<ReceiptOut>> {
    let not_found = || AppError::NotFound("receipt");
    let id = ReceiptId::parse(&id).ok_or_else(not_found)?;
    // A receipt committed just after an integration waits for the next one: integrate
    // again (three tries in all).
    let mut tries = 0;
    let (row, index, inclusion, cp) = loop {
        tries += 1;
        integrate(&state, &ctx.tenant_id).await?;
        let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
        let row: ReceiptRow = tx
            .fetch_optional(
                scoped(
                    "SELECT id, seq, action, actor_type, actor_id, created_at, fields, commitments, leaf_hash \
                     FROM receipts WHERE tenant_id = $1 AND id = $2",
                )
                .bind(&id),
            )
            .await?
            .ok_or_else(not_found)?;
        let cp = log::latest_checkpoint(&mut tx).await?;
        let placed = cp.as_ref().and_then(|cp| {
            row.seq
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s < cp.size)
        });
        match (placed, cp) {
            (Some(index), Some(cp)) => {
                let inclusion = log::inclusion(&mut tx, index, cp.size).await?;
                tx.commit().await?;
                break (row, index, inclusion, cp);
            }
            _ if tries < 3 => continue,
            _ => {
                return Err(AppError::Unavailable(
                    "the receipt is not in the signed log yet; try again in a few seconds".into(),
                ));
            }
        }
    };
    let leaf = hex::decode(&row.leaf_hash).map_err(AppError::internal)?;
    Ok(Json(ReceiptOut {
        id: row.id,
        index,
        action: row.action,
        actor_type: row.actor_type,
        actor_id: row.actor_id,
        created_at: row.created_at,
        fields: match row.fields {
            Some(f) => serde_json::from_str(&f).map_err(AppError::internal)?,
            None => BTreeMap::new(),
        },
        commitments: serde_json::from_str(&row.commitments).map_err(AppError::internal)?,
        leaf_hash: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, leaf),
        inclusion,
        checkpoint: cp,
    }))
}

/// The keys that sign every company's checkpoints (retired ones included), for anyone
/// checking a receipt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogKeysOut {
    pub keys: Vec<PublishedKey>,
}

/// `GET /.well-known/ocsuite-log-keys`: public, no sign-in.
pub async fn well_known_keys(State(state): State<AppState>) -> Result<Json<LogKeysOut>> {
    state.log_signer.active(&state.store, &state.crypto).await?;
    Ok(Json(LogKeysOut {
        keys: keys::published(&state.store).await?,
    }))
}
