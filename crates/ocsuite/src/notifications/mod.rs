//! The notification centre and the email outbox.
//!
//! A notification is a row for one person, written in the transaction of what it
//! reports, and an event on the tenant's `notifications` topic (numbered by a counter on
//! the tenant row, so resume works) for open browsers. One that asks for email also
//! writes an `outbox` row and queues a `send-email` job in that same transaction; the
//! job ([`email::SendEmail`]) delivers through SMTP when `OCSUITE_SMTP_URL` is set, and
//! otherwise keeps the message as `held` in the development mailbox admins can read.

pub mod email;
pub mod preferences;
pub mod routes;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::error::Result;
use crate::ids::{EmailId, NotificationId, UserId};
use crate::queue::{self, NewJob, SEND_EMAIL};
use crate::realtime::{self, Event, Topic};
use crate::store::{TenantTx, scoped};

/// The `send-email` job's payload.
#[derive(Serialize, serde::Deserialize)]
pub struct EmailJob {
    pub email_id: EmailId,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Notification {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub meeting_id: Option<String>,
    pub task_id: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A notification to send.
pub struct New<'a> {
    pub user: &'a UserId,
    /// `task.succeeded`, `task.failed`, …
    pub kind: &'a str,
    pub title: String,
    pub body: String,
    pub meeting_id: Option<&'a str>,
    pub task_id: Option<&'a str>,
    /// Also send it by email, unless the person's preferences for this kind's category
    /// say otherwise ([`preferences`]).
    pub email: bool,
}

/// Stores a notification (and its email) inside `tx`; returns the event to publish
/// after commit. A user who is no longer a member is not notified.
pub async fn notify(tx: &mut TenantTx, n: New<'_>) -> Result<Vec<Event>> {
    let to: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.user_id = $2")
                .bind(n.user),
        )
        .await?;
    let Some((to,)) = to else {
        return Ok(vec![]);
    };
    let channels = preferences::channels(tx, n.user, n.kind, n.email).await?;
    if channels.email {
        queue_email(tx, &to, &n.title, &n.body).await?;
    }
    if !channels.in_app {
        return Ok(vec![]);
    }
    let id = NotificationId::new();
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO notifications (tenant_id, id, user_id, kind, title, body, meeting_id, task_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&id)
            .bind(n.user)
            .bind(n.kind)
            .bind(n.title.as_str())
            .bind(n.body.as_str())
            .bind(n.meeting_id)
            .bind(n.task_id)
            .bind(now),
    )
    .await?;
    let (seq,): (i64,) = tx
        .fetch_one(
            scoped("UPDATE tenants SET notification_seq = notification_seq + 1 WHERE id = $1 RETURNING notification_seq"),
        )
        .await?;
    let ev = realtime::record(
        tx,
        &Topic::Notifications.name(),
        seq,
        n.kind,
        json!({"notification_id": id, "user_id": n.user, "title": n.title, "meeting_id": n.meeting_id, "task_id": n.task_id}),
    )
    .await?;
    Ok(vec![ev])
}

/// The tenant's members, optionally only its owners and admins.
pub async fn members(tx: &mut TenantTx, admins_only: bool) -> Result<Vec<UserId>> {
    let rows: Vec<(UserId,)> = tx
        .fetch_all(
            scoped("SELECT user_id FROM memberships WHERE tenant_id = $1 AND ($2 = FALSE OR role IN ('owner', 'admin')) ORDER BY user_id")
                .bind(admins_only),
        )
        .await?;
    Ok(rows.into_iter().map(|(u,)| u).collect())
}

/// A notification for several people: [`New`] without its one recipient.
pub struct Broadcast<'a> {
    pub kind: &'a str,
    pub title: String,
    pub body: String,
    pub meeting_id: Option<&'a str>,
    pub task_id: Option<&'a str>,
    pub email: bool,
}

/// Sends `b` to each of `users`, each by their own preferences.
pub async fn notify_all(
    tx: &mut TenantTx,
    users: &[UserId],
    b: Broadcast<'_>,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for user in users {
        events.extend(
            notify(
                tx,
                New {
                    user,
                    kind: b.kind,
                    title: b.title.clone(),
                    body: b.body.clone(),
                    meeting_id: b.meeting_id,
                    task_id: b.task_id,
                    email: b.email,
                },
            )
            .await?,
        );
    }
    Ok(events)
}

/// Writes an outbox row and queues its delivery.
pub async fn queue_email(
    tx: &mut TenantTx,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<EmailId> {
    let id = EmailId::new();
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO outbox (tenant_id, id, to_email, subject, body, status, attempts, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6)")
            .bind(&id)
            .bind(to)
            .bind(subject)
            .bind(body)
            .bind(now),
    )
    .await?;
    queue::enqueue(
        tx,
        NewJob {
            queue: SEND_EMAIL,
            payload: queue::payload(&EmailJob {
                email_id: id.clone(),
            }),
            priority: -1,
            run_at: now,
            max_attempts: email::MAX_ATTEMPTS,
            id: None,
        },
    )
    .await?;
    Ok(id)
}

