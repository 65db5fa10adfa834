//! A read-only capability run at once, for an agent's tool call.
//!
//! The model is waiting for the answer, so the call does not go through the queue (a
//! worker hop would add its poll and four commits to every step). It is still a real
//! task: it runs through [`run_capability`] like a queued one, and its row, its
//! timeline (`queued`, `started`, then `succeeded` or `failed`) and its audit entries
//! are written in one transaction once the capability has answered — so a crash
//! mid-call leaves nothing half-written, and nothing that changes the world ever runs
//! this way (the caller only passes `read` and `none` capabilities).

use serde_json::{Value, json};

use super::handler::{Attempt, run_capability};
use super::{AuditEntry, NewTask, Status, insert_finished};
use crate::error::Result;
use crate::ids::{TaskId, TenantId};
use crate::modules::{ProgressSink, Resolved, Source, mcp};
use crate::state::AppState;

/// Who asked and where.
pub struct Caller<'a> {
    /// `agent:cfo`.
    pub actor: (&'a str, &'a str),
    pub conversation: Option<&'a str>,
    pub meeting: Option<&'a str>,
}

/// What the run produced: the task and its output or error.
pub struct Ran {
    pub task: TaskId,
    pub outcome: std::result::Result<Value, String>,
}

/// Runs `resolved` with `input` (already checked against its schema) and records it.
pub async fn run_read(
    state: &AppState,
    tenant: &TenantId,
    caller: &Caller<'_>,
    resolved: &Resolved,
    input: Value,
) -> Result<Ran> {
    let id = TaskId::new();
    let credential = match &resolved.source {
        Source::Mcp { server_id, .. } => {
            let mut tx = state.store.tenant_read(tenant).await?;
            let c = mcp::credential(&mut tx, &state.crypto, server_id).await?;
            tx.commit().await?;
            c
        }
        Source::Builtin => None,
    };
    let started = chrono::Utc::now();
    let (sink, _progress) = ProgressSink::new();
    let timeout = std::time::Duration::from_secs(resolved.spec.timeout_secs.into());
    let attempt = Attempt {
        tenant,
        task: &id,
        number: 1,
    };
    let run = run_capability(
        state,
        &attempt,
        resolved,
        credential.as_deref(),
        input.clone(),
        sink,
    );
    let outcome = match tokio::time::timeout(timeout, run).await {
        Ok(Ok((output, _))) => Ok(output),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "{} did not answer within {} s",
            resolved.spec.name, resolved.spec.timeout_secs
        )),
    };

    let version = resolved.spec.version.to_string();
    let by = format!("{}:{}", caller.actor.0, caller.actor.1);
    let mut tx = state.store.tenant(tenant).await?;
    let events = insert_finished(
        &mut tx,
        &id,
        &NewTask {
            capability: &resolved.spec.name,
            version: &version,
            input: &input,
            max_attempts: 1,
            idempotency_key: None,
            created_by: &by,
            status: Status::Queued,
            meeting_id: caller.meeting,
            conversation_id: caller.conversation,
            undo_of: None,
        },
        started,
        outcome.as_ref().map_err(String::as_str),
        // One entry, by the agent, with the outcome: who read what, and how it went.
        AuditEntry {
            actor: caller.actor,
            action: if outcome.is_ok() {
                "task.succeeded"
            } else {
                "task.failed"
            },
            details: json!({"capability": resolved.spec.name, "version": version,
                   "side_effect": resolved.spec.side_effect, "via": "tool_call",
                   "conversation_id": caller.conversation, "meeting_id": caller.meeting,
                   "error": outcome.as_ref().err()}),
        },
    )
    .await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    Ok(Ran { task: id, outcome })
}
