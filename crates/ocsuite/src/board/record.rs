//! Storing a meeting: the final transaction that records turns, usage, action items and
//! the meeting's figures together, and the fallback when it cannot.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ActionItem;
use super::items::{self, RawItem};
use super::meeting::{Plan, TurnOut};
use crate::audit;
use crate::error::Result;
use crate::llm::Usage;
use crate::store::cross_tenant;
use crate::store::scoped;
use crate::usage;

/// Best effort after a failed record: the meeting says it failed and its token hold is
/// released, rather than staying `running` for ever.
pub(super) async fn mark_failed(plan: &Plan, why: &str) {
    let done = async {
        let mut tx = plan.state.store.tenant(&plan.tenant).await?;
        tx.execute(
            scoped("UPDATE meetings SET status = 'failed', error = $2, finished_at = $3 WHERE tenant_id = $1 AND id = $4")
                .bind(why)
                .bind(chrono::Utc::now())
                .bind(&plan.id),
        )
        .await?;
        usage::release(&mut tx, &plan.reservation).await?;
        tx.commit().await?;
        Ok::<_, crate::error::AppError>(())
    };
    if let Err(e) = done.await {
        tracing::error!(error = %e, meeting = %plan.id, "marking a meeting failed did not work either");
    }
}

/// Stores the turns, the synthesis, the items (and their tasks) and the figures in one
/// transaction; releases the token hold and records the real usage.
pub(super) async fn record(
    plan: &Plan,
    turns: &[TurnOut],
    synthesis: Option<&str>,
    extracted: Option<std::result::Result<Vec<RawItem>, String>>,
    extra_usage: &[(String, String, Usage)],
    total_ms: i64,
    overhead_ms: i64,
) -> Result<(Vec<ActionItem>, Option<String>)> {
    let state = &plan.state;
    let mut tx = state.store.tenant(&plan.tenant).await?;
    let now = chrono::Utc::now();
    // Every turn in one statement: the rows travel as a JSON array.
    let rows: Vec<Value> = turns
        .iter()
        .enumerate()
        .map(|(seq, t)| {
            json!({"seq": seq, "persona": t.seat.slug, "round": t.round, "content": t.text,
                   "status": if t.error.is_some() { "failed" } else { "complete" },
                   "error": t.error.as_ref().map(|(_, m)| m), "model": t.model,
                   "pt": t.usage.prompt_tokens, "ct": t.usage.completion_tokens, "ms": t.latency_ms})
        })
        .collect();
    let insert_turns = cross_tenant::add_meeting_turns(&tx);
    if !rows.is_empty() {
        tx.execute(
            insert_turns
                .bind(&plan.id)
                .bind(now)
                .bind(Value::Array(rows).to_string()),
        )
        .await?;
    }
    // The ledger: every call, summed per persona and model, in one statement.
    let mut ledger: BTreeMap<(String, String), (Usage, u32)> = BTreeMap::new();
    for (persona, model, u) in turns
        .iter()
        .map(|t| (&t.seat.slug, &t.model, &t.usage))
        .chain(extra_usage.iter().map(|(p, m, u)| (p, m, u)))
    {
        let (e, calls) = ledger.entry((persona.clone(), model.clone())).or_default();
        e.prompt_tokens += u.prompt_tokens;
        e.completion_tokens += u.completion_tokens;
        e.estimated |= u.estimated;
        *calls += 1;
    }
    let prompt: i64 = ledger
        .values()
        .map(|(u, _)| i64::from(u.prompt_tokens))
        .sum();
    let completion: i64 = ledger
        .values()
        .map(|(u, _)| i64::from(u.completion_tokens))
        .sum();
    usage::release(&mut tx, &plan.reservation).await?;
    let lines: Vec<(String, String, Usage, u32)> = ledger
        .into_iter()
        .map(|((p, m), (u, n))| (p, m, u, n))
        .collect();
    usage::record_many(&mut tx, &state.meter, &lines).await?;
    let (items, events, extraction_error) = match extracted {
        Some(Ok(raw)) => {
            let (items, events) =
                items::store(&mut tx, &state.registry, &plan.id, raw, &plan.by).await?;
            (items, events, None)
        }
        Some(Err(e)) => (vec![], vec![], Some(e)),
        None => (vec![], vec![], None),
    };
    let status = if synthesis.is_some() {
        "complete"
    } else {
        "failed"
    };
    tx.execute(
        scoped("UPDATE meetings SET status = $2, synthesis = $3, error = $4, prompt_tokens = $5, completion_tokens = $6, \
             duration_ms = $7, overhead_ms = $8, finished_at = $9 WHERE tenant_id = $1 AND id = $10")
            .bind(status)
            .bind(synthesis)
            .bind(extraction_error.clone())
            .bind(prompt)
            .bind(completion)
            .bind(total_ms)
            .bind(overhead_ms)
            .bind(now)
            .bind(&plan.id),
    )
    .await?;
    audit::insert(
        &mut tx,
        plan.by.split_once(':').unwrap_or(("user", &plan.by)),
        "meeting.held",
        "meeting",
        plan.id.as_str(),
        json!({"status": status, "personas": turns.iter().filter(|t| t.round == 1).map(|t| &t.seat.slug).collect::<Vec<_>>(),
               "items": items.len(), "tasks": items.iter().filter(|i| i.task_id.is_some()).count()}),
        None,
    )
    .await?;
    tx.commit().await?;
    let queued = items
        .iter()
        .any(|i| i.task_status.as_deref() == Some("queued"));
    state.bus.after_commit(events);
    if queued {
        state.jobs_wake.notify_one();
    }
    Ok((items, extraction_error))
}
