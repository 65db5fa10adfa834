//! Demo data: a believable small company a new tenant can load with one call to try the
//! product (pipeline, six months of books, a draft campaign), and remove again.
//!
//! Everything it creates is marked `origin = 'demo'`, so removing it never touches the
//! tenant's own data. Dates are relative to today, so the figures look current.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{Datelike, Duration, Months, Utc};
use serde::Serialize;
use serde_json::json;

use crate::audit;
use crate::bookkeeping::{self, NewTransaction};
use crate::error::{AppError, ErrorBody, Result};
use crate::leadtracker::{self, LeadInput};
use crate::state::AppState;
use crate::store::{TenantTx, scoped};
use crate::tenancy::extract::Admin;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(load, remove))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Loaded {
    pub leads: usize,
    pub transactions: usize,
    pub campaigns: usize,
}

/// (name, company, email, source, value, path of stages, days ago it started)
type DemoLead = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    i64,
);
const LEADS: &[DemoLead] = &[
    (
        "Maya Patel",
        "Brightline Dental",
        "maya@brightline.example",
        "referral",
        "4800",
        &["new", "contacted", "qualified", "proposal", "won"],
        75,
    ),
    (
        "Tom Becker",
        "Becker Logistics",
        "tom@beckerlog.example",
        "website",
        "12000",
        &["new", "contacted", "qualified", "proposal"],
        40,
    ),
    (
        "Ana Souza",
        "Verde Studio",
        "ana@verde.example",
        "linkedin",
        "3500",
        &["new", "contacted", "qualified"],
        30,
    ),
    (
        "Liam O'Neill",
        "Harbor Cafe",
        "liam@harborcafe.example",
        "event",
        "1800",
        &["new", "contacted", "lost"],
        50,
    ),
    (
        "Priya Shah",
        "Northwind Legal",
        "priya@northwind.example",
        "referral",
        "9500",
        &["new", "contacted", "qualified", "proposal", "won"],
        60,
    ),
    (
        "Jonas Meyer",
        "Meyer & Sons",
        "jonas@meyersons.example",
        "website",
        "2200",
        &["new", "contacted"],
        25,
    ),
    (
        "Chloe Martin",
        "Atelier Martin",
        "chloe@ateliermartin.example",
        "cold email",
        "6000",
        &["new"],
        20,
    ),
    (
        "Kenji Ito",
        "Ito Robotics",
        "kenji@itorobotics.example",
        "linkedin",
        "15000",
        &["new", "contacted", "qualified", "proposal"],
        18,
    ),
    (
        "Sara Lind",
        "Lind Architects",
        "sara@lindarch.example",
        "event",
        "7200",
        &["new", "contacted", "qualified", "lost"],
        45,
    ),
    (
        "David Cohen",
        "Cohen Fitness",
        "david@cohenfit.example",
        "website",
        "2600",
        &["new"],
        3,
    ),
];

async fn already_loaded(tx: &mut TenantTx) -> Result<bool> {
    let (n,): (i64,) = tx
        .fetch_one(scoped(
            "SELECT (SELECT COUNT(*) FROM leads WHERE tenant_id = $1 AND origin = 'demo') + \
                 (SELECT COUNT(*) FROM accounts WHERE tenant_id = $1 AND origin = 'demo')",
        ))
        .await?;
    Ok(n > 0)
}

/// Loads the demo company's data into the caller's tenant (once).
#[utoipa::path(post, path = "/demo-data", tag = "modules",
    responses((status = 201, body = Loaded), (status = 409, body = ErrorBody, description = "already loaded")))]
