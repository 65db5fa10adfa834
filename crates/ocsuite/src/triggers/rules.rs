//! Metric rules: a condition over the modules' figures.
//!
//! `runway_months < 6`, `burn_mom_change > 20%`, `stale_leads >= 5`, or
//! `monthly_burn deviates 2` (more than two standard deviations from its mean over the
//! previous 14 days of `metric_history`; `window` sets the days). A figure that is not a
//! number now (runway while not burning cash) makes the rule false.

use std::fmt;

use chrono::{DateTime, Utc};
use ocsuite_module_sdk::{Metric, MetricSnapshot, MetricValue};

use crate::alerts::Figure;
use crate::error::{AppError, Result};
use crate::store::{TenantTx, scoped};

/// The figures a rule can name: key, module, what it is.
pub const KNOWN: [(&str, &str, &str); 20] = [
    (
        "cash_balance",
        "bookkeeping",
        "cash balance (currency units)",
    ),
    (
        "monthly_burn",
        "bookkeeping",
        "monthly burn, 3-month average",
    ),
    ("runway_months", "bookkeeping", "runway in months"),
    (
        "burn_mom_change",
        "bookkeeping",
        "burn change month over month, %",
    ),
    ("revenue_last_month", "bookkeeping", "revenue last month"),
    ("expenses_last_month", "bookkeeping", "expenses last month"),
    (
        "revenue_change_pct",
        "bookkeeping",
        "revenue change month over month, %",
    ),
    ("uncategorized", "bookkeeping", "uncategorised transactions"),
    ("open_leads", "leadtracker", "open leads"),
    ("pipeline_value", "leadtracker", "open pipeline value"),
    ("won_last_30d", "leadtracker", "deals won in 30 days"),
    ("won_value_last_30d", "leadtracker", "value won in 30 days"),
    ("lost_last_30d", "leadtracker", "deals lost in 30 days"),
    ("stale_leads", "leadtracker", "leads stuck over 14 days"),
    ("win_rate", "leadtracker", "win rate, %"),
    ("campaigns_sent_30d", "email", "campaigns sent in 30 days"),
    ("emails_sent_30d", "email", "emails sent in 30 days"),
    ("emails_failed_30d", "email", "emails failed in 30 days"),
    ("unsubscribes_30d", "email", "unsubscribes in 30 days"),
    ("open_alerts", "alerts", "open alerts"),
];

const DEFAULT_WINDOW: u32 = 14;
/// Fewest earlier days a deviation needs before it can judge.
const MIN_HISTORY: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Deviates,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Deviates => "deviates",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "<" => Self::Lt,
            "<=" => Self::Le,
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "deviates" => Self::Deviates,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub metric: String,
    pub op: Op,
    /// The threshold, or k (standard deviations) for `deviates`.
    pub value: f64,
    /// Days of history for `deviates`.
    pub window: Option<u32>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::Deviates => write!(
                f,
                "{} deviates {} sd over {} days",
                self.metric,
                self.value,
                self.window.unwrap_or(DEFAULT_WINDOW)
            ),
            op => write!(f, "{} {} {}", self.metric, op.as_str(), self.value),
        }
    }
}

fn field_error(code: &'static str, field: &str, message: String) -> AppError {
    AppError::unprocessable(code, format!("condition.{field}"), message)
}

impl Rule {
    pub fn new(metric: &str, op: &str, value: f64, window: Option<u32>) -> Result<Self> {
        let metric = metric.trim();
        if !KNOWN.iter().any(|(k, _, _)| *k == metric) {
            let known: Vec<&str> = KNOWN.iter().map(|(k, _, _)| *k).collect();
            return Err(field_error(
                "unknown_metric",
                "metric",
                format!(
                    "no metric `{}`; the known metrics are {}",
                    metric.chars().take(64).collect::<String>(),
                    known.join(", ")
                ),
            ));
        }
        let op = Op::parse(op.trim()).ok_or_else(|| {
            field_error(
                "invalid_rule",
                "op",
                format!(
                    "unknown operator `{}`; use <, <=, >, >= or deviates",
                    op.chars().take(16).collect::<String>()
                ),
            )
        })?;
        if !value.is_finite() || (op == Op::Deviates && value <= 0.0) {
            return Err(field_error(
                "invalid_rule",
                "value",
                "value must be a finite number (for `deviates`, a positive number of standard deviations)".into(),
            ));
        }
        if let Some(w) = window
            && !(MIN_HISTORY as u32..=365).contains(&w)
        {
            return Err(field_error(
                "invalid_rule",
                "window",
                format!("window must be {MIN_HISTORY} to 365 days"),
            ));
        }
        Ok(Self {
            metric: metric.to_owned(),
            op,
            value,
            window: (op == Op::Deviates).then(|| window.unwrap_or(DEFAULT_WINDOW)),
        })
    }

    /// A rule from the API's fields: either `rule` text or `metric`, `op`, `value`.
    pub fn from_parts(
        rule: Option<&str>,
        metric: Option<&str>,
        op: Option<&str>,
        value: Option<f64>,
        window: Option<u32>,
    ) -> Result<Self> {
        match (rule, metric, op, value) {
            (Some(text), None, None, None) => Self::parse(text, window),
            (None, Some(m), Some(op), Some(v)) => Self::new(m, op, v, window),
            _ => Err(field_error(
                "invalid_rule",
                "rule",
                "give either `rule` (e.g. `runway_months < 6`) or `metric`, `op` and `value`"
                    .into(),
            )),
        }
    }

