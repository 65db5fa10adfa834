//! A lead's fields as people and CSV files give them, checked into what is stored.

use serde::Deserialize;

use super::{Lead, MAX_NAME, MAX_TEXT, Stage, StageKind};
use crate::error::{AppError, Result};

/// The fields of a new or edited lead, already checked ([`LeadInput::check`]).
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    pub name: Option<String>,
    pub company: Option<String>,
    pub email: Option<String>,
    pub source: Option<String>,
    /// Decimal text in `currency` (`"1200.50"`); or give `value_minor`.
    pub value: Option<String>,
    pub value_minor: Option<i64>,
    pub currency: Option<String>,
    pub stage: Option<String>,
    pub owner: Option<String>,
    pub notes: Option<String>,
}

fn opt_text(v: Option<&str>, field: &'static str, max: usize) -> Result<Option<String>> {
    let v = v.map(str::trim).filter(|v| !v.is_empty());
    if v.is_some_and(|v| v.chars().count() > max || v.chars().any(|c| c.is_control() && c != '\n'))
    {
        return Err(AppError::invalid(
            field,
            format!("{field} must be at most {max} characters, without control characters"),
        ));
    }
    Ok(v.map(str::to_owned))
}

/// Lowercased and checked: `local@domain.tld`, no spaces, at most 254 characters.
pub fn check_email(e: &str) -> std::result::Result<String, String> {
    let e = e.trim().to_lowercase();
    let ok = e.len() <= 254
        && !e.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        })
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && !d.contains('@')
        });
    if ok {
        Ok(e)
    } else {
        Err(format!("`{e}` is not an email address"))
    }
}

/// A lead's values after checking, ready to store.
pub struct Checked {
    pub name: String,
    pub company: Option<String>,
    pub email: Option<String>,
    pub source: Option<String>,
    pub value_minor: i64,
    pub currency: String,
    pub stage: String,
    pub owner: Option<String>,
    pub notes: Option<String>,
}

impl LeadInput {
    /// Checks the input as a new lead (`base` None) or as an edit of `base`; the error
    /// names the field. `currency` is the tenant's default.
    pub fn check(&self, base: Option<&Lead>, stages: &[Stage], currency: &str) -> Result<Checked> {
        let name = match (&self.name, base) {
            (Some(n), _) => n.trim().to_owned(),
            (None, Some(b)) => b.name.clone(),
            (None, None) => String::new(),
        };
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(AppError::invalid(
                "name",
                format!("name is required, at most {MAX_NAME} characters"),
            ));
        }
        let pick = |new: &Option<String>, old: Option<&Option<String>>| -> Option<String> {
            match new {
                Some(v) => Some(v.clone()),
                None => old.cloned().flatten(),
            }
        };
        let company = opt_text(
            pick(&self.company, base.map(|b| &b.company)).as_deref(),
            "company",
            MAX_NAME,
        )?;
        let source = opt_text(
            pick(&self.source, base.map(|b| &b.source)).as_deref(),
            "source",
            100,
        )?;
        let owner = opt_text(
            pick(&self.owner, base.map(|b| &b.owner)).as_deref(),
            "owner",
            MAX_NAME,
        )?;
        let notes = opt_text(
            pick(&self.notes, base.map(|b| &b.notes)).as_deref(),
            "notes",
            MAX_TEXT,
        )?;
        let email = match pick(&self.email, base.map(|b| &b.email)).filter(|e| !e.trim().is_empty())
        {
            Some(e) => Some(check_email(&e).map_err(|m| AppError::invalid("email", m))?),
            None => None,
        };
        let currency = match (&self.currency, base) {
            (Some(c), _) => {
                crate::money::currency(c).map_err(|m| AppError::invalid("currency", m))?
            }
            (None, Some(b)) => b.currency.clone(),
            (None, None) => currency.to_owned(),
        };
        let value_minor = match (&self.value, self.value_minor, base) {
            (Some(_), Some(_), _) => {
                return Err(AppError::invalid(
                    "value",
                    "give value or value_minor, not both",
                ));
            }
            (Some(v), None, _) => {
                crate::money::parse(v, &currency).map_err(|m| AppError::invalid("value", m))?
            }
            (None, Some(m), _) => m,
            (None, None, Some(b)) => b.value_minor,
            (None, None, None) => 0,
        };
        let value_minor = crate::money::check_limit("value", value_minor)?;
        if value_minor < 0 {
            return Err(AppError::invalid(
                "value",
                "a deal value cannot be negative",
            ));
        }
        let stage = match (&self.stage, base) {
            (Some(s), _) => s.trim().to_owned(),
            (None, Some(b)) => b.stage.clone(),
            (None, None) => stages
                .iter()
                .find(|s| s.kind == StageKind::Open)
                .map(|s| s.key.clone())
                .unwrap_or_default(),
        };
        if !stages.iter().any(|s| s.key == stage) {
            return Err(unknown_stage(&stage, stages));
        }
        Ok(Checked {
            name,
            company,
            email,
            source,
            value_minor,
            currency,
            stage,
            owner,
            notes,
        })
    }
}

pub fn unknown_stage(stage: &str, stages: &[Stage]) -> AppError {
    let keys: Vec<&str> = stages.iter().map(|s| s.key.as_str()).collect();
    AppError::invalid(
        "stage",
        format!(
            "`{stage}` is not a stage of this pipeline; stages: {}",
            keys.join(", ")
        ),
    )
}
