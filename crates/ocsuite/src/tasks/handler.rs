//! The `execute-task` queue handler: runs a task's capability and records the outcome.

use std::sync::Arc;
use std::time::Duration;

use ocsuite_module_sdk::{TaskError, TaskExecutionRequest, Version};
use serde_json::{Value, json};

use super::{Change, Status, job_id, update};
use crate::audit;
use crate::connectors::vault::TokenSource;
use crate::error::{AppError, Result};
use crate::ids::{TaskId, TenantId};
use crate::modules::{self, ExecContext, ProgressSink, Source, mcp};
use crate::state::AppState;
use futures_util::future::BoxFuture;

use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, EXECUTE_TASK};
use crate::realtime::Event;
use crate::store::{Store, TenantTx, scoped};

/// Progress reports are written at most this often per task.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub struct ExecuteTask {
    state: AppState,
}

/// What `start` hands the attempt.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    capability: String,
    version: String,
    input: Value,
    /// Why the capability cannot run (unknown, disabled): the attempt fails with it.
    problem: Option<String>,
    /// A built-in whose module was found usable (in the plan, enabled) when the job
    /// started: the attempt need not read the database again before running it.
    #[serde(default)]
    checked: bool,
}

/// Each module's usability, looked up once per batch of starts: `Some(problem)` when it
/// cannot run.
type Usable = std::collections::HashMap<String, Option<String>>;

