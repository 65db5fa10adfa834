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

use super::worker::{Handler, Outcome, Resolution, Shared};
use super::{Claimed, backoff, renew};

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
