//! The dispatcher: one loop per process that claims jobs in batches and records ended
//! attempts in batches, so a busy queue costs a transaction per batch instead of one or
//! two per job.
//!
//! Each round ("cycle") is one transaction that, in order:
//!
//! 1. records every attempt that ended since the last round: the finished jobs' rows go
//!    in one statement per tenant ([`complete_many`]), retried and dead-lettered ones one
//!    by one (they are rare), and each handler records the outcome on its own row;
//! 2. claims up to as many jobs as there are free slots, one statement per queue
//!    ([`claim_many`]), from the queues that may have work, and lets each handler start
//!    its jobs;
//! 3. commits, then publishes the events in commit order and spawns the attempts.
//!
//! Batches form by themselves: while a round's transaction runs, attempts keep ending and
//! wait for the next round, so the busier the queue the larger the batch, and an idle
//! one is served at once. Job rows are touched tenant by tenant, the transaction entering
//! each tenant's scope in turn ([`Tx::enter_tenant`]), so row-level security binds every
//! statement as it does elsewhere. A round that fails is dropped whole (its claims are
//! undone); its ended attempts are then recorded one by one ([`resolve`]), and whatever
//! still fails is recovered by the reaper once the lease runs out.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::attempt::{self, Ended, Started};
use super::attempt::{Shared, resolve};
use super::worker::{Resolution, Start};
use super::{Claimed, claim_many, complete, complete_many, dead_letter, held, ready, retry_at};
use crate::error::Result;
use crate::realtime::Event;
use crate::store::Tx;

/// Runs until stopped: claims while slots are free, records ended attempts, and on
/// stopping claims nothing more and returns once every running attempt is recorded.
pub(super) async fn dispatch(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let (done, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let mut runs = JoinSet::new();
    let capacity = s.cfg.concurrency as usize;
    let mut running = 0usize;
    let mut ended: Vec<Ended> = Vec::new();
    // Queues that may have ready jobs: found by a look when woken, kept while their
    // claims come back full, and the queue of every ended attempt (it likely has more).
    let mut hot: Vec<&'static str> = Vec::new();
    let mut look = true;
    loop {
        let notified = s.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let stopping = *stop.borrow();
        if look && !stopping {
            look_all(&s, &mut hot).await;
        }
        while let Ok(e) = ended_rx.try_recv() {
            ended.push(e);
        }
        running = running.saturating_sub(ended.len());
        for e in &ended {
            if !hot.contains(&e.job.queue) {
                hot.push(e.job.queue);
            }
        }
        let free = if stopping {
            0
        } else {
            capacity.saturating_sub(running)
        };
        let mut failed = false;
        if !ended.is_empty() || (free > 0 && !hot.is_empty()) {
            match cycle(&s, std::mem::take(&mut ended), free, &mut hot).await {
                Ok(started) => {
                    running += started.len();
                    for st in started {
                        runs.spawn(attempt::run(s.clone(), st, done.clone()));
                    }
                }
                Err(()) => failed = true,
            }
        }
        while runs.try_join_next().is_some() {}
        if stopping && running == 0 {
            return;
        }
        look = false;
        if stopping || running >= capacity {
            // Only an ended attempt frees a slot (or, stopping, brings the end nearer).
            if let Some(e) = ended_rx.recv().await {
                ended.push(e);
            }
        } else if failed {
            tokio::select! {
                e = ended_rx.recv() => ended.extend(e),
                _ = tokio::time::sleep(s.cfg.poll) => look = true,
                _ = stop.changed() => {}
            }
        } else if hot.is_empty() {
            tokio::select! {
                e = ended_rx.recv() => ended.extend(e),
                _ = &mut notified => look = true,
                _ = tokio::time::sleep(s.cfg.poll) => look = true,
                _ = stop.changed() => {}
            }
        }
    }
}

/// Adds to `hot` every queue with a job ready to run, found by a reader's look.
async fn look_all(s: &Shared, hot: &mut Vec<&'static str>) {
    for h in &s.handlers {
        let q = h.queue();
        if hot.contains(&q) {
            continue;
        }
        match ready(&s.store, q).await {
            Ok(true) => hot.push(q),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, queue = q, "looking for ready jobs failed"),
        }
    }
}

