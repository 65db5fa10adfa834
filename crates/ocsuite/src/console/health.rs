//! Platform health for operators: queue depths and how long each queue's head has
//! waited, dead letters, model error rate and latency, connector failures, and recent
//! security events.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::llm::measured::ModelHealth;
use crate::queue::{self, Depth};
use crate::security::SecurityEventOut;
use crate::state::AppState;
use crate::store::{Tx, cross_tenant, sql};

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueHealth {
    #[serde(flatten)]
    pub depth: Depth,
    /// Seconds the oldest ready job has waited past its run time; 0 when none waits.
    pub oldest_ready_secs: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectorHealth {
    pub provider: String,
    pub status: String,
    pub connections: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub queues: Vec<QueueHealth>,
    /// Jobs in every dead-letter queue together.
    pub dead_letters: i64,
    /// Model calls as this process saw them since it started.
    pub models: Vec<ModelHealth>,
    pub connectors: Vec<ConnectorHealth>,
    /// Connections that need their company's attention (expired, revoked, failing).
    pub connector_failures: i64,
    pub security_events: Vec<SecurityEventOut>,
    pub checked_at: DateTime<Utc>,
}

/// Recent security events across the platform, newest first, optionally one action's
/// or one email's.
pub async fn security_events(
    tx: &mut Tx,
    action: Option<&str>,
    email: Option<&str>,
    limit: i64,
) -> Result<Vec<SecurityEventOut>> {
    Ok(tx
        .fetch_all(
            sql(
                "SELECT id, user_id, email, action, ip, created_at FROM security_events \
                  WHERE ($1 = '' OR action = $1) AND ($2 = '' OR lower(email) = lower($2)) \
                  ORDER BY created_at DESC, id DESC LIMIT $3",
            )
            .bind(action.unwrap_or(""))
            .bind(email.unwrap_or(""))
            .bind(limit),
        )
        .await?)
}

pub async fn check(state: &AppState) -> Result<Health> {
    let now = Utc::now();
    let mut tx = state.store.platform_read().await?;
    let depths = queue::platform_depths(&mut tx).await?;
    let oldest = cross_tenant::queue_oldest(&mut tx, now).await?;
    let connectors: Vec<ConnectorHealth> = cross_tenant::connector_health(&mut tx)
        .await?
        .into_iter()
        .map(|(provider, status, connections)| ConnectorHealth {
            provider,
            status,
            connections,
        })
        .collect();
    let security_events = security_events(&mut tx, None, None, 20).await?;
    tx.commit().await?;
    let dead_letters = depths
        .iter()
        .filter(|d| d.queue.ends_with("-dlq"))
        .map(|d| d.ready + d.dead)
        .sum();
    let queues = depths
        .into_iter()
        .map(|depth| {
            let oldest_ready_secs = oldest
                .iter()
                .find(|(q, _)| *q == depth.queue)
                .map_or(0, |(_, at)| (now - *at).num_seconds().max(0));
            QueueHealth {
                depth,
                oldest_ready_secs,
            }
        })
        .collect();
    let connector_failures = connectors
        .iter()
        .filter(|c| matches!(c.status.as_str(), "error" | "expired" | "revoked"))
        .map(|c| c.connections)
        .sum();
    Ok(Health {
        queues,
        dead_letters,
        models: state.llm_stats.snapshot(),
        connectors,
        connector_failures,
        security_events,
        checked_at: now,
    })
}
