//! The `export` job: builds a company's signed archive.

use std::io::{Cursor, Write};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::{EXPORT_QUEUE, ExportJob, LEFT_OUT, SECRET_COLUMNS};
use crate::error::{AppError, Result};
use crate::ids::TenantId;
use crate::queue::Claimed;
use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::realtime::Event;
use crate::receipts::bundle::{self, Reveal};
use crate::receipts::note;
use crate::receipts::verify::{MANIFEST_FORMAT, manifest_note_body};
use crate::state::AppState;
use crate::store::{JsonRow, TenantTx, scoped};

macro_rules! export_tables {
    ($($t:ident),* $(,)?) => {
        &[$((stringify!($t), concat!("SELECT * FROM ", stringify!($t), " WHERE tenant_id = $1"))),*]
    };
}

/// Every company table that is exported, with its query (the company's own row comes
/// from `tenants`). A test keeps this list, [`LEFT_OUT`] and the migrations in step.
pub const EXPORTED: &[(&str, &str)] = export_tables!(
    memberships,
    invites,
    api_keys,
    audit_log,
    tenant_modules,
    mcp_servers,
    tasks,
    events,
    conversations,
    messages,
    usage_ledger,
    agents,
    persona_overrides,
    connectors,
    meetings,
    meeting_turns,
    action_items,
    approval_roles,
    approval_modes,
    notifications,
    outbox,
    lead_stages,
    leads,
    lead_stage_history,
    accounts,
    transactions,
    categories,
    category_rules,
    email_campaigns,
    email_recipients,
    email_suppressions,
    metric_snapshots,
    knowledge_sources,
    knowledge_files,
    knowledge_chunks,
    triggers,
    trigger_runs,
    alerts,
    notification_preferences,
    webhooks,
    webhook_deliveries,
    digests,
    metric_history,
    impersonations,
    policy_versions,
    policy_decisions,
    retention_settings,
    erasures,
);

/// One file of the archive, as the manifest lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    /// JSON Lines files: their rows.
    pub rows: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub tenant: String,
    pub created_at: String,
    pub files: Vec<ManifestFile>,
    /// Tables left out, and why.
    pub left_out: Vec<(String, String)>,
    /// Audit entries and policy decisions written while the export read, not yet in the
    /// signed log.
    pub unsealed_audit_ids: Vec<String>,
}

fn jsonl(rows: Vec<JsonRow>) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let n = rows.len() as u64;
    for mut r in rows {
        for c in SECRET_COLUMNS {
            r.0.remove(*c);
        }
        serde_json::to_writer(&mut out, &Value::Object(r.0)).map_err(AppError::internal)?;
        out.push(b'\n');
    }
    Ok((out, n))
}

/// The audit ids a bundle's receipts seal.
fn sealed_audit_ids(b: &bundle::Bundle) -> std::collections::HashSet<String> {
    b.entries
        .iter()
        .filter_map(|e| e.fields.get("audit_id"))
        .filter_map(|r| serde_json::from_str::<String>(&r.value).ok())
        .collect()
}

/// Reads the company's receipt bundle, then its tables.
async fn snapshot(
    state: &AppState,
    tenant: &TenantId,
    keys: Vec<String>,
) -> Result<(Files, bundle::Bundle, Vec<String>)> {
    let mut files: Files = Vec::new();
    let mut tx: TenantTx = state.store.tenant_read(tenant).await?;
    // The receipts first: every receipt read is committed with its audit entry, so the
    // tables read after hold each one's entry (reads are not one snapshot on every
    // database). Entries written meanwhile are the unsealed ones the caller retries.
    let b = bundle::build(&mut tx, keys, Reveal::All).await?;
    let own: Vec<JsonRow> = tx
        .fetch_all(scoped("SELECT * FROM tenants WHERE id = $1"))
        .await?;
    let (bytes, rows) = jsonl(own)?;
    files.push(("data/tenants.jsonl".into(), bytes, Some(rows)));
    let mut audit_ids = Vec::new();
    for (table, q) in EXPORTED {
        let rows: Vec<JsonRow> = tx.fetch_all(scoped(q)).await?;
        // Audit entries and policy decisions are each sealed by a receipt.
        if *table == "audit_log" || *table == "policy_decisions" {
            audit_ids.extend(
                rows.iter()
                    .filter_map(|r| r.0.get("id").and_then(Value::as_str).map(str::to_owned)),
            );
        }
        let (bytes, n) = jsonl(rows)?;
        files.push((format!("data/{table}.jsonl"), bytes, Some(n)));
    }
    tx.commit().await?;
    Ok((files, b, audit_ids))
}