/// One round: records `ended`, claims and starts up to `free` jobs from the `hot` queues,
/// commits, publishes. Returns the started jobs; on failure nothing of the round is kept
/// and `ended` has been recorded one attempt at a time instead.
async fn cycle(
    s: &Shared,
    ended: Vec<Ended>,
    free: usize,
    hot: &mut Vec<&'static str>,
) -> std::result::Result<Vec<Started>, ()> {
    for e in ended.iter().filter(|e| e.resolution.is_none()) {
        crate::telemetry::job_finished(e.job.queue, "lease_lost", None);
    }
    let settling = ended.iter().any(|e| e.resolution.is_some());
    if !settling && (free == 0 || hot.is_empty()) {
        return Ok(Vec::new());
    }
    let began = Instant::now();
    let round = async {
        let mut events = Vec::new();
        let mut finished = Vec::new();
        let tx = s.store.platform().await?;
        let tx = settle(tx, &ended, &mut events, &mut finished).await?;
        let (tx, started, drained) = claim_and_start(s, tx, free, hot, &mut events).await?;
        tx.commit().await?;
        Ok::<_, crate::error::AppError>((events, finished, started, drained))
    };
    match round.await {
        Ok((events, finished, started, drained)) => {
            s.bus.after_commit(events);
            let took = began.elapsed();
            let mut retried = false;
            for (queue, outcome) in finished {
                retried |= outcome == "retrying";
                crate::telemetry::job_finished(queue, outcome, Some(took));
            }
            if retried {
                s.wake.notify_one();
            }
            hot.retain(|q| !drained.contains(q));
            Ok(started)
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = ended.len(), "a queue round failed; recording its attempts one by one");
            for e in ended {
                let (Some(resolution), began) = (e.resolution, Instant::now()) else {
                    continue;
                };
                match resolve(s, e.handler.as_ref(), &e.job, &resolution).await {
                    Ok(true) => crate::telemetry::job_finished(
                        e.job.queue,
                        resolution.outcome(),
                        Some(began.elapsed()),
                    ),
                    Ok(false) => crate::telemetry::job_finished(e.job.queue, "lease_lost", None),
                    // The lease will expire and the reaper will settle the job.
                    Err(err) => {
                        tracing::warn!(error = %err, job = %e.job.id, "recording a job outcome failed")
                    }
                }
            }
            Err(())
        }
    }
}

/// Whether a resolution removes the job (rather than keeping it to run again or in the
/// dead-letter queue).
fn removes(r: &Resolution) -> bool {
    matches!(
        r,
        Resolution::Succeeded { .. } | Resolution::Failed { .. } | Resolution::Cancelled
    )
}

