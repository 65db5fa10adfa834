//! The SQL that is not one tenant's own, in one place for review:
//!
//! * cross-tenant maintenance: the queue's claims and sweeps, retention, connector sync
//!   scheduling, stale meetings, key rotation. On PostgreSQL these go through the
//!   SECURITY DEFINER functions of `migrations/postgres` (read them beside this file),
//!   since row-level security hides every tenant's rows from the runtime role until a
//!   tenant is set;
//! * a signed-in user's own view across the tenants they belong to (a [`UserTx`]);
//! * every statement whose text differs between SQLite and PostgreSQL.
//!
//! Everywhere else, SQL on a tenant table is a [`scoped`] query run by a [`TenantTx`]
//! (`tests/api/sql_scope.rs` checks the source for it), and no domain asks which
//! database it runs on.

use chrono::{DateTime, Utc};

use super::{Row, Sql, TenantTx, Tx, UserTx, scoped, sql};
use crate::ids::{TenantId, UserId};

pub mod backup;
mod console;
mod queue;
mod receipts;
pub use console::*;
pub use queue::*;
pub use receipts::*;

type Result<T> = std::result::Result<T, sqlx::Error>;

// ---- Retention and sweeps ------------------------------------------------------------

/// Deletes realtime events older than `before`; returns how many.
pub async fn prune_events(tx: &mut Tx, before: DateTime<Utc>) -> Result<u64> {
    if tx.is_postgres() {
        let (n,): (i64,) = tx
            .fetch_one(sql("SELECT ocsuite_prune_events($1)").bind(before))
            .await?;
        return Ok(n.max(0) as u64);
    }
    // Ids follow creation time: everything below the first id that is recent enough
    // goes, found by walking the old events in id order (no index on created_at).
    tx.execute(
        sql("DELETE FROM events WHERE id < COALESCE( \
               (SELECT e.id FROM events e WHERE e.created_at >= $1 ORDER BY e.id LIMIT 1), \
               (SELECT max(e.id) + 1 FROM events e))")
        .bind(before),
    )
    .await
}

/// Deletes OAuth authorization states that expired before `now`; returns how many.
pub async fn prune_oauth_states(tx: &mut Tx, now: DateTime<Utc>) -> Result<u64> {
    if tx.is_postgres() {
        let (n,): (i64,) = tx
            .fetch_one(sql("SELECT ocsuite_prune_oauth_states($1)").bind(now))
            .await?;
        return Ok(n.max(0) as u64);
    }
    tx.execute(sql("DELETE FROM oauth_states WHERE expires_at < $1").bind(now))
        .await
}

/// Connections of any tenant due for a sync (none queued, last sync before `cutoff`):
/// `(tenant_id, id)`.
pub async fn connectors_due(
    tx: &mut Tx,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    let q = if tx.is_postgres() {
        sql("SELECT tenant_id, id FROM ocsuite_connectors_due($1, $2)")
    } else {
        sql(
            "SELECT tenant_id, id FROM connectors WHERE sync_job_id IS NULL AND status IN ('connected', 'error') \
             AND last_refresh_at IS NOT NULL AND (last_sync_at IS NULL OR last_sync_at < $1) ORDER BY last_sync_at LIMIT $2",
        )
    };
    tx.fetch_all(q.bind(cutoff).bind(limit)).await
}

/// Marks meetings of any tenant still `running` since before `before` as failed (a
/// stopped server cut them off); returns how many.
pub async fn fail_stale_meetings(
    tx: &mut Tx,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    if tx.is_postgres() {
        let (n,): (i64,) = tx
            .fetch_one(
                sql("SELECT ocsuite_fail_stale_meetings($1, $2)")
                    .bind(before)
                    .bind(now),
            )
            .await?;
        return Ok(n.max(0) as u64);
    }
    tx.execute(
        sql("UPDATE meetings SET status = 'failed', finished_at = $2, \
             error = 'interrupted: the server stopped while the meeting ran' \
             WHERE status = 'running' AND created_at < $1")
        .bind(before)
        .bind(now),
    )
    .await
}

// ---- Key rotation (run as the schema owner) ------------------------------------------

/// Up to 200 tenant secrets still under a key version below `version`:
/// `tenant_id, id, purpose, ciphertext`.
pub async fn secrets_below<T: Row>(tx: &mut Tx, version: i64) -> Result<Vec<T>> {
    tx.fetch_all(
        sql("SELECT tenant_id, id, purpose, ciphertext FROM tenant_secrets WHERE key_version < $1 ORDER BY tenant_id, id LIMIT 200")
            .bind(version),
    )
    .await
}

