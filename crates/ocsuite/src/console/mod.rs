//! The operator console: what super-admins see of every company (the searchable
//! tenant list, one company's page, platform health) and what they do to one
//! (suspend, unsuspend, delete under dual control in [`deletion`]).
//!
//! A suspended company's API refuses writes with 403 `tenant_suspended` while reads
//! (so its people can still see and export their data) keep working; its jobs and
//! triggers wait behind the job kill switch. Each process keeps a copy of the
//! suspended set, reloaded every few seconds, so the check costs no database read.

pub mod deletion;
pub mod health;
pub mod routes;

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use serde_json::json;

use crate::audit;
use crate::error::{AppError, Result};
use crate::ids::{TenantId, UserId};
use crate::store::{Store, TenantTx, Tx, cross_tenant, scoped};

/// This process's copy of the suspended companies and why.
#[derive(Default)]
pub struct Suspensions {
    current: RwLock<HashMap<TenantId, String>>,
}

impl Suspensions {
    /// The reason `tenant` is suspended, if it is.
    pub fn reason(&self, tenant: &TenantId) -> Option<String> {
        let map = self.current.read().ok()?;
        if map.is_empty() {
            return None;
        }
        map.get(tenant).cloned()
    }

    pub async fn reload(&self, store: &Store) -> Result<()> {
        let mut tx = store.platform_read().await?;
        let rows = cross_tenant::suspended_tenants(&mut tx).await?;
        tx.commit().await?;
        let map = rows
            .into_iter()
            .filter_map(|(id, reason)| TenantId::parse(&id).map(|t| (t, reason)))
            .collect();
        if let Ok(mut c) = self.current.write() {
            *c = map;
        }
        Ok(())
    }

    /// Applies a change this process committed at once (others catch up on reload).
    pub fn set(&self, tenant: &TenantId, reason: Option<String>) {
        if let Ok(mut c) = self.current.write() {
            match reason {
                Some(r) => c.insert(tenant.clone(), r),
                None => c.remove(tenant),
            };
        }
    }
}

/// The refusal a suspended company's writes get.
pub fn suspended_error(reason: &str) -> AppError {
    AppError::Detailed {
        status: axum::http::StatusCode::FORBIDDEN,
        code: "tenant_suspended",
        message: format!(
            "this company is suspended ({reason}); you can still read and export its data, and the operators can lift the suspension"
        ),
        details: json!({ "reason": reason }),
    }
}

/// One company in the console's list.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TenantSummary {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub suspended_at: Option<DateTime<Utc>>,
    /// `active` or `suspended`.
    #[sqlx(skip)]
    pub status: String,
    pub owner_email: Option<String>,
    pub members: i64,
    /// The latest audit entry, task or conversation.
    pub last_active: Option<DateTime<Utc>>,
    /// Model tokens this calendar month (UTC).
    pub tokens: i64,
    pub cost_micros: i64,
    /// Tasks created this month.
    pub tasks: i64,
    /// Bytes of knowledge sources stored.
    pub storage_bytes: i64,
    #[serde(skip)]
    pub total: i64,
}

/// The first instant of `now`'s month (UTC) and its date.
pub fn month_start(now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let day = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or(now.date_naive());
    let at = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default());
    (day, at)
}

/// `LIKE` pattern for a search: lower case, `%` `_` `\` escaped, wrapped in `%`.
fn like_pattern(q: &str) -> String {
    let mut p = String::from("%");
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A page of companies matching `query` (name, owner email or exact id), newest first,
/// with the number that match.
pub async fn search(
    tx: &mut Tx,
    query: &str,
    limit: i64,
    offset: i64,
    now: DateTime<Utc>,
) -> Result<(Vec<TenantSummary>, i64)> {
    let q = query.trim();
    let pattern = (!q.is_empty()).then(|| like_pattern(q));
    let (day, since) = month_start(now);
    let mut rows: Vec<TenantSummary> = cross_tenant::console_tenants(
        tx,
        pattern.as_deref(),
        q,
        &day.format("%Y-%m-%d").to_string(),
        since,
        limit,
        offset,
    )
    .await?;
    let total = rows.first().map_or(0, |r| r.total);
    for r in &mut rows {
        r.status = if r.suspended_at.is_some() {
            "suspended"
        } else {
            "active"
        }
        .into();
    }
    // An offset past the end still says how many there are.
    let total = if rows.is_empty() && offset > 0 {
        cross_tenant::console_tenants::<TenantSummary>(tx, pattern.as_deref(), q, "", since, 1, 0)
            .await?
            .first()
            .map_or(0, |r| r.total)
    } else {
        total
    };
    Ok((rows, total))
}

/// The company row the console shows on its page.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TenantFacts {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspended_reason: Option<String>,
    /// When the job kill switch went on (by the company, or by a suspension).
    pub jobs_paused_at: Option<DateTime<Utc>>,
}

