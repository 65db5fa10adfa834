//! The digest: the week in one message from the CEO — the figures that moved, the
//! alerts still open, the decisions taken and how their tasks ended.
//!
//! A trigger with the `digest` action sends it (every company starts with "Weekly
//! digest", Mondays 08:00). The facts are gathered and written up once per run (by the
//! CEO persona; without a model, as a plain deterministic summary); each member then
//! gets it by their own preferences for `digests` (in-app, email), and the webhooks
//! that take `digests` get it once.

pub mod routes;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{AppError, Result};
use crate::ids::{DigestId, TenantId};
use crate::llm::{ChatMessage, ChatRequest, Role};
use crate::notifications::{self, Broadcast};
use crate::realtime::Event;
use crate::state::AppState;
use crate::store::{TenantTx, scoped};

/// Answer length of the CEO's write-up.
const MAX_TOKENS: u32 = 700;

/// What a digest reports, gathered from the company's own data.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Facts {
    /// `Runway: 8.1 → 5.4 months`.
    pub moved: Vec<String>,
    /// `[warning] Runway under six months`.
    pub open_alerts: Vec<String>,
    pub open_alert_count: i64,
    /// `email.send_email: approved, succeeded`.
    pub decisions: Vec<String>,
}

/// A composed digest, before it is stored and sent.
#[derive(Serialize, Deserialize)]
pub struct Composed {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub body: String,
    pub facts: Facts,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Digest {
    pub id: DigestId,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub body: String,
    pub facts: Facts,
    pub created_at: DateTime<Utc>,
}

/// Gathers the facts since the last digest (a week at most) and has the CEO write them up.
pub async fn compose(state: &AppState, tenant: &TenantId, now: DateTime<Utc>) -> Result<Composed> {
    let mut tx = state.store.tenant_read(tenant).await?;
    let last: Option<(DateTime<Utc>,)> = tx
        .fetch_optional(scoped("SELECT MAX(period_end) FROM digests WHERE tenant_id = $1 HAVING MAX(period_end) IS NOT NULL"))
        .await?;
    let start = last
        .map(|(t,)| t)
        .filter(|t| *t > now - Duration::days(7) && *t < now)
        .unwrap_or(now - Duration::days(7));
    let facts = gather(&mut tx, start, now).await?;
    let company = crate::tenancy::tenants::name(&mut tx).await?;
    let ceo = crate::agents::speaker(&mut tx, "ceo").await?;
    tx.commit().await?;
    let plain = plain_text(&company, start, now, &facts);
    let body = match ceo {
        Some(ceo) if state.llm.name() != "offline" => {
            write_up(state, tenant, &ceo, &company, &plain)
                .await
                .unwrap_or(plain)
        }
        _ => plain,
    };
    Ok(Composed {
        period_start: start,
        period_end: now,
        body,
        facts,
    })
}

async fn gather(tx: &mut TenantTx, start: DateTime<Utc>, now: DateTime<Utc>) -> Result<Facts> {
    let mut facts = Facts::default();
    let snapshots = crate::metrics::latest(tx).await?;
    for s in &snapshots {
        let then: Option<(String,)> = tx
            .fetch_optional(
                scoped("SELECT metrics FROM metric_history WHERE tenant_id = $1 AND module = $2 AND day <= $3 ORDER BY day DESC LIMIT 1")
                    .bind(s.module.as_str())
                    .bind(start.format("%Y-%m-%d").to_string()),
            )
            .await?;
        let before: Vec<ocsuite_module_sdk::Metric> = then
            .and_then(|(j,)| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        for m in &s.metrics {
            let Some(old) = before.iter().find(|b| b.key == m.key) else {
                continue;
            };
            let (Some(a), Some(b)) = (
                crate::triggers::rules::number(old),
                crate::triggers::rules::number(m),
            ) else {
                continue;
            };
            if (a - b).abs() > f64::EPSILON {
                let from = value_words(old);
                let to = value_words(m);
                facts.moved.push(format!("{}: {from} → {to}", m.label));
            }
        }
    }
    let alerts = crate::alerts::list(tx, crate::alerts::Filter::Active, 5, now).await?;
    facts.open_alert_count = crate::alerts::open_count(tx, now).await?;
    facts.open_alerts = alerts
        .iter()
        .map(|a| format!("[{}] {}", a.severity.as_str(), a.title))
        .collect();
    let decided: Vec<(String, String, Option<String>)> = tx
        .fetch_all(
            scoped("SELECT capability, status, decided_by FROM tasks WHERE tenant_id = $1 AND decided_at >= $2 AND decided_at <= $3 \
                 ORDER BY decided_at LIMIT 20")
                .bind(start)
                .bind(now),
        )
        .await?;
    facts.decisions = decided
        .into_iter()
        .map(|(cap, status, by)| {
            let how = if status == "rejected" {
                "rejected"
            } else {
                "approved"
            };
            let by = by
                .filter(|b| b.starts_with("policy:"))
                .map(|_| " automatically")
                .unwrap_or_default();
            if status == "rejected" {
                format!("{cap}: {how}{by}")
            } else {
                format!("{cap}: {how}{by}, now {status}")
            }
        })
        .collect();
    Ok(facts)
}

fn value_words(m: &ocsuite_module_sdk::Metric) -> String {
    crate::metrics::display(m)
        .split_once(": ")
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

/// The digest without a model: the facts, in order, in plain sentences.
pub fn plain_text(company: &str, start: DateTime<Utc>, end: DateTime<Utc>, f: &Facts) -> String {
    let mut out = format!(
        "Your week at {company}, {} to {}.\n",
        start.format("%-d %b"),
        end.format("%-d %b %Y")
    );
    let section = |out: &mut String, title: &str, items: &[String], none: &str| {
        out.push_str(&format!("\n{title}\n"));
        if items.is_empty() {
            out.push_str(&format!("- {none}\n"));
        }
        for i in items {
            out.push_str(&format!("- {i}\n"));
        }
    };
    section(
        &mut out,
        "Figures that moved",
        &f.moved,
        "No figure changed.",
    );
    let alerts_title = format!("Open alerts ({})", f.open_alert_count);
    section(
        &mut out,
        &alerts_title,
        &f.open_alerts,
        "None: nothing needs you.",
    );
    section(
        &mut out,
        "Decisions and their outcomes",
        &f.decisions,
        "No decisions this week.",
    );
    out.push_str("\n— Your CEO");
    out
}

/// The CEO's version of the facts; `None` on any model failure (the plain text goes out).
async fn write_up(
    state: &AppState,
    tenant: &TenantId,
    ceo: &crate::agents::Speaker,
    company: &str,
    plain: &str,
) -> Option<String> {
    let model = ceo
        .persona
        .model
        .clone()
        .unwrap_or_else(|| state.config.llm_model.clone());
    let messages = vec![
        ChatMessage::new(
            Role::System,
            format!(
                "You are the CEO of {company} writing the weekly digest for the founders. Use only the facts given; \
                 keep every figure exactly as written; at most 200 words; plain text with short sections; end with \
                 the one thing that most needs attention."
            ),
        ),
        ChatMessage::new(Role::User, plain.to_owned()),
    ];
    let reserve = crate::llm::estimate_prompt_tokens(&messages) + MAX_TOKENS;
    let mut tx = state.store.tenant(tenant).await.ok()?;
    crate::usage::check(&mut tx, &state.meter, reserve)
        .await
        .ok()?;
    let hold = crate::usage::hold(&mut tx, reserve).await.ok()?;
    tx.commit().await.ok()?;
    let rx = state.llm.stream(ChatRequest {
        model: model.clone(),
        messages,
        max_tokens: Some(MAX_TOKENS),
        ..ChatRequest::default()
    });
    let (text, usage, error) = crate::llm::collect(rx).await;
    let mut tx = state.store.tenant(tenant).await.ok()?;
    crate::usage::settle(&mut tx, &state.meter, &hold, "ceo", &model, usage)
        .await
        .ok()?;
    tx.commit().await.ok()?;
    (error.is_none() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// Stores the composed digest (a run's `output`) and sends it: each member by their
/// preferences, the webhooks that take `digests` once.
pub async fn deliver(
    tx: &mut TenantTx,
    output: &Value,
    now: DateTime<Utc>,
) -> Result<(Value, Vec<Event>)> {
    let c: Composed = serde_json::from_value(output.clone()).map_err(AppError::internal)?;
    let id = DigestId::new();
    tx.execute(
        scoped("INSERT INTO digests (tenant_id, id, period_start, period_end, body, facts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id)
            .bind(c.period_start)
            .bind(c.period_end)
            .bind(c.body.as_str())
            .bind(serde_json::to_string(&c.facts).map_err(AppError::internal)?)
            .bind(now),
    )
    .await?;
    let members = notifications::members(tx, false).await?;
    let title = format!("Your weekly digest, {}", c.period_end.format("%-d %b %Y"));
    let events = notifications::notify_all(
        tx,
        &members,
        Broadcast {
            kind: "digest",
            title: title.clone(),
            body: c.body.clone(),
            meeting_id: None,
            task_id: None,
            email: true,
        },
    )
    .await?;
    crate::webhooks::publish(
        tx,
        "digests",
        "digest.sent",
        json!({"digest_id": id, "period_start": c.period_start, "period_end": c.period_end, "body": c.body, "facts": c.facts}),
        &format!("{title}\n{}", c.body),
        now,
    )
    .await?;
    Ok((
        json!({"digest_id": id, "recipients": members.len()}),
        events,
    ))
}

type DigestRow = (
    DigestId,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
    DateTime<Utc>,
);

pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<Digest>> {
    let rows: Vec<DigestRow> = tx
        .fetch_all(
            scoped("SELECT id, period_start, period_end, body, facts, created_at FROM digests WHERE tenant_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2")
                .bind(limit),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Digest {
            id: r.0,
            period_start: r.1,
            period_end: r.2,
            body: r.3,
            facts: serde_json::from_str(&r.4).unwrap_or_default(),
            created_at: r.5,
        })
        .collect())
}
