//! SQL of the receipt logs that differs by database or spans companies (part of
//! `store::cross_tenant`): the integrator's lock, batched node and position writes,
//! and the companies with receipts waiting for a position.

use super::Result;
use crate::store::{Sql, TenantTx, Tx, scoped, sql};

/// The log's integrated size and origin, locking the company's head row until the transaction
/// ends on PostgreSQL (one integrator at a time: the log never forks). SQLite
/// serialises writers already.
pub fn log_head_for_update(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped("SELECT size, origin FROM log_heads WHERE tenant_id = $1 FOR UPDATE")
    } else {
        scoped("SELECT size, origin FROM log_heads WHERE tenant_id = $1")
    }
}

/// Stored tree nodes at the `(level, idx)` pairs `keys`. Rows: (level, idx, hex hash).
pub fn log_nodes_get(tx: &TenantTx, keys: &[(u32, u64)]) -> Sql {
    if tx.is_postgres() {
        // Two lists of numbers unnested side by side: PostgreSQL estimates them small and
        // probes the primary key per node, for a generic plan too. (A JSON array joined
        // LATERAL was flattened under row-level security into a hash join over the
        // company's whole tree: half a second at a million entries.)
        let join =
            |f: &dyn Fn(&(u32, u64)) -> String| keys.iter().map(f).collect::<Vec<_>>().join(",");
        scoped(
            "SELECT level, idx, hash FROM log_nodes WHERE tenant_id = $1 AND (level, idx) IN \
             (SELECT * FROM unnest(CAST(string_to_array($2, ',') AS BIGINT[]), CAST(string_to_array($3, ',') AS BIGINT[])))",
        )
        .bind(join(&|k| k.0.to_string()))
        .bind(join(&|k| k.1.to_string()))
    } else {
        scoped(
            "SELECT n.level, n.idx, n.hash FROM json_each($2) e \
             CROSS JOIN log_nodes n ON n.tenant_id = $1 AND n.level = json_extract(e.value, '$[0]') AND n.idx = json_extract(e.value, '$[1]')",
        )
        .bind(serde_json::to_string(keys).unwrap_or_else(|_| "[]".into()))
    }
}

/// Stores nodes from the JSON array `$2` of `[level, idx, hex hash]`.
pub fn log_nodes_put(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO log_nodes (tenant_id, level, idx, hash) \
             SELECT $1, CAST(value->>0 AS BIGINT), CAST(value->>1 AS BIGINT), value->>2 FROM json_array_elements(CAST($2 AS json))",
        )
    } else {
        scoped(
            "INSERT INTO log_nodes (tenant_id, level, idx, hash) \
             SELECT $1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each($2)",
        )
    }
}

/// Gives receipts their positions. PostgreSQL: one statement joining a JSON array of
/// `[id, seq]`. SQLite plans `UPDATE … FROM` with the target table outermost (a scan of
/// the company's receipts per batch), so there each receipt gets its own primary-key
/// update, sent together with the writer's next trip.
pub async fn receipts_set_seq(tx: &mut TenantTx, seqs: &[(&str, u64)]) -> Result<()> {
    if tx.is_postgres() {
        // A generic plan for a prepared UPDATE … FROM may hash-join the whole log; this
        // transaction plans each statement for its own arguments.
        tx.execute(sql("SET LOCAL plan_cache_mode = force_custom_plan"))
            .await?;
        let json = serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into());
        tx.execute(
            scoped(
                "UPDATE receipts r SET seq = CAST(e.value->>1 AS BIGINT) FROM json_array_elements(CAST($2 AS json)) e \
                 WHERE r.tenant_id = $1 AND r.id = e.value->>0 AND r.seq IS NULL",
            )
            .bind(json),
        )
        .await?;
        return Ok(());
    }
    for (id, seq) in seqs {
        tx.defer(
            scoped("UPDATE receipts SET seq = $2 WHERE tenant_id = $1 AND id = $3 AND seq IS NULL")
                .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
                .bind(*id),
        )
        .await?;
    }
    Ok(())
}

