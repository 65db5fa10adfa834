//! Metering and budgets for model calls.
//!
//! - **Ledger** (`usage_ledger`): tokens in and out, requests and cost per tenant, day,
//!   persona and model, written in the transaction that stores the answer.
//! - **Plans** (`tenants.plan`: free, pro, enterprise) set a monthly token budget and a
//!   chat request rate; both are configurable.
//! - **Reservations** (`token_reservations`): before a call, the prompt estimate plus the
//!   call's `max_tokens` is reserved under a lock on the tenant row, and checked against
//!   the budget together with this month's ledger and the other calls in flight. So
//!   concurrent calls cannot overshoot the budget by more than one call's actual excess.
//!   The reservation is released when the answer is stored; one left by a crash is
//!   ignored after ten minutes.

pub mod routes;

use std::collections::HashMap;
use std::num::NonZeroU32;

use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use serde_json::json;

use crate::config::{Config, parse_usd_micros};
use crate::error::{AppError, Result};
use crate::ids::TenantId;
use crate::llm::Usage;
use crate::store::cross_tenant;
use crate::store::{TenantTx, scoped};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

impl Plan {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Self::Free),
            "pro" => Some(Self::Pro),
            "enterprise" => Some(Self::Enterprise),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }
}

/// What a plan allows.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct PlanLimits {
    pub monthly_tokens: u64,
    pub chats_per_minute: u32,
    /// Largest knowledge upload, in bytes.
    pub knowledge_file_bytes: u64,
}

/// Plans, prices and the per-plan chat rate limiters of this process.
pub struct Meter {
    limits: HashMap<&'static str, PlanLimits>,
    rates: HashMap<&'static str, DefaultKeyedRateLimiter<String>>,
    /// model → (input, output) millionths of a dollar per million tokens.
    prices: HashMap<String, (i64, i64)>,
}