    /// `runway_months < 6`, `burn_mom_change > 20%`, `monthly_burn deviates 2`,
    /// `monthly_burn deviates 2 sd over 30 days`.
    pub fn parse(text: &str, window: Option<u32>) -> Result<Self> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let bad = || {
            field_error(
                "invalid_rule",
                "rule",
                format!(
                    "`{}` is not a rule; write `<metric> <op> <number>` such as `runway_months < 6`, or `<metric> deviates <k>`",
                    text.chars().take(80).collect::<String>()
                ),
            )
        };
        let [metric, op, value, rest @ ..] = words.as_slice() else {
            return Err(bad());
        };
        let value: f64 = value
            .trim_end_matches('%')
            .trim_end_matches("sd")
            .parse()
            .map_err(|_| bad())?;
        let window = match rest {
            [] | ["sd"] => window,
            ["sd", "over", n, "days"] | ["over", n, "days"] => Some(n.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        Self::new(metric, op, value, window)
    }
}

/// A metric's value as a number (money in currency units); `None` for text.
pub fn number(m: &Metric) -> Option<f64> {
    match &m.value {
        MetricValue::Count { value } => Some(*value as f64),
        MetricValue::Money { minor_units, .. } => Some(*minor_units as f64 / 100.0),
        MetricValue::Ratio { value } => Some(*value),
        MetricValue::Text { .. } => None,
    }
}

/// Finds `key` in the snapshots.
pub fn find<'a>(snapshots: &'a [MetricSnapshot], key: &str) -> Option<(&'a str, &'a Metric)> {
    snapshots.iter().find_map(|s| {
        s.metrics
            .iter()
            .find(|m| m.key == key)
            .map(|m| (s.module.as_str(), m))
    })
}

/// Whether the rule holds now, and the figure it judged (with the mean and spread for a
/// deviation). `open_alerts` comes from the caller, the others from the snapshots and,
/// for deviations, from the earlier days of `metric_history`.
pub async fn evaluate(
    tx: &mut TenantTx,
    rule: &Rule,
    snapshots: &[MetricSnapshot],
    open_alerts: i64,
    now: DateTime<Utc>,
) -> Result<(bool, Option<Figure>)> {
    let (module, value, label, display) = if rule.metric == "open_alerts" {
        (
            "alerts",
            Some(open_alerts as f64),
            "Open alerts".to_owned(),
            open_alerts.to_string(),
        )
    } else {
        match find(snapshots, &rule.metric) {
            Some((module, m)) => (
                module,
                number(m),
                m.label.clone(),
                crate::metrics::display(m)
                    .split_once(": ")
                    .map(|(_, v)| v.to_owned())
                    .unwrap_or_default(),
            ),
            None => return Ok((false, None)),
        }
    };
    let figure = |display: String| Figure {
        key: rule.metric.clone(),
        label: label.clone(),
        value,
        display,
    };
    let Some(v) = value else {
        return Ok((false, Some(figure(display))));
    };
    let holds = match rule.op {
        Op::Lt => v < rule.value,
        Op::Le => v <= rule.value,
        Op::Gt => v > rule.value,
        Op::Ge => v >= rule.value,
        Op::Deviates => {
            let past = history(
                tx,
                module,
                &rule.metric,
                rule.window.unwrap_or(DEFAULT_WINDOW),
                now,
            )
            .await?;
            if past.len() < MIN_HISTORY {
                return Ok((false, Some(figure(display))));
            }
            let n = past.len() as f64;
            let mean = past.iter().sum::<f64>() / n;
            let sd = (past.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            let moved = (v - mean).abs();
            let shown = format!(
                "{display} (mean of the previous {} days {mean:.2}, standard deviation {sd:.2})",
                past.len()
            );
            let holds = if sd > 0.0 {
                moved > rule.value * sd
            } else {
                moved > f64::EPSILON * mean.abs().max(1.0)
            };
            return Ok((holds, Some(figure(shown))));
        }
    };
    Ok((holds, Some(figure(display))))
}

/// The metric's value on each of the `window` days before today (oldest days dropped).
async fn history(
    tx: &mut TenantTx,
    module: &str,
    key: &str,
    window: u32,
    now: DateTime<Utc>,
) -> Result<Vec<f64>> {
    let today = now.format("%Y-%m-%d").to_string();
    let rows: Vec<(String,)> = tx
        .fetch_all(
            scoped("SELECT metrics FROM metric_history WHERE tenant_id = $1 AND module = $2 AND day < $3 ORDER BY day DESC LIMIT $4")
                .bind(module)
                .bind(today)
                .bind(i64::from(window)),
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|(json,)| serde_json::from_str::<Vec<Metric>>(json).ok())
        .filter_map(|ms| ms.iter().find(|m| m.key == key).and_then(number))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_text() {
        let r = Rule::parse("runway_months < 6", None).unwrap();
        assert_eq!(
            (r.metric.as_str(), r.op, r.value),
            ("runway_months", Op::Lt, 6.0)
        );
        let r = Rule::parse("burn_mom_change > 20%", None).unwrap();
        assert_eq!((r.op, r.value), (Op::Gt, 20.0));
        let r = Rule::parse("monthly_burn deviates 2 sd over 30 days", None).unwrap();
        assert_eq!((r.op, r.value, r.window), (Op::Deviates, 2.0, Some(30)));
        assert!(Rule::parse("nope < 1", None).is_err());
        assert!(Rule::parse("runway_months ~ 1", None).is_err());
        assert!(Rule::parse("runway_months <", None).is_err());
    }
}
