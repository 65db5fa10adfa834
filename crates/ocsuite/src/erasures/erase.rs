//! What an approved erasure removes, in one transaction.
//!
//! * **Removed**: the person's membership, invitations, notifications and preferences,
//!   sign-ins in flight, conversations (with their messages), emails waiting for them,
//!   their CRM leads (with stage history), campaign recipient rows and audience entries,
//!   webhook deliveries and live-update events that name them, and every export archive
//!   built before (they hold the person too).
//! * **Revoked**: the API keys they made (and keys those keys made).
//! * **Kept, without them**: records the company needs (tasks they created or decided,
//!   agents, meetings, keys, automations…) name `erased` instead of them; audit entries
//!   and policy decisions that named them lose that actor, target or detail; the
//!   receipts sealing those entries drop the same fields' values and salts and keep
//!   their commitments, so every proof over the log still verifies.
//! * **Kept as is**: an email suppression for the address, so they are never mailed
//!   again; free text others wrote about them (messages, documents, task inputs) is not
//!   searched.
//!
//! Audit rows and receipts are changed by one rule ([`Person::named_in`]) applied to the
//! same text, so an export's audit log and its receipts always agree on every field the
//! receipt still shows.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::error::{AppError, Result};
use crate::ids::ApiKeyId;
use crate::receipts::Revealed;
use crate::store::{TenantTx, scoped};

/// What a person's id becomes where a record must stay.
pub const ERASED: &str = "erased";
/// What an audit entry's details (or a decision's question) become when they named the
/// person.
pub const REDACTED: &str = r#"{"redacted":"erasure"}"#;
/// The receipt fields an erasure may drop; the others (action, kinds, time, request,
/// audit id) never name a person, and the offline verifier refuses any other gap.
pub const REDACTABLE: [&str; 3] = ["actor_id", "target_id", "details"];

/// `(table.column, UPDATE … SET column = 'erased' WHERE column names $2)` for every
/// column that names who did something (some hold the id alone, some `user:<id>`).
macro_rules! pseudonymise {
    ($(($t:ident, $c:ident)),* $(,)?) => {
        &[$((
            concat!(stringify!($t), ".", stringify!($c)),
            concat!("UPDATE ", stringify!($t), " SET ", stringify!($c), " = 'erased' WHERE tenant_id = $1 AND ",
                stringify!($c), " LIKE $2 ESCAPE '\\'"),
        )),*]
    };
}

const BY_PERSON: &[(&str, &str)] = pseudonymise!(
    (invites, invited_by),
    (invites, accepted_by),
    (api_keys, created_by),
    (mcp_servers, created_by),
    (tasks, created_by),
    (tasks, decided_by),
    (agents, created_by),
    (connectors, connected_by),
    (meetings, created_by),
    (meetings, rated_by),
    (leads, created_by),
    (lead_stage_history, changed_by),
    (transactions, categorized_by),
    (email_campaigns, created_by),
    (knowledge_sources, created_by),
    (triggers, created_by),
    (alerts, acted_by),
    (webhooks, created_by),
    (exports, requested_by),
    (policy_versions, created_by),
    (policy_decisions, principal_id),
    (receipts, actor_id),
    (retention_settings, updated_by),
    (erasures, requested_by),
    (erasures, approved_by),
);

/// Rows that are the person's, by user id (`$2`: `%<id>%`, as some columns hold
/// `user:<id>`).
const USER_ROWS: &[(&str, &str)] = &[
    (
        "memberships",
        "DELETE FROM memberships WHERE tenant_id = $1 AND user_id LIKE $2 ESCAPE '\\'",
    ),
    (
        "notifications",
        "DELETE FROM notifications WHERE tenant_id = $1 AND user_id LIKE $2 ESCAPE '\\'",
    ),
    (
        "notification_preferences",
        "DELETE FROM notification_preferences WHERE tenant_id = $1 AND user_id LIKE $2 ESCAPE '\\'",
    ),
    (
        "oauth_states",
        "DELETE FROM oauth_states WHERE tenant_id = $1 AND user_id LIKE $2 ESCAPE '\\'",
    ),
    (
        "conversations",
        "DELETE FROM conversations WHERE tenant_id = $1 AND created_by LIKE $2 ESCAPE '\\'",
    ),
    (
        "messages",
        "DELETE FROM messages WHERE tenant_id = $1 AND created_by LIKE $2 ESCAPE '\\'",
    ),
];

