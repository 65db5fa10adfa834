//! The `run-trigger` job: one run of one trigger's action.
//!
//! Slow work (a board meeting, an officer's brief, the digest's text) happens in the
//! attempt; what it leaves (the alert, the proposal, the digest, the notifications)
//! is written when the run settles, in the transaction that records its outcome, so a
//! retried attempt never leaves two. A run that fails for good raises an alert that
//! says which trigger failed and why: an automation never fails silently.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Action, RunJob, Trigger, fill};
use crate::alerts::{self, Evidence, NewAlert, Severity};
use crate::error::{AppError, Result};
use crate::ids::{TaskId, TriggerId, TriggerRunId, UserId};
use crate::notifications::{self, Broadcast};
use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, RUN_TRIGGER};
use crate::realtime::Event;
use crate::state::AppState;
use crate::store::{TenantTx, scoped};
use crate::tasks::{self, NewTask, Status};
use crate::tenancy::{Actor, Role, TenantCtx};

/// Longest one attempt may take (a board meeting with tool use).
const ATTEMPT: Duration = Duration::from_secs(15 * 60);

pub struct RunTrigger {
    state: AppState,
}

impl RunTrigger {
    pub fn new(state: &AppState) -> Self {
        Self {
            state: state.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Prepared {
    run_id: TriggerRunId,
    trigger_id: TriggerId,
    name: String,
    created_by: String,
    action: Action,
    evidence: Evidence,
    /// Why the action cannot run (a capability that is no longer enabled).
    problem: Option<String>,
    /// A proposal's resolved capability: its version and attempts.
    resolved: Option<(String, u32)>,
}

fn run_of(job: &Claimed) -> Option<TriggerRunId> {
    job.payload_as::<RunJob>().map(|j| j.run_id)
}

/// The run and its trigger, when both still exist and the run is not finished.
async fn load(tx: &mut TenantTx, id: &TriggerRunId) -> Result<Option<(super::Run, Trigger)>> {
    let Some(run) = super::get_run(tx, id).await? else {
        return Ok(None);
    };
    match super::get(tx, &run.trigger_id).await {
        Ok(t) => Ok(Some((run, t))),
        Err(AppError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Handler for RunTrigger {
    fn queue(&self) -> &'static str {
        RUN_TRIGGER
    }

    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            let Some(id) = run_of(job) else {
                return Ok(Start::Skip { events: vec![] });
            };
            let Some((run, trigger)) = load(tx, &id).await? else {
                return Ok(Start::Skip { events: vec![] });
            };
            // A `failed` run runs again when an admin retries its dead letter.
            if run.status == "succeeded" {
                return Ok(Start::Skip { events: vec![] });
            }
            let (problem, resolved) = match &trigger.action {
                Action::Propose { capability, input } => {
                    match crate::modules::resolve(&self.state.registry, tx, capability, None).await
                    {
                        Ok(r) => (
                            crate::modules::validate(&r.input, input, "action.input")
                                .err()
                                .map(|e| e.to_string()),
                            Some((r.spec.version.to_string(), r.spec.max_attempts)),
                        ),
                        Err(e) => (Some(format!("{capability} cannot be proposed: {e}")), None),
                    }
                }
                _ => (None, None),
            };
            tx.execute(
                scoped(
                    "UPDATE trigger_runs SET status = 'running' WHERE tenant_id = $1 AND id = $2",
                )
                .bind(&id),
            )
            .await?;
            Start::run(
                ATTEMPT,
                vec![],
                &Prepared {
                    run_id: id,
                    trigger_id: trigger.id,
                    name: trigger.name,
                    created_by: trigger.created_by,
                    action: trigger.action,
                    evidence: run.evidence,
                    problem,
                    resolved,
                },
            )
        })
    }

    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: Prepared = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            if let Some(problem) = p.problem {
                return Outcome::Failed {
                    error: problem,
                    retryable: false,
                };
            }
            let done = match &p.action {
                Action::BoardMeeting { agenda, personas } => {
                    meeting(&self.state, &job, &p, agenda, personas.clone()).await
                }
                Action::Brief { persona, prompt } => {
                    brief(&self.state, &job, &p, persona, prompt.as_deref()).await
                }
                Action::Digest {} => {
                    crate::digests::compose(&self.state, &job.tenant_id, Utc::now())
                        .await
                        .and_then(|d| serde_json::to_value(d).map_err(AppError::internal))
                }
                Action::Propose { .. } => Ok(match &p.resolved {
                    Some((version, attempts)) => {
                        json!({"version": version, "max_attempts": attempts})
                    }
                    None => json!({}),
                }),
                Action::Alert { .. } => Ok(json!({})),
            };
            match done {
                Ok(output) => Outcome::Succeeded {
                    output,
                    summary: None,
                },
                Err(e) => Outcome::Failed {
                    retryable: matches!(
                        e,
                        AppError::TooManyRequests { .. }
                            | AppError::Unavailable(_)
                            | AppError::Database(_)
                    ),
                    error: e.to_string(),
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
            let Some(id) = run_of(job) else {
                return Ok(vec![]);
            };
            let Some((run, trigger)) = load(tx, &id).await? else {
                return Ok(vec![]);
            };
            let now = Utc::now();
            let mut events = Vec::new();
            let (status, output, error) = match resolution {
                Resolution::Succeeded { output, .. } => {
                    let (out, ev) = finish(tx, &trigger, &run, output.clone(), now).await?;
                    events.extend(ev);
                    ("succeeded", Some(out), None)
                }
                Resolution::Retrying { error, .. } => ("queued", None, Some(error.clone())),
                Resolution::Dead { error } | Resolution::Failed { error } => {
                    events.extend(failed(tx, &trigger, &run, error, now).await?);
                    ("failed", None, Some(error.clone()))
                }
                Resolution::Cancelled => ("failed", None, Some("cancelled".to_owned())),
            };
            tx.execute(
                scoped("UPDATE trigger_runs SET status = $3, output = $4, error = $5, finished_at = CASE WHEN $3 IN ('succeeded', 'failed') THEN $6 END \
                     WHERE tenant_id = $1 AND id = $2")
                    .bind(&id)
                    .bind(status)
                    .bind(output.map(|o| o.to_string()))
                    .bind(error)
                    .bind(now),
            )
            .await?;
            tx.execute(
                scoped("UPDATE triggers SET last_status = $3 WHERE tenant_id = $1 AND id = $2")
                    .bind(&trigger.id)
                    .bind(status),
            )
            .await?;
            Ok(events)
        })
    }
}

/// Holds the meeting and waits for it to end.
async fn meeting(
    state: &AppState,
    job: &Claimed,
    p: &Prepared,
    agenda: &str,
    personas: Option<Vec<String>>,
) -> Result<Value> {
    let context: String = p
        .evidence
        .as_text()
        .chars()
        .take(crate::board::MAX_CONTEXT_CHARS)
        .collect();
    let input = crate::board::plan::MeetingIn {
        agenda: fill(agenda, &p.name, &p.evidence)
            .chars()
            .take(crate::board::MAX_AGENDA_CHARS)
            .collect(),
        personas,
        rounds: None,
        context: (!context.trim().is_empty()).then_some(context),
        chair: None,
    };
    let (plan, tx) = crate::board::plan::prepare(
        state,
        &job.tenant_id,
        Role::Admin,
        format!("trigger:{}", p.trigger_id),
        input,
        std::time::Instant::now(),
    )
    .await?;
    let id = plan.id.clone();
    crate::board::plan::run_unwatched(plan, tx).await;
    let mut tx = state.store.tenant_read(&job.tenant_id).await?;
    let held = crate::board::get(&mut tx, &id).await?;
    tx.commit().await?;
    if held.status == "failed" {
        return Err(AppError::Unavailable(format!(
            "the board meeting {id} could not finish: {}",
            held.error.unwrap_or_else(|| "no reason given".into())
        )));
    }
    Ok(json!({"meeting_id": id}))
}

/// Asks one officer for a brief, as a conversation in the name of the trigger's author
/// (or the company's first owner), so it can be read and continued in chat.
async fn brief(
    state: &AppState,
    job: &Claimed,
    p: &Prepared,
    persona: &str,
    prompt: Option<&str>,
) -> Result<Value> {
    let author = p.created_by.strip_prefix("user:").and_then(UserId::parse);
    let user = {
        let mut tx = state.store.tenant_read(&job.tenant_id).await?;
        let admins = notifications::members(&mut tx, true).await?;
        tx.commit().await?;
        match author {
            Some(u) if admins.contains(&u) => u,
            _ => admins
                .into_iter()
                .next()
                .ok_or(AppError::NotFound("company owner"))?,
        }
    };
    let ctx = TenantCtx {
        tenant_id: job.tenant_id.clone(),
        role: Role::Admin,
        actor: Actor::User(user),
        meta: Default::default(),
    };
    let ask = prompt.map(|t| fill(t, &p.name, &p.evidence)).unwrap_or_else(|| {
        "Write a short brief for the founders on what this means for the company and what to do next.".to_owned()
    });
    let message = format!(
        "{ask}\n\nWhy you are asked (automation \"{}\"):\n{}",
        p.name,
        p.evidence.as_text()
    );
    let message: String = message
        .chars()
        .take(crate::chat::MAX_MESSAGE_CHARS)
        .collect();
    let mut rx = crate::chat::turn::start(state, &ctx, persona, &message, None).await?;
    let mut conversation = None;
    let mut error = None;
    while let Some(e) = rx.recv().await {
        match e.name {
            "message_start" => conversation = e.data["conversation_id"].as_str().map(str::to_owned),
            "error" => error = e.data["message"].as_str().map(str::to_owned),
            _ => {}
        }
    }
    match (conversation, error) {
        (_, Some(e)) => Err(AppError::Unavailable(format!(
            "the brief was not written: {e}"
        ))),
        (Some(c), None) => Ok(json!({"conversation_id": c, "persona": persona})),
        (None, None) => Err(AppError::Unavailable("the brief was not written".into())),
    }
}

/// Writes what a successful run leaves; returns the run's output.
async fn finish(
    tx: &mut TenantTx,
    trigger: &Trigger,
    run: &super::Run,
    output: Value,
    now: chrono::DateTime<Utc>,
) -> Result<(Value, Vec<Event>)> {
    let ev = &run.evidence;
    match &trigger.action {
        Action::Alert {
            severity,
            title,
            body,
        } => {
            let title = title
                .as_deref()
                .map(|t| fill(t, &trigger.name, ev))
                .unwrap_or_else(|| trigger.name.clone());
            let body = body
                .as_deref()
                .map(|b| fill(b, &trigger.name, ev))
                .unwrap_or_else(|| ev.summary.clone());
            let raised = alerts::raise(
                tx,
                NewAlert {
                    trigger_id: Some(trigger.id.clone()),
                    run_id: Some(run.id.clone()),
                    severity: *severity,
                    title,
                    body,
                    evidence: ev.clone(),
                    dedupe_key: format!("run:{}", run.id),
                },
                now,
            )
            .await?;
            Ok(match raised {
                Some((a, events)) => (json!({"alert_id": a.id}), events),
                None => (json!({}), vec![]),
            })
        }
        Action::Propose { capability, input } => {
            let version = output["version"].as_str().unwrap_or("1.0.0");
            let attempts = output["max_attempts"]
                .as_u64()
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(3);
            propose(
                tx,
                trigger,
                run,
                (capability, version, attempts),
                input,
                now,
            )
            .await
        }
        Action::Digest {} => crate::digests::deliver(tx, &output, now).await,
        Action::BoardMeeting { .. } => {
            let meeting = output["meeting_id"].as_str().unwrap_or_default().to_owned();
            let admins = notifications::members(tx, true).await?;
            let events = notifications::notify_all(
                tx,
                &admins,
                Broadcast {
                    kind: "trigger.meeting",
                    title: format!("The board met: {}", trigger.name),
                    body: format!("Your automation \"{}\" called a board meeting. {}\nOpen it to read the minutes and decide on its action items.", trigger.name, ev.summary),
                    meeting_id: Some(&meeting),
                    task_id: None,
                    email: false,
                },
            )
            .await?;
            Ok((output, events))
        }
        Action::Brief { persona, .. } => {
            let who = persona.to_uppercase();
            let admins = notifications::members(tx, true).await?;
            let events = notifications::notify_all(
                tx,
                &admins,
                Broadcast {
                    kind: "trigger.brief",
                    title: format!("A brief from the {who}: {}", trigger.name),
                    body: format!(
                        "The {who} wrote a brief for your automation \"{}\". {}\nConversation {}.",
                        trigger.name,
                        ev.summary,
                        output["conversation_id"].as_str().unwrap_or_default()
                    ),
                    meeting_id: None,
                    task_id: None,
                    email: false,
                },
            )
            .await?;
            Ok((output, events))
        }
    }
}

/// Proposes the capability; it waits for a person's approval whatever the approval
/// policy says (the automatic path is for what a person or agent asked for).
async fn propose(
    tx: &mut TenantTx,
    trigger: &Trigger,
    run: &super::Run,
    (capability, version, attempts): (&str, &str, u32),
    input: &Value,
    now: chrono::DateTime<Utc>,
) -> Result<(Value, Vec<Event>)> {
    let id = TaskId::new();
    let by = format!("trigger:{}", trigger.id);
    let mut events = vec![
        tasks::insert(
            tx,
            &id,
            &NewTask {
                capability,
                version,
                input,
                max_attempts: attempts,
                idempotency_key: None,
                created_by: &by,
                status: Status::Proposed,
                meeting_id: None,
                conversation_id: None,
                undo_of: None,
            },
        )
        .await?,
    ];
    crate::audit::insert(
        tx,
        ("trigger", trigger.id.as_str()),
        "task.proposed",
        "task",
        id.as_str(),
        json!({"capability": capability, "trigger": trigger.name, "run_id": run.id}),
        None,
    )
    .await?;
    let admins = notifications::members(tx, true).await?;
    events.extend(
        notifications::notify_all(
            tx,
            &admins,
            Broadcast {
                kind: "approval.requested",
                title: format!("{capability} awaits your approval"),
                body: format!(
                    "Your automation \"{}\" proposes {capability}. {}\nApprove or reject it in Approvals. Task {id}.",
                    trigger.name, run.evidence.summary
                ),
                meeting_id: None,
                task_id: Some(id.as_str()),
                email: false,
            },
        )
        .await?,
    );
    crate::webhooks::publish(
        tx,
        "approvals",
        "approval.requested",
        json!({"task_id": id, "capability": capability, "input": input, "proposed_by": by}),
        &format!(
            "{capability} awaits approval (proposed by the automation \"{}\")",
            trigger.name
        ),
        now,
    )
    .await?;
    Ok((json!({"task_id": id}), events))
}

/// A run that failed for good: an alert says which automation failed and why.
async fn failed(
    tx: &mut TenantTx,
    trigger: &Trigger,
    run: &super::Run,
    error: &str,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Event>> {
    let raised = alerts::raise(
        tx,
        NewAlert {
            trigger_id: Some(trigger.id.clone()),
            run_id: Some(run.id.clone()),
            severity: Severity::Warning,
            title: format!("Automation \"{}\" failed", trigger.name),
            body: format!("It could not do its job: {error}. Check its action on the Automations page, then run it again."),
            evidence: Evidence {
                summary: run.evidence.summary.clone(),
                links: vec![alerts::Link {
                    label: "Automations".into(),
                    href: "/automations".into(),
                }],
                ..Evidence::default()
            },
            dedupe_key: format!("failed:{}", run.id),
        },
        now,
    )
    .await?;
    Ok(raised.map(|(_, e)| e).unwrap_or_default())
}
