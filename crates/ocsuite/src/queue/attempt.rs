//! One attempt of a claimed job, run as its own task: the handler's work under a renewed
//! lease, a timeout and cancellation, ending in the [`Resolution`] the dispatcher settles.
//!
//! The attempt is spawned so a panicking module is caught (as a retryable failure), a
//! timed-out one is abandoned, and a cancelled or lease-lost one is dropped mid-flight.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::worker::{Handler, Outcome, Resolution, WorkerConfig};
use super::{Claimed, backoff, complete, dead_letter, held, renew, retry_at};
use crate::error::Result;
use crate::realtime::{Bus, Event};
use crate::store::{Store, TenantTx};

/// What the dispatcher, the attempts and the reaper share.
pub(super) struct Shared {
    pub store: Store,
    pub bus: Arc<Bus>,
    pub wake: Arc<super::Wake>,
    pub handlers: Vec<Arc<dyn Handler>>,
    pub cfg: WorkerConfig,
}

/// A claimed, started job: its handler, the job, its timeout and the handler's notes.
pub(super) struct Started {
    pub handler: Arc<dyn Handler>,
    pub job: Claimed,
    pub timeout: Duration,
    pub prepared: Value,
}

/// An attempt that ended, for the dispatcher to record.
pub(super) struct Ended {
    pub handler: Arc<dyn Handler>,
    pub job: Claimed,
    /// `None` when the lease was lost: another worker owns the job, record nothing.
    pub resolution: Option<Resolution>,
}

enum Interrupt {
    LeaseLost,
    Cancel,
}

/// Runs one attempt and reports how it ended on `done` (always, so the dispatcher's
/// count of running jobs stays true).
pub(super) async fn run(s: Arc<Shared>, started: Started, done: mpsc::UnboundedSender<Ended>) {
    let Started {
        handler: h,
        job,
        timeout,
        prepared,
    } = started;
    // The attempt's span: a child of the request that queued the job, when traced.
    let span = tracing::info_span!(
        "job",
        queue = job.queue,
        job_id = %job.id,
        tenant_id = %job.tenant_id,
        attempt = job.attempts,
        outcome = tracing::field::Empty,
    );
    crate::telemetry::traces::continue_trace(&span, job.trace.as_deref());
    let resolution = attempt(&s, &h, &job, timeout, prepared, &span).await;
    if let Some(r) = &resolution {
        span.record("outcome", r.outcome());
    }
    // The dispatcher is gone only when the workers are shutting down; the lease then
    // expires and the reaper settles the job.
    let _ = done.send(Ended {
        handler: h,
        job,
        resolution,
    });
}

async fn attempt(
    s: &Shared,
    h: &Arc<dyn Handler>,
    job: &Claimed,
    timeout: Duration,
    prepared: Value,
    span: &tracing::Span,
) -> Option<Resolution> {
    let mut run = tokio::spawn(
        h.clone()
            .run(job.clone(), prepared)
            .instrument(span.clone()),
    );
    // Renews the lease every third of it, and stops the attempt when the handler says
    // it was cancelled: at once when the cancellation's event arrives on the bus, or at
    // the next renewal should that event be missed.
    let mut events = s.bus.subscribe(&job.tenant_id);
    let watchdog = async {
        let mut tick = tokio::time::interval(s.cfg.lease / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match renew(&s.store, job, s.cfg.lease).await {
                        Ok(false) => return Interrupt::LeaseLost,
                        Ok(true) => {}
                        // A database blip: keep running; the next renewal may succeed, and
                        // if the lease does expire the job is simply retried.
                        Err(e) => tracing::warn!(error = %e, job = %job.id, "lease renewal failed"),
                    }
                    if matches!(h.cancel_requested(&s.store, job).await, Ok(true)) {
                        return Interrupt::Cancel;
                    }
                }
                ev = events.recv() => match ev {
                    Ok(ev) if h.is_cancellation(job, &ev) => return Interrupt::Cancel,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    // The bus is gone (shutting down): rely on the renewals.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                },
            }
        }
    };
    let outcome = tokio::select! {
        r = &mut run => match r {
            Ok(o) => o,
            Err(e) if e.is_panic() => Outcome::Failed { error: "the module panicked".into(), retryable: true },
            Err(_) => Outcome::Failed { error: "the attempt was aborted".into(), retryable: true },
        },
        _ = tokio::time::sleep(timeout) => {
            run.abort();
            Outcome::Failed { error: format!("timed out after {} s", timeout.as_secs_f32()), retryable: true }
        }
        why = watchdog => {
            run.abort();
            match why {
                Interrupt::LeaseLost => {
                    tracing::warn!(job = %job.id, "lease lost; another worker owns this job now");
                    return None;
                }
                Interrupt::Cancel => Outcome::Cancelled,
            }
        }
    };
    Some(match outcome {
        Outcome::Succeeded { output, summary } => Resolution::Succeeded { output, summary },
        Outcome::Cancelled => Resolution::Cancelled,
        Outcome::Failed {
            error,
            retryable: false,
        } => Resolution::Failed { error },
        Outcome::Failed { error, .. } if job.attempts >= job.max_attempts => {
            Resolution::Dead { error }
        }
        Outcome::Failed { error, .. } => Resolution::Retrying {
            error,
            at: Utc::now()
                + chrono::Duration::from_std(backoff(s.cfg.retry_base_ms, job.attempts))
                    .unwrap_or_default(),
        },
    })
}

/// Applies `resolution` to the job and its row in one transaction; false when the
/// lease was lost (nothing is recorded).
pub(super) async fn resolve(
    s: &Shared,
    h: &dyn Handler,
    job: &Claimed,
    resolution: &Resolution,
) -> Result<bool> {
    let Some((tx, events)) = settle_in_tx(s, h, job, resolution).await? else {
        return Ok(false);
    };
    tx.commit().await?;
    published(s, resolution, events);
    Ok(true)
}

/// Applies `resolution` inside a new transaction of the job's tenant and returns it,
/// uncommitted, with the events to publish once it commits; `None` when the lease was
/// lost (nothing is recorded).
///
/// The job's change is deferred: on SQLite it travels with the handler's first
/// statement instead of costing a trip of its own inside the writer's turn. Should it
/// find the lease lost (rare: this worker stalled past its lease), the transaction is
/// dropped before commit, so the handler's changes are undone too.
async fn settle_in_tx(
    s: &Shared,
    h: &dyn Handler,
    job: &Claimed,
    resolution: &Resolution,
) -> Result<Option<(TenantTx, Vec<Event>)>> {
    let mut tx = s.store.tenant(&job.tenant_id).await?;
    let change = match resolution {
        Resolution::Succeeded { .. } | Resolution::Failed { .. } | Resolution::Cancelled => {
            complete(&mut tx, job).await?
        }
        Resolution::Retrying { error, at } => retry_at(&mut tx, job, error, *at).await?,
        Resolution::Dead { error } => dead_letter(&mut tx, job, error).await?,
    };
    // Already known on PostgreSQL, where deferred statements run at once.
    if change.get() == Some(0) {
        return Ok(None);
    }
    let events = h.settle(&mut tx, job, resolution).await?;
    if !held(&mut tx, &change).await? {
        // Someone else owns the job now; record nothing.
        return Ok(None);
    }
    Ok(Some((tx, events)))
}

/// After a settling transaction committed: its events out, and a retried job's wake-up.
fn published(s: &Shared, resolution: &Resolution, events: Vec<Event>) {
    s.bus.after_commit(events);
    if let Resolution::Retrying { .. } = resolution {
        s.wake.notify_one();
    }
}
