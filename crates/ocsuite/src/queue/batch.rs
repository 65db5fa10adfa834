//! The batched worker: one loop per process (two when it runs eight jobs or more) that
//! records every attempt that ended and claims as many jobs as it has free slots, all
//! in **one transaction**, then runs the claimed jobs concurrently.
//!
//! Why: a job used to cost a commit of its own (its outcome and the next claim), and on
//! PostgreSQL each commit waits for its WAL flush, which bounded the queue near 900 jobs
//! a second whatever the workers did. Published PostgreSQL queues get their speed the
//! same way (a local buffer of claimed jobs, completions settled together). A cycle's
//! transaction switches tenant scope per job ([`crate::store::Tx::enter_tenant`]), so
//! row-level security binds every statement to the job's own tenant, as before.
//!
//! Every promise of the one-job-at-a-time worker holds:
//!
//! - **Leases.** A job's outcome is recorded only if it is still under the lease it
//!   was claimed with; a job whose lease was lost is skipped, and the rest of the batch
//!   is recorded. Claimed jobs start running right after the commit, well inside their
//!   lease, and each renews its own lease while it runs.
//! - **Fairness and limits.** Each claim is the same claim as before (priority, age,
//!   paused tenants, each tenant's concurrency limit); a cycle takes its slots from
//!   every queue in turn, so one deep queue does not starve the others.
//! - **Events in commit order.** A cycle's events are published once it commits, in the
//!   order its statements ran.
//! - **A failure costs only its own job.** If any statement of a cycle fails, the
//!   whole transaction is dropped (nothing it claimed stays claimed), each ended attempt
//!   is recorded alone as before, and claiming resumes after a poll interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::worker::{Handler, Outcome, Resolution, Shared, Start, resolve};
use super::{Claimed, backoff, claim_in, complete, dead_letter, held, renew, retry_at};
use crate::error::Result;
use crate::realtime::Event;
use crate::store::cross_tenant;

/// A claimed, started job: its handler, the job, its timeout and the handler's notes.
type Started = (Arc<dyn Handler>, Claimed, Duration, Value);

/// An attempt that ended: what to record, or `None` when its lease was lost.
struct Ended {
    h: Arc<dyn Handler>,
    job: Claimed,
    resolution: Option<Resolution>,
}

/// Runs jobs in `slots` concurrent attempts until `stop` turns true, then records the
/// attempts still running as they end.
pub(super) async fn run(s: Arc<Shared>, slots: usize, mut stop: watch::Receiver<bool>) {
    let mut attempts: JoinSet<Ended> = JoinSet::new();
    let mut ended: Vec<Ended> = Vec::new();
    // The last cycle found no more jobs: wait for a wake-up, a poll or an ended attempt.
    let mut idle = false;
    // Queues a claim found empty, skipped until the next wake-up or poll: a busy loop
    // claims from the queues that have work, not an empty statement per idle queue per
    // cycle (on SQLite each one is a turn of the only writer).
    let mut empty = vec![false; s.handlers.len()];
    let mut looked = Instant::now();
    loop {
        let notified = s.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        while let Some(r) = attempts.try_join_next() {
            ended.extend(joined(r));
        }
        if futures_util::FutureExt::now_or_never(notified.as_mut()).is_some()
            || looked.elapsed() >= s.cfg.poll
        {
            empty.fill(false);
            looked = Instant::now();
        }
        let stopping = *stop.borrow();
        let free = if stopping {
            0
        } else {
            slots.saturating_sub(attempts.len())
        };
        if ended.is_empty() && (free == 0 || idle) {
            if stopping && attempts.is_empty() {
                return;
            }
            tokio::select! {
                Some(r) = attempts.join_next(), if !attempts.is_empty() => ended.extend(joined(r)),
                _ = &mut notified, if free > 0 => {
                    idle = false;
                    empty.fill(false);
                }
                _ = tokio::time::sleep(s.cfg.poll), if free > 0 => {
                    idle = false;
                    empty.fill(false);
                }
                _ = stop.changed() => {}
            }
            continue;
        }
        let batch = std::mem::take(&mut ended);
        match cycle(&s, &batch, free, &mut empty).await {
            Ok(started) => {
                idle = started.len() < free;
                for (h, job, timeout, prepared) in started {
                    attempts.spawn(attempt(s.clone(), h, job, timeout, prepared));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "a queue cycle failed; recording each job alone");
                for Ended { h, job, resolution } in batch {
                    let Some(resolution) = resolution else {
                        continue;
                    };
                    match resolve(&s, h.as_ref(), &job, &resolution).await {
                        Ok(held) => counted(&job, &resolution, held, None),
                        // The lease will expire and the reaper will settle the job.
                        Err(e) => {
                            tracing::warn!(error = %e, job = %job.id, "recording a job outcome failed")
                        }
                    }
                }
                // Claim again after a poll interval, not at once: the failure may repeat.
                idle = true;
            }
        }
    }
}

/// An attempt's task ended: its result, or nothing when the task was aborted or
/// panicked outside the module (the job's lease expires and the reaper retries it).
fn joined(r: std::result::Result<Ended, tokio::task::JoinError>) -> Option<Ended> {
    r.map_err(|e| tracing::warn!(error = %e, "a job's attempt task ended abnormally"))
        .ok()
}