/// Up to 500 tenant secrets after `(tenant_id, id)` in key order, for a pass that
/// reads them all: `tenant_id, id, purpose, ciphertext`.
pub async fn secrets_after<T: Row>(tx: &mut Tx, tenant: &str, id: &str) -> Result<Vec<T>> {
    tx.fetch_all(
        sql("SELECT tenant_id, id, purpose, ciphertext FROM tenant_secrets \
              WHERE tenant_id > $1 OR (tenant_id = $1 AND id > $2) ORDER BY tenant_id, id LIMIT 500")
            .bind(tenant)
            .bind(id),
    )
    .await
}

/// Swaps one tenant secret's ciphertext for its re-encryption, only if it still holds
/// `old` (a concurrent write wins); returns the rows changed (0 or 1).
pub async fn reencrypt_secret(
    tx: &mut Tx,
    tenant: &TenantId,
    id: &str,
    old: Vec<u8>,
    new: Vec<u8>,
    version: i64,
) -> Result<u64> {
    tx.execute(
        sql(
            "UPDATE tenant_secrets SET ciphertext = $1, key_version = $2, updated_at = $3 \
             WHERE tenant_id = $4 AND id = $5 AND ciphertext = $6",
        )
        .bind(new)
        .bind(version)
        .bind(Utc::now())
        .bind(tenant)
        .bind(id)
        .bind(old),
    )
    .await
}

// ---- A user's own view across tenants ------------------------------------------------

