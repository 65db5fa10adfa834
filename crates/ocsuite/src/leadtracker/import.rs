//! Importing leads from a CSV export (a spreadsheet, another CRM).
//!
//! Each row is checked exactly like a lead created through the API. A row whose email
//! matches an existing lead (or an earlier row) is a duplicate and is skipped, so
//! importing the same file twice adds nothing. See [`crate::imports`] for preview and
//! confirmation.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use super::{LeadInput, Stage};
use crate::error::{AppError, Result};
use crate::imports::{self, Field, Report};
use crate::store::{TenantTx, scoped};

pub const FIELDS: &[Field] = &[
    Field {
        name: "name",
        required: true,
        aliases: &["full name", "contact", "contact name", "lead", "lead name"],
    },
    Field {
        name: "company",
        required: false,
        aliases: &["organization", "organisation", "company name", "account"],
    },
    Field {
        name: "email",
        required: false,
        aliases: &["e-mail", "email address", "mail"],
    },
    Field {
        name: "source",
        required: false,
        aliases: &["lead source", "channel", "origin"],
    },
    Field {
        name: "value",
        required: false,
        aliases: &["amount", "deal value", "deal size", "expected value"],
    },
    Field {
        name: "currency",
        required: false,
        aliases: &["curr"],
    },
    Field {
        name: "stage",
        required: false,
        aliases: &["status", "pipeline stage", "deal stage"],
    },
    Field {
        name: "owner",
        required: false,
        aliases: &["assigned to", "sales rep"],
    },
    Field {
        name: "notes",
        required: false,
        aliases: &["note", "comments", "description"],
    },
    Field {
        name: "created_at",
        required: false,
        aliases: &["created", "date", "created on"],
    },
];

/// Finds a stage by key or label, ignoring case.
fn stage_of(v: &str, stages: &[Stage]) -> Option<String> {
    let v = v.trim().to_lowercase();
    stages
        .iter()
        .find(|s| s.key == v || s.label.to_lowercase() == v)
        .map(|s| s.key.clone())
}

fn parse_time(v: &str) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{v}` is not a date (use YYYY-MM-DD or RFC 3339)"))
}

/// Previews or runs an import; `by` is the actor recorded on each lead.
pub async fn run(
    tx: &mut TenantTx,
    csv: &str,
    mapping: &BTreeMap<String, String>,
    confirm: bool,
    by: &str,
) -> Result<Report> {
    let mut parsed = imports::parse(csv, FIELDS, mapping)?;
    let stages = super::stages(tx).await?;
    let currency = crate::tenancy::tenants::currency(tx).await?;
    let known: Vec<(Option<String>,)> = tx
        .fetch_all(scoped(
            "SELECT email FROM leads WHERE tenant_id = $1 AND email IS NOT NULL",
        ))
        .await?;
    let mut seen: HashSet<String> = known.into_iter().filter_map(|(e,)| e).collect();
    let now = Utc::now();
    let rows = std::mem::take(&mut parsed.rows);
    let total = rows.len() + parsed.errors.len();
    let mut good = Vec::new();
    let mut duplicates = 0;
    for (line, row) in rows {
        let get = |k: &str| row.get(k).cloned();
        let stage = match get("stage") {
            Some(s) => match stage_of(&s, &stages) {
                Some(k) => Some(k),
                None => {
                    parsed.error(
                        line,
                        Some("stage"),
                        super::unknown_stage(&s, &stages).to_string(),
                    );
                    continue;
                }
            },
            None => None,
        };
        let at = match get("created_at").map(|v| parse_time(&v)) {
            Some(Ok(t)) if t > now => {
                parsed.error(line, Some("created_at"), "created_at is in the future");
                continue;
            }
            Some(Ok(t)) => t,
            Some(Err(m)) => {
                parsed.error(line, Some("created_at"), m);
                continue;
            }
            None => now,
        };
        let input = LeadInput {
            name: get("name"),
            company: get("company"),
            email: get("email"),
            source: get("source"),
            value: get("value"),
            value_minor: None,
            currency: get("currency"),
            stage,
            owner: get("owner"),
            notes: get("notes"),
        };
        let checked = match input.check(None, &stages, &currency) {
            Ok(c) => c,
            Err(AppError::Invalid { field, message }) => {
                parsed.error(line, Some(field), message);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(e) = &checked.email
            && !seen.insert(e.clone())
        {
            duplicates += 1;
            continue;
        }
        good.push((checked, at));
    }
    let sample = good
        .iter()
        .take(imports::SAMPLE_ROWS)
        .map(|(c, at)| {
            json!({"name": c.name, "company": c.company, "email": c.email, "source": c.source,
                   "value": crate::money::format(c.value_minor, &c.currency), "currency": c.currency,
                   "stage": c.stage, "owner": c.owner, "created_at": at})
        })
        .collect();
    let valid = good.len();
    let mut imported = 0;
    if confirm {
        for (c, at) in &good {
            super::insert(tx, c, "import", by, *at).await?;
            imported += 1;
        }
        if imported > 0 {
            super::refresh_metrics(tx).await?;
        }
    }
    Ok(parsed.report(confirm, total, valid, imported, duplicates, sample))
}