/// The company of `tx`, `None` when it does not exist.
pub async fn facts(tx: &mut TenantTx) -> Result<Option<TenantFacts>> {
    Ok(tx
        .fetch_optional(scoped(
            "SELECT id, name, plan, created_at, suspended_at, suspended_reason, jobs_paused_at \
               FROM tenants WHERE id = $1",
        ))
        .await?)
}

/// Usage by day over the last `days` days: `(day, tokens, cost_micros, requests)`.
pub async fn usage_by_day(
    tx: &mut TenantTx,
    from: NaiveDate,
) -> Result<Vec<(String, i64, i64, i64)>> {
    Ok(tx
        .fetch_all(
            scoped(
                "SELECT day, CAST(COALESCE(sum(prompt_tokens + completion_tokens), 0) AS BIGINT), \
                        CAST(COALESCE(sum(cost_micros), 0) AS BIGINT), CAST(COALESCE(sum(requests), 0) AS BIGINT) \
                   FROM usage_ledger WHERE tenant_id = $1 AND day >= $2 GROUP BY day ORDER BY day",
            )
            .bind(from.format("%Y-%m-%d").to_string()),
        )
        .await?)
}

/// Suspends the company of `tx`: its writes are refused, its jobs and triggers wait,
/// its people see why. 409 when it already is.
pub async fn suspend(
    tx: &mut TenantTx,
    by: &UserId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let f = facts(tx).await?.ok_or(AppError::NotFound("tenant"))?;
    if f.suspended_at.is_some() {
        return Err(AppError::Conflict(
            "this company is already suspended".into(),
        ));
    }
    tx.execute(
        scoped(
            "UPDATE tenants SET suspended_at = $2, suspended_reason = $3, \
                    suspension_paused_jobs = (jobs_paused_at IS NULL), \
                    jobs_paused_at = COALESCE(jobs_paused_at, $2) WHERE id = $1",
        )
        .bind(now)
        .bind(reason),
    )
    .await?;
    crate::queue::set_paused(tx, true).await?;
    audit::insert(
        tx,
        ("support_admin", by.as_str()),
        "tenant.suspend",
        "tenant",
        f.id.as_str(),
        json!({ "reason": reason }),
        None,
    )
    .await?;
    Ok(())
}

/// Lifts a suspension; the job kill switch goes off again only if the suspension
/// turned it on. 409 when the company is not suspended.
pub async fn unsuspend(tx: &mut TenantTx, by: &UserId) -> Result<()> {
    let f = facts(tx).await?.ok_or(AppError::NotFound("tenant"))?;
    if f.suspended_at.is_none() {
        return Err(AppError::Conflict("this company is not suspended".into()));
    }
    let (resumes,): (bool,) = tx
        .fetch_one(scoped(
            "SELECT suspension_paused_jobs FROM tenants WHERE id = $1",
        ))
        .await?;
    tx.execute(scoped(
        "UPDATE tenants SET suspended_at = NULL, suspended_reason = NULL, suspension_paused_jobs = FALSE, \
                jobs_paused_at = CASE WHEN suspension_paused_jobs THEN NULL ELSE jobs_paused_at END \
          WHERE id = $1",
    ))
    .await?;
    if resumes {
        crate::queue::set_paused(tx, false).await?;
    }
    audit::insert(
        tx,
        ("support_admin", by.as_str()),
        "tenant.unsuspend",
        "tenant",
        f.id.as_str(),
        json!({ "jobs_resumed": resumes }),
        None,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_escape_wildcards() {
        assert_eq!(like_pattern("Acme"), "%acme%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn a_month_starts_on_its_first_day() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 13, 5, 0).unwrap();
        let (day, at) = month_start(now);
        assert_eq!(day.to_string(), "2026-12-01");
        assert_eq!(at, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
    }
}
