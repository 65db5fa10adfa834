//! Workers: loops that claim jobs, run them under a renewed lease, and record outcomes.
//!
//! Each worker loop holds at most one job at a time, so a process with `workers = N` runs
//! up to N jobs concurrently. A job's run is spawned as its own task so a panicking module
//! is caught (as a retryable failure), a timed-out one is abandoned, and a cancelled or
//! lease-lost one is dropped mid-flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{
    Claimed, backoff, claim, claim_in, claim_without_look, complete, dead_letter, expired, held,
    renew, retry_at, take_expired,
};
use crate::error::{AppError, Result};
use crate::realtime::{Bus, Event};
use crate::store::{Store, TenantTx};

/// What a handler decides when its job is claimed.
pub enum Start {
    /// Run it, allowing this long for one attempt. `prepared` is handed to
    /// [`Handler::run`], so what `start` read need not be read again.
    Run {
        timeout: Duration,
        events: Vec<Event>,
        prepared: Value,
    },
    /// Do not run it (its row was cancelled or is gone); the job is removed.
    Skip { events: Vec<Event> },
}

impl Start {
    /// Runs the job with `prepared`, a handler's own typed struct, handed to
    /// [`Handler::run`], which reads it back with [`prepared`].
    pub fn run(timeout: Duration, events: Vec<Event>, prepared: &impl Serialize) -> Result<Self> {
        Ok(Self::Run {
            timeout,
            events,
            prepared: serde_json::to_value(prepared).map_err(AppError::internal)?,
        })
    }
}

/// What [`Start::run`] prepared, as the handler's type. A preparation that does not
/// read back is a bug, not a passing fault: the attempt fails without retries.
pub fn prepared<T: DeserializeOwned>(value: Value) -> std::result::Result<T, Outcome> {
    serde_json::from_value(value).map_err(|e| Outcome::Failed {
        error: format!("the job's preparation is malformed: {e}"),
        retryable: false,
    })
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded {
        output: Value,
        summary: Option<String>,
    },
    Failed {
        error: String,
        retryable: bool,
    },
    Cancelled,
}

/// What the queue did with the job after an attempt; handlers mirror it on their row.
#[derive(Debug)]
pub enum Resolution {
    Succeeded {
        output: Value,
        summary: Option<String>,
    },
    /// Will run again at `at`.
    Retrying {
        error: String,
        at: chrono::DateTime<Utc>,
    },
    /// Out of attempts; in the dead-letter queue.
    Dead {
        error: String,
    },
    /// Failed in a way a retry cannot fix; removed.
    Failed {
        error: String,
    },
    Cancelled,
}

impl Resolution {
    /// Its name in `ocsuite_queue_jobs_finished_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Succeeded { .. } => "succeeded",
            Self::Retrying { .. } => "retrying",
            Self::Dead { .. } => "dead",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The work behind one queue.
pub trait Handler: Send + Sync + 'static {
    fn queue(&self) -> &'static str;
    /// Called inside the claim's transaction.
    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>>;
    /// One attempt, outside any transaction.
    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome>;
    /// Records the resolution on the job's row, inside the transaction that applies it.
    fn settle<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        job: &'a Claimed,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>>;
    /// Polled with each lease renewal; true stops the attempt as cancelled. By default
    /// a job cannot be cancelled once it runs.
    fn cancel_requested<'a>(
        &'a self,
        _store: &'a Store,
        _job: &'a Claimed,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    /// True when `event` (of the job's tenant) asks to cancel this job's attempt; by
    /// default none does.
    fn is_cancellation(&self, _job: &Claimed, _event: &Event) -> bool {
        false
    }
}

/// Settings for a set of worker loops.
#[derive(Clone)]
pub struct WorkerConfig {
    pub concurrency: u32,
    pub lease: Duration,
    pub poll: Duration,
    pub retry_base_ms: u32,
    /// Names this process in `jobs.worker`.
    pub name: String,
}

