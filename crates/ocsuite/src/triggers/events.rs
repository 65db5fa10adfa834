//! Platform events that fire event triggers.
//!
//! The code where something happens calls [`emit`] inside the transaction that records
//! it: a run (and its job) is started for each of the company's event triggers on that
//! event, keyed by the event's own key, so an event replayed after a retry or a restart
//! fires nothing new. With no trigger on the event, `emit` costs one indexed read.
//!
//! `approval.waiting` has no moment of its own: [`sweep_approvals`] (run by the
//! scheduler) finds proposals that have waited longer than a trigger's `minutes`.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::{Condition, Firing};
use crate::alerts::{Evidence, Figure, Link};
use crate::error::{AppError, Result};
use crate::ids::TriggerId;
use crate::store::{TenantTx, scoped};

/// Every event a trigger can wait for, with what it means.
pub const EVENTS: [(&str, &str); 6] = [
    (
        "task.dead_lettered",
        "a task failed every attempt and waits in the dead-letter queue",
    ),
    (
        "connector.expired",
        "a connected account expired or was revoked",
    ),
    (
        "campaign.bounced",
        "an email campaign finished with messages that bounced or failed",
    ),
    (
        "approval.waiting",
        "a proposal has waited for approval longer than `minutes`",
    ),
    (
        "usage.threshold",
        "the month's model usage reached `percent` (80 or 100) of the plan",
    ),
    (
        "knowledge.source_failed",
        "a knowledge source could not be fetched or read",
    ),
];

/// Checks an event condition's fields.
pub fn check(event: &str, minutes: &mut Option<u32>, percent: &mut Option<u32>) -> Result<()> {
    if !EVENTS.iter().any(|(e, _)| *e == event) {
        let known: Vec<&str> = EVENTS.iter().map(|(e, _)| *e).collect();
        return Err(AppError::unprocessable(
            "unknown_event",
            "condition.event",
            format!(
                "no event `{}`; the events are {}",
                event.chars().take(64).collect::<String>(),
                known.join(", ")
            ),
        ));
    }
    match event {
        "approval.waiting" => match minutes {
            Some(m) if (1..=10_080).contains(m) => {}
            _ => {
                return Err(AppError::unprocessable(
                    "invalid_event",
                    "condition.minutes",
                    "approval.waiting needs `minutes` between 1 and 10080 (a week)",
                ));
            }
        },
        "usage.threshold" => match percent {
            Some(80 | 100) => {}
            _ => {
                return Err(AppError::unprocessable(
                    "invalid_event",
                    "condition.percent",
                    "usage.threshold needs `percent`: 80 or 100",
                ));
            }
        },
        _ => {}
    }
    if event != "approval.waiting" {
        *minutes = None;
    }
    if event != "usage.threshold" {
        *percent = None;
    }
    Ok(())
}

/// Something that happened.
pub struct PlatformEvent {
    /// One of [`EVENTS`].
    pub event: &'static str,
    /// Unique per occurrence (a task id, a connector id with the time it expired).
    pub key: String,
    /// For `usage.threshold`: the percent reached.
    pub percent: Option<u32>,
    pub summary: String,
    pub figures: Vec<Figure>,
    pub links: Vec<Link>,
    pub data: Value,
}

/// Starts a run of every unpaused event trigger of the tenant on `e`. Returns how many
/// started; call `Wake::notify_one` after the commit when it is not zero.
pub async fn emit(tx: &mut TenantTx, e: PlatformEvent, now: DateTime<Utc>) -> Result<usize> {
    let triggers: Vec<(TriggerId, String)> = tx
        .fetch_all(
            scoped("SELECT id, condition FROM triggers WHERE tenant_id = $1 AND kind = 'event' AND event_type = $2 AND paused = FALSE")
                .bind(e.event),
        )
        .await?;
    let mut started = 0;
    for (id, condition) in triggers {
        let Ok(Condition::Event { percent, .. }) = serde_json::from_str(&condition) else {
            continue;
        };
        if e.event == "usage.threshold" && percent != e.percent {
            continue;
        }
        let mut event = json!({"type": e.event, "key": e.key});
        if let (Some(obj), Some(data)) = (event.as_object_mut(), e.data.as_object()) {
            obj.extend(data.clone());
        }
        let firing = Firing {
            reason: "event",
            key: format!("event:{}", e.key),
            evidence: Evidence {
                summary: e.summary.clone(),
                figures: e.figures.clone(),
                links: e.links.clone(),
                event: Some(event),
            },
            scheduled_for: now,
        };
        if super::start_run(tx, &id, firing, now).await?.is_some() {
            started += 1;
        }
    }
    Ok(started)
}

/// Fires `approval.waiting` triggers for proposals of the tenant of `tx` that have
/// waited longer than each trigger's `minutes`; returns how many runs started.
pub async fn sweep_approvals(tx: &mut TenantTx, now: DateTime<Utc>) -> Result<usize> {
    let triggers: Vec<(TriggerId, String)> = tx
        .fetch_all(scoped(
            "SELECT id, condition FROM triggers WHERE tenant_id = $1 AND kind = 'event' AND event_type = 'approval.waiting' AND paused = FALSE",
        ))
        .await?;
    let mut started = 0;
    for (id, condition) in triggers {
        let Ok(Condition::Event {
            minutes: Some(minutes),
            ..
        }) = serde_json::from_str(&condition)
        else {
            continue;
        };
        let cutoff = now - Duration::minutes(i64::from(minutes));
        let waiting: Vec<(String, String, DateTime<Utc>)> = tx
            .fetch_all(
                scoped("SELECT id, capability, created_at FROM tasks WHERE tenant_id = $1 AND status = 'proposed' AND created_at <= $2 \
                     ORDER BY created_at LIMIT 100")
                    .bind(cutoff),
            )
            .await?;
        for (task, capability, created) in waiting {
            let waited = (now - created).num_minutes();
            let firing = Firing {
                reason: "event",
                key: format!("event:approval:{task}"),
                evidence: Evidence {
                    summary: format!(
                        "{capability} has waited {} for approval.",
                        words_for_minutes(waited)
                    ),
                    figures: vec![Figure {
                        key: "waited_minutes".into(),
                        label: "Waiting".into(),
                        value: Some(waited as f64),
                        display: words_for_minutes(waited),
                    }],
                    links: vec![Link {
                        label: "The proposal".into(),
                        href: format!("/tasks/{task}"),
                    }],
                    event: Some(
                        json!({"type": "approval.waiting", "key": task, "task_id": task, "capability": capability}),
                    ),
                },
                scheduled_for: now,
            };
            if super::start_run(tx, &id, firing, now).await?.is_some() {
                started += 1;
            }
        }
    }
    Ok(started)
}

fn words_for_minutes(m: i64) -> String {
    match m {
        m if m < 120 => format!("{m} minutes"),
        m if m < 48 * 60 => format!("{} hours", m / 60),
        m => format!("{} days", m / (24 * 60)),
    }
}
