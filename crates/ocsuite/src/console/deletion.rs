//! Deleting a company under dual control. One super-admin asks (with a reason); a
//! different one approves within 24 hours; then the `purge-tenant` job removes every
//! row the company has, in one transaction, and leaves a manifest (each table and how
//! many rows went) on the request and in the platform audit log.
//!
//! The purge job lives in the reserved HQ company's queue: the company being deleted
//! may be suspended (its own queue paused), and its own job rows go with it. It ends
//! with a receipt in the HQ company's own signed log (`tenant.purged`): the manifest,
//! who asked and who approved, and the company log's last signed checkpoint, so
//! receipts the company exported before can still be shown to belong to that log.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{AppError, Result};
use crate::ids::{DeletionId, TenantId, UserId};
use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, NewJob, PURGE_TENANT};
use crate::realtime::Event;
use crate::state::AppState;
use crate::store::{TenantTx, Tx, scoped, sql};

/// How long a request waits for its second super-admin.
pub const APPROVAL_WINDOW_HOURS: i64 = 24;

/// ` UNION ALL SELECT 'name', count(*) FROM name WHERE tenant_id = $1` per table.
macro_rules! manifest_tables {
    ($($t:ident),* $(,)?) => {
        concat!($(" UNION ALL SELECT '", stringify!($t), "', count(*) FROM ", stringify!($t), " WHERE tenant_id = $1"),*)
    };
}

/// Every table that holds a company's rows, counted for the manifest before the purge
/// (a test keeps this list equal to the migrations' tenant tables). The full-text index
/// of knowledge passages goes with the passages and is not counted apart.
const MANIFEST: &str = concat!(
    "SELECT 'tenants', count(*) FROM tenants WHERE id = $1",
    manifest_tables!(
        memberships,
        invites,
        api_keys,
        audit_log,
        tenant_secrets,
        tenant_modules,
        mcp_servers,
        tasks,
        jobs,
        events,
        token_reservations,
        conversations,
        messages,
        usage_ledger,
        agents,
        persona_overrides,
        connectors,
        oauth_states,
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
        receipts,
        log_nodes,
        log_heads,
        log_checkpoints,
        exports,
        policy_versions,
        policy_decisions,
        retention_settings,
        erasures
    )
);

/// The tables the manifest counts, in its order (for the test that compares them with
/// the migrations).
pub fn manifest_table_names() -> Vec<&'static str> {
    MANIFEST
        .split("SELECT '")
        .skip(1)
        .filter_map(|s| s.split('\'').next())
        .collect()
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Deletion {
    pub id: String,
    pub target_tenant: String,
    pub tenant_name: String,
    pub reason: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    /// A second super-admin must approve before this.
    pub expires_at: DateTime<Utc>,
    /// `requested`, `approved`, `purged`, `cancelled` or `expired`.
    pub status: String,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
    /// Each table and the rows removed, once purged.
    #[schema(value_type = Option<Object>)]
    #[sqlx(skip)]
    pub manifest: Option<Value>,
    #[serde(skip)]
    #[sqlx(rename = "manifest")]
    pub manifest_text: Option<String>,
    /// The closing receipt in the platform's (HQ company's) log, once purged.
    pub receipt_id: Option<String>,
}

fn finish(mut d: Deletion, now: DateTime<Utc>) -> Deletion {
    if d.status == "requested" && d.expires_at <= now {
        d.status = "expired".into();
    }
    d.manifest = d
        .manifest_text
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok());
    d
}

pub async fn get(tx: &mut Tx, id: &DeletionId) -> Result<Deletion> {
    let row: Option<Deletion> = tx
        .fetch_optional(
            sql(concat!(
                "SELECT id, target_tenant, tenant_name, reason, requested_by, requested_at, expires_at, ",
                "status, approved_by, approved_at, purged_at, manifest, receipt_id FROM tenant_deletions WHERE id = $1"
            ))
            .bind(id),
        )
        .await?;
    row.map(|d| finish(d, Utc::now()))
        .ok_or(AppError::NotFound("deletion request"))
}

