//! Exports: everything a company owns, with the evidence, as one signed archive.
//!
//! `POST /exports` records the request and queues an `export` job in the reserved HQ
//! company's queue, so a suspended company (whose own jobs wait) can still take its
//! data out. The job writes a zip:
//!
//! * `data/<table>.jsonl`: every row of every company table, one JSON object per line
//!   (secrets and the log's internals left out: [`LEFT_OUT`]);
//! * `receipts.json`: the company's receipt bundle (every receipt with its fields, its
//!   inclusion proof, the recent signed checkpoints and consistency proofs between them);
//! * `manifest.json`: the files with their SHA-256 and row counts;
//! * `manifest.sig`: a C2SP signed note by the platform's log key over the manifest's
//!   SHA-256, so the archive as a whole verifies offline (`ocsuite receipts verify`).
//!
//! The archive is kept in the database (every node can serve it) for
//! [`DOWNLOAD_HOURS`], then its bytes are dropped.

pub mod archive;
pub mod routes;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{AppError, Result};
use crate::ids::{ExportId, TenantId};
use crate::queue::NewJob;
use crate::state::AppState;
use crate::store::{TenantTx, Tx, cross_tenant, scoped};
use crate::tenancy::TenantCtx;

/// The queue export jobs run on (in the HQ company).
pub const EXPORT_QUEUE: &str = "export";

/// How long a finished archive can be downloaded.
pub const DOWNLOAD_HOURS: i64 = 24;

/// Tables left out of an export, and why.
pub const LEFT_OUT: &[(&str, &str)] = &[
    (
        "tenant_secrets",
        "encrypted credentials; useless outside this server",
    ),
    ("oauth_states", "sign-in attempts in flight"),
    ("jobs", "the queue's own bookkeeping (tasks are exported)"),
    ("token_reservations", "budget holds of requests in flight"),
    ("log_nodes", "tree hashes, recomputable from the receipts"),
    ("log_heads", "the integrator's lock"),
    ("log_checkpoints", "in receipts.json"),
    ("receipts", "in receipts.json"),
    ("exports", "the archives themselves"),
];

/// Columns never exported, whatever table holds them: hashes of credentials.
pub const SECRET_COLUMNS: &[&str] = &["key_hash", "token_hash", "verifier", "secret_hash"];

#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ExportOut {
    pub id: String,
    /// `queued`, `ready`, `failed` or `expired`.
    pub status: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The download works until then.
    pub expires_at: Option<DateTime<Utc>>,
    pub size_bytes: Option<i64>,
    /// SHA-256 of the archive, hex.
    pub sha256: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct ExportJob {
    pub tenant_id: TenantId,
    pub export_id: ExportId,
}

fn hq() -> Result<TenantId> {
    TenantId::parse(crate::tenancy::HQ_TENANT)
        .ok_or_else(|| AppError::internal("the HQ tenant id is malformed"))
}

