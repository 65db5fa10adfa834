//! `/trust`: what a company can check about what was done in its name. The policy in
//! force with its versions (edit, diff, roll back), the latest policy decisions, the
//! signed log's newest checkpoint and receipts, exports of everything it owns, its
//! retention windows and erasures of one person (asked by one admin, approved by
//! another).
//! Admins only; the JSON API does every check again.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Redirected, Shell, Viewer, render};
use crate::state::AppState;
use crate::tenancy::Role;

/// A policy version with the diff from the one before.
struct VersionRow {
    version: crate::policy::versions::Version,
    diff: String,
}

/// A decision in words.
struct DecisionRow {
    at: String,
    action: String,
    allowed: bool,
    who: String,
    policies: String,
}

#[derive(Template)]
#[template(path = "trust.html")]
struct TrustPage {
    shell: Shell,
    schema: &'static str,
    floors: &'static str,
    is_admin: bool,
    current: Option<crate::policy::versions::Version>,
    versions: Vec<VersionRow>,
    decisions: Vec<DecisionRow>,
    checkpoint: Option<crate::receipts::log::CheckpointOut>,
    receipts: Vec<(String, String, String, String)>,
    exports: Vec<crate::exports::ExportOut>,
    retention: crate::retention::Retention,
    erasures: Vec<ErasureRow>,
}

/// An erasure request in words, and whether the viewer may approve it.
struct ErasureRow {
    e: crate::erasures::ErasureOut,
    asked_by: String,
    approved_by: String,
    /// How many rows went or changed, once done.
    removed: u64,
    can_approve: bool,
}

pub async fn page(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let shell = Shell::new(&v, "Trust", "trust");
    if !v.role.at_least(Role::Admin) {
        return Ok(render(&TrustPage {
            shell,
            schema: crate::policy::texts::SCHEMA,
            floors: crate::policy::texts::FLOORS,
            is_admin: false,
            current: None,
            versions: Vec::new(),
            decisions: Vec::new(),
            checkpoint: None,
            receipts: Vec::new(),
            exports: Vec::new(),
            retention: Default::default(),
            erasures: Vec::new(),
        }));
    }
    crate::receipts::routes::integrate(&state, &v.tenant).await?;
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let current = crate::policy::versions::current(&mut tx).await?;
    let all = crate::policy::versions::list(&mut tx).await?;
    let versions = all
        .iter()
        .enumerate()
        .map(|(i, ver)| VersionRow {
            diff: all
                .get(i + 1)
                .map(|prev| crate::policy::versions::diff(prev, ver))
                .unwrap_or_default(),
            version: crate::policy::versions::Version {
                version: ver.version,
                text: String::new(),
                note: ver.note.clone(),
                created_by: ver.created_by.clone(),
                created_at: ver.created_at,
            },
        })
        .collect();
    // People by email and keys by name, not by id.
    let mut names: std::collections::HashMap<String, String> =
        crate::tenancy::members::list(&mut tx)
            .await?
            .into_iter()
            .map(|m| (m.user_id.to_string(), m.email))
            .collect();
    for k in crate::tenancy::api_keys::list(&mut tx).await? {
        names.insert(k.id.to_string(), format!("API key “{}”", k.name));
    }
    let who = |kind: &str, id: &str| match (kind, names.get(id)) {
        ("support_admin", _) => "a support session".to_owned(),
        (_, Some(n)) => n.clone(),
        ("system", _) => "the system".to_owned(),
        (k, None) => k.replace('_', " "),
    };
    let decisions = crate::policy::routes::recent(&mut tx, 20)
        .await?
        .into_iter()
        .map(|d| DecisionRow {
            at: d.at.format("%Y-%m-%d %H:%M UTC").to_string(),
            allowed: d.allowed,
            who: who(&d.principal_type, &d.principal_id),
            policies: if d.policies.is_empty() {
                "no policy permits it".into()
            } else {
                d.policies.join(", ")
            },
            action: d.action,
        })
        .collect();
    let checkpoint = crate::receipts::log::latest_checkpoint(&mut tx).await?;
    let rows: Vec<crate::receipts::routes::ReceiptSummary> = tx
        .fetch_all(crate::store::scoped(
            "SELECT id, seq AS \"index\", action, actor_type, actor_id, created_at, purged_at IS NOT NULL AS purged \
             FROM receipts WHERE tenant_id = $1 ORDER BY id DESC LIMIT 15",
        ))
        .await?;
    let receipts = rows
        .into_iter()
        .map(|r| {
            (
                r.index.map_or_else(|| "…".into(), |s| s.to_string()),
                r.action,
                who(&r.actor_type, &r.actor_id),
                r.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            )
        })
        .collect();
    let now = chrono::Utc::now();
    let exports = crate::exports::list(&mut tx)
        .await?
        .into_iter()
        .map(|mut e| {
            // Past its window before housekeeping dropped the bytes.
            if e.status == "ready" && e.expires_at.is_some_and(|t| t <= now) {
                e.status = "expired".into();
            }
            e
        })
        .collect();
    let retention = crate::retention::get(&mut tx).await?;
    let me = v.user.id.to_string();
    let erasures = crate::erasures::list(&mut tx, state.clock.now())
        .await?
        .into_iter()
        .map(|e| ErasureRow {
            asked_by: who("user", &e.requested_by),
            approved_by: e
                .approved_by
                .as_deref()
                .map(|a| who("user", a))
                .unwrap_or_default(),
            removed: e
                .manifest
                .as_ref()
                .and_then(|m| m.as_object())
                .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
                .unwrap_or(0),
            can_approve: e.status == "requested" && e.requested_by != me,
            e,
        })
        .collect();
    tx.commit().await?;
    Ok(render(&TrustPage {
        shell,
        schema: crate::policy::texts::SCHEMA,
        floors: crate::policy::texts::FLOORS,
        is_admin: true,
        current: Some(current),
        versions,
        decisions,
        checkpoint,
        receipts,
        exports,
        retention,
        erasures,
    }))
}
