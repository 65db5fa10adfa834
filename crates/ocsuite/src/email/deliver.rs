//! Sending: one message over SMTP or the tenant's Gmail ([`send`]), and the
//! `deliver-email` queue handler that sends one campaign recipient's message.
//!
//! The handler re-reads the recipient when its job is claimed: a cancelled campaign, a
//! recipient already settled, or an address suppressed since the campaign started (an
//! unsubscribe from an earlier message) is skipped, never sent. Failures retry with the
//! queue's backoff and end `failed` with the reason once attempts run out (the job is in
//! `deliver-email-dlq`; retrying it from the admin API sends again); when no recipient
//! is pending any more the campaign is `sent`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lettre::Message;
use lettre::message::Mailbox;
use lettre::message::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::template;
use crate::connectors::vault::TokenSource;
use crate::error::Result;
use crate::ids::{CampaignId, RecipientId, TenantId};
use crate::state::AppState;
use futures_util::future::BoxFuture;

use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, DELIVER_EMAIL};
use crate::realtime::Event;
use crate::store::{TenantTx, scoped};

/// Attempts per recipient before it is marked failed.
pub const MAX_ATTEMPTS: u32 = 5;

/// The provider whose mail API the `gmail` channel uses.
pub const GMAIL_PROVIDER: &str = "google";

/// One message to send.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Outgoing {
    pub to: String,
    pub to_name: Option<String>,
    /// Display name of the sender (the company).
    pub from_name: String,
    pub subject: String,
    pub body: String,
    pub unsubscribe_url: Option<String>,
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default()
    })
}

fn build(m: &Outgoing, from: Mailbox) -> std::result::Result<Message, (String, bool)> {
    let to = Mailbox::new(
        m.to_name.clone().filter(|n| !n.is_empty()),
        m.to.parse()
            .map_err(|e| (format!("recipient address: {e}"), false))?,
    );
    let mut b = Message::builder()
        .from(from)
        .to(to)
        .subject(m.subject.clone());
    if let Some(u) = &m.unsubscribe_url {
        b = b
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{u}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    b.body(m.body.clone())
        .map_err(|e| (format!("building the message: {e}"), false))
}

/// Sends `m` through `channel` for `tenant`; returns the message id. Errors say whether
/// a retry could help.
pub async fn send(
    app: &AppState,
    tenant: &TenantId,
    channel: &str,
    m: &Outgoing,
) -> std::result::Result<String, (String, bool)> {
    match channel {
        "gmail" => {
            let tokens = TokenSource::new(app.vault.clone(), tenant.clone());
            let provider = tokens
                .provider(GMAIL_PROVIDER)
                .ok_or_else(|| ("Google is not configured on this server".to_owned(), false))?;
            let base = provider
                .mail_api_url
                .clone()
                .ok_or_else(|| ("the Google provider has no mail API URL".to_owned(), false))?;
            let token = tokens
                .access_token(GMAIL_PROVIDER)
                .await
                .map_err(|e| (e.to_string(), e.is_retryable()))?;
            let account = {
                let mut tx = app
                    .store
                    .tenant_read(tenant)
                    .await
                    .map_err(|e| (format!("database: {e}"), true))?;
                let row = crate::connectors::by_provider(&mut tx, GMAIL_PROVIDER)
                    .await
                    .map_err(|e| (e.to_string(), true))?;
                let _ = tx.commit().await;
                row.and_then(|r| r.account)
            };
            let address = account.ok_or_else(|| {
                (
                    "the connected Google account has no email address; sync the connector"
                        .to_owned(),
                    false,
                )
            })?;
            let from = Mailbox::new(
                Some(m.from_name.clone()),
                address
                    .parse()
                    .map_err(|e| (format!("sender address: {e}"), false))?,
            );
            let msg = build(m, from)?;
            let raw = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                msg.formatted(),
            );
            let url = format!(
                "{}/gmail/v1/users/me/messages/send",
                base.trim_end_matches('/')
            );
            let res = http()
                .post(url)
                .bearer_auth(token.secret())
                .json(&json!({"raw": raw}))
                .send()
                .await
                .map_err(|e| (format!("Gmail: {e}"), true))?;
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(body["id"].as_str().unwrap_or_default().to_owned());
            }
            let why = body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned();
            match status.as_u16() {
                401 => Err((
                    format!("Gmail refused the connection's token ({why}); reconnect Google"),
                    false,
                )),
                403 => Err((
                    format!(
                        "Gmail refused to send ({why}); the connection may lack the gmail.send scope"
                    ),
                    false,
                )),
                429 | 500..=599 => Err((format!("Gmail is unavailable ({status}): {why}"), true)),
                _ => Err((format!("Gmail answered {status}: {why}"), false)),
            }
        }
        _ => {
            let sender = app.mailer.sender().ok_or_else(|| ("no SMTP server is configured (OCSUITE_SMTP_URL); connect Google to send through Gmail".to_owned(), false))?;
            let from = Mailbox::new(Some(m.from_name.clone()), sender.email.clone());
            let id = format!(
                "<{}@{}>",
                uuid::Uuid::new_v4().simple(),
                sender.email.domain()
            );
            let msg = build(m, from)?;
            let msg = {
                let mut msg = msg;
                msg.headers_mut().insert_raw(HeaderValue::new(
                    HeaderName::new_from_ascii_str("Message-ID"),
                    id.clone(),
                ));
                msg
            };
            app.mailer.deliver(msg).await.map(|()| id)
        }
    }
}

