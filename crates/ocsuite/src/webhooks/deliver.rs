//! The `deliver-webhook` job: one message to one endpoint, signed per attempt.
//!
//! A 2xx answer delivers it. Anything else (another status, a timeout, a refused
//! connection, an address the SSRF guard refuses now) is retried with the queue's
//! backoff, and after [`super::MAX_ATTEMPTS`] the job waits in `deliver-webhook-dlq`
//! for an admin while the delivery log shows `failed` with the last error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::crypto::Crypto;
use crate::error::Result;
use crate::ids::{DeliveryId, WebhookId};
use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, DELIVER_WEBHOOK};
use crate::realtime::Event;
use crate::store::{TenantTx, scoped};

/// The job's payload.
#[derive(Serialize, Deserialize)]
pub struct DeliveryJob {
    pub delivery_id: DeliveryId,
}

pub struct DeliverWebhook {
    crypto: Crypto,
    allow_private: bool,
}

impl DeliverWebhook {
    pub fn new(crypto: Crypto, allow_private: bool) -> Self {
        Self {
            crypto,
            allow_private,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Prepared {
    id: String,
    url: String,
    body: String,
    secret: String,
}

fn delivery_of(job: &Claimed) -> Option<DeliveryId> {
    job.payload_as::<DeliveryJob>().map(|j| j.delivery_id)
}

/// Sends one signed attempt; the answer's status and how long it took.
async fn send(p: &Prepared, allow_private: bool) -> std::result::Result<(u16, u64), String> {
    let dest = crate::modules::ssrf::check_destination(&p.url, allow_private).await?;
    let client = crate::modules::ssrf::http_client(&dest)?;
    let ts = Utc::now().timestamp();
    let signature = super::sign(&p.secret, &p.id, ts, &p.body).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let res = client
        .post(dest.url())
        .timeout(super::TIMEOUT)
        .header("content-type", "application/json")
        .header("user-agent", "ocsuite-webhooks/1")
        .header("webhook-id", &p.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(p.body.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {} s", super::TIMEOUT.as_secs())
            } else {
                format!("cannot reach the endpoint: {e}")
            }
        })?;
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((res.status().as_u16(), ms))
}

impl Handler for DeliverWebhook {
    fn queue(&self) -> &'static str {
        DELIVER_WEBHOOK
    }

    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            let Some(id) = delivery_of(job) else {
                return Ok(Start::Skip { events: vec![] });
            };
            let row: Option<(WebhookId, String, String, String)> = tx
                .fetch_optional(
                    scoped(
                        "SELECT d.webhook_id, w.url, d.payload, d.status FROM webhook_deliveries d \
                         JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.id = d.webhook_id \
                         WHERE d.tenant_id = $1 AND d.id = $2",
                    )
                    .bind(&id),
                )
                .await?;
            let Some((webhook, url, body, status)) = row else {
                return Ok(Start::Skip { events: vec![] });
            };
            // A `failed` delivery runs again when an admin retries its dead letter.
            if status == "delivered" {
                return Ok(Start::Skip { events: vec![] });
            }
            let secret = super::secret(tx, &self.crypto, &webhook).await?;
            Start::run(
                super::TIMEOUT + Duration::from_secs(20),
                vec![],
                &Prepared {
                    id: id.to_string(),
                    url,
                    body,
                    secret,
                },
            )
        })
    }

    fn run(self: Arc<Self>, _job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: Prepared = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match send(&p, self.allow_private).await {
                Ok((status, ms)) if (200..300).contains(&status) => Outcome::Succeeded {
                    output: json!({"status": status, "duration_ms": ms}),
                    summary: None,
                },
                Ok((status, _)) => Outcome::Failed {
                    error: format!("the endpoint answered HTTP {status}"),
                    retryable: true,
                },
                Err(error) => Outcome::Failed {
                    error,
                    retryable: true,
                },
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        job: &'a Claimed,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let Some(id) = delivery_of(job) else {
                return Ok(vec![]);
            };
            let (status, code, ms, error) = match resolution {
                Resolution::Succeeded { output, .. } => (
                    "delivered",
                    output["status"].as_i64(),
                    output["duration_ms"].as_i64(),
                    None,
                ),
                Resolution::Retrying { error, .. } => {
                    ("retrying", status_in(error), None, Some(error.as_str()))
                }
                Resolution::Dead { error } | Resolution::Failed { error } => {
                    ("failed", status_in(error), None, Some(error.as_str()))
                }
                Resolution::Cancelled => ("failed", None, None, Some("cancelled")),
            };
            let now = Utc::now();
            tx.execute(
                scoped("UPDATE webhook_deliveries SET status = $3, attempts = $4, response_status = COALESCE($5, response_status), \
                     duration_ms = COALESCE($6, duration_ms), error = $7, delivered_at = CASE WHEN $3 = 'delivered' THEN $8 ELSE delivered_at END \
                     WHERE tenant_id = $1 AND id = $2")
                    .bind(&id)
                    .bind(status)
                    .bind(i64::from(job.attempts))
                    .bind(code)
                    .bind(ms)
                    .bind(error)
                    .bind(now),
            )
            .await?;
            Ok(vec![])
        })
    }
}

/// The HTTP status in an error this handler wrote ("… answered HTTP 500").
fn status_in(error: &str) -> Option<i64> {
    error
        .rsplit_once("HTTP ")
        .and_then(|(_, s)| s.trim().parse().ok())
}
