//! Workers: what a queue's handler does with a job, and the loops that run them.
//!
//! A process with `workers = N` runs up to N attempts at once. One dispatcher claims and
//! records them in batches (`dispatch`), each attempt runs as its own task under a renewed
//! lease (`attempt`), and a reaper recovers the jobs of workers that stopped renewing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Claimed, complete, dead_letter, expired, held, retry_at, take_expired};
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
    /// Starts jobs of this queue and of `tx`'s tenant claimed in one round, in order; one
    /// [`Start`] per job. By default one by one with [`Handler::start`]; a busy queue
    /// overrides it to write the batch with a few array-bound statements.
    fn start_many<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        jobs: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Vec<Start>>> {
        Box::pin(async move {
            let mut started = Vec::with_capacity(jobs.len());
            for job in jobs {
                started.push(self.start(tx, job).await?);
            }
            Ok(started)
        })
    }
    /// One attempt, outside any transaction.
    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome>;
    /// Records the resolution on the job's row, inside the transaction that applies it.
    fn settle<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        job: &'a Claimed,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>>;
    /// Records the resolutions of jobs of this queue and of `tx`'s tenant that ended in
    /// one round, in order. By default one by one with [`Handler::settle`]; a busy queue
    /// overrides it to write the common outcome for the whole batch at once.
    fn settle_many<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        ended: &'a [(&'a Claimed, &'a Resolution)],
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let mut events = Vec::new();
            for (job, resolution) in ended {
                events.extend(self.settle(tx, job, resolution).await?);
            }
            Ok(events)
        })
    }
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

/// What the dispatcher, the attempts and the reaper share.
pub(super) struct Shared {
    pub store: Store,
    pub bus: Arc<Bus>,
    pub wake: Arc<super::Wake>,
    pub handlers: Vec<Arc<dyn Handler>>,
    pub cfg: WorkerConfig,
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
            set.spawn(super::dispatch::dispatch(shared.clone(), rx.clone()));
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