/// Rows that are the person's, by address (`$2`, lower case).
const EMAIL_ROWS: &[(&str, &str)] = &[
    (
        "invites",
        "DELETE FROM invites WHERE tenant_id = $1 AND lower(email) = $2",
    ),
    (
        "outbox",
        "DELETE FROM outbox WHERE tenant_id = $1 AND lower(to_email) = $2",
    ),
    (
        "lead_stage_history",
        "DELETE FROM lead_stage_history WHERE tenant_id = $1 AND lead_id IN \
         (SELECT id FROM leads WHERE tenant_id = $1 AND lower(email) = $2)",
    ),
    (
        "leads",
        "DELETE FROM leads WHERE tenant_id = $1 AND lower(email) = $2",
    ),
    (
        "email_recipients",
        "DELETE FROM email_recipients WHERE tenant_id = $1 AND lower(email) = $2",
    ),
];

/// `%text%` for LIKE … ESCAPE '\', with the text's own wildcards escaped.
fn containing(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The person being erased: their address (lower case) and, when they have an account
/// here, their user id.
pub struct Person<'a> {
    pub email: &'a str,
    pub user: Option<&'a str>,
}

impl Person<'_> {
    /// Whether `text` names the person. The SQL prefilters (`LIKE`) only narrow the
    /// rows this is asked about.
    pub fn named_in(&self, text: &str) -> bool {
        text.to_lowercase().contains(self.email) || self.user.is_some_and(|u| text.contains(u))
    }
}

/// Removes the person from the company of `tx`; returns the manifest (each table, or
/// `table.column`, and how many rows went or changed).
pub async fn erase(tx: &mut TenantTx, p: &Person<'_>) -> Result<Map<String, Value>> {
    let mut manifest = BTreeMap::<String, u64>::new();
    let mut count = |k: &str, n: u64| {
        if n > 0 {
            *manifest.entry(k.to_owned()).or_default() += n;
        }
    };
    let email_like = containing(p.email);
    // Without an account, the id pattern repeats the address's (never a NUL, which
    // PostgreSQL refuses in text).
    let user_like = p.user.map_or_else(|| email_like.clone(), containing);
    let (receipts, audit) = redact_log(tx, p, &email_like, &user_like).await?;
    count("receipts", receipts);
    for (k, n) in audit {
        count(&k, n);
    }
    count(
        "policy_decisions.question",
        tx.execute(
            scoped(
                "UPDATE policy_decisions SET question = $4 WHERE tenant_id = $1 \
                 AND (question LIKE $2 ESCAPE '\\' OR lower(question) LIKE $3 ESCAPE '\\')",
            )
            .bind(user_like.as_str())
            .bind(email_like.as_str())
            .bind(REDACTED),
        )
        .await?,
    );
    for (table, q) in [
        (
            "events",
            "DELETE FROM events WHERE tenant_id = $1 \
             AND (data LIKE $2 ESCAPE '\\' OR lower(data) LIKE $3 ESCAPE '\\')",
        ),
        (
            "webhook_deliveries",
            "DELETE FROM webhook_deliveries WHERE tenant_id = $1 \
             AND (payload LIKE $2 ESCAPE '\\' OR lower(payload) LIKE $3 ESCAPE '\\')",
        ),
    ] {
        count(
            table,
            tx.execute(scoped(q).bind(user_like.as_str()).bind(email_like.as_str()))
                .await?,
        );
    }
    count(
        "email_campaigns.audience",
        trim_audiences(tx, p, &email_like).await?,
    );
    count(
        "exports.archive",
        tx.execute(scoped(
            "UPDATE exports SET archive = NULL, status = 'expired' WHERE tenant_id = $1 AND archive IS NOT NULL",
        ))
        .await?,
    );
    for (table, q) in EMAIL_ROWS {
        count(table, tx.execute(scoped(q).bind(p.email)).await?);
    }
    if let Some(u) = p.user {
        count("api_keys.revoked", revoke_keys(tx, u).await?);
        for (table, q) in USER_ROWS {
            count(table, tx.execute(scoped(q).bind(user_like.as_str())).await?);
        }
        for (column, q) in BY_PERSON {
            count(
                column,
                tx.execute(scoped(q).bind(user_like.as_str())).await?,
            );
        }
    }
    Ok(manifest
        .into_iter()
        .map(|(k, n)| (k, Value::from(n)))
        .collect())
}

