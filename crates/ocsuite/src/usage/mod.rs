//! The token usage ledger: tokens in and out per tenant, day, persona and model.

pub mod routes;

use chrono::Utc;
use serde::Serialize;

use crate::error::Result;
use crate::llm::Usage;
use crate::store::{TenantTx, sql};

/// Adds one model call to today's row for `persona` and `model`.
pub async fn record(tx: &mut TenantTx, persona: &str, model: &str, usage: Usage) -> Result<()> {
    let tenant = tx.tenant_id().clone();
    let day = Utc::now().format("%Y-%m-%d").to_string();
    tx.execute(
        sql("INSERT INTO usage_ledger (tenant_id, day, persona, model, requests, prompt_tokens, completion_tokens) \
             VALUES ($1, $2, $3, $4, 1, $5, $6) \
             ON CONFLICT (tenant_id, day, persona, model) DO UPDATE SET requests = usage_ledger.requests + 1, \
               prompt_tokens = usage_ledger.prompt_tokens + excluded.prompt_tokens, \
               completion_tokens = usage_ledger.completion_tokens + excluded.completion_tokens")
            .bind(&tenant)
            .bind(day)
            .bind(persona)
            .bind(model)
            .bind(usage.prompt_tokens)
            .bind(usage.completion_tokens),
    )
    .await?;
    Ok(())
}

/// One ledger row.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UsageRow {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub persona: String,
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// Rows from `since` (a `YYYY-MM-DD` day) on, newest day first.
pub async fn since(tx: &mut TenantTx, since: &str) -> Result<Vec<UsageRow>> {
    let tenant = tx.tenant_id().clone();
    Ok(tx
        .fetch_all(
            sql("SELECT day, persona, model, requests, prompt_tokens, completion_tokens FROM usage_ledger \
                 WHERE tenant_id = $1 AND day >= $2 ORDER BY day DESC, persona, model")
                .bind(&tenant)
                .bind(since),
        )
        .await?)
}
