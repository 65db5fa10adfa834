//! Categorisation rules: "counterparty contains `uber`" → Travel. They run in `position`
//! order and the first match wins ([`super::categorize::rule_for`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{categories, find_category, unknown_category};
use crate::error::{AppError, Result};
use crate::ids::RuleId;
use crate::store::{TenantTx, scoped};

/// A categorisation rule: transactions whose `field` contains `pattern` (any case) get
/// `category`. Rules run in `position` order; the first match wins.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Rule {
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub id: RuleId,
    /// `counterparty`, `memo` or `any`.
    pub field: String,
    pub pattern: String,
    pub category: String,
    pub position: i64,
    pub created_at: DateTime<Utc>,
}

pub async fn rules(tx: &mut TenantTx) -> Result<Vec<Rule>> {
    Ok(tx
        .fetch_all(scoped(
            "SELECT id, field, pattern, category, position, created_at FROM category_rules \
                 WHERE tenant_id = $1 ORDER BY position, created_at",
        ))
        .await?)
}

/// The largest rule position: rules run in position order, and new ones go 10 after the
/// last, so a bound keeps that sum in range.
pub const MAX_POSITION: i64 = 1_000_000_000;

pub async fn add_rule(
    tx: &mut TenantTx,
    field: &str,
    pattern: &str,
    category: &str,
    position: Option<i64>,
) -> Result<Rule> {
    if !["counterparty", "memo", "any"].contains(&field) {
        return Err(AppError::invalid(
            "field",
            "field is counterparty, memo or any",
        ));
    }
    let pattern = pattern.trim();
    if pattern.is_empty() || pattern.chars().count() > 200 {
        return Err(AppError::invalid(
            "pattern",
            "pattern must be 1-200 characters",
        ));
    }
    let cats = categories(tx).await?;
    let category = find_category(&cats, category)
        .ok_or_else(|| unknown_category(category, &cats))?
        .name
        .clone();
    let position = match position {
        Some(p) if !(0..=MAX_POSITION).contains(&p) => {
            return Err(AppError::invalid(
                "position",
                format!("position must be 0-{MAX_POSITION}"),
            ));
        }
        Some(p) => p,
        None => {
            let (n,): (i64,) = tx
                .fetch_one(scoped(
                    "SELECT COALESCE(MAX(position), 0) FROM category_rules WHERE tenant_id = $1",
                ))
                .await?;
            // Rules stored before positions were bounded may sit near the top.
            n.saturating_add(10).min(MAX_POSITION)
        }
    };
    let id = RuleId::new();
    tx.execute(
        scoped("INSERT INTO category_rules (tenant_id, id, field, pattern, category, position, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id)
            .bind(field)
            .bind(pattern)
            .bind(category)
            .bind(position)
            .bind(Utc::now()),
    )
    .await?;
    rules(tx)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| AppError::internal("rule vanished"))
}

pub async fn delete_rule(tx: &mut TenantTx, id: &RuleId) -> Result<bool> {
    Ok(tx
        .execute(scoped("DELETE FROM category_rules WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?
        > 0)
}
