//! What a queue's handler does with a job ([`Handler`]), and the workers' settings.
//!
//! A process with `workers = N` runs up to N attempts at once (`pool.rs`). One
//! dispatcher claims and records them in batches (`dispatch`), each attempt runs as its
//! own task under a renewed lease (`attempt`), and a reaper recovers the jobs of workers
//! that stopped renewing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Claimed;
use crate::error::{AppError, Result};
use crate::realtime::Event;
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
