//! The dashboard: the modules' figures with a revenue/expense chart drawn as inline SVG,
//! usage against the plan, what waits for approval, recent tasks, the latest board
//! decisions and connector health.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;

use super::{Redirected, Shell, Viewer, render};
use crate::state::AppState;
use crate::store::scoped;
use crate::tasks::{self, Status, Task};

pub struct Card {
    pub label: String,
    pub value: String,
}

/// One month's bars, already scaled to the chart's 0-100 height.
pub struct Bar {
    pub x: i64,
    pub rev_h: i64,
    pub exp_h: i64,
    pub label: String,
    pub title: String,
}

/// One pipeline stage's bar: its width (0-200) and what it holds.
pub struct StageBar {
    pub y: i64,
    pub w: i64,
    pub label: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Page {
    shell: Shell,
    cards: Vec<Card>,
    bars: Vec<Bar>,
    stages: Vec<StageBar>,
    pending: Vec<Task>,
    recent: Vec<Task>,
    meetings: Vec<crate::board::Meeting>,
    /// Provider, status (the badge's class) and the status as words.
    connectors: Vec<(String, String, String)>,
    tokens_used: String,
    tokens_limit: String,
    used_pct: i64,
    plan: String,
}

/// Which snapshot figures make the headline cards, in order.
const HEADLINE: [(&str, &str); 6] = [
    ("leadtracker", "pipeline_value"),
    ("leadtracker", "open_leads"),
    ("bookkeeping", "cash_balance"),
    ("bookkeeping", "monthly_burn"),
    ("bookkeeping", "runway_months"),
    ("email", "emails_sent_30d"),
];

pub async fn page(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let snapshots = crate::metrics::latest(&mut tx).await?;
    let mut cards = Vec::new();
    for (module, key) in HEADLINE {
        if let Some(m) = snapshots
            .iter()
            .filter(|s| s.module == module)
            .flat_map(|s| s.metrics.iter())
            .find(|m| m.key == key)
        {
            let text = crate::metrics::display(m);
            let value = text
                .split_once(": ")
                .map_or(text.clone(), |(_, v)| v.to_owned());
            let value = match &m.value {
                ocsuite_module_sdk::MetricValue::Money {
                    minor_units,
                    currency,
                } => super::money(*minor_units, currency),
                _ => value,
            };
            cards.push(Card {
                label: m.label.clone(),
                value,
            });
        }
    }
    let currency = crate::tenancy::tenants::currency(&mut tx).await?;
    let summary =
        crate::bookkeeping::summary::load(&mut tx, &currency, 6, Utc::now().date_naive()).await?;
    let max = summary
        .months
        .iter()
        .map(|m| m.revenue_minor.max(m.expenses_minor))
        .max()
        .unwrap_or(0)
        .max(1);
    let bars = summary
        .months
        .iter()
        .enumerate()
        .map(|(i, m)| Bar {
            x: i as i64 * 50 + 5,
            rev_h: m.revenue_minor.max(0) * 100 / max,
            exp_h: m.expenses_minor.max(0) * 100 / max,
            label: m.month.get(5..).unwrap_or(&m.month).to_owned(),
            title: format!(
                "{}: revenue {}, expenses {}",
                m.month,
                super::money(m.revenue_minor, &currency),
                super::money(m.expenses_minor, &currency)
            ),
        })
        .collect();
    let lt_stages = crate::leadtracker::stages(&mut tx).await?;
    let (leads, moves) = crate::leadtracker::everything(&mut tx).await?;
    let pipe = crate::leadtracker::summary::compute(
        &lt_stages,
        &leads,
        &moves,
        &currency,
        &crate::leadtracker::summary::Window::default_at(Utc::now()),
    );
    let most = pipe
        .stages
        .iter()
        .map(|s| s.count)
        .max()
        .unwrap_or(0)
        .max(1);
    let stages = pipe
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| StageBar {
            y: i as i64 * 18,
            w: st.count * 200 / most,
            label: st.label.clone(),
            text: format!("{} · {}", st.count, super::money(st.value_minor, &currency)),
        })
        .collect();
    let pending = tasks::list(&mut tx, Some(Status::Proposed), 5, None).await?;
    let recent = tasks::list(&mut tx, None, 8, None).await?;
    let meetings = crate::board::list(&mut tx, 3).await?;
    let mut connectors = Vec::new();
    for p in state.vault.providers().all() {
        let status = crate::connectors::by_provider(&mut tx, &p.name)
            .await?
            .map_or_else(
                || "not_connected".to_owned(),
                |r| super::label(r.effective_status(Utc::now())),
            );
        let label = status.replace('_', " ");
        connectors.push((p.display_name.clone(), status, label));
    }
    let (plan,): (String,) = tx
        .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
        .await?;
    let (used, held) = crate::usage::consumed(&mut tx, Utc::now()).await?;
    tx.commit().await?;
    let limits = state
        .meter
        .limits(crate::usage::Plan::parse(&plan).unwrap_or(crate::usage::Plan::Free));
    let tokens_used = used + held;
    Ok(render(&Page {
        shell: Shell::new(&v, "Dashboard", "dashboard"),
        cards,
        bars,
        stages,
        pending,
        recent,
        meetings,
        connectors,
        tokens_used: grouped(tokens_used.max(0).unsigned_abs()),
        tokens_limit: grouped(limits.monthly_tokens),
        used_pct: (tokens_used * 100
            / i64::try_from(limits.monthly_tokens.max(1)).unwrap_or(i64::MAX))
        .min(100),
        plan,
    }))
}

/// `300000` as `300,000`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(super::grouped(0), "0");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(300_000), "300,000");
        assert_eq!(super::grouped(10_000_000), "10,000,000");
    }
}