/// `user`'s role in `tenant` (`None`: not a member) and whether the tenant exists, in
/// one round trip outside any transaction. On PostgreSQL through
/// `ocsuite_member_role`, since row-level security hides memberships until a tenant or
/// user scope is set.
pub async fn member_role(
    tx: &mut Tx,
    tenant: &TenantId,
    user: &UserId,
) -> Result<(Option<String>, bool)> {
    if tx.is_postgres() {
        return tx
            .fetch_one(
                sql("SELECT role, tenant_exists FROM ocsuite_member_role($1, $2)")
                    .bind(tenant)
                    .bind(user),
            )
            .await;
    }
    let role: Option<(String,)> = tx
        .fetch_optional(
            sql("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant)
                .bind(user),
        )
        .await?;
    if let Some((r,)) = role {
        return Ok((Some(r), true));
    }
    let found: Option<(String,)> = tx
        .fetch_optional(sql("SELECT id FROM tenants WHERE id = $1").bind(tenant))
        .await?;
    Ok((None, found.is_some()))
}

/// The tenants of the user of `tx`, oldest first:
/// `id, name, profile, created_at, updated_at, role`.
pub async fn user_tenants<T: Row>(tx: &mut UserTx) -> Result<Vec<T>> {
    let user = tx.user_id().clone();
    tx.fetch_all(
        sql(
            "SELECT t.id, t.name, t.profile, t.created_at, t.updated_at, m.role \
             FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
             WHERE m.user_id = $1 ORDER BY t.created_at",
        )
        .bind(&user),
    )
    .await
}

/// The memberships of the user of `tx`, in the order they joined:
/// `tenant_id, tenant_name, role`.
pub async fn user_memberships<T: Row>(tx: &mut UserTx) -> Result<Vec<T>> {
    let user = tx.user_id().clone();
    tx.fetch_all(
        sql("SELECT m.tenant_id, t.name AS tenant_name, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
             WHERE m.user_id = $1 ORDER BY m.created_at")
        .bind(&user),
    )
    .await
}

/// The role of the user of `tx` in `tenant`, if they are a member.
pub async fn user_role_in(tx: &mut UserTx, tenant: &TenantId) -> Result<Option<String>> {
    let user = tx.user_id().clone();
    let row: Option<(String,)> = tx
        .fetch_optional(
            sql("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant)
                .bind(&user),
        )
        .await?;
    Ok(row.map(|(r,)| r))
}

// ---- One tenant's statements that differ by database ---------------------------------

/// The tenant's plan, locking its row until the transaction ends on PostgreSQL
/// (`FOR NO KEY UPDATE`: the foreign-key checks of rows the transaction inserts hold
/// `KEY SHARE` on the same row, and `FOR UPDATE` would deadlock two concurrent chats).
/// SQLite serialises writers already.
pub fn plan_for_update(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped("SELECT plan FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
    } else {
        scoped("SELECT plan FROM tenants WHERE id = $1")
    }
}

/// Adds usage lines to the tenant's ledger. Binds: day (`YYYY-MM-DD`), then a JSON array
/// of `{persona, model, n, pt, ct, cost}`. `WHERE true` keeps SQLite from reading
/// `ON CONFLICT` as part of the join.
pub fn add_usage(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO usage_ledger (tenant_id, day, persona, model, requests, prompt_tokens, completion_tokens, cost_micros) \
             SELECT $1, $2, value->>'persona', value->>'model', CAST(value->>'n' AS BIGINT), CAST(value->>'pt' AS BIGINT), \
                    CAST(value->>'ct' AS BIGINT), CAST(value->>'cost' AS BIGINT) FROM json_array_elements(CAST($3 AS json)) WHERE true \
             ON CONFLICT (tenant_id, day, persona, model) DO UPDATE SET requests = usage_ledger.requests + excluded.requests, \
               prompt_tokens = usage_ledger.prompt_tokens + excluded.prompt_tokens, \
               completion_tokens = usage_ledger.completion_tokens + excluded.completion_tokens, \
               cost_micros = usage_ledger.cost_micros + excluded.cost_micros",
        )
    } else {
        scoped(
            "INSERT INTO usage_ledger (tenant_id, day, persona, model, requests, prompt_tokens, completion_tokens, cost_micros) \
             SELECT $1, $2, value->>'persona', value->>'model', CAST(value->>'n' AS BIGINT), CAST(value->>'pt' AS BIGINT), \
                    CAST(value->>'ct' AS BIGINT), CAST(value->>'cost' AS BIGINT) FROM json_each($3) WHERE true \
             ON CONFLICT (tenant_id, day, persona, model) DO UPDATE SET requests = usage_ledger.requests + excluded.requests, \
               prompt_tokens = usage_ledger.prompt_tokens + excluded.prompt_tokens, \
               completion_tokens = usage_ledger.completion_tokens + excluded.completion_tokens, \
               cost_micros = usage_ledger.cost_micros + excluded.cost_micros",
        )
    }
}

/// A task that already ran, its audit entry and its timeline, in one statement
/// (PostgreSQL; data-modifying CTEs always run). Binds: id, capability, version, input,
/// status, created_by, started_at, finished_at, result, error, meeting_id,
/// conversation_id, audit id, actor type, actor id, action, audit details, topic, then a
/// JSON array of `{seq, kind, data}`; returns the events' ids in array order.
pub fn add_finished_task(tx: &TenantTx) -> Sql {
    debug_assert!(tx.is_postgres());
    scoped(
        "WITH t AS (INSERT INTO tasks (tenant_id, id, capability, version, input, status, attempts, max_attempts, \
           idempotency_key, created_by, cancel_requested, event_seq, created_at, updated_at, started_at, finished_at, \
           result, error, meeting_id, conversation_id) \
           VALUES ($1, $2, $3, $4, $5, $6, 1, 1, NULL, $7, FALSE, 3, $8, $9, $8, $9, $10, $11, $12, $13)), \
         a AS (INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id, details, request_id, created_at) \
           VALUES ($1, $14, $15, $16, $17, 'task', $2, $18, NULL, $9)) \
         INSERT INTO events (tenant_id, topic, seq, kind, data, created_at) \
         SELECT $1, $19, CAST(e.value->>'seq' AS BIGINT), e.value->>'kind', e.value->>'data', $9 \
         FROM json_array_elements(CAST($20 AS json)) WITH ORDINALITY AS e(value, n) ORDER BY e.n RETURNING id",
    )
}

/// Inserts a meeting's turns in one statement. Binds: meeting id, created_at, then a
/// JSON array of `{seq, persona, round, content, status, error, model, pt, ct, ms}`.
pub fn add_meeting_turns(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO meeting_turns (tenant_id, meeting_id, seq, persona, round, content, status, error, model, \
             prompt_tokens, completion_tokens, latency_ms, created_at) \
             SELECT $1, $2, CAST(value->>'seq' AS BIGINT), value->>'persona', CAST(value->>'round' AS BIGINT), value->>'content', \
                    value->>'status', value->>'error', value->>'model', CAST(value->>'pt' AS BIGINT), CAST(value->>'ct' AS BIGINT), \
                    CAST(value->>'ms' AS BIGINT), $3 FROM json_array_elements(CAST($4 AS json))",
        )
    } else {
        scoped(
            "INSERT INTO meeting_turns (tenant_id, meeting_id, seq, persona, round, content, status, error, model, \
             prompt_tokens, completion_tokens, latency_ms, created_at) \
             SELECT $1, $2, CAST(value->>'seq' AS BIGINT), value->>'persona', CAST(value->>'round' AS BIGINT), value->>'content', \
                    value->>'status', value->>'error', value->>'model', CAST(value->>'pt' AS BIGINT), CAST(value->>'ct' AS BIGINT), \
                    CAST(value->>'ms' AS BIGINT), $3 FROM json_each($4)",
        )
    }
}