impl WorkerConfig {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            concurrency: c.workers,
            lease: Duration::from_secs(c.queue_lease_secs.into()),
            poll: Duration::from_millis(c.queue_poll_ms.into()),
            retry_base_ms: c.queue_retry_base_ms,
            name: format!(
                "{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }
}

struct Shared {
    store: Store,
    bus: Arc<Bus>,
    wake: Arc<super::Wake>,
    handlers: Vec<Arc<dyn Handler>>,
    cfg: WorkerConfig,
}

/// Running worker loops; [`Workers::shutdown`] stops them after their current job.
pub struct Workers {
    stop: watch::Sender<bool>,
    set: JoinSet<()>,
}

impl Workers {
    pub fn start(
        store: Store,
        bus: Arc<Bus>,
        wake: Arc<super::Wake>,
        handlers: Vec<Arc<dyn Handler>>,
        cfg: WorkerConfig,
    ) -> Self {
        let (stop, rx) = watch::channel(false);
        let mut set = JoinSet::new();
        let shared = Arc::new(Shared {
            store,
            bus,
            wake,
            handlers,
            cfg,
        });
        if shared.cfg.concurrency > 0 {
            for _ in 0..shared.cfg.concurrency {
                set.spawn(worker_loop(shared.clone(), rx.clone()));
            }
            set.spawn(reaper_loop(shared.clone(), rx.clone()));
        }
        Self { stop, set }
    }

    /// Stops claiming, waits up to `grace` for running jobs, then abandons them (their
    /// leases expire and another worker runs them again).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = async { while self.set.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("workers did not finish in time; their jobs will be retried");
            self.set.abort_all();
        }
    }
}