/// One transaction: records every attempt in `batch`, then claims and starts up to
/// `free` jobs. Publishes the events once it commits; returns the started jobs.
///
/// `empty` marks the queues not to claim from; a queue found empty is marked.
async fn cycle(
    s: &Shared,
    batch: &[Ended],
    free: usize,
    empty: &mut [bool],
) -> Result<Vec<Started>> {
    let began = Instant::now();
    // SQLite: look as a reader first, so an idle poll does not take the one writer.
    if batch.is_empty() && s.store.backend() == crate::store::Backend::Sqlite {
        let mut look = s.store.platform_read().await?;
        let now = Utc::now();
        for (i, h) in s.handlers.iter().enumerate() {
            if !empty[i] {
                empty[i] = !cross_tenant::job_ready(&mut look, h.queue(), now).await?;
            }
        }
        drop(look);
        if empty.iter().all(|e| *e) {
            return Ok(Vec::new());
        }
    }
    let mut tx = s.store.platform().await?;
    let mut events: Vec<Event> = Vec::new();
    let mut recorded: Vec<bool> = Vec::with_capacity(batch.len());
    let mut retrying = false;
    for e in batch {
        let Some(resolution) = &e.resolution else {
            recorded.push(false);
            continue;
        };
        let mut t = tx.enter_tenant(&e.job.tenant_id).await?;
        let change = match resolution {
            Resolution::Succeeded { .. } | Resolution::Failed { .. } | Resolution::Cancelled => {
                complete(&mut t, &e.job).await?
            }
            Resolution::Retrying { error, at } => retry_at(&mut t, &e.job, error, *at).await?,
            Resolution::Dead { error } => dead_letter(&mut t, &e.job, error).await?,
        };
        // Lost its lease (another worker owns the job now): record nothing of it.
        let ok = held(&mut t, &change).await?;
        if ok {
            events.extend(e.h.settle(&mut t, &e.job, resolution).await?);
            retrying |= matches!(resolution, Resolution::Retrying { .. });
        }
        recorded.push(ok);
        tx = t.into_platform();
    }
    let mut started: Vec<Started> = Vec::new();
    let mut turn = 0usize;
    while started.len() < free && empty.iter().any(|e| !e) {
        let i = turn % s.handlers.len();
        turn += 1;
        if empty[i] {
            continue;
        }
        let h = &s.handlers[i];
        let Some(job) = claim_in(&mut tx, h.queue(), &s.cfg.name, s.cfg.lease).await? else {
            empty[i] = true;
            continue;
        };
        // The claim set the job's tenant (PostgreSQL: `app.tenant_id`).
        let mut t = tx.entered_tenant(&job.tenant_id);
        match h.start(&mut t, &job).await? {
            Start::Run {
                timeout,
                events: ev,
                prepared,
            } => {
                events.extend(ev);
                started.push((h.clone(), job, timeout, prepared));
            }
            Start::Skip { events: ev } => {
                complete(&mut t, &job).await?;
                events.extend(ev);
                events.extend(h.settle(&mut t, &job, &Resolution::Cancelled).await?);
            }
        }
        tx = t.into_platform();
    }
    tx.commit().await?;
    s.bus.after_commit(events);
    if retrying {
        s.wake.notify_one();
    }
    let took = began.elapsed();
    for (e, ok) in batch.iter().zip(recorded) {
        if let Some(resolution) = &e.resolution {
            counted(&e.job, resolution, ok, Some(took));
        } else {
            crate::telemetry::job_finished(e.job.queue, "lease_lost", None);
        }
    }
    Ok(started)
}

/// Counts an attempt that was recorded (`held`), or found its lease lost.
fn counted(job: &Claimed, resolution: &Resolution, held: bool, took: Option<Duration>) {
    if held {
        crate::telemetry::job_finished(job.queue, resolution.outcome(), took);
    } else {
        crate::telemetry::job_finished(job.queue, "lease_lost", None);
    }
}

enum Interrupt {
    LeaseLost,
    Cancel,
}

/// Runs one attempt under its renewed lease and decides what to record. The module's
/// run is a task of its own so a panic is caught (as a retryable failure), a timed-out
/// one is abandoned, and a cancelled or lease-lost one is dropped mid-flight.
async fn attempt(
    s: Arc<Shared>,
    h: Arc<dyn Handler>,
    job: Claimed,
    timeout: Duration,
    prepared: Value,
) -> Ended {
    let mut run = tokio::spawn(h.clone().run(job.clone(), prepared));
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
                    match renew(&s.store, &job, s.cfg.lease).await {
                        Ok(false) => return Interrupt::LeaseLost,
                        Ok(true) => {}
                        // A database blip: keep running; the next renewal may succeed, and
                        // if the lease does expire the job is simply retried.
                        Err(e) => tracing::warn!(error = %e, job = %job.id, "lease renewal failed"),
                    }
                    if matches!(h.cancel_requested(&s.store, &job).await, Ok(true)) {
                        return Interrupt::Cancel;
                    }
                }
                ev = events.recv() => match ev {
                    Ok(ev) if h.is_cancellation(&job, &ev) => return Interrupt::Cancel,
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
                    return Ended { h, job, resolution: None };
                }
                Interrupt::Cancel => Outcome::Cancelled,
            }
        }
    };
    let resolution = match outcome {
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
    };
    Ended {
        h,
        job,
        resolution: Some(resolution),
    }
}
