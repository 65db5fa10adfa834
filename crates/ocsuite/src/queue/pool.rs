//! A process's workers: the dispatcher that claims and records jobs in batches, and the
//! reaper that recovers the jobs of workers that stopped renewing their leases.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::attempt::Shared;
use super::dispatch::dispatch;
use super::worker::{Handler, Resolution, WorkerConfig};
use super::{dead_letter, expired, retry_at, take_expired};
use crate::error::Result;
use crate::realtime::Bus;
use crate::store::Store;

/// A process's running workers (its dispatcher and reaper); [`Workers::shutdown`] stops
/// them after their current jobs.
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
            set.spawn(dispatch(shared.clone(), rx.clone()));
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
