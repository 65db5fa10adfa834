//! Security events read back: a company's admins see the events about their company
//! (API keys used from a new address, denied attempts on it, support sessions) and
//! their members' sign-in events; operators see all (`console::health`). Bursts raise
//! an alert in the company's inbox, once per window, through its usual channels.
//!
//! The events are written where they happen (`audit::security_event`); this module
//! adds the ones the request path learns (a denied company, a key's new address) and
//! the burst check after them.

pub mod routes;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::alerts::{self, Evidence, Figure, NewAlert, Severity};
use crate::auth::ClientMeta;
use crate::error::Result;
use crate::ids::{TenantId, UserId};
use crate::state::AppState;
use crate::store::{TenantTx, scoped};

/// How many of one kind in [`WINDOW_MINUTES`] make a burst.
pub const BURST: i64 = 10;
pub const WINDOW_MINUTES: i64 = 10;

/// One event as a company's admins see it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SecurityEventOut {
    pub id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    /// `login`, `login.failed`, `login.locked`, `login.new_device`, `mfa.enable`,
    /// `api_key.new_address`, `tenant.denied`, `impersonation.start` …
    pub action: String,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The events about the company of `tx` or its members, newest first.
pub async fn list(
    tx: &mut TenantTx,
    action: Option<&str>,
    limit: i64,
) -> Result<Vec<SecurityEventOut>> {
    Ok(tx
        .fetch_all(
            scoped(
                "SELECT e.id, e.user_id, e.email, e.action, e.ip, e.created_at FROM security_events e \
                  WHERE (e.about_tenant = $1 \
                         OR e.user_id IN (SELECT m.user_id FROM memberships m WHERE m.tenant_id = $1)) \
                    AND ($2 = '' OR e.action = $2) \
                  ORDER BY e.created_at DESC, e.id DESC LIMIT $3",
            )
            .bind(action.unwrap_or(""))
            .bind(limit),
        )
        .await?)
}

/// Records an event about `tenant` (outside any other transaction), then raises a burst
/// alert there when this kind came [`BURST`] times in the window.
pub async fn record_about(
    state: &AppState,
    tenant: &TenantId,
    user: Option<&UserId>,
    action: &str,
    meta: &ClientMeta,
) -> Result<()> {
    let mut tx = state.store.tenant(tenant).await?;
    crate::audit::security_event_about(&mut tx, user, None, action, meta, Some(tenant)).await?;
    tx.commit().await?;
    burst_check(state, tenant, action).await
}

/// After a member's failed sign-in: a burst raises an alert in each of their companies.
pub async fn after_failed_login(state: &AppState, user: &UserId) -> Result<()> {
    let mut tx = state.store.user(user).await?;
    let companies = crate::tenancy::tenants::list_for_user(&mut tx).await?;
    tx.commit().await?;
    for t in companies {
        burst_check(state, &t.id, "login.failed").await?;
    }
    Ok(())
}

/// Counts `action` in the window for the company of `tenant` (about it, or by its
/// members) and raises one alert per window when it reaches [`BURST`].
async fn burst_check(state: &AppState, tenant: &TenantId, action: &str) -> Result<()> {
    let now = Utc::now();
    let since = now - Duration::minutes(WINDOW_MINUTES);
    let mut tx = state.store.tenant(tenant).await?;
    let (n,): (i64,) = tx
        .fetch_one(
            scoped(
                "SELECT count(*) FROM security_events e \
                  WHERE (e.about_tenant = $1 \
                         OR e.user_id IN (SELECT m.user_id FROM memberships m WHERE m.tenant_id = $1)) \
                    AND e.action = $2 AND e.created_at >= $3",
            )
            .bind(action)
            .bind(since),
        )
        .await?;
    if n < BURST {
        return Ok(());
    }
    let what = match action {
        "login.failed" => "failed sign-ins to your members' accounts",
        "tenant.denied" => "refused attempts to reach this company",
        "api_key.new_address" => "API keys used from new addresses",
        _ => "security events",
    };
    let bucket = now.timestamp() / (WINDOW_MINUTES * 60);
    let raised = alerts::raise(
        &mut tx,
        NewAlert {
            trigger_id: None,
            run_id: None,
            severity: Severity::Warning,
            title: format!("{n} {what} in {WINDOW_MINUTES} minutes"),
            body: format!(
                "ocsuite saw {n} {what} in the last {WINDOW_MINUTES} minutes. Review the security events in Settings; if it was not your team, change the passwords involved and turn on two-factor sign-in."
            ),
            evidence: Evidence {
                summary: format!("{n} × {action} since {}", since.format("%H:%M UTC")),
                figures: vec![Figure {
                    key: action.to_owned(),
                    label: what.to_owned(),
                    value: Some(n as f64),
                    display: n.to_string(),
                }],
                links: Vec::new(),
                event: None,
            },
            dedupe_key: format!("security:{action}:{bucket}"),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    if let Some((_, events)) = raised {
        state.bus.after_commit(events);
    }
    Ok(())
}