/// The link in a recipient's message: it names the tenant and recipient and carries a
/// token only this server can compute, so no secret is stored per recipient.
pub fn unsubscribe_url(app: &AppState, tenant: &TenantId, recipient: &RecipientId) -> String {
    format!(
        "{}/unsubscribe/{}.{}.{}",
        app.config.base_url(),
        tenant.hex(),
        recipient.hex(),
        app.crypto.derive_token("unsubscribe", recipient.as_str())
    )
}

pub struct Deliver {
    app: AppState,
}

impl Deliver {
    pub fn new(app: &AppState) -> Self {
        Self { app: app.clone() }
    }
}

/// The `deliver-email` job's payload: one recipient of one campaign.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DeliveryJob {
    pub recipient_id: RecipientId,
    pub campaign_id: CampaignId,
}

fn ids(job: &Claimed) -> Option<(RecipientId, CampaignId)> {
    job.payload_as::<DeliveryJob>()
        .map(|j| (j.recipient_id, j.campaign_id))
}

async fn set_recipient(
    tx: &mut TenantTx,
    id: &RecipientId,
    status: &str,
    reason: Option<&str>,
    attempts: u32,
    message_id: Option<&str>,
) -> Result<()> {
    tx.execute(
        scoped("UPDATE email_recipients SET status = $2, reason = COALESCE($3, reason), attempts = $4, message_id = COALESCE($5, message_id), \
             sent_at = CASE WHEN $2 = 'sent' THEN $6 ELSE sent_at END WHERE tenant_id = $1 AND id = $7")
            .bind(status)
            .bind(reason)
            .bind(attempts)
            .bind(message_id)
            .bind(chrono::Utc::now())
            .bind(id),
    )
    .await?;
    Ok(())
}

/// Marks the campaign sent once nothing is pending.
async fn finish_if_done(tx: &mut TenantTx, campaign: &CampaignId) -> Result<()> {
    let (pending,): (i64,) = tx
        .fetch_one(
            scoped("SELECT COUNT(*) FROM email_recipients WHERE tenant_id = $1 AND campaign_id = $2 AND status = 'pending'")
                .bind(campaign),
        )
        .await?;
    if pending == 0 {
        let c = super::get(tx, campaign).await?;
        if c.status == "sending" {
            super::set_status(tx, campaign, "sent").await?;
            let stats = super::stats(tx, campaign).await?;
            if stats.failed > 0 {
                bounced(tx, &c, &stats).await?;
            }
        }
    }
    super::refresh_metrics(tx).await
}

/// Tells the company's `campaign.bounced` triggers that a campaign ended with failures.
async fn bounced(tx: &mut TenantTx, c: &super::Campaign, stats: &super::Stats) -> Result<()> {
    let figure = |key: &str, label: &str, n: i64| crate::alerts::Figure {
        key: key.into(),
        label: label.into(),
        value: Some(n as f64),
        display: n.to_string(),
    };
    crate::triggers::events::emit(
        tx,
        crate::triggers::events::PlatformEvent {
            event: "campaign.bounced",
            key: c.id.to_string(),
            percent: None,
            summary: format!(
                "The campaign \"{}\" finished: {} of {} messages bounced or failed.",
                c.name, stats.failed, stats.recipients
            ),
            figures: vec![
                figure("failed", "Bounced or failed", stats.failed),
                figure("sent", "Sent", stats.sent),
            ],
            links: vec![crate::alerts::Link {
                label: "The campaign".into(),
                href: format!("/campaigns/{}", c.id),
            }],
            data: json!({"campaign_id": c.id, "failed": stats.failed, "sent": stats.sent}),
        },
        chrono::Utc::now(),
    )
    .await?;
    Ok(())
}