/// Inserts a campaign's recipients in one statement. Binds: campaign id, then a JSON
/// array of `{id, email, name, vars, status, reason}` (`vars` as JSON text).
pub fn add_email_recipients(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "INSERT INTO email_recipients (tenant_id, id, campaign_id, email, name, vars, status, reason, attempts) \
             SELECT $1, value->>'id', $2, value->>'email', value->>'name', value->>'vars', value->>'status', value->>'reason', 0 \
               FROM json_array_elements(CAST($3 AS json))",
        )
    } else {
        scoped(
            "INSERT INTO email_recipients (tenant_id, id, campaign_id, email, name, vars, status, reason, attempts) \
             SELECT $1, value->>'id', $2, value->>'email', value->>'name', value->>'vars', value->>'status', value->>'reason', 0 \
               FROM json_each($3)",
        )
    }
}

// ---- Knowledge -----------------------------------------------------------------------

/// Keyword search over the tenant's chunks, best first: SQLite FTS5 with BM25 (weights:
/// document and location count double), PostgreSQL full-text with `ts_rank`. `$2` is
/// the match expression [`knowledge_match`] writes for this database, `$3` the limit,
/// `$4` a JSON array of source ids to keep (`[]`: all). Rows: (chunk id, score, higher
/// better).
///
/// On SQLite the expression's terms carry the tenant's tag, so FTS5 reads and ranks
/// only this tenant's postings; the join re-checks the tenant on the chunk row.
pub fn knowledge_keyword(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "SELECT c.id, ts_rank(f.tsv, q)::float8 AS score \
             FROM _knowledge_fts f CROSS JOIN to_tsquery('english', $2) q \
             JOIN knowledge_chunks c ON c.fts_key = f.fts_key \
             WHERE f.tenant_id = $1 AND c.tenant_id = $1 AND f.tsv @@ q \
               AND ($4 = '[]' OR c.source_id IN (SELECT jsonb_array_elements_text($4::jsonb))) \
             ORDER BY score DESC, c.id LIMIT $3",
        )
    } else {
        scoped(
            "SELECT c.id, f.score FROM ( \
                 SELECT rowid AS k, -bm25(_knowledge_fts, 0.0, 2.0, 2.0, 1.0) AS score \
                 FROM _knowledge_fts WHERE _knowledge_fts MATCH $2 ORDER BY score DESC LIMIT $3 \
             ) f JOIN knowledge_chunks c ON c.fts_key = f.k \
             WHERE c.tenant_id = $1 AND ($4 = '[]' OR c.source_id IN (SELECT value FROM json_each($4))) \
             ORDER BY f.score DESC, c.id",
        )
    }
}

/// How many of the tenant's passages contain each term, counting no further than `$2`
/// (SQLite; `$1` is a JSON array of the match expressions [`knowledge_match`] writes
/// for one term each). Rows: (expression, count). Counting reads postings without
/// ranking them, and stops at the cap.
pub fn knowledge_term_docs(tx: &TenantTx) -> Sql {
    debug_assert!(!tx.is_postgres());
    sql(
        "SELECT j.value, (SELECT count(*) FROM (SELECT 1 FROM _knowledge_fts WHERE _knowledge_fts MATCH j.value LIMIT $2)) \
         FROM json_each($1) j",
    )
}