pub async fn load(State(state): State<AppState>, ctx: Admin) -> Result<(StatusCode, Json<Loaded>)> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if already_loaded(&mut tx).await? {
        return Err(AppError::Conflict(
            "the demo data is already loaded; DELETE /api/v1/demo-data removes it".into(),
        ));
    }
    let by = format!("{}:{}", ctx.actor.kind(), ctx.actor.id());
    let now = Utc::now();
    let stages = leadtracker::stages(&mut tx).await?;
    let currency = crate::tenancy::tenants::currency(&mut tx).await?;
    let mut leads = 0;
    for (name, company, email, source, value, path, days) in LEADS {
        // The demo follows the default pipeline; a tenant that changed its stages gets
        // each lead at the furthest of its stages that still exists.
        let steps: Vec<&str> = path
            .iter()
            .copied()
            .filter(|s| stages.iter().any(|st| st.key == *s))
            .collect();
        let Some(first) = steps.first() else { continue };
        let input = LeadInput {
            name: Some((*name).into()),
            company: Some((*company).into()),
            email: Some((*email).into()),
            source: Some((*source).into()),
            value: Some((*value).into()),
            stage: Some((*first).into()),
            ..LeadInput::default()
        };
        let checked = input.check(None, &stages, &currency)?;
        let start = now - Duration::days(*days);
        let id = leadtracker::insert(&mut tx, &checked, "demo", &by, start).await?;
        let gap = Duration::days(*days) / (steps.len() as i32 + 1);
        for (i, s) in steps.iter().enumerate().skip(1) {
            leadtracker::change_stage(&mut tx, &id, s, Some(start + gap * i as i32), &by, None)
                .await?;
        }
        leads += 1;
    }

    let opening = crate::money::parse("42000", &currency).map_err(AppError::internal)?;
    let acc_id = bookkeeping::create_account(
        &mut tx,
        "Business checking (demo)",
        "bank",
        &currency,
        opening,
        "demo",
    )
    .await?;
    let account = bookkeeping::account(&mut tx, &acc_id).await?;
    let monthly: &[(&str, &str, &str, u32)] = &[
        ("Client payments", "Sales", "14500", 5),
        ("Acme Payroll", "Payroll", "-11200", 28),
        ("WeWork", "Rent", "-1800", 1),
        ("Figma", "Software", "-145", 3),
        ("Google Workspace", "Software", "-72", 4),
        ("Google Ads", "Marketing", "-950", 12),
        ("Bank", "Bank fees", "-25", 30),
        ("Freelance designer", "Contractors", "-2400", 18),
    ];
    let mut transactions = 0;
    let this_month = now.date_naive().with_day0(0).unwrap_or(now.date_naive());
    for back in 1..=6u32 {
        let month = this_month - Months::new(back);
        for (i, (cp, cat, amount, day)) in monthly.iter().enumerate() {
            // Some variation month to month, still exact.
            let base = crate::money::parse(amount, &currency).map_err(AppError::internal)?;
            let wobble = base / 100 * ((back as i64 * 7 + i as i64 * 3) % 11 - 5);
            let date = month.with_day((*day).min(28)).unwrap_or(month);
            let mut t = NewTransaction::new(date, base + wobble, Some(cp), Some("demo"))?;
            t.category = Some((*cat).into());
            t.categorized_by = Some("manual");
            bookkeeping::insert_one(&mut tx, &account, &t, "demo").await?;
            transactions += 1;
        }
    }
    for (field, pattern, category) in [
        ("counterparty", "google ads", "Marketing"),
        ("counterparty", "figma", "Software"),
        ("counterparty", "payroll", "Payroll"),
    ] {
        bookkeeping::add_rule(&mut tx, field, pattern, category, None).await?;
    }

    let campaign = crate::email::CampaignInput {
        name: Some("Spring check-in (demo)".into()),
        subject: Some("Quick question, {{ first_name | there }}".into()),
        body: Some("Hi {{ first_name | there }},\n\nWe have been helping companies like {{ company | yours }} save hours every week. Would a 20-minute call next week be useful?\n\nBest regards".into()),
        channel: Some("smtp".into()),
        audience: Some(crate::email::Audience { stages: Some(vec!["qualified".into(), "proposal".into()].into_iter().filter(|s: &String| stages.iter().any(|st| &st.key == s)).collect()), recipients: None }),
        rate_per_minute: Some(30),
    }
    .check(None, &stages)?;
    crate::email::insert(&mut tx, &campaign, "demo", &by).await?;

    leadtracker::refresh_metrics(&mut tx).await?;
    bookkeeping::refresh_metrics(&mut tx).await?;
    crate::email::refresh_metrics(&mut tx).await?;
    audit::record(
        &mut tx,
        &ctx,
        "demo.load",
        "tenant",
        ctx.tenant_id.as_str(),
        json!({"leads": leads, "transactions": transactions}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(Loaded {
            leads,
            transactions,
            campaigns: 1,
        }),
    ))
}

/// Removes everything the demo loaded (the tenant's own data stays).
#[utoipa::path(delete, path = "/demo-data", tag = "modules", responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(State(state): State<AppState>, ctx: Admin) -> Result<StatusCode> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if !already_loaded(&mut tx).await? {
        return Err(AppError::NotFound("demo data"));
    }
    for q in [
        scoped(
            "DELETE FROM lead_stage_history WHERE tenant_id = $1 AND lead_id IN (SELECT id FROM leads WHERE tenant_id = $1 AND origin = 'demo')",
        ),
        scoped("DELETE FROM leads WHERE tenant_id = $1 AND origin = 'demo'"),
        scoped("DELETE FROM transactions WHERE tenant_id = $1 AND origin = 'demo'"),
        scoped("DELETE FROM accounts WHERE tenant_id = $1 AND origin = 'demo'"),
        scoped(
            "DELETE FROM email_recipients WHERE tenant_id = $1 AND campaign_id IN (SELECT id FROM email_campaigns WHERE tenant_id = $1 AND origin = 'demo')",
        ),
        scoped(
            "DELETE FROM email_campaigns WHERE tenant_id = $1 AND origin = 'demo' AND status NOT IN ('scheduled', 'sending')",
        ),
    ] {
        tx.execute(q).await?;
    }
    leadtracker::refresh_metrics(&mut tx).await?;
    bookkeeping::refresh_metrics(&mut tx).await?;
    crate::email::refresh_metrics(&mut tx).await?;
    audit::record(
        &mut tx,
        &ctx,
        "demo.remove",
        "tenant",
        ctx.tenant_id.as_str(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