impl Meter {
    pub fn new(c: &Config) -> Self {
        let plans = [
            (
                Plan::Free,
                c.plan_free_monthly_tokens,
                c.plan_free_chats_per_minute,
                c.plan_free_knowledge_file_mb,
            ),
            (
                Plan::Pro,
                c.plan_pro_monthly_tokens,
                c.plan_pro_chats_per_minute,
                c.plan_pro_knowledge_file_mb,
            ),
            (
                Plan::Enterprise,
                c.plan_enterprise_monthly_tokens,
                c.plan_enterprise_chats_per_minute,
                c.plan_enterprise_knowledge_file_mb,
            ),
        ];
        let mut limits = HashMap::new();
        let mut rates = HashMap::new();
        for (plan, monthly_tokens, per_minute, file_mb) in plans {
            limits.insert(
                plan.as_str(),
                PlanLimits {
                    monthly_tokens,
                    chats_per_minute: per_minute,
                    knowledge_file_bytes: u64::from(file_mb) * 1024 * 1024,
                },
            );
            let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
            rates.insert(
                plan.as_str(),
                RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)),
            );
        }
        let prices = c
            .llm_prices
            .iter()
            .filter_map(|p| {
                Some((
                    p.model.clone(),
                    (
                        parse_usd_micros(&p.input_usd_per_mtok)?,
                        parse_usd_micros(&p.output_usd_per_mtok)?,
                    ),
                ))
            })
            .collect();
        Self {
            limits,
            rates,
            prices,
        }
    }

    pub fn limits(&self, plan: Plan) -> PlanLimits {
        self.limits
            .get(plan.as_str())
            .copied()
            .unwrap_or(PlanLimits {
                monthly_tokens: 0,
                chats_per_minute: 1,
                knowledge_file_bytes: 0,
            })
    }

    /// The largest upload any plan allows: the transport limit on upload routes (each
    /// tenant's own plan limit is checked while the file streams in).
    pub fn largest_knowledge_file(&self) -> u64 {
        self.limits
            .values()
            .map(|l| l.knowledge_file_bytes)
            .max()
            .unwrap_or(0)
    }

    /// Cost of a call in millionths of a dollar (0 for a model without a price).
    pub fn cost_micros(&self, model: &str, usage: Usage) -> i64 {
        let Some((inp, out)) = self.prices.get(model) else {
            return 0;
        };
        (i64::from(usage.prompt_tokens) * inp + i64::from(usage.completion_tokens) * out)
            / 1_000_000
    }

    /// The plan's chat rate for this tenant: 429 with `Retry-After` when exceeded.
    pub fn check_rate(&self, plan: Plan, tenant: &TenantId) -> Result<()> {
        let Some(l) = self.rates.get(plan.as_str()) else {
            return Ok(());
        };
        l.check_key(&tenant.as_str().to_owned())
            .map_err(|not_until| AppError::TooManyRequests {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    pub fn shrink(&self) {
        for l in self.rates.values() {
            l.retain_recent();
        }
    }
}

/// The first instant of this month and of the next (UTC).
pub fn month_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or_default();
    let next = if now.month() == 12 {
        NaiveDate::from_ymd_opt(now.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(now.year(), now.month() + 1, 1)
    }
    .unwrap_or_default();
    let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    (at(start), at(next))
}

/// The tenant's plan, locking its row until `tx` ends (serialises budget checks; see
/// `store::cross_tenant::plan_for_update`).
pub async fn plan_for_update(tx: &mut TenantTx) -> Result<Plan> {
    let q = cross_tenant::plan_for_update(tx);
    let (plan,): (String,) = tx.fetch_one(q).await?;
    Ok(Plan::parse(&plan).unwrap_or(Plan::Free))
}

/// Tokens this month: (ledger total, held by calls in flight).
pub async fn consumed(tx: &mut TenantTx, now: DateTime<Utc>) -> Result<(i64, i64)> {
    let (start, _) = month_bounds(now);
    let (used, held): (i64, i64) = tx
        .fetch_one(
            scoped("SELECT \
                   (SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) FROM usage_ledger WHERE tenant_id = $1 AND day >= $2), \
                   (SELECT CAST(COALESCE(SUM(tokens), 0) AS BIGINT) FROM token_reservations WHERE tenant_id = $1 AND created_at > $3)")
                .bind(start.format("%Y-%m-%d").to_string())
                .bind(now - Duration::minutes(10)),
        )
        .await?;
    Ok((used, held))
}

/// Checks that `tokens` more fit the budget and the plan's chat rate, or refuses with 429
/// (`budget_exceeded` says the limit and when it resets). Locks the tenant row: call
/// [`hold`] in the same transaction to reserve them.
pub async fn check(tx: &mut TenantTx, meter: &Meter, tokens: u32) -> Result<()> {
    let now = Utc::now();
    // Lock first, then read the sums in a fresh statement: on PostgreSQL a statement
    // that waited for the lock would still see the snapshot from before the other
    // chat's hold.
    let plan = plan_for_update(tx).await?;
    let (used, held) = consumed(tx, now).await?;
    meter.check_rate(plan, tx.tenant_id())?;
    let limit = meter.limits(plan).monthly_tokens;
    let need = i64::from(tokens);
    if used + held + need > i64::try_from(limit).unwrap_or(i64::MAX) {
        let (_, reset) = month_bounds(now);
        return Err(AppError::Detailed {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "budget_exceeded",
            message: format!(
                "the {} plan's monthly budget of {limit} tokens would be exceeded ({used} used, {held} held by answers in progress, this request needs up to {need}); it resets on {}. Upgrade the plan or wait.",
                plan.as_str(),
                reset.format("%Y-%m-%d")
            ),
            details: json!({
                "plan": plan.as_str(), "monthly_tokens": limit, "used": used, "in_flight": held,
                "requested": need, "resets_at": reset,
                "retry_after_seconds": (reset - now).num_seconds().max(1),
            }),
        });
    }
    Ok(())
}

/// Tokens left in the tenant's monthly budget after what is used and held (may be
/// negative). A read, without the lock [`check`] takes: for a step inside an answer
/// already admitted, not for admitting one.
pub async fn headroom(tx: &mut TenantTx, meter: &Meter) -> Result<i64> {
    let (plan,): (String,) = tx
        .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
        .await?;
    let plan = Plan::parse(&plan).unwrap_or(Plan::Free);
    let (used, held) = consumed(tx, Utc::now()).await?;
    let limit = i64::try_from(meter.limits(plan).monthly_tokens).unwrap_or(i64::MAX);
    Ok(limit - used - held)
}

/// Holds `tokens` for a call in flight; returns the reservation id.
pub async fn hold(tx: &mut TenantTx, tokens: u32) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tx.execute(
        scoped("INSERT INTO token_reservations (tenant_id, id, tokens, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id.as_str())
            .bind(i64::from(tokens))
            .bind(Utc::now()),
    )
    .await?;
    Ok(id)
}

/// Releases a reservation and records what the call actually used.
pub async fn settle(
    tx: &mut TenantTx,
    meter: &Meter,
    reservation: &str,
    persona: &str,
    model: &str,
    usage: Usage,
) -> Result<()> {
    release(tx, reservation).await?;
    record(tx, meter, persona, model, usage).await
}

/// Drops a reservation (the caller records what was really used).
pub async fn release(tx: &mut TenantTx, reservation: &str) -> Result<()> {
    tx.execute(
        scoped("DELETE FROM token_reservations WHERE tenant_id = $1 AND id = $2").bind(reservation),
    )
    .await?;
    Ok(())
}

/// Adds one model call to today's row for `persona` and `model`.
pub async fn record(
    tx: &mut TenantTx,
    meter: &Meter,
    persona: &str,
    model: &str,
    usage: Usage,
) -> Result<()> {
    let day = Utc::now().format("%Y-%m-%d").to_string();
    tx.execute(
        scoped("INSERT INTO usage_ledger (tenant_id, day, persona, model, requests, prompt_tokens, completion_tokens, cost_micros) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $7) \
             ON CONFLICT (tenant_id, day, persona, model) DO UPDATE SET requests = usage_ledger.requests + 1, \
               prompt_tokens = usage_ledger.prompt_tokens + excluded.prompt_tokens, \
               completion_tokens = usage_ledger.completion_tokens + excluded.completion_tokens, \
               cost_micros = usage_ledger.cost_micros + excluded.cost_micros")
            .bind(day)
            .bind(persona)
            .bind(model)
            .bind(usage.prompt_tokens)
            .bind(usage.completion_tokens)
            .bind(meter.cost_micros(model, usage)),
    )
    .await?;
    crossed(
        tx,
        meter,
        i64::from(usage.prompt_tokens) + i64::from(usage.completion_tokens),
    )
    .await
}

/// Tells the company's `usage.threshold` triggers when the `added` tokens just took
/// this month's use to 80 % or 100 % of the plan (once per month and threshold).
async fn crossed(tx: &mut TenantTx, meter: &Meter, added: i64) -> Result<()> {
    if added <= 0 {
        return Ok(());
    }
    let (plan,): (String,) = tx
        .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
        .await?;
    let plan = Plan::parse(&plan).unwrap_or(Plan::Free);
    let limit = i64::try_from(meter.limits(plan).monthly_tokens).unwrap_or(i64::MAX);
    let now = Utc::now();
    let (used, _) = consumed(tx, now).await?;
    for percent in [80u32, 100] {
        let at = limit.saturating_mul(i64::from(percent)) / 100;
        if used >= at && used - added < at {
            crate::triggers::events::emit(
                tx,
                crate::triggers::events::PlatformEvent {
                    event: "usage.threshold",
                    key: format!("{}:{percent}", now.format("%Y-%m")),
                    percent: Some(percent),
                    summary: format!(
                        "This month's model use reached {percent} % of the {} plan: {used} of {limit} tokens.",
                        plan.as_str()
                    ),
                    figures: vec![crate::alerts::Figure {
                        key: "tokens_used".into(),
                        label: "Tokens used this month".into(),
                        value: Some(used as f64),
                        display: format!("{used} of {limit}"),
                    }],
                    links: vec![crate::alerts::Link {
                        label: "Usage".into(),
                        href: "/settings".into(),
                    }],
                    data: json!({"plan": plan.as_str(), "used": used, "limit": limit, "percent": percent}),
                },
                now,
            )
            .await?;
        }
    }
    Ok(())
}

/// Adds several calls to today's rows in one statement: `(persona, model, usage summed
/// over its calls, number of calls)` (a board meeting records all its turns this way).
pub async fn record_many(
    tx: &mut TenantTx,
    meter: &Meter,
    lines: &[(String, String, Usage, u32)],
) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let day = Utc::now().format("%Y-%m-%d").to_string();
    let rows: Vec<serde_json::Value> = lines
        .iter()
        .map(|(persona, model, u, n)| {
            json!({"persona": persona, "model": model, "n": n, "pt": u.prompt_tokens,
                   "ct": u.completion_tokens, "cost": meter.cost_micros(model, *u)})
        })
        .collect();
    let rows = serde_json::Value::Array(rows).to_string();
    let q = cross_tenant::add_usage(tx);
    tx.execute(q.bind(day).bind(rows)).await?;
    let added: i64 = lines
        .iter()
        .map(|(_, _, u, _)| i64::from(u.prompt_tokens) + i64::from(u.completion_tokens))
        .sum();
    crossed(tx, meter, added).await
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
    /// Millionths of a US dollar, from the configured price table.
    pub cost_micros: i64,
}

/// Rows from `since` (a `YYYY-MM-DD` day) on, newest day first.
pub async fn since(tx: &mut TenantTx, since: &str) -> Result<Vec<UsageRow>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT day, persona, model, requests, prompt_tokens, completion_tokens, cost_micros FROM usage_ledger \
                 WHERE tenant_id = $1 AND day >= $2 ORDER BY day DESC, persona, model")
                .bind(since),
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bounds_roll_over_the_year() {
        let (s, n) = month_bounds(Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap());
        assert_eq!(s.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(n.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }

    #[test]
    fn prices_are_exact_integers() {
        assert_eq!(parse_usd_micros("0.90"), Some(900_000));
        assert_eq!(parse_usd_micros("3"), Some(3_000_000));
        assert_eq!(parse_usd_micros("0.0000001"), None);
        assert_eq!(parse_usd_micros("-1"), None);
        assert_eq!(parse_usd_micros("1e3"), None);
        let c = Config {
            llm_prices: vec![crate::config::LlmPrice {
                model: "m".into(),
                input_usd_per_mtok: "0.90".into(),
                output_usd_per_mtok: "2.50".into(),
            }],
            ..Config::default()
        };
        let m = Meter::new(&c);
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 2_000,
            estimated: false,
        };
        assert_eq!(m.cost_micros("m", u), 900_000 + 5_000);
        assert_eq!(m.cost_micros("other", u), 0);
    }
}
