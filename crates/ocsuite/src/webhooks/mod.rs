//! Outgoing webhooks: the company's own endpoints (its systems, a Slack or Teams
//! channel) told about alerts, approvals, task outcomes and digests.
//!
//! Messages follow the Standard Webhooks specification: `webhook-id` (the delivery's
//! id, the same on every retry so receivers can de-duplicate), `webhook-timestamp`
//! (Unix seconds of the attempt) and `webhook-signature` (`v1,` + base64 of
//! HMAC-SHA256 over `id.timestamp.body` with the endpoint's secret, `whsec_…`, shown
//! once at creation and kept encrypted with the tenant's key). An endpoint in `text`
//! format gets `{"text": …}` instead, which Slack and Teams incoming webhooks accept.
//!
//! [`publish`] writes a delivery row and its `deliver-webhook` job per endpoint that
//! takes the category, in the caller's transaction; [`deliver::DeliverWebhook`] sends
//! it, retries with backoff and leaves it in the dead-letter queue when it keeps failing.

pub mod deliver;
pub mod routes;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};

use crate::crypto::Crypto;
use crate::crypto::secrets;
use crate::error::{AppError, Result};
use crate::ids::{DeliveryId, WebhookId};
use crate::queue::{self, DELIVER_WEBHOOK, NewJob};
use crate::store::{TenantTx, scoped};

/// Attempts per message before it is dead-lettered (backoff between them).
pub const MAX_ATTEMPTS: u32 = 6;
/// Longest wait for an endpoint's answer.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const SECRET_PURPOSE: &str = "webhook";

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    /// standard | text
    pub format: String,
    pub categories: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

type Row = (
    WebhookId,
    String,
    String,
    String,
    String,
    bool,
    DateTime<Utc>,
);
macro_rules! columns {
    () => {
        "id, url, format, categories, description, enabled, created_at"
    };
}

fn from_row(r: Row) -> Webhook {
    Webhook {
        id: r.0,
        url: r.1,
        format: r.2,
        categories: serde_json::from_str(&r.3).unwrap_or_default(),
        description: r.4,
        enabled: r.5,
        created_at: r.6,
    }
}

/// A new endpoint's fields, checked by the route.
pub struct NewWebhook {
    pub url: String,
    pub format: String,
    pub categories: Vec<String>,
    pub description: String,
    pub created_by: String,
}

/// Stores an endpoint with a fresh signing secret; returns it and the secret (shown
/// this once).
pub async fn create(
    tx: &mut TenantTx,
    crypto: &Crypto,
    w: NewWebhook,
) -> Result<(Webhook, String)> {
    let id = WebhookId::new();
    let mut key = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let version = secrets::current_version(tx).await?;
    let secret_id = secrets::put(
        tx,
        crypto,
        version,
        SECRET_PURPOSE,
        id.as_str(),
        secret.as_bytes(),
    )
    .await?;
    tx.execute(
        scoped("INSERT INTO webhooks (tenant_id, id, url, format, categories, description, secret, enabled, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, $9)")
            .bind(&id)
            .bind(w.url.as_str())
            .bind(w.format.as_str())
            .bind(json!(w.categories).to_string())
            .bind(w.description.as_str())
            .bind(secret_id.as_str())
            .bind(w.created_by.as_str())
            .bind(Utc::now()),
    )
    .await?;
    Ok((get(tx, &id).await?, secret))
}