impl ExecuteTask {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

pub(super) fn task_of(job: &Claimed) -> Option<TaskId> {
    job.payload_as::<super::TaskJob>().map(|j| j.task_id)
}

/// Whether the task asked to be cancelled (or is gone).
async fn cancel_flag(tx: &mut TenantTx, id: &TaskId) -> Result<bool> {
    let row: Option<(bool,)> = tx
        .fetch_optional(
            scoped("SELECT cancel_requested FROM tasks WHERE tenant_id = $1 AND id = $2").bind(id),
        )
        .await?;
    Ok(row.is_none_or(|(c,)| c))
}

impl Handler for ExecuteTask {
    fn queue(&self) -> &'static str {
        EXECUTE_TASK
    }

    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            let Some(id) = task_of(job) else {
                return Ok(Start::Skip { events: vec![] });
            };
            // Gone, cancelled or already ended: nothing to run.
            let Some((ev, t)) =
                super::mark_running(tx, &id, job.attempts, job.max_attempts).await?
            else {
                return Ok(Start::Skip { events: vec![] });
            };
            self.prepare(tx, ev, t, &mut Usable::new()).await
        })
    }

    fn start_many<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        jobs: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Vec<Start>>> {
        Box::pin(async move {
            let mut marked = super::batch::mark_running_many(tx, jobs).await?;
            let mut starts = Vec::with_capacity(jobs.len());
            let mut usable = Usable::new();
            for m in marked.iter_mut() {
                starts.push(match m.take() {
                    Some((ev, t)) => self.prepare(tx, ev, t, &mut usable).await?,
                    None => Start::Skip { events: vec![] },
                });
            }
            Ok(starts)
        })
    }

    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            match self.attempt(&job, prepared).await {
                Ok(o) => o,
                Err(e) => Outcome::Failed {
                    error: format!("could not run the task: {e}"),
                    retryable: true,
                },
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        job: &'a Claimed,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let Some(id) = task_of(job) else {
                return Ok(vec![]);
            };
            let (change, kind, data) = match resolution {
                Resolution::Succeeded { output, summary } => (
                    Change {
                        status: Some(Status::Succeeded),
                        result: Some(output),
                        error: Some(None),
                        finished: true,
                        ..Change::default()
                    },
                    "succeeded",
                    json!({"summary": summary, "attempt": job.attempts}),
                ),
                Resolution::Retrying { error, at } => (
                    Change {
                        status: Some(Status::Queued),
                        error: Some(Some(error)),
                        ..Change::default()
                    },
                    "retrying",
                    json!({"error": error, "attempt": job.attempts, "next_attempt_at": at}),
                ),
                Resolution::Dead { error } => (
                    Change {
                        status: Some(Status::Dead),
                        error: Some(Some(error)),
                        finished: true,
                        ..Change::default()
                    },
                    "dead",
                    json!({"error": error, "attempt": job.attempts}),
                ),
                Resolution::Failed { error } => (
                    Change {
                        status: Some(Status::Failed),
                        error: Some(Some(error)),
                        finished: true,
                        ..Change::default()
                    },
                    "failed",
                    json!({"error": error, "attempt": job.attempts}),
                ),
                Resolution::Cancelled => (
                    Change {
                        status: Some(Status::Cancelled),
                        finished: true,
                        ..Change::default()
                    },
                    "cancelled",
                    json!({}),
                ),
            };
            let ev = update(tx, &id, change, kind, data.clone()).await?;
            let mut events = Vec::new();
            if let Some(ev) = ev {
                audit::record_system(tx, &format!("task.{kind}"), "task", id.as_str(), data)
                    .await?;
                // The outcome of a task the board proposed goes back to whoever called
                // the meeting.
                let meeting = ev.data["meeting_id"].as_str().map(str::to_owned);
                // A task an agent proposed in a chat reports back to that conversation.
                if meeting.is_none() && matches!(kind, "succeeded" | "failed" | "dead") {
                    events.extend(
                        crate::notifications::chat_task_outcome(
                            tx,
                            &id,
                            kind,
                            ev.data["error"].as_str(),
                        )
                        .await?,
                    );
                }
                let error = ev.data["error"].as_str().map(str::to_owned);
                events.push(ev);
                if kind == "dead" {
                    dead_lettered(tx, &id, error.as_deref()).await?;
                }
                if let Some(meeting) = meeting
                    && matches!(kind, "succeeded" | "failed" | "dead")
                {
                    events.extend(
                        crate::notifications::task_outcome(
                            tx,
                            &meeting,
                            id.as_str(),
                            kind,
                            error.as_deref(),
                        )
                        .await?,
                    );
                }
            }
            Ok(events)
        })
    }

    fn settle_many<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        ended: &'a [(&'a Claimed, &'a Resolution)],
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            // Successes, the bulk of a busy queue, are written together; the rest one by one.
            let mut events = Vec::new();
            let mut succeeded = Vec::new();
            for &(job, resolution) in ended {
                match (task_of(job), resolution) {
                    (Some(id), Resolution::Succeeded { output, summary }) => {
                        succeeded.push(super::batch::Succeeded {
                            job,
                            id,
                            output,
                            summary: summary.as_deref(),
                        })
                    }
                    _ => events.extend(self.settle(tx, job, resolution).await?),
                }
            }
            events.extend(super::batch::succeeded_many(tx, &succeeded).await?);
            Ok(events)
        })
    }

    fn is_cancellation(&self, job: &Claimed, event: &Event) -> bool {
        event.kind == "cancel_requested"
            && task_of(job).is_some_and(|id| event.topic.strip_prefix("task:") == Some(id.as_str()))
    }

    fn cancel_requested<'a>(
        &'a self,
        store: &'a Store,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let Some(id) = task_of(job) else {
                return Ok(false);
            };
            let mut tx = store.tenant_read(&job.tenant_id).await?;
            let cancel = cancel_flag(&mut tx, &id).await?;
            tx.commit().await?;
            Ok(cancel)
        })
    }
}