/// The audit rows and receipts that name the person, changed by the same rule: an
/// audit row's actor or target becomes `erased`, its details [`REDACTED`]; its receipt
/// (and a decision's) drops the same fields. Returns (receipts changed, audit columns
/// changed).
async fn redact_log(
    tx: &mut TenantTx,
    p: &Person<'_>,
    email_like: &str,
    user_like: &str,
) -> Result<(u64, Vec<(String, u64)>)> {
    let rows: Vec<(String, String, String, String)> = tx
        .fetch_all(
            scoped(
                "SELECT id, actor_id, target_id, details FROM audit_log WHERE tenant_id = $1 AND (\
                 actor_id LIKE $2 ESCAPE '\\' OR target_id LIKE $2 ESCAPE '\\' OR details LIKE $2 ESCAPE '\\' \
                 OR lower(actor_id) LIKE $3 ESCAPE '\\' OR lower(target_id) LIKE $3 ESCAPE '\\' \
                 OR lower(details) LIKE $3 ESCAPE '\\')",
            )
            .bind(user_like)
            .bind(email_like),
        )
        .await?;
    let (mut actors, mut targets, mut details) = (0, 0, 0);
    for (id, actor, target, detail) in rows {
        let pick = |named: bool, value: String, with: &str, n: &mut u64| {
            if named {
                *n += 1;
                with.to_owned()
            } else {
                value
            }
        };
        let (a, t, d) = (p.named_in(&actor), p.named_in(&target), p.named_in(&detail));
        if !(a || t || d) {
            continue;
        }
        let actor = pick(a, actor, ERASED, &mut actors);
        let target = pick(t, target, ERASED, &mut targets);
        let detail = pick(d, detail, REDACTED, &mut details);
        tx.execute(
            scoped("UPDATE audit_log SET actor_id = $3, target_id = $4, details = $5 WHERE tenant_id = $1 AND id = $2")
                .bind(id.as_str())
                .bind(actor)
                .bind(target)
                .bind(detail),
        )
        .await?;
    }
    let receipts: Vec<(String, String)> = tx
        .fetch_all(
            scoped(
                "SELECT id, fields FROM receipts WHERE tenant_id = $1 AND fields IS NOT NULL \
                 AND (fields LIKE $2 ESCAPE '\\' OR lower(fields) LIKE $3 ESCAPE '\\') ORDER BY created_at, id",
            )
            .bind(user_like)
            .bind(email_like),
        )
        .await?;
    let now = Utc::now();
    let mut changed = 0;
    for (id, fields) in receipts {
        let mut f: BTreeMap<String, Revealed> =
            serde_json::from_str(&fields).map_err(AppError::internal)?;
        let before = f.len();
        f.retain(|name, r| !(REDACTABLE.contains(&name.as_str()) && p.named_in(&r.value)));
        if f.len() != before {
            crate::receipts::redact(tx, &id, &f, now).await?;
            changed += 1;
        }
    }
    Ok((
        changed,
        vec![
            ("audit_log.actor_id".into(), actors),
            ("audit_log.target_id".into(), targets),
            ("audit_log.details".into(), details),
        ],
    ))
}

/// Drops the person from campaigns' recipient lists.
async fn trim_audiences(tx: &mut TenantTx, p: &Person<'_>, email_like: &str) -> Result<u64> {
    let rows: Vec<(String, String)> = tx
        .fetch_all(
            scoped("SELECT id, audience FROM email_campaigns WHERE tenant_id = $1 AND lower(audience) LIKE $2 ESCAPE '\\'")
                .bind(email_like),
        )
        .await?;
    let mut n = 0;
    for (id, audience) in rows {
        let Ok(mut a) = serde_json::from_str::<Value>(&audience) else {
            continue;
        };
        let Some(list) = a.get_mut("recipients").and_then(Value::as_array_mut) else {
            continue;
        };
        let before = list.len();
        list.retain(|r| {
            r.get("email")
                .and_then(Value::as_str)
                .is_none_or(|e| e.trim().to_lowercase() != p.email)
        });
        if list.len() != before {
            tx.execute(
                scoped("UPDATE email_campaigns SET audience = $3 WHERE tenant_id = $1 AND id = $2")
                    .bind(id.as_str())
                    .bind(a.to_string()),
            )
            .await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Revokes the keys the person made, and the keys those keys made, each with an audit
/// entry; returns how many.
async fn revoke_keys(tx: &mut TenantTx, user: &str) -> Result<u64> {
    let now = Utc::now();
    let mut makers = vec![user.to_owned()];
    let mut n = 0;
    while let Some(maker) = makers.pop() {
        let keys: Vec<(String,)> = tx
            .fetch_all(
                scoped("SELECT id FROM api_keys WHERE tenant_id = $1 AND created_by = $2 AND revoked_at IS NULL")
                    .bind(maker.as_str()),
            )
            .await?;
        for (id,) in keys {
            tx.execute(
                scoped("UPDATE api_keys SET revoked_at = $2 WHERE tenant_id = $1 AND id = $3")
                    .bind(now)
                    .bind(id.as_str()),
            )
            .await?;
            crate::audit::record_system(
                tx,
                "api_key.revoke",
                "api_key",
                &id,
                json!({ "reason": "its maker was erased" }),
            )
            .await?;
            if id.starts_with(ApiKeyId::PREFIX) {
                makers.push(id);
            }
            n += 1;
        }
    }
    Ok(n)
}
