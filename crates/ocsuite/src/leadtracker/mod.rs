//! LeadTracker: the tenant's sales pipeline.
//!
//! Leads move through the tenant's ordered stages; every move is kept in
//! `lead_stage_history`, which is what conversion rates and time-in-stage are computed
//! from ([`summary`]). A tenant starts with a default pipeline and may rename, reorder
//! or extend it; each stage is `open`, `won` or `lost`. The same functions serve the HTTP
//! API ([`routes`]), CSV imports ([`import`]) and the module's capabilities
//! ([`module`]), and every change refreshes the module's metric snapshot in its own
//! transaction.

pub mod import;
mod input;
pub mod module;
pub mod routes;
pub mod summary;

pub use input::{Checked, LeadInput, check_email, unknown_stage};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{AppError, Result};
use crate::ids::LeadId;
use crate::store::{TenantTx, scoped};

pub const MAX_NAME: usize = 200;
pub const MAX_TEXT: usize = 5000;
pub const MAX_STAGES: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "won" => Self::Won,
            "lost" => Self::Lost,
            _ => Self::Open,
        }
    }
}

/// One pipeline stage.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Stable key used in the API and history (`qualified`).
    pub key: String,
    pub label: String,
    pub kind: StageKind,
}

/// The pipeline a new tenant starts with.
pub fn default_stages() -> Vec<Stage> {
    [
        ("new", "New", StageKind::Open),
        ("contacted", "Contacted", StageKind::Open),
        ("qualified", "Qualified", StageKind::Open),
        ("proposal", "Proposal", StageKind::Open),
        ("won", "Won", StageKind::Won),
        ("lost", "Lost", StageKind::Lost),
    ]
    .into_iter()
    .map(|(k, l, kind)| Stage {
        key: k.into(),
        label: l.into(),
        kind,
    })
    .collect()
}

/// The tenant's stages in pipeline order (the default pipeline until it sets its own).
pub async fn stages(tx: &mut TenantTx) -> Result<Vec<Stage>> {
    let rows: Vec<(String, String, String)> = tx
        .fetch_all(scoped(
            "SELECT key, label, kind FROM lead_stages WHERE tenant_id = $1 ORDER BY position",
        ))
        .await?;
    if rows.is_empty() {
        return Ok(default_stages());
    }
    Ok(rows
        .into_iter()
        .map(|(key, label, kind)| Stage {
            key,
            label,
            kind: StageKind::parse(&kind),
        })
        .collect())
}

fn check_stages(list: &[Stage]) -> Result<()> {
    if list.is_empty() || list.len() > MAX_STAGES {
        return Err(AppError::invalid(
            "stages",
            format!("a pipeline has 1-{MAX_STAGES} stages"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for s in list {
        let ok = !s.key.is_empty()
            && s.key.len() <= 40
            && s.key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(AppError::invalid(
                "stages",
                format!(
                    "stage key `{}` must be 1-40 lowercase letters, digits or `_`",
                    s.key
                ),
            ));
        }
        if s.label.trim().is_empty() || s.label.chars().count() > 60 {
            return Err(AppError::invalid(
                "stages",
                format!("stage `{}` needs a label of 1-60 characters", s.key),
            ));
        }
        if !seen.insert(s.key.as_str()) {
            return Err(AppError::invalid(
                "stages",
                format!("stage key `{}` appears twice", s.key),
            ));
        }
    }
    if !list.iter().any(|s| s.kind == StageKind::Open) {
        return Err(AppError::invalid(
            "stages",
            "the pipeline needs at least one open stage",
        ));
    }
    Ok(())
}

/// Replaces the pipeline. A stage that still holds leads cannot be removed (409 naming
/// it and the count): move its leads first.
pub async fn set_stages(tx: &mut TenantTx, list: &[Stage]) -> Result<()> {
    check_stages(list)?;
    let used: Vec<(String, i64)> = tx
        .fetch_all(scoped(
            "SELECT stage, COUNT(*) FROM leads WHERE tenant_id = $1 GROUP BY stage",
        ))
        .await?;
    for (stage, n) in used {
        if !list.iter().any(|s| s.key == stage) {
            return Err(AppError::Conflict(format!(
                "stage `{stage}` still holds {n} lead(s); move them to another stage before removing it"
            )));
        }
    }
    tx.execute(scoped("DELETE FROM lead_stages WHERE tenant_id = $1"))
        .await?;
    for (i, s) in list.iter().enumerate() {
        tx.execute(
            scoped("INSERT INTO lead_stages (tenant_id, key, label, position, kind) VALUES ($1, $2, $3, $4, $5)")
                .bind(&s.key)
                .bind(s.label.trim())
                .bind(i as i64)
                .bind(s.kind.as_str()),
        )
        .await?;
    }
    Ok(())
}

/// A lead as the API shows it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Lead {
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub id: LeadId,
    pub name: String,
    pub company: Option<String>,
    pub email: Option<String>,
    pub source: Option<String>,
    /// Expected deal value in minor units of `currency`.
    pub value_minor: i64,
    pub currency: String,
    pub stage: String,
    pub owner: Option<String>,
    pub notes: Option<String>,
    /// `manual`, `import`, `demo` or `task`.
    pub origin: String,
    pub stage_entered_at: DateTime<Utc>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! select_leads {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, company, email, source, value_minor, currency, stage, owner, notes, origin, \
             stage_entered_at, created_by, created_at, updated_at FROM leads ",
            $tail
        )
    };
}

/// One stage change.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Move {
    pub lead_id: String,
    pub seq: i64,
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub changed_at: DateTime<Utc>,
    pub changed_by: String,
    pub note: Option<String>,
}

