//! The core modules' pages: the pipeline board, the books, the campaigns.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;

use super::{Redirected, Shell, Viewer, money, render};
use crate::state::AppState;

pub struct Lane {
    pub key: String,
    pub label: String,
    pub total: String,
    pub leads: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "leads.html")]
struct LeadsPage {
    shell: Shell,
    lanes: Vec<Lane>,
    summary: crate::leadtracker::summary::PipelineSummary,
    open_value: String,
}

pub async fn leads(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let stages = crate::leadtracker::stages(&mut tx).await?;
    let currency = crate::tenancy::tenants::currency(&mut tx).await?;
    let (leads, moves) = crate::leadtracker::everything(&mut tx).await?;
    tx.commit().await?;
    let summary = crate::leadtracker::summary::compute(
        &stages,
        &leads,
        &moves,
        &currency,
        &crate::leadtracker::summary::Window::default_at(Utc::now()),
    );
    let lanes = stages
        .iter()
        .map(|s| {
            let here: Vec<&crate::leadtracker::Lead> =
                leads.iter().filter(|l| l.stage == s.key).collect();
            let total: i64 = here
                .iter()
                .filter(|l| l.currency == currency)
                .map(|l| l.value_minor)
                .sum();
            Lane {
                key: s.key.clone(),
                label: s.label.clone(),
                total: money(total, &currency),
                leads: here
                    .iter()
                    .map(|l| {
                        (
                            l.name.clone(),
                            l.company.clone().unwrap_or_default(),
                            money(l.value_minor, &l.currency),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    let open_value = money(summary.open_value_minor, &currency);
    Ok(render(&LeadsPage {
        shell: Shell::new(&v, "Leads", "leads"),
        lanes,
        summary,
        open_value,
    }))
}

pub struct Row {
    pub id: String,
    pub date: String,
    pub counterparty: String,
    pub memo: String,
    pub amount: String,
    pub category: String,
    pub by: String,
}

#[derive(Template)]
#[template(path = "books.html")]
struct BooksPage {
    shell: Shell,
    rows: Vec<Row>,
    cash: String,
    burn: String,
    runway: String,
    revenue: String,
    expenses: String,
    by_category: Vec<(String, String)>,
    categories: Vec<String>,
}

pub async fn books(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let currency = crate::tenancy::tenants::currency(&mut tx).await?;
    let s =
        crate::bookkeeping::summary::load(&mut tx, &currency, 6, Utc::now().date_naive()).await?;
    let list = crate::bookkeeping::list(
        &mut tx,
        &crate::bookkeeping::Filter {
            limit: 200,
            ..Default::default()
        },
    )
    .await?;
    let categories = crate::bookkeeping::categories(&mut tx)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    tx.commit().await?;
    let rows = list
        .into_iter()
        .map(|t| Row {
            id: t.id.to_string(),
            date: t.booked_on,
            counterparty: t.counterparty.unwrap_or_default(),
            memo: t.memo.unwrap_or_default(),
            amount: money(t.amount_minor, &t.currency),
            category: t.category.unwrap_or_default(),
            by: t.categorized_by.unwrap_or_default(),
        })
        .collect();
    Ok(render(&BooksPage {
        shell: Shell::new(&v, "Books", "books"),
        rows,
        cash: money(s.cash_balance_minor, &currency),
        burn: money(s.monthly_burn_minor, &currency),
        runway: s
            .runway_months
            .map_or_else(|| "not burning cash".to_owned(), |r| format!("{r} months")),
        revenue: money(s.revenue_minor, &currency),
        expenses: money(s.expenses_minor, &currency),
        by_category: s
            .expenses_by_category
            .iter()
            .map(|c| (c.category.clone(), money(c.amount_minor, &currency)))
            .collect(),
        categories,
    }))
}

pub struct CampaignRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    pub recipients: i64,
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct CampaignsPage {
    shell: Shell,
    campaigns: Vec<CampaignRow>,
    stages: Vec<crate::leadtracker::Stage>,
}

pub async fn campaigns(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let mut campaigns = Vec::new();
    for c in crate::email::list(&mut tx, 100).await? {
        let s = crate::email::stats(&mut tx, &c.id).await?;
        campaigns.push(CampaignRow {
            id: c.id.to_string(),
            name: c.name,
            status: c.status,
            sent: s.sent,
            failed: s.failed,
            skipped: s.skipped,
            recipients: s.recipients,
        });
    }
    let stages = crate::leadtracker::stages(&mut tx).await?;
    tx.commit().await?;
    Ok(render(&CampaignsPage {
        shell: Shell::new(&v, "Campaigns", "campaigns"),
        campaigns,
        stages,
    }))
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignPage {
    shell: Shell,
    campaign: crate::email::Campaign,
    stats: crate::email::Stats,
    recipients: Vec<crate::email::Recipient>,
    reach: usize,
    skipped: usize,
}

/// One campaign: its content, who it reaches, and each recipient's status.
pub async fn campaign(
    State(state): State<AppState>,
    v: Viewer,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Redirected> {
    let Some(id) = crate::ids::CampaignId::parse(&id) else {
        return Err(crate::error::AppError::NotFound("campaign").into());
    };
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let campaign = crate::email::get(&mut tx, &id).await?;
    let stats = crate::email::stats(&mut tx, &id).await?;
    let recipients = crate::email::recipients(&mut tx, &id, None, 1000).await?;
    let (reach, skipped) = crate::email::reach(&mut tx, &campaign.audience.0).await?;
    tx.commit().await?;
    Ok(render(&CampaignPage {
        shell: Shell::new(&v, "Campaign", "campaigns"),
        campaign,
        stats,
        recipients,
        reach,
        skipped,
    }))
}
