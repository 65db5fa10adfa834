//! The `erase-person` job: what an approved erasure removes, in one transaction.
//!
//! * **Removed**: the person's membership, invitations, notifications and preferences,
//!   sign-ins in flight, conversations (with their messages), emails waiting for them,
//!   their CRM leads (with stage history) and campaign recipient rows, and live-update
//!   events that name them.
//! * **Kept, without them**: records the company needs (tasks they created or decided,
//!   agents, meetings, keys, automations…) name `erased` instead of them; audit entries
//!   and policy decisions that named them lose that actor, target or detail; the
//!   receipts sealing those entries drop the same fields' values and salts and keep
//!   their commitments, so every proof over the log still verifies.
//! * **Kept as is**: an email suppression for the address, so they are never mailed
//!   again; free text others wrote about them (messages, documents, task inputs) is not
//!   searched.
//!
//! The job ends with an `erasure.completed` audit entry (its receipt is the erasure's)
//! listing each table and how many rows went or changed; the address is then dropped
//! from the request, which keeps its hint and salted hash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ERASE_QUEUE, get, mark_failed, owner_refused};
use crate::error::{AppError, Result};
use crate::ids::{ErasureId, TenantId};
use crate::queue::Claimed;
use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::realtime::Event;
use crate::receipts::Revealed;
use crate::state::AppState;
use crate::store::{TenantTx, scoped};

/// What a person's id becomes where a record must stay.
pub const ERASED: &str = "erased";
/// What an audit entry's details (or a decision's question) become when they named the
/// person.
pub const REDACTED: &str = r#"{"redacted":"erasure"}"#;

#[derive(Serialize, Deserialize)]
pub struct EraseJob {
    pub tenant_id: TenantId,
    pub erasure_id: ErasureId,
}

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