/// Stores a new lead and its first history entry, dated `at`.
pub async fn insert(
    tx: &mut TenantTx,
    c: &Checked,
    origin: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<LeadId> {
    let id = LeadId::new();
    tx.execute(
        scoped("INSERT INTO leads (tenant_id, id, name, company, email, source, value_minor, currency, stage, owner, notes, \
             origin, stage_entered_at, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $13, $13)")
            .bind(&id)
            .bind(&c.name)
            .bind(c.company.clone())
            .bind(c.email.clone())
            .bind(c.source.clone())
            .bind(c.value_minor)
            .bind(&c.currency)
            .bind(&c.stage)
            .bind(c.owner.clone())
            .bind(c.notes.clone())
            .bind(origin)
            .bind(at)
            .bind(by),
    )
    .await?;
    record_move(tx, &id, 1, None, &c.stage, at, by, None).await?;
    Ok(id)
}

#[allow(clippy::too_many_arguments)]
async fn record_move(
    tx: &mut TenantTx,
    id: &LeadId,
    seq: i64,
    from: Option<&str>,
    to: &str,
    at: DateTime<Utc>,
    by: &str,
    note: Option<&str>,
) -> Result<()> {
    tx.execute(
        scoped("INSERT INTO lead_stage_history (tenant_id, lead_id, seq, from_stage, to_stage, changed_at, changed_by, note) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(id)
            .bind(seq)
            .bind(from)
            .bind(to)
            .bind(at)
            .bind(by)
            .bind(note),
    )
    .await?;
    Ok(())
}

pub async fn get(tx: &mut TenantTx, id: &LeadId) -> Result<Lead> {
    tx.fetch_optional(scoped(select_leads!("WHERE tenant_id = $1 AND id = $2")).bind(id))
        .await?
        .ok_or(AppError::NotFound("lead"))
}

pub async fn history(tx: &mut TenantTx, id: &LeadId) -> Result<Vec<Move>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT lead_id, seq, from_stage, to_stage, changed_at, changed_by, note FROM lead_stage_history \
                 WHERE tenant_id = $1 AND lead_id = $2 ORDER BY seq")
                .bind(id),
        )
        .await?)
}

