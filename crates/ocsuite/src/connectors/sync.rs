//! `sync-connector` jobs: refresh a connection's tokens and check the account answers.
//!
//! One job per connection at most (`connectors.sync_job_id`, set by a conditional
//! update, so two schedulers or an impatient person cannot queue it twice). Jobs are
//! queued on connect, on demand, and by the scheduler every
//! `connector_sync_interval_secs`. A failed sync follows the queue's retry and
//! dead-letter rules and leaves its reason on the connector for the status page.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::by_id;
use super::vault::Vault;
use crate::audit;
use crate::error::Result;
use crate::ids::{ConnectorId, JobId, TenantId};
use futures_util::future::BoxFuture;

use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{self, Claimed, NewJob, SYNC_CONNECTOR};
use crate::realtime::Event;
use crate::store::cross_tenant;
use crate::store::{Store, TenantTx, scoped};

/// Attempts before a sync lands in `sync-connector-dlq`.
const MAX_ATTEMPTS: u32 = 5;

/// Queues a sync of connector `id` unless one is already pending. Returns the pending
/// job and whether this call queued it.
pub async fn enqueue(tx: &mut TenantTx, id: &ConnectorId) -> Result<Option<(JobId, bool)>> {
    let job = JobId::new();
    let claimed = tx
        .execute(
            scoped("UPDATE connectors SET sync_job_id = $2 WHERE tenant_id = $1 AND id = $3 AND sync_job_id IS NULL")
                .bind(&job)
                .bind(id),
        )
        .await?
        == 1;
    if !claimed {
        return Ok(by_id(tx, id)
            .await?
            .and_then(|r| r.sync_job_id)
            .and_then(|j| JobId::parse(&j))
            .map(|j| (j, false)));
    }
    let provider = by_id(tx, id).await?.map(|r| r.provider);
    queue::enqueue(
        tx,
        NewJob {
            queue: SYNC_CONNECTOR,
            payload: queue::payload(&SyncJob {
                connector_id: id.clone(),
                provider,
            }),
            priority: 0,
            run_at: Utc::now(),
            max_attempts: MAX_ATTEMPTS,
            id: Some(&job),
        },
    )
    .await?;
    Ok(Some((job, true)))
}

/// Queues a sync for every connection whose last one is older than the interval.
/// Runs in every process; the conditional claim in [`enqueue`] keeps it to one job.
pub async fn schedule(
    store: &Store,
    wake: &crate::queue::Wake,
    interval_secs: u32,
) -> Result<usize> {
    let cutoff = Utc::now() - chrono::Duration::seconds(interval_secs.into());
    let mut tx = store.platform_read().await?;
    let due = cross_tenant::connectors_due(&mut tx, cutoff, 500).await?;
    drop(tx);
    let mut queued = 0;
    for (tenant, id) in due {
        let (Some(tenant), Some(id)) = (TenantId::parse(&tenant), ConnectorId::parse(&id)) else {
            continue;
        };
        let mut tx = store.tenant(&tenant).await?;
        if let Some((_, true)) = enqueue(&mut tx, &id).await? {
            queued += 1;
        }
        tx.commit().await?;
    }
    if queued > 0 {
        wake.notify_waiters();
    }
    Ok(queued)
}

/// Drops authorization states whose ten minutes passed without a callback.
pub async fn prune_states(store: &Store) -> Result<u64> {
    let now = Utc::now();
    let mut tx = store.platform().await?;
    let n = cross_tenant::prune_oauth_states(&mut tx, now).await?;
    tx.commit().await?;
    Ok(n)
}

/// The `sync-connector` queue handler.
pub struct SyncConnector {
    vault: Arc<Vault>,
}

impl SyncConnector {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

/// The `sync-connector` job's payload (the provider is for people reading the queue).
#[derive(serde::Serialize, serde::Deserialize)]
struct SyncJob {
    connector_id: ConnectorId,
    provider: Option<String>,
}

fn connector_of(job: &Claimed) -> Option<ConnectorId> {
    job.payload_as::<SyncJob>().map(|j| j.connector_id)
}

/// What `start` read from the connector row for the attempt.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    provider: String,
}

impl Handler for SyncConnector {
    fn queue(&self) -> &'static str {
        SYNC_CONNECTOR
    }

    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            let row = match connector_of(job) {
                Some(id) => by_id(tx, &id).await?,
                None => None,
            };
            // Disconnected since it was queued: nothing to do.
            let Some(row) = row else {
                return Ok(Start::Skip { events: vec![] });
            };
            Start::run(
                Duration::from_secs(60),
                vec![],
                &Prepared {
                    provider: row.provider,
                },
            )
        })
    }

    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: Prepared = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match self.vault.check(&job.tenant_id, &p.provider).await {
                Ok(report) => Outcome::Succeeded {
                    summary: Some(format!(
                        "{} account {} answered",
                        report.provider,
                        report.account.as_deref().unwrap_or("(unnamed)")
                    )),
                    output: serde_json::to_value(&report).unwrap_or(Value::Null),
                },
                Err(e) => Outcome::Failed {
                    retryable: e.is_retryable(),
                    error: e.to_string(),
                },
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        job: &'a Claimed,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let Some(id) = connector_of(job) else {
                return Ok(vec![]);
            };
            if !matches!(resolution, Resolution::Retrying { .. }) {
                tx.execute(
                    scoped("UPDATE connectors SET sync_job_id = NULL WHERE tenant_id = $1 AND id = $2 AND sync_job_id = $3")
                        .bind(&id)
                        .bind(&job.id),
                )
                .await?;
            }
            match resolution {
                Resolution::Retrying { error, .. } | Resolution::Failed { error } => {
                    super::record_error(tx, &id, error).await?;
                }
                Resolution::Dead { error } => {
                    super::record_error(tx, &id, error).await?;
                    audit::record_system(
                        tx,
                        "connector.sync_failed",
                        "connector",
                        id.as_str(),
                        json!({"error": error, "attempts": job.attempts}),
                    )
                    .await?;
                }
                Resolution::Succeeded { .. } | Resolution::Cancelled => {}
            }
            Ok(vec![])
        })
    }
}

/// Tells the company's `connector.expired` triggers that a working connection just
/// expired or was revoked.
pub(crate) async fn connection_lost(
    tx: &mut TenantTx,
    id: &ConnectorId,
    provider: &str,
    status: &str,
    error: &str,
    now: chrono::DateTime<Utc>,
) -> Result<()> {
    crate::triggers::events::emit(
        tx,
        crate::triggers::events::PlatformEvent {
            event: "connector.expired",
            key: format!("{id}:{}", now.timestamp_millis()),
            percent: None,
            summary: format!(
                "The {provider} connection is {status}: {}. Reconnect it on the Connections page.",
                super::truncate(error, 200)
            ),
            figures: vec![],
            links: vec![crate::alerts::Link {
                label: "Connections".into(),
                href: "/connectors".into(),
            }],
            data: serde_json::json!({"connector_id": id, "provider": provider, "status": status}),
        },
        now,
    )
    .await?;
    Ok(())
}
