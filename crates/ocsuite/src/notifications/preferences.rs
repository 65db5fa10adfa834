//! Who hears about what: each person's channels (in-app, email) per category.
//!
//! A notification's category comes from its kind (`alert.critical` → `alerts.critical`,
//! `task.failed` → `task_outcomes`, …). A category the person never set uses the
//! default: in-app on, email on for critical alerts and digests, and for task outcomes
//! whatever the sender asked. Tenant webhooks are a channel of the company, not of a
//! person: each endpoint lists the categories it receives (`crate::webhooks`).

use std::collections::BTreeMap;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};
use crate::ids::UserId;
use crate::store::{TenantTx, scoped};

/// Every category, in the order the settings page shows them.
pub const CATEGORIES: [&str; 6] = [
    "alerts.critical",
    "alerts.warning",
    "alerts.info",
    "approvals",
    "task_outcomes",
    "digests",
];

/// One category's channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub in_app: bool,
    pub email: bool,
}

/// A person's channels for every category.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    pub categories: BTreeMap<String, Channels>,
}

/// The category of a notification kind.
pub fn category(kind: &str) -> &'static str {
    match kind {
        "alert.critical" => "alerts.critical",
        "alert.warning" => "alerts.warning",
        k if k.starts_with("alert.") => "alerts.info",
        k if k.starts_with("approval.") => "approvals",
        k if k.starts_with("digest") => "digests",
        _ => "task_outcomes",
    }
}

/// The default channels of `category`; `email` is the sender's wish where the category
/// leaves it open (task outcomes).
fn default(category: &str, email: bool) -> Channels {
    Channels {
        in_app: true,
        email: match category {
            "alerts.critical" | "digests" => true,
            "task_outcomes" => email,
            _ => false,
        },
    }
}

/// The categories `user` set explicitly.
async fn stored(tx: &mut TenantTx, user: &UserId) -> Result<BTreeMap<String, Channels>> {
    let row: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT categories FROM notification_preferences WHERE tenant_id = $1 AND user_id = $2")
                .bind(user),
        )
        .await?;
    Ok(row
        .and_then(|(c,)| serde_json::from_str(&c).ok())
        .unwrap_or_default())
}

/// `user`'s channels for `kind`.
pub async fn channels(
    tx: &mut TenantTx,
    user: &UserId,
    kind: &str,
    email_by_default: bool,
) -> Result<Channels> {
    // Security notices (support viewing the company) cannot be muted: they exist so the
    // owners know, whatever else they chose.
    if kind.starts_with("impersonation.") {
        return Ok(Channels {
            in_app: true,
            email: true,
        });
    }
    let cat = category(kind);
    Ok(stored(tx, user)
        .await?
        .get(cat)
        .copied()
        .unwrap_or_else(|| default(cat, email_by_default)))
}

/// Every category with the channels in effect (task outcomes shown with email on, as
/// the board's task outcomes send it).
pub async fn get(tx: &mut TenantTx, user: &UserId) -> Result<Preferences> {
    let set = stored(tx, user).await?;
    Ok(Preferences {
        categories: CATEGORIES
            .iter()
            .map(|c| {
                (
                    (*c).to_owned(),
                    set.get(*c).copied().unwrap_or_else(|| default(c, true)),
                )
            })
            .collect(),
    })
}

/// Stores the categories given (the others keep their defaults).
pub async fn put(tx: &mut TenantTx, user: &UserId, p: &Preferences) -> Result<Preferences> {
    if let Some(bad) = p
        .categories
        .keys()
        .find(|k| !CATEGORIES.contains(&k.as_str()))
    {
        return Err(AppError::unprocessable(
            "unknown_category",
            "categories",
            format!(
                "unknown category `{}`; the categories are {}",
                bad.chars().take(64).collect::<String>(),
                CATEGORIES.join(", ")
            ),
        ));
    }
    let mut set = stored(tx, user).await?;
    set.extend(p.categories.iter().map(|(k, v)| (k.clone(), *v)));
    let json = serde_json::to_string(&set).map_err(AppError::internal)?;
    tx.execute(
        scoped("INSERT INTO notification_preferences (tenant_id, user_id, categories, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET categories = excluded.categories, updated_at = excluded.updated_at")
            .bind(user)
            .bind(json)
            .bind(Utc::now()),
    )
    .await?;
    get(tx, user).await
}