/// Removes the person from the company of `tx`; returns the manifest (each table, or
/// `table.column`, and how many rows went or changed).
async fn erase(tx: &mut TenantTx, email: &str, user: Option<&str>) -> Result<Map<String, Value>> {
    let mut manifest = BTreeMap::<String, u64>::new();
    let mut count = |k: &str, n: u64| {
        if n > 0 {
            *manifest.entry(k.to_owned()).or_default() += n;
        }
    };
    let email_like = containing(email);
    // Records that name the person: the audit log, the decision log, events.
    let (user_like, user_id) = match user {
        Some(u) => (containing(u), u.to_owned()),
        // Matches nothing: ids never hold a NUL.
        None => ("\0".to_owned(), "\0".to_owned()),
    };
    count(
        "audit_log.actor_id",
        tx.execute(
            scoped("UPDATE audit_log SET actor_id = 'erased' WHERE tenant_id = $1 AND actor_id LIKE $2 ESCAPE '\\'")
                .bind(user_like.as_str()),
        )
        .await?,
    );
    count(
        "audit_log.target_id",
        tx.execute(
            scoped(
                "UPDATE audit_log SET target_id = 'erased' WHERE tenant_id = $1 \
                    AND (target_id LIKE $2 ESCAPE '\\' OR lower(target_id) LIKE $3 ESCAPE '\\')",
            )
            .bind(user_like.as_str())
            .bind(email_like.as_str()),
        )
        .await?,
    );
    count(
        "audit_log.details",
        tx.execute(
            scoped(
                "UPDATE audit_log SET details = $4 WHERE tenant_id = $1 \
                    AND (details LIKE $2 ESCAPE '\\' OR lower(details) LIKE $3 ESCAPE '\\')",
            )
            .bind(user_like.as_str())
            .bind(email_like.as_str())
            .bind(REDACTED),
        )
        .await?,
    );
    count(
        "policy_decisions.principal_id",
        tx.execute(
            scoped("UPDATE policy_decisions SET principal_id = 'erased' WHERE tenant_id = $1 AND principal_id = $2")
                .bind(user_id.as_str()),
        )
        .await?,
    );
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
    count(
        "events",
        tx.execute(
            scoped(
                "DELETE FROM events WHERE tenant_id = $1 \
                    AND (data LIKE $2 ESCAPE '\\' OR lower(data) LIKE $3 ESCAPE '\\')",
            )
            .bind(user_like.as_str())
            .bind(email_like.as_str()),
        )
        .await?,
    );
    count(
        "receipts",
        redact_receipts(tx, email, user, &email_like, &user_like).await?,
    );
    // What is the person's own.
    for (table, q) in EMAIL_ROWS {
        count(table, tx.execute(scoped(q).bind(email)).await?);
    }
    if user.is_some() {
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

/// Drops, from every receipt, the fields whose value names the person (their id or
/// address); their commitments stay. Returns how many receipts changed.
async fn redact_receipts(
    tx: &mut TenantTx,
    email: &str,
    user: Option<&str>,
    email_like: &str,
    user_like: &str,
) -> Result<u64> {
    let rows: Vec<(String, String)> = tx
        .fetch_all(
            scoped(
                "SELECT id, fields FROM receipts WHERE tenant_id = $1 AND fields IS NOT NULL \
                 AND (fields LIKE $2 ESCAPE '\\' OR lower(fields) LIKE $3 ESCAPE '\\')",
            )
            .bind(user_like)
            .bind(email_like),
        )
        .await?;
    let now = Utc::now();
    let mut n = 0;
    for (id, fields) in rows {
        let mut f: BTreeMap<String, Revealed> =
            serde_json::from_str(&fields).map_err(AppError::internal)?;
        let before = f.len();
        f.retain(|_, r| {
            let v = r.value.to_lowercase();
            !(v.contains(email) || user.is_some_and(|u| r.value.contains(u)))
        });
        if f.len() != before {
            crate::receipts::redact(tx, &id, &f, now).await?;
            n += 1;
        }
    }
    if let Some(u) = user {
        tx.execute(
            scoped(
                "UPDATE receipts SET actor_id = 'erased' WHERE tenant_id = $1 AND actor_id = $2",
            )
            .bind(u),
        )
        .await?;
    }
    Ok(n)
}

/// The `erase-person` job (in the HQ company's queue).
pub struct ErasePerson {
    state: AppState,
}

impl ErasePerson {
    pub fn new(state: &AppState) -> Self {
        Self {
            state: state.clone(),
        }
    }

    async fn attempt(&self, job: &EraseJob) -> Result<Value> {
        let mut tx = self.state.store.tenant(&job.tenant_id).await?;
        let e = get(&mut tx, &job.erasure_id, self.state.clock.now()).await?;
        if e.status == "done" {
            return Ok(json!({ "already": true }));
        }
        if e.status != "approved" {
            return Err(AppError::Conflict(format!("the request is {}", e.status)));
        }
        let (email,): (Option<String>,) = tx
            .fetch_one(
                scoped("SELECT email FROM erasures WHERE tenant_id = $1 AND id = $2")
                    .bind(&job.erasure_id),
            )
            .await?;
        let email =
            email.ok_or_else(|| AppError::Conflict("the request holds no address".into()))?;
        if let Some(u) = &e.user_id {
            let role: Option<(String,)> = tx
                .fetch_optional(
                    scoped("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                        .bind(u),
                )
                .await?;
            if role.is_some_and(|(r,)| r == "owner") {
                return Err(owner_refused());
            }
        }
        let manifest = Value::Object(erase(&mut tx, &email, e.user_id.as_deref()).await?);
        // The admins, unless one of them was the person.
        let admin = |a: Option<&str>| match a {
            Some(a) if Some(a) == e.user_id.as_deref() => Some(ERASED.to_owned()),
            other => other.map(str::to_owned),
        };
        let (requested_by, approved_by) = (
            admin(Some(&e.requested_by)),
            admin(e.approved_by.as_deref()),
        );
        let receipt = crate::audit::record_system_sealed(
            &mut tx,
            "erasure.completed",
            "erasure",
            job.erasure_id.as_str(),
            json!({ "requested_by": requested_by, "approved_by": approved_by, "removed": manifest }),
        )
        .await?;
        tx.execute(
            scoped(
                "UPDATE erasures SET status = 'done', email = NULL, user_id = NULL, finished_at = $3, manifest = $4, receipt_id = $5 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(&job.erasure_id)
            .bind(Utc::now())
            .bind(manifest.to_string())
            .bind(&receipt),
        )
        .await?;
        tx.commit().await?;
        Ok(json!({ "removed": manifest, "receipt": receipt }))
    }

    async fn give_up(&self, job: &EraseJob, why: &str) {
        let failed = async {
            let mut tx = self.state.store.tenant(&job.tenant_id).await?;
            mark_failed(&mut tx, &job.erasure_id, why).await?;
            tx.commit().await?;
            Ok::<_, AppError>(())
        };
        if let Err(e) = failed.await {
            tracing::error!(error = %e, erasure = %job.erasure_id, "an erasure's failure could not be recorded");
        }
    }
}

impl Handler for ErasePerson {
    fn queue(&self) -> &'static str {
        ERASE_QUEUE
    }

    fn start<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            match job.payload_as::<EraseJob>() {
                Some(p) => Start::run(Duration::from_secs(600), vec![], &p),
                None => Ok(Start::Skip { events: vec![] }),
            }
        })
    }

    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: EraseJob = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match self.attempt(&p).await {
                Ok(output) => Outcome::Succeeded {
                    output,
                    summary: Some("person erased".into()),
                },
                Err(e @ AppError::Conflict(_)) => {
                    self.give_up(&p, &e.to_string()).await;
                    Outcome::Failed {
                        error: e.to_string(),
                        retryable: false,
                    }
                }
                Err(e) => {
                    if job.attempts >= job.max_attempts {
                        tracing::error!(error = %e, erasure = %p.erasure_id, "an erasure failed for good");
                        self.give_up(&p, "the erasure could not be carried out; ask again, and if it fails again tell the operator")
                            .await;
                    }
                    Outcome::Failed {
                        error: e.to_string(),
                        retryable: true,
                    }
                }
            }
        })
    }

    fn settle<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        _job: &'a Claimed,
        _resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async { Ok(vec![]) })
    }
}