/// Companies with receipts that have no position yet.
pub async fn log_pending_tenants(tx: &mut Tx, limit: i64) -> Result<Vec<String>> {
    let q = if tx.is_postgres() {
        sql("SELECT tenant_id FROM ocsuite_log_pending($1)")
    } else {
        sql("SELECT DISTINCT tenant_id FROM receipts WHERE seq IS NULL LIMIT $1")
    };
    let rows: Vec<(String,)> = tx.fetch_all(q.bind(limit)).await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// Drops the bytes of exports past their download window, in every company.
pub async fn expire_exports(tx: &mut Tx, now: chrono::DateTime<chrono::Utc>) -> Result<u64> {
    if tx.is_postgres() {
        let (n,): (i64,) = tx
            .fetch_one(sql("SELECT ocsuite_expire_exports($1)").bind(now))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    } else {
        tx.execute(
            sql("UPDATE exports SET archive = NULL, status = 'expired' WHERE archive IS NOT NULL AND expires_at < $1")
                .bind(now),
        )
        .await
    }
}

/// Companies that set a retention window.
pub async fn retention_tenants(tx: &mut Tx) -> Result<Vec<String>> {
    let q = if tx.is_postgres() {
        sql("SELECT tenant_id FROM ocsuite_retention_tenants()")
    } else {
        sql(
            "SELECT tenant_id FROM retention_settings WHERE conversations_days IS NOT NULL \
             OR events_days IS NOT NULL OR audit_details_days IS NOT NULL",
        )
    };
    let rows: Vec<(String,)> = tx.fetch_all(q).await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// Serialises the transactions that rewrite a company's stored receipts (the retention
/// pass, erasures), so neither puts back a field the other dropped: a transaction-level
/// advisory lock on PostgreSQL; SQLite has one writer already.
pub async fn lock_redactions(tx: &mut TenantTx) -> Result<()> {
    if tx.is_postgres() {
        tx.execute(scoped(
            "SELECT pg_advisory_xact_lock(hashtext('ocsuite-redactions/' || $1))",
        ))
        .await?;
    }
    Ok(())
}

/// Closes erasure requests nobody approved in time, in every company, dropping the
/// address they named.
pub async fn expire_erasures(tx: &mut Tx, now: chrono::DateTime<chrono::Utc>) -> Result<u64> {
    if tx.is_postgres() {
        let (n,): (i64,) = tx
            .fetch_one(sql("SELECT ocsuite_expire_erasures($1)").bind(now))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    } else {
        tx.execute(
            sql(
                "UPDATE erasures SET status = 'expired', email = NULL, user_id = NULL \
                 WHERE status = 'requested' AND expires_at <= $1",
            )
            .bind(now),
        )
        .await
    }
}

/// Many audit entries of the transaction's company in one statement (the queue records
/// a round's outcomes together). Binds `$2` a JSON array of `{"id", "actor_type",
/// "actor_id", "action", "target_type", "target_id", "details", "request_id"}`, `$3`
/// their time.
pub fn insert_audit_entries(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id, details, request_id, created_at) \
             SELECT $1, x.id, x.actor_type, x.actor_id, x.action, x.target_type, x.target_id, x.details, x.request_id, $3 \
               FROM json_to_recordset($2::json) AS x(id TEXT, actor_type TEXT, actor_id TEXT, action TEXT, target_type TEXT, \
                                                     target_id TEXT, details TEXT, request_id TEXT)",
        )
    } else {
        scoped(
            "INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id, details, request_id, created_at) \
             SELECT $1, value ->> 'id', value ->> 'actor_type', value ->> 'actor_id', value ->> 'action', value ->> 'target_type', \
                    value ->> 'target_id', value ->> 'details', value ->> 'request_id', $3 \
               FROM json_each($2)",
        )
    }
}

/// Many receipts of the transaction's company in one statement, waiting for their
/// positions like one appended alone. Binds `$2` a JSON array of `{"id", "action",
/// "actor_type", "actor_id", "fields", "commitments", "leaf_hash"}`, `$3` their time.
pub fn insert_receipts(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO receipts (tenant_id, id, seq, action, actor_type, actor_id, created_at, fields, commitments, leaf_hash) \
             SELECT $1, x.id, NULL, x.action, x.actor_type, x.actor_id, $3, x.fields, x.commitments, x.leaf_hash \
               FROM json_to_recordset($2::json) AS x(id TEXT, action TEXT, actor_type TEXT, actor_id TEXT, fields TEXT, \
                                                     commitments TEXT, leaf_hash TEXT)",
        )
    } else {
        scoped(
            "INSERT INTO receipts (tenant_id, id, seq, action, actor_type, actor_id, created_at, fields, commitments, leaf_hash) \
             SELECT $1, value ->> 'id', NULL, value ->> 'action', value ->> 'actor_type', value ->> 'actor_id', $3, \
                    value ->> 'fields', value ->> 'commitments', value ->> 'leaf_hash' \
               FROM json_each($2)",
        )
    }
}