/// Leads, newest first, optionally in one stage or matching `q` (name, company, email).
pub async fn list(
    tx: &mut TenantTx,
    stage: Option<&str>,
    q: Option<&str>,
    limit: i64,
) -> Result<Vec<Lead>> {
    let pattern = q.map(|q| format!("%{}%", q.to_lowercase().replace(['%', '_'], "")));
    Ok(tx
        .fetch_all(
            scoped(select_leads!(
                "WHERE tenant_id = $1 AND ($2 IS NULL OR stage = $2) AND ($3 IS NULL OR LOWER(name) LIKE $3 \
                 OR LOWER(COALESCE(company, '')) LIKE $3 OR LOWER(COALESCE(email, '')) LIKE $3) \
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            ))
            .bind(stage)
            .bind(pattern)
            .bind(limit),
        )
        .await?)
}

/// Every lead and every stage change (for summaries).
pub async fn everything(tx: &mut TenantTx) -> Result<(Vec<Lead>, Vec<Move>)> {
    let leads = tx
        .fetch_all(scoped(select_leads!("WHERE tenant_id = $1 ORDER BY id")))
        .await?;
    let moves = tx
        .fetch_all(
            scoped("SELECT lead_id, seq, from_stage, to_stage, changed_at, changed_by, note FROM lead_stage_history \
                 WHERE tenant_id = $1 ORDER BY lead_id, seq"),
        )
        .await?;
    Ok((leads, moves))
}

/// Writes an edit (not the stage: see [`change_stage`]).
pub async fn update(tx: &mut TenantTx, id: &LeadId, c: &Checked) -> Result<()> {
    tx.execute(
        scoped("UPDATE leads SET name = $2, company = $3, email = $4, source = $5, value_minor = $6, currency = $7, \
             owner = $8, notes = $9, updated_at = $10 WHERE tenant_id = $1 AND id = $11")
            .bind(&c.name)
            .bind(c.company.clone())
            .bind(c.email.clone())
            .bind(c.source.clone())
            .bind(c.value_minor)
            .bind(&c.currency)
            .bind(c.owner.clone())
            .bind(c.notes.clone())
            .bind(Utc::now())
            .bind(id),
    )
    .await?;
    Ok(())
}

/// Moves a lead to `to` at `at` (now, or when it really happened: not in the future and
/// not before its last move). Moving to the stage it is in changes nothing.
pub async fn change_stage(
    tx: &mut TenantTx,
    id: &LeadId,
    to: &str,
    at: Option<DateTime<Utc>>,
    by: &str,
    note: Option<&str>,
) -> Result<(Lead, Option<String>)> {
    let stages = stages(tx).await?;
    if !stages.iter().any(|s| s.key == to) {
        return Err(unknown_stage(to, &stages));
    }
    let lead = get(tx, id).await?;
    if lead.stage == to {
        return Ok((lead, None));
    }
    let now = Utc::now();
    let at = at.unwrap_or(now);
    if at > now + chrono::Duration::minutes(5) {
        return Err(AppError::invalid(
            "changed_at",
            "changed_at cannot be in the future",
        ));
    }
    if at < lead.stage_entered_at {
        return Err(AppError::invalid(
            "changed_at",
            format!(
                "changed_at is before the lead entered its current stage ({})",
                lead.stage_entered_at.to_rfc3339()
            ),
        ));
    }
    let (last,): (i64,) = tx
        .fetch_one(
            scoped("SELECT COALESCE(MAX(seq), 0) FROM lead_stage_history WHERE tenant_id = $1 AND lead_id = $2")
                .bind(id),
        )
        .await?;
    tx.execute(
        scoped("UPDATE leads SET stage = $2, stage_entered_at = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $5")
            .bind(to)
            .bind(at)
            .bind(now)
            .bind(id),
    )
    .await?;
    record_move(tx, id, last + 1, Some(&lead.stage), to, at, by, note).await?;
    let from = lead.stage.clone();
    Ok((get(tx, id).await?, Some(from)))
}

/// Deletes a lead and its history; false when there was none.
pub async fn delete(tx: &mut TenantTx, id: &LeadId) -> Result<bool> {
    tx.execute(
        scoped("DELETE FROM lead_stage_history WHERE tenant_id = $1 AND lead_id = $2").bind(id),
    )
    .await?;
    Ok(tx
        .execute(scoped("DELETE FROM leads WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?
        > 0)
}

/// Recomputes and stores the pipeline's metric snapshot.
pub async fn refresh_metrics(tx: &mut TenantTx) -> Result<()> {
    let currency = crate::tenancy::tenants::currency(tx).await?;
    let stages = stages(tx).await?;
    let (leads, moves) = everything(tx).await?;
    let s = summary::compute(
        &stages,
        &leads,
        &moves,
        &currency,
        &summary::Window::default_at(Utc::now()),
    );
    crate::metrics::store(tx, "leadtracker", &summary::metrics(&s)).await
}

/// A lead as a capability's output: the stable fields a board or module reads.
pub fn to_output(l: &Lead) -> Value {
    serde_json::json!({
        "lead_id": l.id,
        "name": l.name,
        "company": l.company,
        "email": l.email,
        "stage": l.stage,
        "value_minor": l.value_minor,
        "currency": l.currency,
    })
}