/// Records the ended attempts, tenant by tenant. A job found no longer under its lease
/// is counted as `lease_lost` and nothing is recorded for it.
async fn settle(
    mut tx: Tx,
    ended: &[Ended],
    events: &mut Vec<Event>,
    finished: &mut Vec<(&'static str, &'static str)>,
) -> Result<Tx> {
    let mut order: Vec<(&Ended, &Resolution)> = ended
        .iter()
        .filter_map(|e| Some((e, e.resolution.as_ref()?)))
        .collect();
    // Stable: each tenant's attempts keep the order they ended in.
    order.sort_by(|a, b| a.0.job.tenant_id.as_str().cmp(b.0.job.tenant_id.as_str()));
    for group in order.chunk_by(|a, b| a.0.job.tenant_id == b.0.job.tenant_id) {
        let mut ttx = tx.enter_tenant(&group[0].0.job.tenant_id).await?;
        let done: Vec<&Claimed> = group
            .iter()
            .filter(|(_, r)| removes(r))
            .map(|(e, _)| &e.job)
            .collect();
        let removed = complete_many(&mut ttx, &done).await?;
        let mut kept: Vec<(&Ended, &Resolution)> = Vec::with_capacity(group.len());
        for &(e, r) in group {
            let held = match r {
                Resolution::Retrying { error, at } => {
                    let change = retry_at(&mut ttx, &e.job, error, *at).await?;
                    held(&mut ttx, &change).await?
                }
                Resolution::Dead { error } => {
                    let change = dead_letter(&mut ttx, &e.job, error).await?;
                    held(&mut ttx, &change).await?
                }
                _ => removed.contains(&e.job.token),
            };
            if held {
                kept.push((e, r));
                finished.push((e.job.queue, r.outcome()));
            } else {
                finished.push((e.job.queue, "lease_lost"));
            }
        }
        // Each queue's handler records its outcomes for the group at once.
        let mut queues: Vec<&'static str> = Vec::new();
        for (e, _) in &kept {
            if !queues.contains(&e.job.queue) {
                queues.push(e.job.queue);
            }
        }
        for q in queues {
            let items: Vec<(&Claimed, &Resolution)> = kept
                .iter()
                .filter(|(e, _)| e.job.queue == q)
                .map(|&(e, r)| (&e.job, r))
                .collect();
            let Some((first, _)) = kept.iter().find(|(e, _)| e.job.queue == q) else {
                continue;
            };
            events.extend(first.handler.settle_many(&mut ttx, &items).await?);
        }
        tx = ttx.into_platform();
    }
    Ok(tx)
}

/// Claims up to `free` jobs from the hot queues, in the handlers' order, and lets each
/// handler start its jobs (a job its handler skips is removed as cancelled). Returns the
/// transaction, the started jobs, and the queues whose claims came back short (drained
/// for now).
async fn claim_and_start(
    s: &Shared,
    mut tx: Tx,
    mut free: usize,
    hot: &[&'static str],
    events: &mut Vec<Event>,
) -> Result<(Tx, Vec<Started>, Vec<&'static str>)> {
    let mut started = Vec::new();
    let mut drained = Vec::new();
    for h in &s.handlers {
        if free == 0 {
            break;
        }
        if !hot.contains(&h.queue()) {
            continue;
        }
        let mut jobs = claim_many(&mut tx, h.queue(), &s.cfg.name, s.cfg.lease, free).await?;
        if jobs.len() < free {
            drained.push(h.queue());
        }
        free -= jobs.len();
        jobs.sort_by(|a, b| a.tenant_id.as_str().cmp(b.tenant_id.as_str()));
        let mut jobs = jobs.into_iter().peekable();
        while let Some(first) = jobs.next() {
            let tenant = first.tenant_id.clone();
            let mut group = vec![first];
            while let Some(job) = jobs.next_if(|n| n.tenant_id == tenant) {
                group.push(job);
            }
            let mut ttx = tx.enter_tenant(&tenant).await?;
            let starts = h.start_many(&mut ttx, &group).await?;
            if starts.len() != group.len() {
                return Err(crate::error::AppError::Internal(format!(
                    "queue {}: {} jobs started as {}",
                    h.queue(),
                    group.len(),
                    starts.len()
                )));
            }
            for (job, start) in group.into_iter().zip(starts) {
                match start {
                    Start::Run {
                        timeout,
                        events: evs,
                        prepared,
                    } => {
                        events.extend(evs);
                        started.push(Started {
                            handler: h.clone(),
                            job,
                            timeout,
                            prepared,
                        });
                    }
                    Start::Skip { events: evs } => {
                        complete(&mut ttx, &job).await?;
                        events.extend(evs);
                        events.extend(h.settle(&mut ttx, &job, &Resolution::Cancelled).await?);
                    }
                }
            }
            tx = ttx.into_platform();
        }
    }
    Ok((tx, started, drained))
}
