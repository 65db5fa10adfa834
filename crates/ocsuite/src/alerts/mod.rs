//! The alert inbox: what a trigger (or the platform) raised for the company to look at.
//!
//! An alert carries its evidence (the figures and links that made it) and moves
//! `open` → `acknowledged` / `snoozed` (until a time, then it counts as open again) →
//! `resolved` (with a note). Escalating holds a board meeting whose agenda is the alert.
//! Raising one notifies every member by their preferences for its severity and posts to
//! the webhooks that take that category, in the transaction that stores it; a
//! `dedupe_key` makes raising idempotent (a replayed run raises nothing new).

pub mod routes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{AppError, Result};
use crate::ids::{AlertId, MeetingId, TriggerId, TriggerRunId};
use crate::notifications::{self, Broadcast};
use crate::realtime::Event;
use crate::store::{TenantTx, scoped};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "info" => Self::Info,
            "critical" => Self::Critical,
            _ => Self::Warning,
        }
    }
}

/// A figure behind an alert.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Figure {
    pub key: String,
    pub label: String,
    pub value: Option<f64>,
    /// As a person reads it: `4.2 months`, `12,000.00 USD`.
    pub display: String,
}

/// Where to look: a task, a meeting, a source, a campaign.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Link {
    pub label: String,
    pub href: String,
}

/// Why an alert (or a trigger run) happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evidence {
    /// One sentence: what happened.
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub figures: Vec<Figure>,
    #[serde(default)]
    pub links: Vec<Link>,
    /// The platform event, for event triggers (`{"type": "task.dead_lettered", …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event: Option<serde_json::Value>,
}

