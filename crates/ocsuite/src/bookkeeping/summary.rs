//! The financial summary: revenue, expenses by category, net, monthly burn, runway and
//! month-over-month change, in one currency.
//!
//! Definitions (the tests check them against hand-computed figures):
//! - A transaction in an `income` category is revenue (a negative one, a refund given,
//!   reduces it); in an `expense` category it is an expense (a positive one, a refund
//!   received, reduces it); `transfer` is neither. Uncategorised money in is revenue and
//!   money out an expense, reported as "Uncategorized".
//! - The period is the `months` calendar months ending with the month of `as_of`
//!   (that month up to `as_of`).
//! - Burn is the average monthly (expenses − revenue) over the three complete months
//!   before `as_of`'s month, rounded to the minor unit; zero when the company earns more
//!   than it spends. Runway is cash ÷ burn in months, to one decimal; none when not
//!   burning.
//! - Cash is every account's opening balance plus all its transactions up to `as_of`.
//! - Month over month compares the last complete month with the one before.

use std::collections::BTreeMap;

use chrono::{Datelike, Months, NaiveDate};
use ocsuite_module_sdk::Metric;
use serde::Serialize;

use super::{CategoryKind, find_category};
use crate::error::Result;
use crate::metrics;
use crate::store::{TenantTx, scoped};

