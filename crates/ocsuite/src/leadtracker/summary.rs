//! The pipeline summary: counts and value by stage, stage-to-stage conversion, time in
//! stage, stale leads, and what was won or lost in a period.
//!
//! Definitions (the tests check them against hand-computed figures):
//! - The funnel is the pipeline without its `lost` stages, in order. A lead *reached* a
//!   funnel stage when it is, or ever was, in that stage or a later one; conversion from
//!   one funnel stage to the next is reached(next) / reached(this).
//! - Time in stage averages *completed* stays (entered, then left), in days.
//! - Won / lost in the period: leads that entered a won / lost stage in the window.
//! - Stale: leads in an open stage for longer than `stale_days`.
//! - Values are summed for leads in the summary's currency; others are only counted.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use ocsuite_module_sdk::Metric;
use serde::Serialize;

use super::{Lead, Move, Stage, StageKind};
use crate::metrics;

/// The period a summary covers.
#[derive(Clone, Debug)]
pub struct Window {
    pub as_of: DateTime<Utc>,
    pub period_days: i64,
    pub stale_days: i64,
}

impl Window {
    pub fn default_at(as_of: DateTime<Utc>) -> Self {
        Self {
            as_of,
            period_days: 30,
            stale_days: 14,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StageFigures {
    pub key: String,
    pub label: String,
    pub kind: StageKind,
    /// Leads in this stage now.
    pub count: i64,
    /// Their value, in the summary's currency.
    pub value_minor: i64,
    /// Leads that reached this stage or a later one (funnel stages only).
    pub reached: Option<i64>,
    /// Average completed stay, in days.
    pub avg_days_in_stage: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Conversion {
    pub from: String,
    pub to: String,
    /// 0-1; none when no lead reached `from`.
    pub rate: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaleLead {
    pub lead_id: String,
    pub name: String,
    pub stage: String,
    pub days_in_stage: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PipelineSummary {
    pub currency: String,
    pub as_of: DateTime<Utc>,
    pub period_start: DateTime<Utc>,
    pub total_leads: i64,
    pub open_count: i64,
    /// Value of open leads.
    pub open_value_minor: i64,
    pub stages: Vec<StageFigures>,
    pub conversions: Vec<Conversion>,
    pub won_count: i64,
    pub won_value_minor: i64,
    pub lost_count: i64,
    /// won / (won + lost) in the period, 0-1.
    pub win_rate: Option<f64>,
    pub stale_days: i64,
    pub stale_count: i64,
    /// The longest-waiting stale leads (up to 20).
    pub stale: Vec<StaleLead>,
    /// Leads valued in another currency (counted, not summed).
    pub other_currency_leads: i64,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn days(d: Duration) -> f64 {
    d.num_seconds() as f64 / 86_400.0
}

pub fn compute(
    stages: &[Stage],
    leads: &[Lead],
    moves: &[Move],
    currency: &str,
    w: &Window,
) -> PipelineSummary {
    let kind_of: HashMap<&str, StageKind> =
        stages.iter().map(|s| (s.key.as_str(), s.kind)).collect();
    let funnel: Vec<&Stage> = stages
        .iter()
        .filter(|s| s.kind != StageKind::Lost)
        .collect();
    let funnel_pos: HashMap<&str, usize> = funnel
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    let period_start = w.as_of - Duration::days(w.period_days);

    let mut by_lead: HashMap<&str, Vec<&Move>> = HashMap::new();
    for m in moves {
        by_lead.entry(m.lead_id.as_str()).or_default().push(m);
    }
    let mut reached = vec![0i64; funnel.len()];
    let mut stays: HashMap<&str, (f64, i64)> = HashMap::new();
    let mut won: HashMap<&str, i64> = HashMap::new();
    let mut lost = 0i64;
    let in_currency = |l: &Lead| {
        if l.currency == currency {
            l.value_minor
        } else {
            0
        }
    };
    for l in leads {
        let mut hist = by_lead.remove(l.id.as_str()).unwrap_or_default();
        hist.sort_by_key(|m| m.seq);
        let furthest = hist
            .iter()
            .map(|m| m.to_stage.as_str())
            .chain(std::iter::once(l.stage.as_str()))
            .filter_map(|s| funnel_pos.get(s).copied())
            .max();
        if let Some(f) = furthest {
            for r in reached.iter_mut().take(f + 1) {
                *r += 1;
            }
        }
        for pair in hist.windows(2) {
            let e = stays.entry(pair[0].to_stage.as_str()).or_default();
            e.0 += days(pair[1].changed_at - pair[0].changed_at);
            e.1 += 1;
        }
        let mut lost_here = false;
        for m in &hist {
            if m.changed_at < period_start || m.changed_at > w.as_of {
                continue;
            }
            match kind_of.get(m.to_stage.as_str()) {
                Some(StageKind::Won) => {
                    won.insert(l.id.as_str(), in_currency(l));
                }
                Some(StageKind::Lost) => lost_here = true,
                _ => {}
            }
        }
        if lost_here {
            lost += 1;
        }
    }

    let mut figures = Vec::new();
    for s in stages {
        let here: Vec<&Lead> = leads.iter().filter(|l| l.stage == s.key).collect();
        figures.push(StageFigures {
            key: s.key.clone(),
            label: s.label.clone(),
            kind: s.kind,
            count: here.len() as i64,
            value_minor: here
                .iter()
                .map(|l| in_currency(l))
                .fold(0, i64::saturating_add),
            reached: funnel_pos.get(s.key.as_str()).map(|i| reached[*i]),
            avg_days_in_stage: stays
                .get(s.key.as_str())
                .filter(|(_, n)| *n > 0)
                .map(|(t, n)| round1(t / *n as f64)),
        });
    }
    let conversions = funnel
        .windows(2)
        .enumerate()
        .map(|(i, p)| Conversion {
            from: p[0].key.clone(),
            to: p[1].key.clone(),
            rate: (reached[i] > 0)
                .then(|| (reached[i + 1] as f64 / reached[i] as f64 * 1000.0).round() / 1000.0),
        })
        .collect();
    let open: Vec<&Lead> = leads
        .iter()
        .filter(|l| kind_of.get(l.stage.as_str()) == Some(&StageKind::Open))
        .collect();
    let mut stale: Vec<StaleLead> = open
        .iter()
        .filter(|l| w.as_of - l.stage_entered_at > Duration::days(w.stale_days))
        .map(|l| StaleLead {
            lead_id: l.id.to_string(),
            name: l.name.clone(),
            stage: l.stage.clone(),
            days_in_stage: (w.as_of - l.stage_entered_at).num_days(),
        })
        .collect();
    stale.sort_by_key(|s| std::cmp::Reverse(s.days_in_stage));
    let stale_count = stale.len() as i64;
    stale.truncate(20);
    let won_count = won.len() as i64;
    PipelineSummary {
        currency: currency.to_owned(),
        as_of: w.as_of,
        period_start,
        total_leads: leads.len() as i64,
        open_count: open.len() as i64,
        open_value_minor: open
            .iter()
            .map(|l| in_currency(l))
            .fold(0, i64::saturating_add),
        stages: figures,
        conversions,
        won_count,
        won_value_minor: won.values().copied().fold(0, i64::saturating_add),
        lost_count: lost,
        win_rate: (won_count + lost > 0)
            .then(|| (won_count as f64 / (won_count + lost) as f64 * 1000.0).round() / 1000.0),
        stale_days: w.stale_days,
        stale_count,
        stale,
        other_currency_leads: leads.iter().filter(|l| l.currency != currency).count() as i64,
    }
}

/// The figures the dashboard and the board see.
pub fn metrics(s: &PipelineSummary) -> Vec<Metric> {
    let mut m = vec![
        metrics::count("open_leads", "Open leads", s.open_count, "leads"),
        metrics::money(
            "pipeline_value",
            "Open pipeline value",
            s.open_value_minor,
            &s.currency,
        ),
        metrics::count(
            "won_last_30d",
            "Deals won in the last 30 days",
            s.won_count,
            "deals",
        ),
        metrics::money(
            "won_value_last_30d",
            "Value won in the last 30 days",
            s.won_value_minor,
            &s.currency,
        ),
        metrics::count(
            "lost_last_30d",
            "Deals lost in the last 30 days",
            s.lost_count,
            "deals",
        ),
        metrics::count(
            "stale_leads",
            "Leads stuck over 14 days",
            s.stale_count,
            "leads",
        ),
    ];
    if let Some(r) = s.win_rate {
        m.push(metrics::ratio(
            "win_rate",
            "Win rate (30 days)",
            round1(r * 100.0),
            "%",
        ));
    }
    for c in &s.conversions {
        if let Some(r) = c.rate {
            m.push(metrics::ratio(
                &format!("conversion_{}_{}", c.from, c.to),
                &format!("Conversion {} → {}", c.from, c.to),
                round1(r * 100.0),
                "%",
            ));
        }
    }
    m
}