impl Evidence {
    /// The evidence as text, for a meeting's context or a brief's prompt.
    pub fn as_text(&self) -> String {
        let mut out = self.summary.clone();
        for f in &self.figures {
            out.push_str(&format!("\n- {}: {}", f.label, f.display));
        }
        for l in &self.links {
            out.push_str(&format!("\n- {}: {}", l.label, l.href));
        }
        out
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: AlertId,
    pub trigger_id: Option<TriggerId>,
    pub run_id: Option<TriggerRunId>,
    pub severity: Severity,
    pub title: String,
    pub body: String,
    pub evidence: Evidence,
    /// open | acknowledged | snoozed | resolved (a snooze that ran out reads `open`).
    pub status: String,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub resolved_note: Option<String>,
    /// Who last acknowledged, snoozed, resolved or escalated it.
    pub acted_by: Option<String>,
    pub meeting_id: Option<MeetingId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type Row = (
    AlertId,
    Option<TriggerId>,
    Option<TriggerRunId>,
    String,
    String,
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<MeetingId>,
    DateTime<Utc>,
    DateTime<Utc>,
);
macro_rules! columns {
    () => {
        "id, trigger_id, run_id, severity, title, body, evidence, status, snoozed_until, resolved_note, acted_by, meeting_id, created_at, updated_at"
    };
}

fn from_row(r: Row, now: DateTime<Utc>) -> Alert {
    let woke = r.7 == "snoozed" && r.8.is_some_and(|u| u <= now);
    Alert {
        id: r.0,
        trigger_id: r.1,
        run_id: r.2,
        severity: Severity::parse(&r.3),
        title: r.4,
        body: r.5,
        evidence: serde_json::from_str(&r.6).unwrap_or_default(),
        status: if woke { "open".into() } else { r.7 },
        snoozed_until: r.8,
        resolved_note: r.9,
        acted_by: r.10,
        meeting_id: r.11,
        created_at: r.12,
        updated_at: r.13,
    }
}

/// An alert to raise.
pub struct NewAlert {
    pub trigger_id: Option<TriggerId>,
    pub run_id: Option<TriggerRunId>,
    pub severity: Severity,
    pub title: String,
    pub body: String,
    pub evidence: Evidence,
    /// Raising twice with one key raises once.
    pub dedupe_key: String,
}

/// Raises an alert, notifies the members and posts to the webhooks that take its
/// severity. `None` when an alert with its key exists already.
pub async fn raise(
    tx: &mut TenantTx,
    a: NewAlert,
    now: DateTime<Utc>,
) -> Result<Option<(Alert, Vec<Event>)>> {
    let id = AlertId::new();
    let title: String = a.title.chars().take(200).collect();
    let body: String = a.body.chars().take(4000).collect();
    let evidence = serde_json::to_string(&a.evidence).map_err(AppError::internal)?;
    let n = tx
        .execute(
            scoped("INSERT INTO alerts (tenant_id, id, trigger_id, run_id, severity, title, body, evidence, status, dedupe_key, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10, $10) ON CONFLICT (tenant_id, dedupe_key) DO NOTHING")
                .bind(&id)
                .bind(a.trigger_id.as_ref())
                .bind(a.run_id.as_ref())
                .bind(a.severity.as_str())
                .bind(title.as_str())
                .bind(body.as_str())
                .bind(evidence)
                .bind(a.dedupe_key.as_str())
                .bind(now),
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    let kind = format!("alert.{}", a.severity.as_str());
    let members = notifications::members(tx, false).await?;
    let mut text = body.clone();
    if !a.evidence.summary.is_empty() && !text.contains(&a.evidence.summary) {
        text = format!("{text}\n{}", a.evidence.summary);
    }
    let events = notifications::notify_all(
        tx,
        &members,
        Broadcast {
            kind: &kind,
            title: format!("Alert: {title}"),
            body: format!("{text}\nOpen the alert inbox to acknowledge, snooze, resolve or escalate it. Alert {id}."),
            meeting_id: None,
            task_id: None,
            email: false,
        },
    )
    .await?;
    crate::webhooks::publish(
        tx,
        &format!("alerts.{}", a.severity.as_str()),
        "alert.raised",
        json!({"alert_id": id, "severity": a.severity, "title": title, "body": body, "evidence": a.evidence}),
        &format!("[{}] {title}\n{text}", a.severity.as_str()),
        now,
    )
    .await?;
    Ok(Some((get(tx, &id, now).await?, events)))
}

pub async fn get(tx: &mut TenantTx, id: &AlertId, now: DateTime<Utc>) -> Result<Alert> {
    let row: Option<Row> = tx
        .fetch_optional(
            scoped(concat!(
                "SELECT ",
                columns!(),
                " FROM alerts WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(id),
        )
        .await?;
    Ok(from_row(row.ok_or(AppError::NotFound("alert"))?, now))
}

/// Which alerts a list shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Not resolved: open, acknowledged, and snoozed (a snooze that ran out is open).
    #[default]
    Active,
    Open,
    Acknowledged,
    Snoozed,
    Resolved,
    All,
}

/// Alerts by `filter`, the most severe and newest first.
pub async fn list(
    tx: &mut TenantTx,
    filter: Filter,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>> {
    let rows: Vec<Row> = tx
        .fetch_all(
            scoped(concat!("SELECT ", columns!(), " FROM alerts WHERE tenant_id = $1 AND ($2 = 'all' OR ($2 = 'active' AND status <> 'resolved') \
                 OR ($2 = 'open' AND (status = 'open' OR (status = 'snoozed' AND snoozed_until <= $3))) \
                 OR ($2 = 'snoozed' AND status = 'snoozed' AND snoozed_until > $3) OR ($2 = status AND $2 IN ('acknowledged', 'resolved'))) \
                 ORDER BY CASE WHEN status = 'resolved' THEN 1 ELSE 0 END, \
                 CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, created_at DESC, id DESC LIMIT $4"))
            .bind(match filter {
                Filter::Active => "active",
                Filter::Open => "open",
                Filter::Acknowledged => "acknowledged",
                Filter::Snoozed => "snoozed",
                Filter::Resolved => "resolved",
                Filter::All => "all",
            })
            .bind(now)
            .bind(limit),
        )
        .await?;
    Ok(rows.into_iter().map(|r| from_row(r, now)).collect())
}

/// How many alerts need someone: open, or snoozed until a time that has passed.
pub async fn open_count(tx: &mut TenantTx, now: DateTime<Utc>) -> Result<i64> {
    let (n,): (i64,) = tx
        .fetch_one(
            scoped("SELECT COUNT(*) FROM alerts WHERE tenant_id = $1 AND (status = 'open' OR (status = 'snoozed' AND snoozed_until <= $2))")
                .bind(now),
        )
        .await?;
    Ok(n)
}

/// A change of state.
pub enum Change<'a> {
    Acknowledge,
    Snooze(DateTime<Utc>),
    Resolve(Option<&'a str>),
    Escalated(&'a MeetingId),
}

/// Applies `change` by `by`; a resolved alert cannot change again (409).
pub async fn change(
    tx: &mut TenantTx,
    id: &AlertId,
    change: Change<'_>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Alert> {
    let current = get(tx, id, now).await?;
    if current.status == "resolved" {
        return Err(AppError::Conflict(
            "this alert is resolved; it cannot change any more".into(),
        ));
    }
    let (status, until, note, meeting): (
        &str,
        Option<DateTime<Utc>>,
        Option<&str>,
        Option<&MeetingId>,
    ) = match change {
        Change::Acknowledge => ("acknowledged", None, None, None),
        Change::Snooze(until) => ("snoozed", Some(until), None, None),
        Change::Resolve(note) => ("resolved", None, note, None),
        Change::Escalated(m) => ("acknowledged", None, None, Some(m)),
    };
    tx.execute(
        scoped("UPDATE alerts SET status = $3, snoozed_until = $4, resolved_note = COALESCE($5, resolved_note), \
             meeting_id = COALESCE($6, meeting_id), acted_by = $7, updated_at = $8 WHERE tenant_id = $1 AND id = $2")
            .bind(id)
            .bind(status)
            .bind(until)
            .bind(note)
            .bind(meeting)
            .bind(by)
            .bind(now),
    )
    .await?;
    get(tx, id, now).await
}
