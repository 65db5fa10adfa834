//! A company's policy versions: saved after the check, never edited, rolled back by
//! saving an older text again.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::Policies;
use super::engine::CheckError;
use crate::error::{AppError, Result};
use crate::store::{TenantTx, scoped};
use crate::tenancy::TenantCtx;

/// Longest policy text accepted.
pub const MAX_TEXT: usize = 64 * 1024;

#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Version {
    /// 0 is the built-in default.
    pub version: i64,
    pub text: String,
    pub note: String,
    pub created_by: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// The version in force (the default as version 0 when none was saved).
pub async fn current(tx: &mut TenantTx) -> Result<Version> {
    let row: Option<Version> = tx
        .fetch_optional(scoped(
            "SELECT version, text, note, created_by, created_at FROM policy_versions \
             WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
        ))
        .await?;
    Ok(row.unwrap_or_else(default_version))
}

pub fn default_version() -> Version {
    Version {
        version: 0,
        text: super::texts::DEFAULT_POLICY.to_owned(),
        note: "built-in default: the role rules".into(),
        created_by: "system".into(),
        created_at: None,
    }
}

pub async fn get(tx: &mut TenantTx, version: i64) -> Result<Version> {
    if version == 0 {
        return Ok(default_version());
    }
    tx.fetch_optional(
        scoped(
            "SELECT version, text, note, created_by, created_at FROM policy_versions \
             WHERE tenant_id = $1 AND version = $2",
        )
        .bind(version),
    )
    .await?
    .ok_or(AppError::NotFound("policy version"))
}

/// Newest first.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<Version>> {
    let mut out: Vec<Version> = tx
        .fetch_all(scoped(
            "SELECT version, text, note, created_by, created_at FROM policy_versions \
             WHERE tenant_id = $1 ORDER BY version DESC LIMIT 200",
        ))
        .await?;
    out.push(default_version());
    Ok(out)
}

/// The 422 for a refused text: Cedar's messages with line and column, or the floor.
pub fn refused(e: CheckError) -> AppError {
    match e {
        CheckError::Invalid(problems) => {
            let first = problems.first().map_or_else(
                || "the policy does not validate".to_owned(),
                |p| match (p.line, p.column) {
                    (Some(l), Some(c)) => format!("{} (line {l}, column {c})", p.message),
                    _ => p.message.clone(),
                },
            );
            AppError::Detailed {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "policy_invalid",
                message: first,
                details: json!({ "field": "text", "problems": problems }),
            }
        }
        CheckError::Floor { floor, message } => AppError::Detailed {
            status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            code: "policy_loosens_floor",
            message,
            details: json!({ "field": "text", "floor": floor }),
        },
    }
}

/// Deepest nesting of brackets, or longest run of `!`/`-`, a policy may have. Cedar's
/// parser recurses without a stack check; a hostile text could otherwise overflow the
/// stack and take the process down.
const MAX_NESTING: usize = 64;

/// Refuses texts too long or too deeply nested before Cedar parses them.
fn shape(text: &str) -> Result<()> {
    if text.len() > MAX_TEXT {
        return Err(AppError::invalid(
            "text",
            format!("a policy is at most {MAX_TEXT} bytes"),
        ));
    }
    let (mut depth, mut deepest, mut run, mut longest) = (0usize, 0usize, 0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == '!' || c == '-' {
            run += 1;
            longest = longest.max(run);
        } else if !c.is_whitespace() {
            run = 0;
        }
    }
    if deepest > MAX_NESTING || longest > MAX_NESTING {
        return Err(AppError::invalid(
            "text",
            format!("a policy may nest at most {MAX_NESTING} levels deep"),
        ));
    }
    Ok(())
}

/// A policy text checked for shape, then by Cedar against the schema and the floors.
pub fn checked(policies: &Policies, text: &str) -> Result<cedar_policy::PolicySet> {
    shape(text)?;
    policies.engine.check_company(text).map_err(refused)
}

/// Checks and saves `text` as the next version; it takes effect at once.
pub async fn save(
    policies: &Policies,
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    text: &str,
    note: &str,
) -> Result<Version> {
    checked(policies, text)?;
    let (last,): (Option<i64>,) = tx
        .fetch_one(scoped(
            "SELECT MAX(version) FROM policy_versions WHERE tenant_id = $1",
        ))
        .await?;
    let version = last.unwrap_or(0) + 1;
    let now = Utc::now();
    tx.execute(
        scoped(
            "INSERT INTO policy_versions (tenant_id, version, text, note, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(version)
        .bind(text)
        .bind(note)
        .bind(ctx.actor.id())
        .bind(now),
    )
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => AppError::Conflict(
            "another change to the policy was saved at the same moment; reload and try again"
                .into(),
        ),
        e => e.into(),
    })?;
    crate::audit::record(
        tx,
        ctx,
        "policy.update",
        "policy",
        &version.to_string(),
        json!({ "version": version, "note": note, "text": text }),
    )
    .await?;
    Ok(Version {
        version,
        text: text.to_owned(),
        note: note.to_owned(),
        created_by: ctx.actor.id().to_owned(),
        created_at: Some(now),
    })
}

/// A unified diff from `a` to `b`.
pub fn diff(a: &Version, b: &Version) -> String {
    similar::TextDiff::from_lines(&a.text, &b.text)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("version {}", a.version),
            &format!("version {}", b.version),
        )
        .to_string()
}
