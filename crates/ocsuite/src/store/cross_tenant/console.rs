//! Cross-tenant SQL of the operator console (part of `store::cross_tenant`): the
//! suspended set, the company list with its month's figures, and platform health.

use chrono::{DateTime, Utc};

use super::Result;
use crate::store::{Row, Tx, sql};

/// Companies suspended now: `(id, reason)`, for each process's cached copy.
pub async fn suspended_tenants(tx: &mut Tx) -> Result<Vec<(String, String)>> {
    let q = if tx.is_postgres() {
        sql("SELECT id, reason FROM ocsuite_suspended_tenants()")
    } else {
        sql("SELECT id, COALESCE(suspended_reason, '') FROM tenants WHERE suspended_at IS NOT NULL")
    };
    tx.fetch_all(q).await
}

/// One page of the console's tenant list. `pattern`: a lower-case `LIKE` pattern
/// (escaped with `\`) matched against the name and the owners' emails, `None` for all;
/// `exact`: an id matched as is. `day` (`YYYY-MM-DD`) and `since` start the month whose
/// figures are counted. Returns `id, name, plan, created_at, suspended_at, owner_email,
/// members, last_active, tokens, cost_micros, tasks, storage_bytes, total`, newest first.
#[allow(clippy::too_many_arguments)]
pub async fn console_tenants<T: Row>(
    tx: &mut Tx,
    pattern: Option<&str>,
    exact: &str,
    day: &str,
    since: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<T>> {
    let q = if tx.is_postgres() {
        sql(
            "SELECT id, name, plan, created_at, suspended_at, owner_email, members, last_active, \
                    tokens, cost_micros, tasks, storage_bytes, total \
               FROM ocsuite_console_tenants($1, $2, $3, $4, $5, $6)",
        )
    } else {
        sql("WITH page AS ( \
               SELECT t.id, t.name, t.plan, t.created_at, t.suspended_at, count(*) OVER () AS total \
                 FROM tenants t \
                WHERE t.id <> 'ten_00000000000000000000000000000000' \
                  AND ($1 IS NULL OR t.id = $2 OR lower(t.name) LIKE $1 ESCAPE '\\' \
                   OR EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id \
                               WHERE m.tenant_id = t.id AND m.role = 'owner' AND u.email LIKE $1 ESCAPE '\\')) \
                ORDER BY t.created_at DESC, t.id LIMIT $5 OFFSET $6) \
             SELECT p.id, p.name, p.plan, p.created_at, p.suspended_at, \
                    (SELECT min(u.email) FROM memberships m JOIN users u ON u.id = m.user_id \
                      WHERE m.tenant_id = p.id AND m.role = 'owner') AS owner_email, \
                    (SELECT count(*) FROM memberships m WHERE m.tenant_id = p.id) AS members, \
                    (SELECT max(x.at) FROM ( \
                         SELECT max(a.created_at) AS at FROM audit_log a WHERE a.tenant_id = p.id \
                         UNION ALL SELECT max(k.created_at) FROM tasks k WHERE k.tenant_id = p.id \
                         UNION ALL SELECT max(c.updated_at) FROM conversations c WHERE c.tenant_id = p.id) x) AS last_active, \
                    (SELECT COALESCE(sum(l.prompt_tokens + l.completion_tokens), 0) FROM usage_ledger l \
                      WHERE l.tenant_id = p.id AND l.day >= $3) AS tokens, \
                    (SELECT COALESCE(sum(l.cost_micros), 0) FROM usage_ledger l \
                      WHERE l.tenant_id = p.id AND l.day >= $3) AS cost_micros, \
                    (SELECT count(*) FROM tasks k WHERE k.tenant_id = p.id AND k.created_at >= $4) AS tasks, \
                    (SELECT COALESCE(sum(s.size_bytes), 0) FROM knowledge_sources s WHERE s.tenant_id = p.id) AS storage_bytes, \
                    p.total \
               FROM page p ORDER BY p.created_at DESC, p.id")
    };
    tx.fetch_all(
        q.bind(pattern.map(str::to_owned))
            .bind(exact)
            .bind(day)
            .bind(since)
            .bind(limit)
            .bind(offset),
    )
    .await
}

/// The oldest ready job per queue, across tenants: `(queue, run_at)`, for the health
/// page (how long the queue's head has waited).
pub async fn queue_oldest(tx: &mut Tx, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>> {
    let q = if tx.is_postgres() {
        sql("SELECT queue, oldest FROM ocsuite_queue_oldest($1)")
    } else {
        sql(
            "SELECT queue, min(run_at) FROM jobs WHERE status = 'ready' AND run_at <= $1 GROUP BY queue",
        )
    };
    tx.fetch_all(q.bind(now)).await
}

/// Connections by provider and status across tenants: `(provider, status, count)`.
pub async fn connector_health(tx: &mut Tx) -> Result<Vec<(String, String, i64)>> {
    let q = if tx.is_postgres() {
        sql("SELECT provider, status, connections FROM ocsuite_connector_health()")
    } else {
        sql("SELECT provider, status, count(*) FROM connectors GROUP BY provider, status")
    };
    tx.fetch_all(q).await
}
