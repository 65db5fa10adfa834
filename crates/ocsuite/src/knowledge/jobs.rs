//! Queueing `ingest-source` jobs: one source on demand (added, resynced), and the
//! periodic re-sync of fetched sources across companies. The job itself is `ingest.rs`.

use chrono::Utc;

use crate::error::Result;
use crate::ids::{JobId, KnowledgeSourceId, TenantId};
use crate::queue::{self, INGEST_SOURCE, NewJob};
use crate::store::{Store, TenantTx, cross_tenant, scoped};

/// Attempts before a failing ingestion lands in `ingest-source-dlq`.
const MAX_ATTEMPTS: u32 = 4;

/// Queues an ingestion of source `id` unless one is pending; marks it `queued`.
/// Returns whether this call queued it.
pub async fn enqueue(tx: &mut TenantTx, id: &KnowledgeSourceId) -> Result<bool> {
    let job = JobId::new();
    let claimed = tx
        .execute(
            scoped("UPDATE knowledge_sources SET ingest_job_id = $2, status = 'queued', updated_at = $3 WHERE tenant_id = $1 AND id = $4 AND ingest_job_id IS NULL")
                .bind(&job)
                .bind(Utc::now())
                .bind(id),
        )
        .await?
        == 1;
    if !claimed {
        return Ok(false);
    }
    queue::enqueue(
        tx,
        NewJob {
            queue: INGEST_SOURCE,
            payload: queue::payload(&IngestJob {
                source_id: id.clone(),
            }),
            priority: 0,
            run_at: Utc::now(),
            max_attempts: MAX_ATTEMPTS,
            id: Some(&job),
        },
    )
    .await?;
    Ok(true)
}

/// Queues a re-sync of every fetched source older than the interval, across tenants.
pub async fn schedule(store: &Store, wake: &queue::Wake, interval_secs: u32) -> Result<usize> {
    let cutoff = Utc::now() - chrono::Duration::seconds(interval_secs.into());
    let mut tx = store.platform_read().await?;
    let due = cross_tenant::knowledge_due(&mut tx, cutoff, 200).await?;
    drop(tx);
    let mut queued = 0;
    for (tenant, id) in due {
        let (Some(tenant), Some(id)) = (TenantId::parse(&tenant), KnowledgeSourceId::parse(&id))
        else {
            continue;
        };
        let mut tx = store.tenant(&tenant).await?;
        if enqueue(&mut tx, &id).await? {
            queued += 1;
        }
        tx.commit().await?;
    }
    if queued > 0 {
        wake.notify_waiters();
    }
    Ok(queued)
}

/// An `ingest-source` job's payload.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct IngestJob {
    pub source_id: KnowledgeSourceId,
}