pub const BURN_MONTHS: i64 = 3;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryAmount {
    pub category: String,
    pub amount_minor: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MonthFigures {
    /// `YYYY-MM`.
    pub month: String,
    pub revenue_minor: i64,
    pub expenses_minor: i64,
    pub net_minor: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FinancialSummary {
    pub currency: String,
    pub as_of: NaiveDate,
    pub period_start: NaiveDate,
    pub revenue_minor: i64,
    pub expenses_minor: i64,
    pub net_minor: i64,
    /// Largest first.
    pub expenses_by_category: Vec<CategoryAmount>,
    pub revenue_by_category: Vec<CategoryAmount>,
    pub months: Vec<MonthFigures>,
    pub cash_balance_minor: i64,
    pub monthly_burn_minor: i64,
    pub runway_months: Option<f64>,
    /// Last complete month against the one before, in percent.
    pub revenue_change_pct: Option<f64>,
    pub expenses_change_pct: Option<f64>,
    /// Transactions in the period that are not categorised.
    pub uncategorized_count: i64,
    /// Transactions in other currencies (left out of every figure).
    pub other_currency_count: i64,
}

/// One transaction as the summary reads it.
pub struct Line {
    pub booked_on: NaiveDate,
    pub amount_minor: i64,
    pub category: Option<String>,
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn month_key(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

fn pct(now: i64, before: i64) -> Option<f64> {
    (before != 0)
        .then(|| (now.saturating_sub(before) as f64 / before.abs() as f64 * 1000.0).round() / 10.0)
}

/// Revenue and expense effect of one line: `(revenue, expense, category label)`.
fn classify(l: &Line, cats: &[super::Category]) -> Option<(i64, i64, String)> {
    match l.category.as_deref().and_then(|c| find_category(cats, c)) {
        Some(c) if c.kind == CategoryKind::Transfer => None,
        Some(c) if c.kind == CategoryKind::Income => Some((l.amount_minor, 0, c.name.clone())),
        Some(c) => Some((0, -l.amount_minor, c.name.clone())),
        None if l.amount_minor > 0 => Some((l.amount_minor, 0, "Uncategorized".into())),
        None => Some((0, -l.amount_minor, "Uncategorized".into())),
    }
}

pub fn compute(
    currency: &str,
    months: u32,
    as_of: NaiveDate,
    opening_balance_minor: i64,
    lines: &[Line],
    cats: &[super::Category],
    other_currency_count: i64,
) -> FinancialSummary {
    let this_month = month_start(as_of);
    let period_start = this_month - Months::new(months.saturating_sub(1));
    let burn_start = this_month - Months::new(BURN_MONTHS as u32);
    let last_month = this_month - Months::new(1);
    let before_last = this_month - Months::new(2);

    let mut by_month: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut m = period_start;
    while m <= this_month {
        by_month.insert(month_key(m), (0, 0));
        m = m + Months::new(1);
    }
    let mut expenses_by: BTreeMap<String, i64> = BTreeMap::new();
    let mut revenue_by: BTreeMap<String, i64> = BTreeMap::new();
    let (mut revenue, mut expenses, mut uncategorized) = (0i64, 0i64, 0i64);
    let (mut burn_rev, mut burn_exp) = (0i64, 0i64);
    let mut cash = opening_balance_minor;
    let mut monthly: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.booked_on <= as_of) {
        cash = cash.saturating_add(l.amount_minor);
        let Some((rev, exp, label)) = classify(l, cats) else {
            continue;
        };
        let ms = month_start(l.booked_on);
        let e = monthly.entry(ms).or_default();
        e.0 = e.0.saturating_add(rev);
        e.1 = e.1.saturating_add(exp);
        if ms >= burn_start && ms < this_month {
            burn_rev = burn_rev.saturating_add(rev);
            burn_exp = burn_exp.saturating_add(exp);
        }
        if l.booked_on >= period_start {
            revenue = revenue.saturating_add(rev);
            expenses = expenses.saturating_add(exp);
            if l.category.is_none() {
                uncategorized += 1;
            }
            if let Some(b) = by_month.get_mut(&month_key(l.booked_on)) {
                b.0 = b.0.saturating_add(rev);
                b.1 = b.1.saturating_add(exp);
            }
            if exp != 0 {
                let v = expenses_by.entry(label.clone()).or_default();
                *v = v.saturating_add(exp);
            }
            if rev != 0 {
                let v = revenue_by.entry(label).or_default();
                *v = v.saturating_add(rev);
            }
        }
    }
    let ranked = |m: BTreeMap<String, i64>| {
        let mut v: Vec<CategoryAmount> = m
            .into_iter()
            .map(|(category, amount_minor)| CategoryAmount {
                category,
                amount_minor,
            })
            .collect();
        v.sort_by(|a, b| {
            b.amount_minor
                .cmp(&a.amount_minor)
                .then(a.category.cmp(&b.category))
        });
        v
    };
    // Rounded half away from zero, in integers.
    let net_out = burn_exp.saturating_sub(burn_rev);
    let burn = if net_out > 0 {
        net_out.saturating_add(BURN_MONTHS / 2) / BURN_MONTHS
    } else {
        0
    };
    let runway = (burn > 0).then(|| {
        if cash <= 0 {
            0.0
        } else {
            ((cash as f64 / burn as f64) * 10.0).round() / 10.0
        }
    });
    let last = monthly.get(&last_month).copied().unwrap_or_default();
    let before = monthly.get(&before_last).copied().unwrap_or_default();
    FinancialSummary {
        currency: currency.to_owned(),
        as_of,
        period_start,
        revenue_minor: revenue,
        expenses_minor: expenses,
        net_minor: revenue.saturating_sub(expenses),
        expenses_by_category: ranked(expenses_by),
        revenue_by_category: ranked(revenue_by),
        months: by_month
            .into_iter()
            .map(|(month, (r, e))| MonthFigures {
                month,
                revenue_minor: r,
                expenses_minor: e,
                net_minor: r.saturating_sub(e),
            })
            .collect(),
        cash_balance_minor: cash,
        monthly_burn_minor: burn,
        runway_months: runway,
        revenue_change_pct: pct(last.0, before.0),
        expenses_change_pct: pct(last.1, before.1),
        uncategorized_count: uncategorized,
        other_currency_count,
    }
}

/// Loads the tenant's accounts and transactions in `currency` and computes the summary.
pub async fn load(
    tx: &mut TenantTx,
    currency: &str,
    months: u32,
    as_of: NaiveDate,
) -> Result<FinancialSummary> {
    let (opening,): (i64,) = tx
        .fetch_one(
            scoped("SELECT CAST(COALESCE(SUM(opening_balance_minor), 0) AS BIGINT) FROM accounts WHERE tenant_id = $1 AND currency = $2")
                .bind(currency),
        )
        .await?;
    let rows: Vec<(String, i64, Option<String>)> = tx
        .fetch_all(
            scoped("SELECT booked_on, amount_minor, category FROM transactions WHERE tenant_id = $1 AND currency = $2 AND booked_on <= $3")
                .bind(currency)
                .bind(as_of.to_string()),
        )
        .await?;
    let (others,): (i64,) = tx
        .fetch_one(
            scoped("SELECT COUNT(*) FROM transactions WHERE tenant_id = $1 AND currency <> $2")
                .bind(currency),
        )
        .await?;
    let lines: Vec<Line> = rows
        .into_iter()
        .filter_map(|(d, amount_minor, category)| {
            Some(Line {
                booked_on: d.parse().ok()?,
                amount_minor,
                category,
            })
        })
        .collect();
    let cats = super::categories(tx).await?;
    Ok(compute(
        currency, months, as_of, opening, &lines, &cats, others,
    ))
}

/// The figures the dashboard and the board see.
pub fn metrics(s: &FinancialSummary) -> Vec<Metric> {
    let c = &s.currency;
    let last = s.months.iter().rev().nth(1);
    let mut m = vec![
        metrics::money("cash_balance", "Cash balance", s.cash_balance_minor, c),
        metrics::money(
            "monthly_burn",
            "Monthly burn (3-month average)",
            s.monthly_burn_minor,
            c,
        ),
    ];
    match s.runway_months {
        Some(r) => m.push(metrics::ratio("runway_months", "Runway", r, "months")),
        None => m.push(metrics::text("runway_months", "Runway", "not burning cash")),
    }
    if let Some(l) = last {
        m.push(metrics::money(
            "revenue_last_month",
            &format!("Revenue {}", l.month),
            l.revenue_minor,
            c,
        ));
        m.push(metrics::money(
            "expenses_last_month",
            &format!("Expenses {}", l.month),
            l.expenses_minor,
            c,
        ));
    }
    m.push(metrics::money(
        "revenue_period",
        &format!("Revenue since {}", s.period_start),
        s.revenue_minor,
        c,
    ));
    m.push(metrics::money(
        "expenses_period",
        &format!("Expenses since {}", s.period_start),
        s.expenses_minor,
        c,
    ));
    if let Some(p) = s.revenue_change_pct {
        m.push(metrics::ratio(
            "revenue_change_pct",
            "Revenue month over month",
            p,
            "%",
        ));
    }
    // Net burn last month against the month before, where the month before burned.
    let burn = |m: &MonthFigures| m.expenses_minor.saturating_sub(m.revenue_minor);
    if let (Some(l), Some(p)) = (last, s.months.iter().rev().nth(2))
        && burn(p) > 0
    {
        let change = (burn(l) - burn(p)) as f64 / burn(p) as f64 * 100.0;
        m.push(metrics::ratio(
            "burn_mom_change",
            "Burn month over month",
            (change * 10.0).round() / 10.0,
            "%",
        ));
    }
    if let Some(top) = s.expenses_by_category.first() {
        m.push(metrics::text(
            "top_expense",
            "Largest expense category",
            &format!(
                "{} ({} {c})",
                top.category,
                crate::money::format(top.amount_minor, c)
            ),
        ));
    }
    m.push(metrics::count(
        "uncategorized",
        "Uncategorised transactions",
        s.uncategorized_count,
        "transactions",
    ));
    m
}
