//! Retention: how long a company keeps its conversations, its events and the details of
//! its audit entries.
//!
//! Each window is in days (none: kept for ever). A pass runs hourly in every process
//! (and on demand, `POST /retention/apply`): conversations untouched for longer than
//! their window go with their messages; events older than theirs go; audit entries
//! older than theirs lose their details, in the audit log and in their receipts at
//! once (and policy decisions their question). A receipt keeps every field's commitment, so its leaf, and every proof over
//! the log, is unchanged; an export shows the dropped details as hidden.
//!
//! A pass that removes anything leaves a `retention.applied` audit entry (and so a
//! receipt) with what it removed and up to when. Changing the windows is a privileged
//! action (`retention.update`), audited like the rest.

pub mod routes;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{AppError, Result};
use crate::ids::TenantId;
use crate::receipts::Revealed;
use crate::state::AppState;
use crate::store::{TenantTx, cross_tenant, scoped};
use crate::tenancy::TenantCtx;

/// Audit details are kept at least this long, so a window cannot be shortened to hide
/// what was just done.
pub const MIN_AUDIT_DAYS: i64 = 30;
/// The longest window one can set (ten years); beyond it, leave the window empty.
pub const MAX_DAYS: i64 = 3650;
/// What an audit entry's details become once dropped.
pub const REDACTED_DETAILS: &str = r#"{"redacted":"retention"}"#;
/// Receipts redacted per transaction, so a first pass over a long log never holds the
/// write lock for long.
const SLICE: i64 = 2000;

/// A company's windows (days; `null`: kept for ever).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Retention {
    pub conversations_days: Option<i64>,
    pub events_days: Option<i64>,
    pub audit_details_days: Option<i64>,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    /// When a pass last removed something.
    pub applied_at: Option<DateTime<Utc>>,
}

/// New windows: each in days, or `null` to keep for ever.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionIn {
    /// 1–3650: conversations untouched for longer are deleted with their messages.
    #[serde(default)]
    pub conversations_days: Option<i64>,
    /// 1–3650: live-update events (task progress, meeting turns) older are deleted.
    #[serde(default)]
    pub events_days: Option<i64>,
    /// 30–3650: audit entries older lose their details (the receipts keep the
    /// commitments, so proofs still verify).
    #[serde(default)]
    pub audit_details_days: Option<i64>,
}

impl RetentionIn {
    fn check(&self) -> Result<()> {
        let window = |field: &'static str, v: Option<i64>, min: i64| match v {
            Some(d) if !(min..=MAX_DAYS).contains(&d) => Err(AppError::invalid(
                field,
                format!("between {min} and {MAX_DAYS} days, or null to keep for ever"),
            )),
            _ => Ok(()),
        };
        window("conversations_days", self.conversations_days, 1)?;
        window("events_days", self.events_days, 1)?;
        window(
            "audit_details_days",
            self.audit_details_days,
            MIN_AUDIT_DAYS,
        )
    }
}

pub async fn get(tx: &mut TenantTx) -> Result<Retention> {
    Ok(tx
        .fetch_optional(scoped(
            "SELECT conversations_days, events_days, audit_details_days, updated_by, updated_at, applied_at \
             FROM retention_settings WHERE tenant_id = $1",
        ))
        .await?
        .unwrap_or_default())
}

/// Saves new windows (authorised by the policy as `retention.update`); they apply at
/// the next pass.
pub async fn save(state: &AppState, ctx: &TenantCtx, input: &RetentionIn) -> Result<Retention> {
    input.check()?;
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "retention".into(),
        id: ctx.tenant_id.to_string(),
        operation: "update".into(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, ctx, "retention.update", resource).await?;
    let before = get(&mut tx).await?;
    let now = Utc::now();
    tx.execute(
        scoped(
            "INSERT INTO retention_settings (tenant_id, conversations_days, events_days, audit_details_days, updated_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) DO UPDATE SET \
             conversations_days = excluded.conversations_days, events_days = excluded.events_days, \
             audit_details_days = excluded.audit_details_days, updated_by = excluded.updated_by, \
             updated_at = excluded.updated_at",
        )
        .bind(input.conversations_days)
        .bind(input.events_days)
        .bind(input.audit_details_days)
        .bind(ctx.actor.id())
        .bind(now),
    )
    .await?;
    crate::audit::record(
        &mut tx,
        ctx,
        "retention.update",
        "retention",
        ctx.tenant_id.as_str(),
        json!({
            "before": { "conversations_days": before.conversations_days, "events_days": before.events_days,
                        "audit_details_days": before.audit_details_days },
            "after": { "conversations_days": input.conversations_days, "events_days": input.events_days,
                       "audit_details_days": input.audit_details_days },
        }),
    )
    .await?;
    let out = get(&mut tx).await?;
    tx.commit().await?;
    Ok(out)
}

/// What one pass removed.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Applied {
    pub conversations: u64,
    pub events: u64,
    /// Audit entries whose details were dropped.
    pub audit_details: u64,
    /// Receipts whose `details` field was dropped (commitments kept).
    pub receipts: u64,
}

impl Applied {
    fn any(&self) -> bool {
        self.conversations + self.events + self.audit_details + self.receipts > 0
    }
}