impl ExecuteTask {
    /// What a task marked running needs for its attempt: its timeout, and why it cannot
    /// run (unknown, not in the plan, disabled) if that is known. A built-in's module is
    /// checked here, once per module per batch, so the attempt of a built-in needs no
    /// database read of its own; an MCP tool is resolved by its attempt, which needs its
    /// server's URL and credential.
    async fn prepare(
        &self,
        tx: &mut TenantTx,
        ev: Event,
        t: super::Runnable,
        usable: &mut Usable,
    ) -> Result<Start> {
        let version = Version::parse(&t.version).map_err(AppError::internal)?;
        let (timeout, problem, checked) =
            match self.state.registry.capability(&t.capability, &version) {
                Some(r) => {
                    let module = r.spec.module().to_owned();
                    let problem = match usable.get(&module) {
                        Some(p) => p.clone(),
                        None => {
                            let p = match modules::usable(&self.state.registry, tx, &module).await {
                                Ok(()) => None,
                                Err(e) => Some(e.to_string()),
                            };
                            usable.insert(module, p.clone());
                            p
                        }
                    };
                    (
                        Duration::from_secs(r.spec.timeout_secs.into()),
                        problem,
                        true,
                    )
                }
                None => {
                    match modules::resolve(&self.state.registry, tx, &t.capability, Some(&version))
                        .await
                    {
                        Ok(r) => (Duration::from_secs(r.spec.timeout_secs.into()), None, false),
                        // Run anyway: the attempt reports why it cannot, as the task's error.
                        Err(e) => (Duration::from_secs(60), Some(e.to_string()), false),
                    }
                }
            };
        Start::run(
            timeout,
            vec![ev],
            &Prepared {
                capability: t.capability,
                version: t.version,
                input: t.input,
                problem,
                checked,
            },
        )
    }

    async fn attempt(&self, job: &Claimed, prepared: Value) -> Result<Outcome> {
        let Prepared {
            capability,
            version,
            input,
            problem,
            checked,
        } = match crate::queue::worker::prepared(prepared) {
            Ok(p) => p,
            Err(failed) => return Ok(failed),
        };
        let Some(id) = task_of(job) else {
            return Ok(Outcome::Failed {
                error: "the job names no task".into(),
                retryable: false,
            });
        };
        if let Some(problem) = problem {
            return Ok(Outcome::Failed {
                error: format!("cannot run {capability}@{version}: {problem}"),
                retryable: false,
            });
        }
        let version = Version::parse(&version).map_err(AppError::internal)?;
        // A built-in checked when it started runs as it is. Otherwise it is resolved
        // again, on a reader: the module may have been disabled since the task was
        // queued, and an MCP tool needs its server's URL and credential.
        let builtin = checked
            .then(|| self.state.registry.capability(&capability, &version))
            .flatten();
        let (resolved, credential) = if let Some(r) = builtin {
            (r, None)
        } else {
            let mut tx = self.state.store.tenant_read(&job.tenant_id).await?;
            let r =
                match modules::resolve(&self.state.registry, &mut tx, &capability, Some(&version))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        return Ok(Outcome::Failed {
                            error: format!("cannot run {capability}@{version}: {e}"),
                            retryable: false,
                        });
                    }
                };
            let credential = match &r.source {
                Source::Mcp { server_id, .. } => {
                    mcp::credential(&mut tx, &self.state.crypto, server_id).await?
                }
                Source::Builtin => None,
            };
            tx.commit().await?;
            (r, credential)
        };

        let (sink, rx) = ProgressSink::new();
        let writer = tokio::spawn(write_progress(
            self.state.clone(),
            job.clone(),
            id.clone(),
            rx,
        ));
        let result = run_capability(
            &self.state,
            &Attempt {
                tenant: &job.tenant_id,
                task: &id,
                number: job.attempts,
            },
            &resolved,
            credential.as_deref(),
            input,
            sink,
        )
        .await;
        // The sink is gone with the module's future; let the writer flush.
        let _ = writer.await;
        Ok(match result {
            Ok((output, summary)) => Outcome::Succeeded { output, summary },
            Err(e) => Outcome::Failed {
                retryable: e.is_retryable(),
                error: e.to_string(),
            },
        })
    }
}

/// Which task and attempt a capability runs for.
pub struct Attempt<'a> {
    pub tenant: &'a TenantId,
    pub task: &'a TaskId,
    pub number: u32,
}