/// `terms` (letters and digits only) as a match expression for this database: any of
/// them, ranked by how many and how rare. On SQLite each term carries the tenant's tag
/// (as the index does, see [`knowledge_fts_row`]), and `sources`, when given, limit it.
pub fn knowledge_match(tx: &TenantTx, terms: &[String], sources: &[String]) -> String {
    if tx.is_postgres() {
        return terms.join(" | ");
    }
    let tag = knowledge_tag(tx.tenant_id());
    let any = terms
        .iter()
        .map(|t| format!("\"{tag}{t}\""))
        .collect::<Vec<_>>()
        .join(" OR ");
    if sources.is_empty() {
        return any;
    }
    // The index holds each source id's hex digits as one token.
    let s = sources
        .iter()
        .map(|s| {
            let hex: String = s
                .split_once('_')
                .map_or(s.as_str(), |(_, h)| h)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            format!("\"{hex}\"")
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    format!("({any}) AND source : ({s})")
}

/// The prefix of a tenant's words in the SQLite keyword index: `k` and the last twelve
/// hex digits of its id (the random part). Two tenants sharing a tag would only share
/// word statistics; the search re-checks the tenant on every chunk it returns.
pub fn knowledge_tag(tenant: &TenantId) -> String {
    let hex = tenant.hex();
    format!("k{}", &hex[hex.len().saturating_sub(12)..])
}

/// `text` with every word (run of letters and digits) prefixed by `tag`.
pub fn knowledge_tagged(text: &str, tag: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 3);
    let mut in_word = false;
    for c in text.chars() {
        let alnum = c.is_alphanumeric();
        if alnum && !in_word {
            out.push_str(tag);
        }
        in_word = alnum;
        out.push(c);
    }
    out
}

/// The keyword index row of a chunk, written beside it: on SQLite the tagged FTS5 row
/// (binds: fts key, source id, document, location, text); on PostgreSQL `None`, where
/// a trigger derives the row.
pub fn knowledge_fts_row(
    tx: &TenantTx,
    key: i64,
    source: &str,
    document: &str,
    location: &str,
    text: &str,
) -> Option<Sql> {
    if tx.is_postgres() {
        return None;
    }
    let tag = knowledge_tag(tx.tenant_id());
    let source = source.split_once('_').map_or(source, |(_, h)| h);
    Some(
        sql("INSERT INTO _knowledge_fts (rowid, source, document, location, text) VALUES ($1, $2, $3, $4, $5)")
            .bind(key)
            .bind(source)
            .bind(knowledge_tagged(document, &tag))
            .bind(knowledge_tagged(location, &tag))
            .bind(knowledge_tagged(text, &tag)),
    )
}

/// The chunks whose ids are in the JSON array `$2`, with their source's title.
pub fn knowledge_chunks_by_id(tx: &TenantTx) -> Sql {
    if tx.is_postgres() {
        scoped(
            "SELECT c.id, c.source_id, s.title, c.document, c.location, c.text \
             FROM knowledge_chunks c JOIN knowledge_sources s ON s.tenant_id = c.tenant_id AND s.id = c.source_id \
             WHERE c.tenant_id = $1 AND c.id IN (SELECT jsonb_array_elements_text($2::jsonb))",
        )
    } else {
        scoped(
            "SELECT c.id, c.source_id, s.title, c.document, c.location, c.text \
             FROM knowledge_chunks c JOIN knowledge_sources s ON s.tenant_id = c.tenant_id AND s.id = c.source_id \
             WHERE c.tenant_id = $1 AND c.id IN (SELECT value FROM json_each($2))",
        )
    }
}

/// Sources of any tenant whose fetched content is due for a re-sync (web pages, Drive,
/// Notion; uploads never change), oldest first, that have no ingestion pending.
pub async fn knowledge_due(
    tx: &mut Tx,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    let q = if tx.is_postgres() {
        sql("SELECT tenant_id, id FROM ocsuite_knowledge_due($1, $2)")
    } else {
        sql("SELECT tenant_id, id FROM knowledge_sources \
             WHERE kind <> 'upload' AND ingest_job_id IS NULL AND (synced_at IS NULL OR synced_at < $1) \
               AND tenant_id NOT IN (SELECT t.id FROM tenants t WHERE t.jobs_paused_at IS NOT NULL) \
             ORDER BY synced_at LIMIT $2")
    };
    tx.fetch_all(q.bind(cutoff).bind(limit)).await
}

/// Schedule and metric triggers of any tenant due by `now` (or never scheduled), for
/// the scheduler; paused companies' are left.
pub async fn triggers_due(
    tx: &mut Tx,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    let q = if tx.is_postgres() {
        sql("SELECT tenant_id, id FROM ocsuite_triggers_due($1, $2)")
    } else {
        sql("SELECT tenant_id, id FROM triggers \
             WHERE paused = FALSE AND kind <> 'event' AND (next_run_at IS NULL OR next_run_at <= $1) \
               AND tenant_id NOT IN (SELECT t.id FROM tenants t WHERE t.jobs_paused_at IS NOT NULL) \
             ORDER BY next_run_at LIMIT $2")
    };
    tx.fetch_all(q.bind(now).bind(limit)).await
}

/// Tenants with an unpaused `approval.waiting` trigger (the scheduler sweeps their
/// proposals).
pub async fn approval_watchers(tx: &mut Tx) -> Result<Vec<String>> {
    let q = if tx.is_postgres() {
        sql("SELECT tenant_id FROM ocsuite_approval_watchers()")
    } else {
        sql(
            "SELECT DISTINCT tenant_id FROM triggers WHERE paused = FALSE AND kind = 'event' AND event_type = 'approval.waiting'",
        )
    };
    let rows: Vec<(String,)> = tx.fetch_all(q).await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}