/// Applies the company's windows as of `now`.
pub async fn apply(state: &AppState, tenant: &TenantId, now: DateTime<Utc>) -> Result<Applied> {
    let mut tx = state.store.tenant_read(tenant).await?;
    let settings = get(&mut tx).await?;
    tx.commit().await?;
    let mut out = Applied::default();
    let mut tx = state.store.tenant(tenant).await?;
    if let Some(days) = settings.conversations_days {
        out.conversations = tx
            .execute(
                scoped("DELETE FROM conversations WHERE tenant_id = $1 AND updated_at < $2")
                    .bind(now - Duration::days(days)),
            )
            .await?;
    }
    if let Some(days) = settings.events_days {
        out.events = tx
            .execute(
                scoped("DELETE FROM events WHERE tenant_id = $1 AND created_at < $2")
                    .bind(now - Duration::days(days)),
            )
            .await?;
    }
    tx.commit().await?;
    if let Some(days) = settings.audit_details_days {
        let cutoff = now - Duration::days(days);
        loop {
            let mut tx = state.store.tenant(tenant).await?;
            let (audit, receipts, more) = drop_details(&mut tx, cutoff).await?;
            tx.commit().await?;
            out.audit_details += audit;
            out.receipts += receipts;
            if !more {
                break;
            }
        }
    }
    if out.any() {
        let mut tx = state.store.tenant(tenant).await?;
        tx.execute(
            scoped("UPDATE retention_settings SET applied_at = $2 WHERE tenant_id = $1").bind(now),
        )
        .await?;
        crate::audit::record_system(
            &mut tx,
            "retention.applied",
            "retention",
            tenant.as_str(),
            json!({ "removed": out, "windows": {
                "conversations_days": settings.conversations_days, "events_days": settings.events_days,
                "audit_details_days": settings.audit_details_days } }),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(out)
}

/// Drops the details of audit entries (and of their receipts) written before `cutoff`,
/// about [`SLICE`] receipts at a time, oldest first; both in `tx`, so the audit log and
/// its receipts never disagree. Returns the counts and whether more remain.
async fn drop_details(tx: &mut TenantTx, cutoff: DateTime<Utc>) -> Result<(u64, u64, bool)> {
    type Row = (String, String, DateTime<Utc>);
    // One rewrite of the company's receipts at a time (another process's pass, an
    // erasure); the watermark is read under the lock.
    cross_tenant::lock_redactions(tx).await?;
    let (from,): (Option<DateTime<Utc>>,) = tx
        .fetch_one(scoped(
            "SELECT details_through FROM retention_settings WHERE tenant_id = $1",
        ))
        .await?;
    let from = from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let mut rows: Vec<Row> = tx
        .fetch_all(
            scoped(
                "SELECT id, fields, created_at FROM receipts WHERE tenant_id = $1 AND created_at >= $2 \
                 AND created_at < $3 AND fields IS NOT NULL ORDER BY created_at, id LIMIT $4",
            )
            .bind(from)
            .bind(cutoff)
            .bind(SLICE),
        )
        .await?;
    let more = rows.len() as i64 == SLICE;
    // A full slice ends at its last instant, exclusive (entries of that instant may run
    // past the limit and go next time); when every entry shares one instant, that
    // instant goes whole.
    let (bound, inclusive) = match rows.last() {
        Some((_, _, last)) if more => {
            let last = *last;
            rows.retain(|r| r.2 < last);
            if rows.is_empty() {
                rows = tx
                    .fetch_all(
                        scoped(
                            "SELECT id, fields, created_at FROM receipts WHERE tenant_id = $1 AND created_at = $2 \
                             AND fields IS NOT NULL",
                        )
                        .bind(last),
                    )
                    .await?;
                (last, true)
            } else {
                (last, false)
            }
        }
        _ => (cutoff, false),
    };
    let now = Utc::now();
    let mut receipts = 0;
    for (id, fields, _) in &rows {
        let mut f: BTreeMap<String, Revealed> =
            serde_json::from_str(fields).map_err(AppError::internal)?;
        if f.remove("details").is_some() {
            crate::receipts::redact(tx, id, &f, now).await?;
            receipts += 1;
        }
    }
    let q = if inclusive {
        scoped(
            "UPDATE audit_log SET details = $3 WHERE tenant_id = $1 AND created_at <= $2 AND created_at >= $4 AND details <> $3",
        )
    } else {
        scoped(
            "UPDATE audit_log SET details = $3 WHERE tenant_id = $1 AND created_at < $2 AND created_at >= $4 AND details <> $3",
        )
    };
    let audit = tx
        .execute(q.bind(bound).bind(REDACTED_DETAILS).bind(from))
        .await?;
    // A decision's question (with the caller's address) goes with its receipt's details.
    let q = if inclusive {
        scoped(
            "UPDATE policy_decisions SET question = $3 WHERE tenant_id = $1 AND created_at <= $2 AND created_at >= $4 AND question <> $3",
        )
    } else {
        scoped(
            "UPDATE policy_decisions SET question = $3 WHERE tenant_id = $1 AND created_at < $2 AND created_at >= $4 AND question <> $3",
        )
    };
    tx.execute(q.bind(bound).bind(REDACTED_DETAILS).bind(from))
        .await?;
    let through = if inclusive {
        bound + Duration::microseconds(1)
    } else {
        bound
    };
    tx.execute(
        scoped("UPDATE retention_settings SET details_through = $2 WHERE tenant_id = $1")
            .bind(through),
    )
    .await?;
    Ok((audit, receipts, more))
}

/// One hourly pass over every company that set a window; one company's failure does
/// not stop the others.
pub async fn apply_all(state: &AppState) -> Result<()> {
    let mut tx = state.store.platform_read().await?;
    let tenants = cross_tenant::retention_tenants(&mut tx).await?;
    tx.commit().await?;
    let now = state.clock.now();
    for t in tenants {
        let Some(tenant) = TenantId::parse(&t) else {
            continue;
        };
        if let Err(e) = apply(state, &tenant, now).await {
            tracing::warn!(error = %e, tenant = %tenant, "applying retention failed");
        }
    }
    Ok(())
}