/// Runs one attempt of a resolved capability, in this process (built-in) or on its MCP
/// server, and checks the output against the capability's schema. Shared by the queue
/// handler and by agents' read-only tool calls, so both run a capability the same way.
pub async fn run_capability(
    state: &AppState,
    attempt: &Attempt<'_>,
    resolved: &modules::Resolved,
    credential: Option<&str>,
    input: Value,
    progress: ProgressSink,
) -> std::result::Result<(Value, Option<String>), TaskError> {
    let (output, summary) = match &resolved.source {
        Source::Builtin => {
            let Some(module) = state.registry.get(resolved.spec.module()) else {
                return Err(TaskError::Permanent(format!(
                    "module {} is not in this build",
                    resolved.spec.module()
                )));
            };
            let req = TaskExecutionRequest {
                task_id: attempt.task.to_string(),
                tenant_id: attempt.tenant.to_string(),
                capability: resolved.spec.name.clone(),
                version: resolved.spec.version.clone(),
                input,
                attempt: attempt.number,
                idempotency_key: job_id(attempt.task).to_string(),
            };
            let ctx = ExecContext {
                progress,
                connectors: TokenSource::new(state.vault.clone(), attempt.tenant.clone()),
                tenant: attempt.tenant.clone(),
                app: state.clone(),
            };
            let r = module.execute(ctx, req).await?;
            (r.output, r.summary)
        }
        Source::Mcp { url, .. } => {
            let tool = resolved.tool.as_deref().unwrap_or_default();
            let v = mcp::call(
                url,
                credential,
                tool,
                input,
                state.config.mcp_private_allowed(),
            )
            .await?;
            (v, None)
        }
    };
    modules::validate(&resolved.output, &output, "the module's output")
        .map_err(|e| TaskError::Permanent(e.to_string()))?;
    Ok((output, summary))
}

/// Writes a module's progress reports as `progress` events, coalescing bursts.
async fn write_progress(
    state: AppState,
    job: Claimed,
    id: TaskId,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ocsuite_module_sdk::Progress>,
) {
    let mut last: Option<tokio::time::Instant> = None;
    while let Some(mut p) = rx.recv().await {
        if let Some(at) = last {
            tokio::time::sleep_until(at + PROGRESS_EVERY).await;
        }
        last = Some(tokio::time::Instant::now());
        while let Ok(next) = rx.try_recv() {
            p = next;
        }
        let write = async {
            let mut tx = state.store.tenant(&job.tenant_id).await?;
            let ev = update(
                &mut tx,
                &id,
                Change::default(),
                "progress",
                json!({"percent": p.percent, "message": p.message.chars().take(500).collect::<String>(), "attempt": job.attempts}),
            )
            .await?;
            tx.commit().await?;
            state.bus.after_commit(ev.into_iter().collect());
            Ok::<_, AppError>(())
        };
        if let Err(e) = write.await {
            tracing::warn!(error = %e, task = %id, "recording progress failed");
        }
    }
}

/// Tells the company's `task.dead_lettered` triggers that a task failed every attempt.
async fn dead_lettered(tx: &mut TenantTx, id: &TaskId, error: Option<&str>) -> Result<()> {
    let (capability,): (String,) = tx
        .fetch_one(scoped("SELECT capability FROM tasks WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?;
    let error = error.unwrap_or("no reason given");
    crate::triggers::events::emit(
        tx,
        crate::triggers::events::PlatformEvent {
            event: "task.dead_lettered",
            key: id.to_string(),
            percent: None,
            summary: format!(
                "{capability} failed every attempt and waits in the dead-letter queue: {error}."
            ),
            figures: vec![],
            links: vec![crate::alerts::Link {
                label: "The task".into(),
                href: format!("/tasks/{id}"),
            }],
            data: json!({"task_id": id, "capability": capability, "error": error}),
        },
        chrono::Utc::now(),
    )
    .await?;
    Ok(())
}