/// Tells whoever called the meeting how one of its tasks ended.
pub async fn task_outcome(
    tx: &mut TenantTx,
    meeting_id: &str,
    task_id: &str,
    status: &str,
    error: Option<&str>,
) -> Result<Vec<Event>> {
    let row: Option<(String, String, Option<String>)> = tx
        .fetch_optional(
            scoped("SELECT m.created_by, m.agenda, (SELECT a.title FROM action_items a WHERE a.tenant_id = m.tenant_id AND a.task_id = $3) \
                 FROM meetings m WHERE m.tenant_id = $1 AND m.id = $2")
                .bind(meeting_id)
                .bind(task_id),
        )
        .await?;
    let Some((by, agenda, title)) = row else {
        return Ok(vec![]);
    };
    let Some(user) = by.strip_prefix("user:").and_then(UserId::parse) else {
        return Ok(vec![]);
    };
    let item = title.unwrap_or_else(|| "An action item".into());
    let agenda: String = agenda.chars().take(120).collect();
    let (headline, mut detail) = outcome_words(status, error);
    crate::webhooks::publish(
        tx,
        "task_outcomes",
        &format!("task.{status}"),
        json!({"task_id": task_id, "meeting_id": meeting_id, "title": item, "status": status, "error": error}),
        &format!("{item}: {headline}. {detail}"),
        Utc::now(),
    )
    .await?;
    if status != "succeeded" {
        detail.push_str(" Open the task to see what to do next.");
    }
    notify(
        tx,
        New {
            user: &user,
            kind: &format!("task.{status}"),
            title: format!("{item}: {headline}"),
            body: format!(
                "From the board meeting on \"{agenda}\": {item}. {detail}\nTask {task_id}, meeting {meeting_id}."
            ),
            meeting_id: Some(meeting_id),
            task_id: Some(task_id),
            email: true,
        },
    )
    .await
}

/// Tells the person whose conversation proposed a task (an agent's tool call they
/// approved) how it ended. Nothing for tasks that came from elsewhere, or that an agent
/// ran at once (reads).
pub async fn chat_task_outcome(
    tx: &mut TenantTx,
    task_id: &crate::ids::TaskId,
    status: &str,
    error: Option<&str>,
) -> Result<Vec<Event>> {
    let row: Option<(String, String, String, String)> = tx
        .fetch_optional(
            scoped(
                "SELECT c.created_by, c.persona, t.capability, c.id FROM tasks t \
                 JOIN conversations c ON c.tenant_id = t.tenant_id AND c.id = t.conversation_id \
                 WHERE t.tenant_id = $1 AND t.id = $2 AND t.decided_by IS NOT NULL",
            )
            .bind(task_id),
        )
        .await?;
    let Some((by, persona, capability, conversation)) = row else {
        return Ok(vec![]);
    };
    let Some(user) = by.strip_prefix("user:").and_then(UserId::parse) else {
        return Ok(vec![]);
    };
    let who = persona.to_uppercase();
    let (headline, detail) = outcome_words(status, error);
    crate::webhooks::publish(
        tx,
        "task_outcomes",
        &format!("task.{status}"),
        json!({"task_id": task_id, "conversation_id": conversation, "capability": capability, "status": status, "error": error}),
        &format!("{capability} proposed by the {who}: {headline}. {detail}"),
        Utc::now(),
    )
    .await?;
    notify(
        tx,
        New {
            user: &user,
            kind: &format!("task.{status}"),
            title: format!("{capability} proposed by the {who}: {headline}"),
            body: format!(
                "In your conversation with the {who}, it proposed {capability}. {detail} The {who} sees this the next time you write.\nTask {task_id}, conversation {conversation}."
            ),
            meeting_id: None,
            task_id: Some(task_id.as_str()),
            email: status != "succeeded",
        },
    )
    .await
}

/// A finished task's outcome in words: the title's headline and the body's sentence.
fn outcome_words(status: &str, error: Option<&str>) -> (String, String) {
    match status {
        "succeeded" => ("done".to_owned(), "It ran successfully.".to_owned()),
        other => (
            other.to_owned(),
            format!(
                "It did not complete: {}.",
                error.unwrap_or("no reason given")
            ),
        ),
    }
}

pub async fn list(
    tx: &mut TenantTx,
    user: &UserId,
    unread_only: bool,
    limit: i64,
) -> Result<Vec<Notification>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT id, kind, title, body, meeting_id, task_id, read_at, created_at FROM notifications \
                 WHERE tenant_id = $1 AND user_id = $2 AND ($3 = FALSE OR read_at IS NULL) ORDER BY id DESC LIMIT $4")
                .bind(user)
                .bind(unread_only)
                .bind(limit),
        )
        .await?)
}

/// Marks the user's notifications read: those in `ids`, or all when `None`.
pub async fn mark_read(tx: &mut TenantTx, user: &UserId, ids: Option<&[String]>) -> Result<u64> {
    let now = Utc::now();
    match ids {
        None => Ok(tx
            .execute(
                scoped("UPDATE notifications SET read_at = $2 WHERE tenant_id = $1 AND user_id = $3 AND read_at IS NULL")
                    .bind(now)
                    .bind(user),
            )
            .await?),
        Some(ids) => {
            let mut n = 0;
            for id in ids {
                n += tx
                    .execute(
                        scoped("UPDATE notifications SET read_at = $2 WHERE tenant_id = $1 AND user_id = $3 AND id = $4 AND read_at IS NULL")
                            .bind(now)
                            .bind(user)
                            .bind(id.as_str()),
                    )
                    .await?;
            }
            Ok(n)
        }
    }
}