/// The latest requests, newest first.
pub async fn list(tx: &mut Tx, limit: i64) -> Result<Vec<Deletion>> {
    let rows: Vec<Deletion> = tx
        .fetch_all(
            sql(concat!(
                "SELECT id, target_tenant, tenant_name, reason, requested_by, requested_at, expires_at, ",
                "status, approved_by, approved_at, purged_at, manifest, receipt_id FROM tenant_deletions ",
                "ORDER BY requested_at DESC, id DESC LIMIT $1"
            ))
            .bind(limit),
        )
        .await?;
    let now = Utc::now();
    Ok(rows.into_iter().map(|d| finish(d, now)).collect())
}

/// Asks for the company of `tx` to be deleted. 409 while another request for it is
/// open (an expired one is closed first).
pub async fn request(
    tx: &mut TenantTx,
    by: &UserId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<DeletionId> {
    let facts = super::facts(tx)
        .await?
        .ok_or(AppError::NotFound("tenant"))?;
    let target = tx.tenant_id().clone();
    tx.execute(
        sql("UPDATE tenant_deletions SET status = 'expired' \
              WHERE target_tenant = $1 AND status = 'requested' AND expires_at <= $2")
        .bind(&target)
        .bind(now),
    )
    .await?;
    let id = DeletionId::new();
    let inserted = tx
        .execute(
            sql("INSERT INTO tenant_deletions (id, target_tenant, tenant_name, reason, requested_by, requested_at, expires_at, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'requested')")
            .bind(&id)
            .bind(&target)
            .bind(facts.name.as_str())
            .bind(reason)
            .bind(by)
            .bind(now)
            .bind(now + chrono::Duration::hours(APPROVAL_WINDOW_HOURS)),
        )
        .await;
    match inserted {
        Ok(_) => {}
        Err(e) if crate::error::is_unique_violation(&e) => {
            return Err(AppError::Conflict(
                "a deletion of this company is already waiting for approval".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    crate::audit::insert(
        tx,
        ("support_admin", by.as_str()),
        "tenant.delete_request",
        "tenant",
        target.as_str(),
        json!({ "reason": reason, "deletion_id": id }),
        None,
    )
    .await?;
    Ok(id)
}

/// The second super-admin approves: 403 for the one who asked, 410 once the window
/// has passed, 409 unless it waits. Queues the purge (in the HQ company's queue).
pub async fn approve(
    tx: &mut TenantTx,
    d: &Deletion,
    by: &UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    if d.requested_by == by.as_str() {
        return Err(AppError::Detailed {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "same_admin",
            message: "a different super-admin must approve a deletion you asked for".into(),
            details: json!({}),
        });
    }
    match d.status.as_str() {
        "requested" => {}
        "expired" => {
            return Err(AppError::Gone(
                "this request waited more than 24 hours; ask again".into(),
            ));
        }
        other => {
            return Err(AppError::Conflict(format!(
                "this request is {other}, not waiting for approval"
            )));
        }
    }
    let n = tx
        .execute(
            sql("UPDATE tenant_deletions SET status = 'approved', approved_by = $2, approved_at = $3 \
                  WHERE id = $1 AND status = 'requested'")
            .bind(d.id.as_str())
            .bind(by)
            .bind(now),
        )
        .await?;
    if n == 0 {
        return Err(AppError::Conflict(
            "this request was decided meanwhile".into(),
        ));
    }
    crate::queue::enqueue(
        tx,
        NewJob {
            queue: PURGE_TENANT,
            payload: json!({ "deletion_id": d.id }),
            priority: 0,
            run_at: now,
            max_attempts: 5,
            id: None,
        },
    )
    .await?;
    Ok(())
}

/// Withdraws a waiting request (either super-admin).
pub async fn cancel(tx: &mut Tx, d: &Deletion) -> Result<()> {
    if d.status != "requested" {
        return Err(AppError::Conflict(format!(
            "this request is {}, not waiting for approval",
            d.status
        )));
    }
    tx.execute(
        sql("UPDATE tenant_deletions SET status = 'cancelled' WHERE id = $1 AND status = 'requested'")
            .bind(d.id.as_str()),
    )
    .await?;
    Ok(())
}

/// Removes the company of `tx` and every row it has; returns the manifest.
async fn purge(tx: &mut TenantTx) -> Result<Map<String, Value>> {
    let counts: Vec<(String, i64)> = tx.fetch_all(scoped(MANIFEST)).await?;
    tx.execute(scoped("DELETE FROM tenants WHERE id = $1"))
        .await?;
    Ok(counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| (t, Value::from(n)))
        .collect())
}

#[derive(Serialize, Deserialize)]
struct PurgeJob {
    deletion_id: DeletionId,
}

/// The `purge-tenant` job.
pub struct PurgeTenant {
    state: AppState,
}

impl PurgeTenant {
    pub fn new(state: &AppState) -> Self {
        Self {
            state: state.clone(),
        }
    }

    async fn attempt(&self, id: DeletionId) -> Result<Value> {
        let mut tx = self.state.store.platform_read().await?;
        let d = get(&mut tx, &id).await?;
        tx.commit().await?;
        if d.status == "purged" {
            if d.receipt_id.is_none() {
                self.seal(&d, None).await?;
            }
            return Ok(json!({ "already": true }));
        }
        if d.status != "approved" {
            return Err(AppError::Conflict(format!("the request is {}", d.status)));
        }
        let tenant = TenantId::parse(&d.target_tenant)
            .ok_or_else(|| AppError::internal("a deletion names a malformed tenant"))?;
        // The company's log, complete and signed, before it goes.
        crate::receipts::routes::integrate(&self.state, &tenant).await?;
        // One transaction: the company goes, and its request says so with the manifest.
        let mut tx = self.state.store.tenant(&tenant).await?;
        let last = crate::receipts::log::latest_checkpoint(&mut tx).await?;
        let manifest = Value::Object(purge(&mut tx).await?);
        let now = Utc::now();
        tx.execute(
            sql("UPDATE tenant_deletions SET status = 'purged', purged_at = $2, manifest = $3 WHERE id = $1")
                .bind(&id)
                .bind(now)
                .bind(manifest.to_string()),
        )
        .await?;
        crate::audit::record_platform(
            &mut tx,
            d.approved_by.as_deref().unwrap_or("system"),
            "tenant.purge",
            &format!("tenant:{tenant}"),
            json!({ "deletion_id": id, "name": d.tenant_name, "requested_by": d.requested_by,
                    "approved_by": d.approved_by, "manifest": manifest }),
        )
        .await?;
        tx.commit().await?;
        self.state.suspensions.set(&tenant, None);
        let mut d = d;
        d.manifest = Some(manifest.clone());
        self.seal(&d, last).await?;
        Ok(manifest)
    }

    /// The closing receipt, in the HQ company's log, and its id on the request (one
    /// transaction, so a retry never seals twice).
    async fn seal(
        &self,
        d: &Deletion,
        last: Option<crate::receipts::log::CheckpointOut>,
    ) -> Result<()> {
        let hq = TenantId::parse(crate::tenancy::HQ_TENANT)
            .ok_or_else(|| AppError::internal("the HQ tenant id is malformed"))?;
        let mut tx = self.state.store.tenant(&hq).await?;
        let receipt = crate::audit::record_system_sealed(
            &mut tx,
            "tenant.purged",
            "tenant",
            &d.target_tenant,
            json!({
                "deletion_id": d.id, "name": d.tenant_name, "requested_by": d.requested_by,
                "approved_by": d.approved_by, "removed": d.manifest,
                "last_checkpoint": last.map(|c| json!({ "origin": c.origin, "size": c.size, "root": c.root, "note": c.note })),
            }),
        )
        .await?;
        tx.execute(
            sql("UPDATE tenant_deletions SET receipt_id = $2 WHERE id = $1 AND receipt_id IS NULL")
                .bind(d.id.as_str())
                .bind(&receipt),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Handler for PurgeTenant {
    fn queue(&self) -> &'static str {
        PURGE_TENANT
    }

    fn start<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            match job.payload_as::<PurgeJob>() {
                Some(p) => Start::run(Duration::from_secs(600), vec![], &p),
                None => Ok(Start::Skip { events: vec![] }),
            }
        })
    }

    fn run(self: Arc<Self>, _job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: PurgeJob = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match self.attempt(p.deletion_id).await {
                Ok(manifest) => Outcome::Succeeded {
                    output: manifest,
                    summary: Some("company purged".into()),
                },
                Err(e @ AppError::Conflict(_)) => Outcome::Failed {
                    error: e.to_string(),
                    retryable: false,
                },
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                    retryable: true,
                },
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