pub async fn get(tx: &mut TenantTx, id: &WebhookId) -> Result<Webhook> {
    let row: Option<Row> = tx
        .fetch_optional(
            scoped(concat!(
                "SELECT ",
                columns!(),
                " FROM webhooks WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(id),
        )
        .await?;
    Ok(from_row(row.ok_or(AppError::NotFound("webhook"))?))
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Webhook>> {
    let rows: Vec<Row> = tx
        .fetch_all(scoped(concat!(
            "SELECT ",
            columns!(),
            " FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id"
        )))
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Removes an endpoint, its deliveries and its secret.
pub async fn delete(tx: &mut TenantTx, id: &WebhookId) -> Result<()> {
    let n = tx
        .execute(scoped("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("webhook"));
    }
    tx.execute(
        scoped("DELETE FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2 AND name = $3")
            .bind(SECRET_PURPOSE)
            .bind(id),
    )
    .await?;
    Ok(())
}

/// The endpoint's signing secret (`whsec_…`).
pub async fn secret(tx: &mut TenantTx, crypto: &Crypto, id: &WebhookId) -> Result<String> {
    let plain = secrets::get(tx, crypto, SECRET_PURPOSE, id.as_str())
        .await?
        .ok_or(AppError::NotFound("webhook secret"))?;
    String::from_utf8(plain.0.clone()).map_err(AppError::internal)
}

/// The `webhook-signature` value for one attempt.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(AppError::internal)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(AppError::internal)?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Queues `event_type` for every enabled endpoint that takes `category`: the Standard
/// Webhooks body `{type, timestamp, data}`, or `{text}` for a chat endpoint. Returns how
/// many were queued; call `Wake::notify_one` after the commit when it matters.
pub async fn publish(
    tx: &mut TenantTx,
    category: &str,
    event_type: &str,
    data: Value,
    text: &str,
    now: DateTime<Utc>,
) -> Result<usize> {
    let endpoints: Vec<(WebhookId, String, String)> = tx
        .fetch_all(scoped(
            "SELECT id, format, categories FROM webhooks WHERE tenant_id = $1 AND enabled = TRUE",
        ))
        .await?;
    let mut jobs = Vec::new();
    for (id, format, categories) in endpoints {
        let takes = serde_json::from_str::<Vec<String>>(&categories)
            .is_ok_and(|c| c.iter().any(|c| c == category));
        if takes {
            let delivery = insert_delivery(tx, &id, &format, event_type, &data, text, now).await?;
            jobs.push(delivery_job(delivery));
        }
    }
    let queued = jobs.len();
    // Every endpoint's job in one statement.
    queue::enqueue_many(tx, jobs).await?;
    Ok(queued)
}

/// Writes one delivery and its job.
pub async fn queue_delivery(
    tx: &mut TenantTx,
    webhook: &WebhookId,
    format: &str,
    event_type: &str,
    data: &Value,
    text: &str,
    now: DateTime<Utc>,
) -> Result<DeliveryId> {
    let id = insert_delivery(tx, webhook, format, event_type, data, text, now).await?;
    queue::enqueue(tx, delivery_job(id.clone())).await?;
    Ok(id)
}

/// Writes one pending delivery (its job is the caller's).
async fn insert_delivery(
    tx: &mut TenantTx,
    webhook: &WebhookId,
    format: &str,
    event_type: &str,
    data: &Value,
    text: &str,
    now: DateTime<Utc>,
) -> Result<DeliveryId> {
    let id = DeliveryId::new();
    let body = if format == "text" {
        json!({ "text": text })
    } else {
        json!({ "type": event_type, "timestamp": now.to_rfc3339(), "data": data })
    };
    tx.execute(
        scoped("INSERT INTO webhook_deliveries (tenant_id, id, webhook_id, event_type, payload, status, attempts, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6)")
            .bind(&id)
            .bind(webhook)
            .bind(event_type)
            .bind(body.to_string())
            .bind(now),
    )
    .await?;
    Ok(id)
}

/// The `deliver-webhook` job of one delivery.
fn delivery_job(delivery_id: DeliveryId) -> NewJob<'static> {
    NewJob {
        queue: DELIVER_WEBHOOK,
        payload: queue::payload(&deliver::DeliveryJob { delivery_id }),
        priority: 0,
        run_at: Utc::now(),
        max_attempts: MAX_ATTEMPTS,
        id: None,
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_type: String,
    /// pending | retrying | delivered | failed
    pub status: String,
    pub attempts: i64,
    pub response_status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

type DeliveryRow = (
    DeliveryId,
    WebhookId,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn delivery_from_row(r: DeliveryRow) -> Delivery {
    Delivery {
        id: r.0,
        webhook_id: r.1,
        event_type: r.2,
        status: r.3,
        attempts: r.4,
        response_status: r.5,
        error: r.6,
        duration_ms: r.7,
        created_at: r.8,
        delivered_at: r.9,
    }
}

macro_rules! delivery_columns {
    () => {
        "id, webhook_id, event_type, status, attempts, response_status, error, duration_ms, created_at, delivered_at"
    };
}

pub async fn deliveries(
    tx: &mut TenantTx,
    webhook: &WebhookId,
    limit: i64,
) -> Result<Vec<Delivery>> {
    let rows: Vec<DeliveryRow> = tx
        .fetch_all(
            scoped(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2 \
                 ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(webhook)
            .bind(limit),
        )
        .await?;
    Ok(rows.into_iter().map(delivery_from_row).collect())
}

pub async fn delivery(tx: &mut TenantTx, id: &DeliveryId) -> Result<Delivery> {
    let row: Option<DeliveryRow> = tx
        .fetch_optional(
            scoped(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(id),
        )
        .await?;
    Ok(delivery_from_row(
        row.ok_or(AppError::NotFound("delivery"))?,
    ))
}