type Files = Vec<(String, Vec<u8>, Option<u64>)>;

/// Reads everything the company owns and writes the archive; returns (zip, sha256 hex).
///
/// Every audit entry in the archive should be sealed by a receipt in it. Entries
/// written while the export reads are not in the log yet, so the read is repeated after
/// integrating (a few times); what is still unsealed then is listed in the manifest.
pub async fn build(state: &AppState, tenant: &TenantId) -> Result<(Vec<u8>, String)> {
    let keys = crate::receipts::routes::published_keys(state).await?;
    let mut attempt = 0;
    let (mut files, b, unsealed) = loop {
        crate::receipts::routes::integrate(state, tenant).await?;
        let (files, b, audit_ids) = snapshot(state, tenant, keys.clone()).await?;
        let sealed = sealed_audit_ids(&b);
        let unsealed: Vec<String> = audit_ids
            .into_iter()
            .filter(|id| !sealed.contains(id))
            .collect();
        attempt += 1;
        if unsealed.is_empty() || attempt == 5 {
            break (files, b, unsealed);
        }
    };
    files.push((
        "receipts.json".into(),
        serde_json::to_vec_pretty(&b).map_err(AppError::internal)?,
        None,
    ));

    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        tenant: tenant.to_string(),
        created_at: chrono::Utc::now().to_rfc3339(),
        files: files
            .iter()
            .map(|(path, bytes, rows)| ManifestFile {
                path: path.clone(),
                sha256: hex::encode(Sha256::digest(bytes)),
                bytes: bytes.len() as u64,
                rows: *rows,
            })
            .collect(),
        left_out: LEFT_OUT
            .iter()
            .map(|(t, why)| ((*t).to_owned(), (*why).to_owned()))
            .collect(),
        unsealed_audit_ids: unsealed,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(AppError::internal)?;
    let key = state.log_signer.active(&state.store, &state.crypto).await?;
    let signed = note::sign(
        &manifest_note_body(
            tenant.as_str(),
            &hex::encode(Sha256::digest(&manifest_bytes)),
        ),
        &key.name,
        &key.signing,
    );

    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        zip.start_file(name, opts).map_err(AppError::internal)?;
        zip.write_all(bytes).map_err(AppError::internal)
    };
    put("manifest.json", &manifest_bytes)?;
    put("manifest.sig", signed.as_bytes())?;
    for (path, bytes, _) in &files {
        put(path, bytes)?;
    }
    let out = zip.finish().map_err(AppError::internal)?.into_inner();
    let sha = hex::encode(Sha256::digest(&out));
    Ok((out, sha))
}

/// The `export` job (in the HQ company's queue).
pub struct BuildExport {
    state: AppState,
}

impl BuildExport {
    pub fn new(state: &AppState) -> Self {
        Self {
            state: state.clone(),
        }
    }

    async fn attempt(&self, job: &ExportJob) -> Result<Value> {
        let (bytes, sha) = build(&self.state, &job.tenant_id).await?;
        let size = bytes.len();
        let mut tx = self.state.store.tenant(&job.tenant_id).await?;
        super::finish(&mut tx, &job.export_id, bytes, &sha).await?;
        tx.commit().await?;
        Ok(json!({ "bytes": size, "sha256": sha }))
    }
}

impl Handler for BuildExport {
    fn queue(&self) -> &'static str {
        EXPORT_QUEUE
    }

    fn start<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            match job.payload_as::<ExportJob>() {
                Some(p) => Start::run(Duration::from_secs(600), vec![], &p),
                None => Ok(Start::Skip { events: vec![] }),
            }
        })
    }

    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: ExportJob = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match self.attempt(&p).await {
                Ok(output) => Outcome::Succeeded {
                    output,
                    summary: Some("export ready".into()),
                },
                Err(e) => {
                    let last = job.attempts >= job.max_attempts;
                    if last {
                        tracing::error!(error = %e, export = %p.export_id, "an export failed for good");
                        let _ = super::mark_failed(
                            &self.state,
                            &p,
                            "the export could not be built; start a new one, and if it fails again tell the operator",
                        )
                        .await;
                    }
                    Outcome::Failed {
                        error: e.to_string(),
                        retryable: true,
                    }
                }
            }
        })
    }

    fn settle<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        _job: &'a Claimed,
        _resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async { Ok(vec![]) })
    }
}
