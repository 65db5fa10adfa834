//! The scheduler: every few seconds each process looks for schedule and metric triggers
//! that are due, across tenants, and claims each with a compare-and-set on its
//! `revision`, so exactly one process fires a due schedule however many run.
//!
//! A schedule's next due time is computed from now, not from the missed one: a server
//! that was down over several due times fires once when it is back. A metric trigger is
//! due every [`super::METRIC_EVERY`] and at once after its module's figures change
//! (`metrics::store` sets it due); it fires when its rule becomes true.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::{Condition, Firing};
use crate::alerts::Evidence;
use crate::error::Result;
use crate::ids::{TenantId, TriggerId};
use crate::queue::Wake;
use crate::state::AppState;
use crate::store::{Store, TenantTx, cross_tenant, scoped};

/// Due triggers taken per tick (the rest wait for the next one).
const BATCH: i64 = 5_000;
/// Tenants evaluated at once.
const PARALLEL: usize = 4;

/// One tick at the state's clock: fires what is due; returns how many runs started.
pub async fn tick(state: &AppState) -> Result<usize> {
    tick_at(&state.store, &state.jobs_wake, state.clock.now()).await
}

/// One tick at `now`.
pub async fn tick_at(store: &Store, wake: &Wake, now: DateTime<Utc>) -> Result<usize> {
    let (due, watchers) = {
        let mut tx = store.platform_read().await?;
        let due = cross_tenant::triggers_due(&mut tx, now, BATCH).await?;
        let watchers = cross_tenant::approval_watchers(&mut tx).await?;
        (due, watchers)
    };
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tenant, id) in due {
        by_tenant.entry(tenant).or_default().push(id);
    }
    for tenant in watchers {
        by_tenant.entry(tenant).or_default();
    }
    let results: Vec<Result<usize>> = futures_util::stream::iter(by_tenant)
        .map(|(tenant, ids)| async move {
            let Some(tenant) = TenantId::parse(&tenant) else {
                return Ok(0);
            };
            let ids: Vec<TriggerId> = ids.iter().filter_map(|i| TriggerId::parse(i)).collect();
            evaluate_tenant(store, &tenant, &ids, now).await
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut fired = 0;
    for r in results {
        match r {
            Ok(n) => fired += n,
            Err(e) => tracing::warn!(error = %e, "evaluating a company's triggers failed"),
        }
    }
    if fired > 0 {
        wake.notify_waiters();
    }
    Ok(fired)
}

/// The trigger columns the scheduler reads.
type Due = (String, String, Option<DateTime<Utc>>, bool, i64, i64, bool);

async fn evaluate_tenant(
    store: &Store,
    tenant: &TenantId,
    ids: &[TriggerId],
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut tx = store.tenant(tenant).await?;
    let mut fired = super::events::sweep_approvals(&mut tx, now).await?;
    let mut figures: Option<(Vec<ocsuite_module_sdk::MetricSnapshot>, i64)> = None;
    for id in ids {
        let row: Option<Due> = tx
            .fetch_optional(
                scoped("SELECT name, condition, next_run_at, firing, episode, revision, paused FROM triggers WHERE tenant_id = $1 AND id = $2")
                    .bind(id),
            )
            .await?;
        let Some((name, condition, next_run_at, firing, episode, revision, paused)) = row else {
            continue;
        };
        if paused || next_run_at.is_some_and(|n| n > now) {
            continue;
        }
        let Ok(condition) = serde_json::from_str::<Condition>(&condition) else {
            continue;
        };
        match &condition {
            Condition::Schedule { .. } => {
                let next = condition.next_after(now).ok().flatten();
                if !claim(&mut tx, id, revision, next, firing, episode).await? {
                    continue;
                }
                // First sight of a trigger that had no due time: schedule it only.
                let Some(due) = next_run_at else { continue };
                let firing = Firing {
                    reason: "schedule",
                    key: format!("schedule:{}", due.to_rfc3339()),
                    evidence: Evidence {
                        summary: format!(
                            "\"{name}\" came due ({}).",
                            schedule_words(&condition, due)
                        ),
                        ..Evidence::default()
                    },
                    scheduled_for: due,
                };
                if super::start_run(&mut tx, id, firing, now).await?.is_some() {
                    fired += 1;
                }
            }
            Condition::Metric { .. } => {
                let Some(rule) = condition.rule() else {
                    continue;
                };
                if figures.is_none() {
                    let snaps = crate::metrics::latest(&mut tx).await?;
                    let open = crate::alerts::open_count(&mut tx, now).await?;
                    figures = Some((snaps, open));
                }
                let Some((snaps, open)) = figures.as_ref() else {
                    continue;
                };
                let (holds, figure) =
                    super::rules::evaluate(&mut tx, &rule, snaps, *open, now).await?;
                let rises = holds && !firing;
                let episode = episode + i64::from(rises);
                let next = condition.next_after(now).ok().flatten();
                if !claim(&mut tx, id, revision, next, holds, episode).await? || !rises {
                    continue;
                }
                let shown = figure
                    .as_ref()
                    .map(|f| format!("{}: {}", f.label, f.display))
                    .unwrap_or_default();
                let firing = Firing {
                    reason: "metric",
                    key: format!("metric:{episode}"),
                    evidence: Evidence {
                        summary: format!("{shown} (rule: {rule})."),
                        figures: figure.into_iter().collect(),
                        ..Evidence::default()
                    },
                    scheduled_for: now,
                };
                if super::start_run(&mut tx, id, firing, now).await?.is_some() {
                    fired += 1;
                }
            }
            Condition::Event { .. } => {}
        }
    }
    tx.commit().await?;
    Ok(fired)
}

/// Moves the trigger on if nobody else did since `revision` was read.
async fn claim(
    tx: &mut TenantTx,
    id: &TriggerId,
    revision: i64,
    next: Option<DateTime<Utc>>,
    firing: bool,
    episode: i64,
) -> Result<bool> {
    let n = tx
        .execute(
            scoped("UPDATE triggers SET next_run_at = $3, firing = $4, episode = $5, revision = revision + 1 \
                 WHERE tenant_id = $1 AND id = $2 AND revision = $6")
                .bind(id)
                .bind(next)
                .bind(firing)
                .bind(episode)
                .bind(revision),
        )
        .await?;
    Ok(n == 1)
}

/// "every 6 hours", "0 9 * * MON in Europe/Berlin, due Mon 9:00".
fn schedule_words(c: &Condition, due: DateTime<Utc>) -> String {
    match c {
        Condition::Schedule {
            cron: Some(cron),
            timezone,
            ..
        } => {
            let tz: chrono_tz::Tz = timezone
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or(chrono_tz::UTC);
            format!(
                "`{cron}` in {tz}, due {}",
                due.with_timezone(&tz).format("%a %-d %b %Y %H:%M")
            )
        }
        Condition::Schedule {
            every_hours: Some(h),
            ..
        } => format!("every {h} hours"),
        _ => "on schedule".into(),
    }
}

/// Whether any schedule or metric trigger is due at the state's clock (benchmarks wait
/// for none).
pub async fn due_count(state: &AppState) -> Result<usize> {
    let mut tx = state.store.platform_read().await?;
    Ok(cross_tenant::triggers_due(&mut tx, state.clock.now(), 1)
        .await?
        .len())
}
