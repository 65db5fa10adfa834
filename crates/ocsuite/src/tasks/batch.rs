//! The `execute-task` queue's batched writes: a round of the dispatcher starts, and
//! records the successes of, many tasks of one tenant with a few array-bound statements
//! instead of two to five per task (see `crate::queue::dispatch`).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::Runnable;
use super::handler::task_of;
use crate::audit;
use crate::error::{AppError, Result};
use crate::ids::TaskId;
use crate::queue::Claimed;
use crate::realtime::{self, Event, NewEvent, Topic};
use crate::store::{TenantTx, cross_tenant};

/// [`super::mark_running`] for a batch of jobs claimed together, in two statements: one
/// update of every task, one insert of every `started` event. `None` for a job whose task
/// is gone, cancelled or already ended (do not run it), and for a job naming no task.
pub(super) async fn mark_running_many(
    tx: &mut TenantTx,
    jobs: &[Claimed],
) -> Result<Vec<Option<(Event, Runnable)>>> {
    let ids: Vec<Option<TaskId>> = jobs.iter().map(task_of).collect();
    let rows: Vec<Value> = jobs
        .iter()
        .zip(&ids)
        .filter_map(|(j, id)| Some(json!({"id": id.as_ref()?, "attempts": j.attempts})))
        .collect();
    if rows.is_empty() {
        return Ok(jobs.iter().map(|_| None).collect());
    }
    let q = cross_tenant::start_tasks(tx)
        .bind(Value::from(rows).to_string())
        .bind(chrono::Utc::now())
        .bind(false);
    let marked: Vec<(String, i64, String, String, String)> = tx.fetch_all(q).await?;
    let mut by_id: HashMap<String, (i64, Runnable)> = marked
        .into_iter()
        .map(|(id, seq, capability, version, input)| {
            let input = serde_json::from_str(&input).unwrap_or(Value::Null);
            (
                id,
                (
                    seq,
                    Runnable {
                        capability,
                        version,
                        input,
                    },
                ),
            )
        })
        .collect();
    let mut found = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for (job, id) in jobs.iter().zip(&ids) {
        let hit = id
            .as_ref()
            .and_then(|id| Some((id, by_id.remove(id.as_str())?)));
        if let Some((id, (seq, _))) = &hit {
            events.push(NewEvent {
                topic: Topic::Task((*id).clone()).name(),
                seq: *seq,
                kind: "started",
                data: json!({"task_id": id, "status": "running", "attempt": job.attempts, "max_attempts": job.max_attempts}),
            });
        }
        found.push(hit.map(|(_, (_, t))| t));
    }
    let mut events = realtime::record_many(tx, events).await?.into_iter();
    let mut out = Vec::with_capacity(jobs.len());
    for t in found {
        out.push(match t {
            Some(t) => Some((
                events
                    .next()
                    .ok_or_else(|| AppError::Internal("a started event went missing".into()))?,
                t,
            )),
            None => None,
        });
    }
    Ok(out)
}

/// A task whose attempt succeeded, for [`succeeded_many`].
pub(super) struct Succeeded<'a> {
    pub job: &'a Claimed,
    pub id: TaskId,
    pub output: &'a Value,
    pub summary: Option<&'a str>,
}

/// Records successes as `ExecuteTask::settle` does one by one (task row, `succeeded`
/// event, audit entry, and the proposer's conversation or meeting told), with one update
/// and one event insert for the whole batch. Returns the events to publish.
pub(super) async fn succeeded_many(
    tx: &mut TenantTx,
    done: &[Succeeded<'_>],
) -> Result<Vec<Event>> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Value> = done
        .iter()
        .map(|d| json!({"id": d.id, "result": d.output.to_string()}))
        .collect();
    let q = cross_tenant::finish_tasks(tx)
        .bind(Value::from(rows).to_string())
        .bind(chrono::Utc::now())
        .bind(super::Status::Succeeded.as_str());
    let marked: Vec<(String, i64, String, Option<String>, bool)> = tx.fetch_all(q).await?;
    let mut by_id: HashMap<String, (i64, String, Option<String>, bool)> = marked
        .into_iter()
        .map(|(id, seq, status, meeting, chat)| (id, (seq, status, meeting, chat)))
        .collect();
    // (task, audit details, meeting, from a chat) for each task found, in order.
    let mut found = Vec::with_capacity(done.len());
    let mut news = Vec::with_capacity(done.len());
    for d in done {
        let Some((seq, status, meeting, chat)) = by_id.remove(d.id.as_str()) else {
            continue;
        };
        let details = json!({"summary": d.summary, "attempt": d.job.attempts});
        let mut data = details.clone();
        if let Value::Object(m) = &mut data {
            m.insert("task_id".into(), json!(d.id));
            m.insert("status".into(), json!(status));
            if let Some(meeting) = &meeting {
                m.insert("meeting_id".into(), json!(meeting));
            }
        }
        news.push(NewEvent {
            topic: Topic::Task(d.id.clone()).name(),
            seq,
            kind: "succeeded",
            data,
        });
        found.push((&d.id, details, meeting, chat));
    }
    let recorded = realtime::record_many(tx, news).await?;
    let entries: Vec<(&str, &str, &str, Value)> = found
        .iter()
        .map(|(id, details, _, _)| ("task.succeeded", "task", id.as_str(), details.clone()))
        .collect();
    audit::record_system_many(tx, &entries).await?;
    let mut events = Vec::with_capacity(recorded.len());
    for (ev, (id, _, meeting, chat)) in recorded.into_iter().zip(found) {
        if meeting.is_none() && chat {
            events
                .extend(crate::notifications::chat_task_outcome(tx, id, "succeeded", None).await?);
        }
        events.push(ev);
        if let Some(meeting) = meeting {
            events.extend(
                crate::notifications::task_outcome(tx, &meeting, id.as_str(), "succeeded", None)
                    .await?,
            );
        }
    }
    Ok(events)
}
