//! Trigger runs: each firing, unique per trigger and key, started with its job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alerts::Evidence;
use crate::error::{AppError, Result};
use crate::ids::{TriggerId, TriggerRunId};
use crate::queue::{self, NewJob, RUN_TRIGGER};
use crate::store::{TenantTx, scoped};

/// One firing of a trigger.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Run {
    pub id: TriggerRunId,
    pub trigger_id: TriggerId,
    /// schedule | metric | event | manual
    pub reason: String,
    pub key: String,
    /// queued | running | succeeded | failed
    pub status: String,
    pub evidence: Evidence,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub scheduled_for: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

type RunRow = (
    TriggerRunId,
    TriggerId,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);
macro_rules! run_columns {
    () => {
        "id, trigger_id, reason, run_key, status, evidence, output, error, scheduled_for, created_at, finished_at"
    };
}

fn run_from_row(r: RunRow) -> Run {
    Run {
        id: r.0,
        trigger_id: r.1,
        reason: r.2,
        key: r.3,
        status: r.4,
        evidence: serde_json::from_str(&r.5).unwrap_or_default(),
        output: r.6.and_then(|o| serde_json::from_str(&o).ok()),
        error: r.7,
        scheduled_for: r.8,
        created_at: r.9,
        finished_at: r.10,
    }
}

pub async fn runs(tx: &mut TenantTx, trigger: &TriggerId, limit: i64) -> Result<Vec<Run>> {
    let rows: Vec<RunRow> = tx
        .fetch_all(
            scoped(concat!("SELECT ", run_columns!(), " FROM trigger_runs WHERE tenant_id = $1 AND trigger_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3"))
            .bind(trigger)
            .bind(limit),
        )
        .await?;
    Ok(rows.into_iter().map(run_from_row).collect())
}

pub async fn get_run(tx: &mut TenantTx, id: &TriggerRunId) -> Result<Option<Run>> {
    let row: Option<RunRow> = tx
        .fetch_optional(
            scoped(concat!(
                "SELECT ",
                run_columns!(),
                " FROM trigger_runs WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(id),
        )
        .await?;
    Ok(row.map(run_from_row))
}

/// Why a run was started, and its key (unique per trigger).
pub struct Firing<'a> {
    pub reason: &'a str,
    pub key: String,
    pub evidence: Evidence,
    pub scheduled_for: DateTime<Utc>,
}

/// The `run-trigger` job's payload.
#[derive(Serialize, Deserialize)]
pub struct RunJob {
    pub run_id: TriggerRunId,
}

/// Starts a run of `trigger` for `firing` and queues its job, unless this trigger already
/// has a run with that key (then `None`: the firing was a duplicate). Call
/// `Wake::notify_one` after the commit.
pub async fn start_run(
    tx: &mut TenantTx,
    trigger: &TriggerId,
    firing: Firing<'_>,
    now: DateTime<Utc>,
) -> Result<Option<TriggerRunId>> {
    let id = TriggerRunId::new();
    let evidence = serde_json::to_string(&firing.evidence).map_err(AppError::internal)?;
    let n = tx
        .execute(
            scoped("INSERT INTO trigger_runs (tenant_id, id, trigger_id, reason, run_key, status, evidence, scheduled_for, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8) ON CONFLICT (tenant_id, trigger_id, run_key) DO NOTHING")
                .bind(&id)
                .bind(trigger)
                .bind(firing.reason)
                .bind(firing.key.as_str())
                .bind(evidence)
                .bind(firing.scheduled_for)
                .bind(now),
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    tx.execute(
        scoped("UPDATE triggers SET last_run_at = $3, last_status = 'queued' WHERE tenant_id = $1 AND id = $2")
            .bind(trigger)
            .bind(now),
    )
    .await?;
    queue::enqueue(
        tx,
        NewJob {
            queue: RUN_TRIGGER,
            payload: queue::payload(&RunJob { run_id: id.clone() }),
            priority: 0,
            run_at: Utc::now(),
            max_attempts: super::RUN_ATTEMPTS,
            id: None,
        },
    )
    .await?;
    Ok(Some(id))
}