/// Records an export and queues its job. One export at a time per company (409).
pub async fn request(state: &AppState, ctx: &TenantCtx) -> Result<ExportOut> {
    let id = ExportId::new();
    let now = Utc::now();
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "export".into(),
        id: id.to_string(),
        operation: "create".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, ctx, "export.create", resource).await?;
    let busy: Option<(String,)> = tx
        .fetch_optional(scoped(
            "SELECT id FROM exports WHERE tenant_id = $1 AND status = 'queued' LIMIT 1",
        ))
        .await?;
    if let Some((other,)) = busy {
        return Err(AppError::Conflict(format!(
            "export {other} is still being built; wait for it to finish"
        )));
    }
    tx.execute(
        scoped("INSERT INTO exports (tenant_id, id, status, requested_by, created_at) VALUES ($1, $2, 'queued', $3, $4)")
            .bind(&id)
            .bind(ctx.actor.id())
            .bind(now),
    )
    .await?;
    crate::audit::record(
        &mut tx,
        ctx,
        "export.request",
        "export",
        id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    // The job goes to the HQ queue after the row exists, so it always finds it.
    let queued = async {
        let mut hq_tx = state.store.tenant(&hq()?).await?;
        crate::queue::enqueue(
            &mut hq_tx,
            NewJob {
                queue: EXPORT_QUEUE,
                payload: crate::queue::payload(&ExportJob {
                    tenant_id: ctx.tenant_id.clone(),
                    export_id: id.clone(),
                }),
                priority: 0,
                run_at: now,
                max_attempts: 3,
                id: None,
            },
        )
        .await?;
        hq_tx.commit().await?;
        Ok::<_, AppError>(())
    };
    if let Err(e) = queued.await {
        let mut tx = state.store.tenant(&ctx.tenant_id).await?;
        fail(&mut tx, &id, "the export could not be queued").await?;
        tx.commit().await?;
        return Err(e);
    }
    state.jobs_wake.notify_one();
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let out = get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn get(tx: &mut TenantTx, id: &ExportId) -> Result<ExportOut> {
    tx.fetch_optional(
        scoped(concat!(
            "SELECT id, status, requested_by, created_at, finished_at, expires_at, size_bytes, sha256, error ",
            "FROM exports WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(id),
    )
    .await?
    .ok_or(AppError::NotFound("export"))
}

/// The newest exports first.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<ExportOut>> {
    Ok(tx
        .fetch_all(scoped(concat!(
            "SELECT id, status, requested_by, created_at, finished_at, expires_at, size_bytes, sha256, error ",
            "FROM exports WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 50"
        )))
        .await?)
}

/// The archive's bytes while it can be downloaded: 410 once expired, 409 before it is
/// ready.
pub async fn download(tx: &mut TenantTx, id: &ExportId) -> Result<Vec<u8>> {
    let e = get(tx, id).await?;
    match e.status.as_str() {
        "ready" if e.expires_at.is_some_and(|t| t > Utc::now()) => {}
        "ready" | "expired" => {
            return Err(AppError::Gone(
                "this export's download window has passed; start a new export".into(),
            ));
        }
        "failed" => {
            return Err(AppError::Conflict(format!(
                "this export failed: {}",
                e.error.unwrap_or_default()
            )));
        }
        _ => {
            return Err(AppError::Conflict(
                "this export is still being built".into(),
            ));
        }
    }
    let (bytes,): (Option<Vec<u8>>,) = tx
        .fetch_one(scoped("SELECT archive FROM exports WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?;
    bytes.ok_or_else(|| AppError::Gone("this export's archive was removed".into()))
}

async fn fail(tx: &mut TenantTx, id: &ExportId, error: &str) -> Result<()> {
    tx.execute(
        scoped("UPDATE exports SET status = 'failed', error = $3, finished_at = $4 WHERE tenant_id = $1 AND id = $2 AND status = 'queued'")
            .bind(id)
            .bind(error)
            .bind(Utc::now()),
    )
    .await?;
    Ok(())
}

/// Stores a finished archive.
pub async fn finish(tx: &mut TenantTx, id: &ExportId, bytes: Vec<u8>, sha256: &str) -> Result<()> {
    let now = Utc::now();
    let size = i64::try_from(bytes.len()).map_err(AppError::internal)?;
    tx.execute(
        scoped("UPDATE exports SET status = 'ready', archive = $3, size_bytes = $4, sha256 = $5, finished_at = $6, expires_at = $7 \
                WHERE tenant_id = $1 AND id = $2")
            .bind(id)
            .bind(bytes)
            .bind(size)
            .bind(sha256)
            .bind(now)
            .bind(now + Duration::hours(DOWNLOAD_HOURS)),
    )
    .await?;
    crate::audit::record_system(
        tx,
        "export.ready",
        "export",
        id.as_str(),
        json!({ "bytes": size, "sha256": sha256 }),
    )
    .await?;
    Ok(())
}

/// Drops the bytes of archives past their window, in every company (housekeeping).
pub async fn expire(tx: &mut Tx) -> Result<u64> {
    Ok(cross_tenant::expire_exports(tx, Utc::now()).await?)
}

pub use archive::BuildExport;

/// Marks a failed export (the job gave up).
pub async fn mark_failed(state: &AppState, job: &ExportJob, error: &str) -> Result<()> {
    let mut tx = state.store.tenant(&job.tenant_id).await?;
    fail(&mut tx, &job.export_id, error).await?;
    tx.commit().await?;
    Ok(())
}