/// The rendered message and its channel, from `start` to the attempt.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    channel: String,
    message: Outgoing,
}

impl Handler for Deliver {
    fn queue(&self) -> &'static str {
        DELIVER_EMAIL
    }

    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            let Some((rid, cid)) = ids(job) else {
                return Ok(Start::Skip { events: vec![] });
            };
            let tenant = tx.tenant_id().clone();
            let row: Option<(String, Option<String>, String, String)> = tx
                .fetch_optional(
                    scoped("SELECT email, name, vars, status FROM email_recipients WHERE tenant_id = $1 AND id = $2")
                        .bind(&rid),
                )
                .await?;
            // `failed` too: a dead delivery retried from the admin API runs again.
            let Some((email, name, vars, _)) = row.filter(|r| r.3 == "pending" || r.3 == "failed")
            else {
                return Ok(Start::Skip { events: vec![] });
            };
            let campaign = super::get(tx, &cid).await?;
            if campaign.status == "sent" {
                super::set_status(tx, &cid, "sending").await?;
            } else if campaign.status != "sending" {
                set_recipient(
                    tx,
                    &rid,
                    "cancelled",
                    Some("the campaign was cancelled"),
                    job.attempts.saturating_sub(1),
                    None,
                )
                .await?;
                finish_if_done(tx, &cid).await?;
                return Ok(Start::Skip { events: vec![] });
            }
            if super::is_suppressed(tx, &email).await? {
                set_recipient(
                    tx,
                    &rid,
                    "skipped",
                    Some("suppressed: unsubscribed or blocked"),
                    job.attempts.saturating_sub(1),
                    None,
                )
                .await?;
                finish_if_done(tx, &cid).await?;
                return Ok(Start::Skip { events: vec![] });
            }
            let mut all: BTreeMap<String, String> = serde_json::from_str(&vars).unwrap_or_default();
            let url = unsubscribe_url(&self.app, &tenant, &rid);
            all.insert("unsubscribe_url".into(), url.clone());
            let mut body = template::render(&campaign.body, &all);
            if !campaign.body.contains("unsubscribe_url") {
                body.push_str(&format!("\n\n--\nTo stop receiving these emails: {url}\n"));
            }
            let company = crate::tenancy::tenants::name(tx).await?;
            let message = Outgoing {
                to: email,
                to_name: name,
                from_name: company,
                subject: template::render(&campaign.subject, &all),
                body,
                unsubscribe_url: Some(url),
            };
            Start::run(
                Duration::from_secs(60),
                vec![],
                &Prepared {
                    channel: campaign.channel,
                    message,
                },
            )
        })
    }

    fn run(self: Arc<Self>, job: Claimed, p: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let Prepared { channel, message } = match crate::queue::worker::prepared(p) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match send(&self.app, &job.tenant_id, &channel, &message).await {
                Ok(id) => Outcome::Succeeded {
                    output: json!({"message_id": id}),
                    summary: None,
                },
                Err((error, retryable)) => Outcome::Failed { error, retryable },
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
            let Some((rid, cid)) = ids(job) else {
                return Ok(vec![]);
            };
            match resolution {
                Resolution::Succeeded { output, .. } => {
                    set_recipient(
                        tx,
                        &rid,
                        "sent",
                        None,
                        job.attempts,
                        output["message_id"].as_str(),
                    )
                    .await?;
                }
                Resolution::Retrying { error, .. } => {
                    set_recipient(tx, &rid, "pending", Some(error), job.attempts, None).await?;
                    return Ok(vec![]);
                }
                Resolution::Dead { error } | Resolution::Failed { error } => {
                    set_recipient(tx, &rid, "failed", Some(error), job.attempts, None).await?;
                }
                Resolution::Cancelled => {
                    set_recipient(tx, &rid, "cancelled", Some("cancelled"), job.attempts, None)
                        .await?;
                }
            }
            finish_if_done(tx, &cid).await?;
            Ok(vec![])
        })
    }
}