async fn worker_loop(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // The queue of the job this loop just ran: it most likely has more.
    let mut busy: Option<&'static str> = None;
    // The next job, claimed in the transaction that settled the last one.
    let mut next: Option<Started> = None;
    loop {
        // A job already claimed runs even when stopping (it claims nothing after it).
        if *stop.borrow() && next.is_none() {
            return;
        }
        let notified = s.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let claimed = match next.take() {
            Some(started) => Ok(Some(started)),
            None => claim_any(&s, busy).await,
        };
        match claimed {
            Ok(Some((h, job, timeout, prepared))) => {
                busy = Some(h.queue());
                next = run_job(&s, h, job, timeout, prepared, &stop).await;
            }
            Ok(None) => {
                busy = None;
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(s.cfg.poll) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                busy = None;
                tracing::warn!(error = %e, "claiming a job failed");
                tokio::select! {
                    _ = tokio::time::sleep(s.cfg.poll) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// A claimed, started job: its handler, the job, its timeout and the handler's notes.
type Started = (Arc<dyn Handler>, Claimed, Duration, Value);

/// Claims from each handler's queue in turn; starts the first job found.
async fn claim_any(s: &Shared, busy: Option<&'static str>) -> Result<Option<Started>> {
    for h in &s.handlers {
        let claimed = if busy == Some(h.queue()) {
            claim_without_look(&s.store, h.queue(), &s.cfg.name, s.cfg.lease).await?
        } else {
            claim(&s.store, h.queue(), &s.cfg.name, s.cfg.lease).await?
        };
        let Some((job, tx)) = claimed else {
            continue;
        };
        if let Some(started) = start_claimed(s, h, job, tx, Vec::new()).await? {
            return Ok(Some(started));
        }
    }
    Ok(None)
}

/// Lets the handler start a job claimed in `tx`, commits, then publishes `earlier`
/// (events of work done before the claim in the same transaction) and the start's
/// events. `None` when the handler skipped the job (it is removed as cancelled).
async fn start_claimed(
    s: &Shared,
    h: &Arc<dyn Handler>,
    job: Claimed,
    mut tx: TenantTx,
    mut earlier: Vec<Event>,
) -> Result<Option<Started>> {
    match h.start(&mut tx, &job).await? {
        Start::Run {
            timeout,
            events,
            prepared,
        } => {
            tx.commit().await?;
            earlier.extend(events);
            s.bus.after_commit(earlier);
            Ok(Some((h.clone(), job, timeout, prepared)))
        }
        Start::Skip { events } => {
            complete(&mut tx, &job).await?;
            earlier.extend(events);
            earlier.extend(h.settle(&mut tx, &job, &Resolution::Cancelled).await?);
            tx.commit().await?;
            s.bus.after_commit(earlier);
            Ok(None)
        }
    }
}

enum Interrupt {
    LeaseLost,
    Cancel,
}

/// Runs one attempt and settles it; unless the workers are stopping, returns the
/// queue's next job, claimed and started in the settling transaction.
async fn run_job(
    s: &Shared,
    h: Arc<dyn Handler>,
    job: Claimed,
    timeout: Duration,
    prepared: Value,
    stop: &watch::Receiver<bool>,
) -> Option<Started> {
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
                    crate::telemetry::job_finished(job.queue, "lease_lost", None);
                    return None;
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
    span.record("outcome", resolution.outcome());
    let began = Instant::now();
    if !*stop.borrow() {
        match resolve_and_claim(s, &h, &job, &resolution).await {
            Ok((held, next)) => {
                finished(&job, &resolution, held, began);
                return next;
            }
            // Nothing of it was kept: record the outcome alone below.
            Err(e) => {
                tracing::warn!(error = %e, job = %job.id, "settling a job and claiming the next failed")
            }
        }
    }
    match resolve(s, h.as_ref(), &job, &resolution).await {
        Ok(held) => finished(&job, &resolution, held, began),
        // The lease will expire and the reaper will settle the job.
        Err(e) => tracing::warn!(error = %e, job = %job.id, "recording a job outcome failed"),
    }
    None
}

/// Counts an attempt that was recorded (`held`), or found its lease lost, with the time
/// its settling transaction took since `began`.
fn finished(job: &Claimed, resolution: &Resolution, held: bool, began: Instant) {
    if held {
        crate::telemetry::job_finished(job.queue, resolution.outcome(), Some(began.elapsed()));
    } else {
        crate::telemetry::job_finished(job.queue, "lease_lost", None);
    }
}

/// Applies `resolution` to the job and its row in one transaction; false when the
/// lease was lost (nothing is recorded).
async fn resolve(
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

/// [`resolve`], then claims and starts the queue's next job in the same transaction: one
/// commit and, on SQLite, one writer turn fewer per job. Any error drops the whole
/// transaction, so the caller records the outcome alone. The flag is [`resolve`]'s.
async fn resolve_and_claim(
    s: &Shared,
    h: &Arc<dyn Handler>,
    job: &Claimed,
    resolution: &Resolution,
) -> Result<(bool, Option<Started>)> {
    let Some((tx, events)) = settle_in_tx(s, h.as_ref(), job, resolution).await? else {
        return Ok((false, None));
    };
    let mut tx = tx.into_platform();
    let Some(next) = claim_in(&mut tx, h.queue(), &s.cfg.name, s.cfg.lease).await? else {
        tx.commit().await?;
        published(s, resolution, events);
        return Ok((true, None));
    };
    let tx = tx.entered_tenant(&next.tenant_id);
    let started = start_claimed(s, h, next, tx, events).await?;
    if let Resolution::Retrying { .. } = resolution {
        s.wake.notify_one();
    }
    Ok((true, started))
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

/// Finds jobs whose worker stopped renewing and retries or dead-letters them.
async fn reaper_loop(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = (s.cfg.lease / 2).max(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = reap(&s).await {
            tracing::warn!(error = %e, "reaping expired leases failed");
        }
    }
}

async fn reap(s: &Shared) -> Result<()> {
    for (tenant, id) in expired(&s.store, 100).await? {
        let mut tx = s.store.tenant(&tenant).await?;
        let Some(job) = take_expired(&mut tx, &id).await? else {
            continue;
        };
        let Some(h) = s.handlers.iter().find(|h| h.queue() == job.queue) else {
            continue;
        };
        let error = "the worker running this job stopped responding (lease expired)".to_string();
        let resolution = if job.attempts >= job.max_attempts {
            dead_letter(&mut tx, &job, &error).await?;
            Resolution::Dead { error }
        } else {
            let at = Utc::now();
            retry_at(&mut tx, &job, &error, at).await?;
            Resolution::Retrying { error, at }
        };
        let events = h.settle(&mut tx, &job, &resolution).await?;
        tx.commit().await?;
        s.bus.after_commit(events);
        crate::telemetry::job_finished(job.queue, resolution.outcome(), None);
        tracing::warn!(job = %job.id, tenant = %tenant, "recovered a job from an expired lease");
    }
    s.wake.notify_one();
    Ok(())
}
