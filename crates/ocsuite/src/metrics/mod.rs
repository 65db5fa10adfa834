//! Module metric snapshots: the latest figures each module reported (pipeline value,
//! burn, runway…), stored so the dashboard and the board read them without recomputing.
//!
//! A module writes its snapshot in the same transaction as the change that moved the
//! numbers, so a snapshot is never older than the data it summarises. The board and chat
//! prompts include them as the company's current figures ([`prompt_block`]).

pub mod routes;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ocsuite_module_sdk::{Metric, MetricSnapshot, MetricValue};

use crate::ids::TenantId;

use crate::error::{AppError, Result};
use crate::store::{TenantTx, scoped};

/// How long a rendered figures block is reused for a tenant's prompts.
const PROMPT_TTL: Duration = Duration::from_secs(10);

/// Each tenant's rendered figures block, so a chat does not read the snapshots on every
/// message (a measured 0.1-0.5 ms of the gateway's 1 ms budget). A write in this process
/// drops its tenant's entry; another process's write shows within [`PROMPT_TTL`].
static PROMPT_CACHE: LazyLock<Mutex<HashMap<TenantId, Cached>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// When a block was rendered, and the block (`None`: no figures yet).
type Cached = (Instant, Option<String>);

fn forget(tenant: &TenantId) {
    if let Ok(mut c) = PROMPT_CACHE.lock() {
        c.remove(tenant);
    }
}

/// The figures block for the tenant of `tx` ([`prompt_block`] of [`latest`]), cached.
pub async fn prompt_figures(tx: &mut TenantTx) -> Result<Option<String>> {
    let tenant = tx.tenant_id().clone();
    if let Ok(c) = PROMPT_CACHE.lock()
        && let Some((at, block)) = c.get(&tenant)
        && at.elapsed() < PROMPT_TTL
    {
        return Ok(block.clone());
    }
    let block = prompt_block(&latest(tx).await?);
    if let Ok(mut c) = PROMPT_CACHE.lock() {
        if c.len() > 10_000 {
            c.retain(|_, (at, _)| at.elapsed() < PROMPT_TTL);
        }
        c.insert(tenant, (Instant::now(), block.clone()));
    }
    Ok(block)
}

/// Replaces `module`'s snapshot with `metrics`.
pub async fn store(tx: &mut TenantTx, module: &str, metrics: &[Metric]) -> Result<()> {
    let tenant = tx.tenant_id().clone();
    forget(&tenant);
    let json = serde_json::to_string(metrics).map_err(AppError::internal)?;
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO metric_snapshots (tenant_id, module, metrics, taken_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, module) DO UPDATE SET metrics = excluded.metrics, taken_at = excluded.taken_at")
            .bind(module)
            .bind(json.as_str())
            .bind(now),
    )
    .await?;
    // The day's last figures, for deviation rules and the digest's "what moved".
    tx.execute(
        scoped(
            "INSERT INTO metric_history (tenant_id, module, day, metrics) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, module, day) DO UPDATE SET metrics = excluded.metrics",
        )
        .bind(module)
        .bind(now.format("%Y-%m-%d").to_string())
        .bind(json.as_str()),
    )
    .await?;
    // Metric triggers look at the new figures at the scheduler's next tick.
    tx.execute(
        scoped("UPDATE triggers SET next_run_at = $2 WHERE tenant_id = $1 AND kind = 'metric' AND paused = FALSE \
             AND (next_run_at IS NULL OR next_run_at > $2)")
            .bind(DUE_NOW),
    )
    .await?;
    Ok(())
}

/// A due time before any clock's now: "look at this at the next tick", whatever time a
/// test's clock reads.
pub const DUE_NOW: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;

/// Every module's latest snapshot, by module name.
pub async fn latest(tx: &mut TenantTx) -> Result<Vec<MetricSnapshot>> {
    let rows: Vec<(String, String, DateTime<Utc>)> = tx
        .fetch_all(
            scoped("SELECT module, metrics, taken_at FROM metric_snapshots WHERE tenant_id = $1 ORDER BY module"),
        )
        .await?;
    rows.into_iter()
        .map(|(module, metrics, taken_at)| {
            Ok(MetricSnapshot {
                module,
                taken_at: taken_at.to_rfc3339(),
                metrics: serde_json::from_str(&metrics).map_err(AppError::internal)?,
            })
        })
        .collect()
}

pub fn count(key: &str, label: &str, value: i64, unit: &str) -> Metric {
    Metric {
        key: key.into(),
        label: label.into(),
        value: MetricValue::Count { value },
        unit: Some(unit.into()),
    }
}

pub fn money(key: &str, label: &str, minor_units: i64, currency: &str) -> Metric {
    Metric {
        key: key.into(),
        label: label.into(),
        value: MetricValue::Money {
            minor_units,
            currency: currency.into(),
        },
        unit: Some(currency.into()),
    }
}

pub fn ratio(key: &str, label: &str, value: f64, unit: &str) -> Metric {
    Metric {
        key: key.into(),
        label: label.into(),
        value: MetricValue::Ratio { value },
        unit: Some(unit.into()),
    }
}

pub fn text(key: &str, label: &str, value: &str) -> Metric {
    Metric {
        key: key.into(),
        label: label.into(),
        value: MetricValue::Text {
            value: value.into(),
        },
        unit: None,
    }
}

/// One metric as a person reads it: `Pipeline value: 12000.00 USD`.
pub fn display(m: &Metric) -> String {
    let v = match &m.value {
        MetricValue::Count { value } => value.to_string(),
        MetricValue::Money {
            minor_units,
            currency,
        } => format!(
            "{} {currency}",
            crate::money::format(*minor_units, currency)
        ),
        MetricValue::Ratio { value } => format!("{value:.1}"),
        MetricValue::Text { value } => value.clone(),
    };
    match (&m.value, m.unit.as_deref()) {
        (MetricValue::Money { .. } | MetricValue::Text { .. }, _) | (_, None) => {
            format!("{}: {v}", m.label)
        }
        (_, Some(u)) => format!("{}: {v} {u}", m.label),
    }
}

/// The figures section of a persona's prompt: each module's metrics with when they were
/// taken, or `None` when no module has reported yet.
pub fn prompt_block(snapshots: &[MetricSnapshot]) -> Option<String> {
    if snapshots.iter().all(|s| s.metrics.is_empty()) {
        return None;
    }
    let mut out =
        String::from("## Current figures (computed by ocsuite from the company's own data)\n");
    for s in snapshots.iter().filter(|s| !s.metrics.is_empty()) {
        let when = s.taken_at.get(..10).unwrap_or(&s.taken_at);
        out.push_str(&format!("### {} (as of {when})\n", s.module));
        for m in &s.metrics {
            out.push_str(&format!("- {}\n", display(m)));
        }
    }
    Some(out)
}
