//! Delivering the outbox: the `send-email` queue handler, over SMTP with lettre.
//!
//! Without `OCSUITE_SMTP_URL` nothing leaves the server: each message is marked `held`
//! and stays readable in the development mailbox (`GET /api/v1/mailbox`, admins).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::Result;
use crate::ids::EmailId;
use crate::queue::worker::{BoxFuture, Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, SEND_EMAIL};
use crate::realtime::Event;
use crate::store::{Store, TenantTx, sql};

pub const MAX_ATTEMPTS: u32 = 6;

/// The SMTP transport, when configured.
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<Mailbox>,
}

impl Mailer {
    /// Builds from `smtp_url` (`smtp://`, `smtps://`, with `?tls=required` for STARTTLS)
    /// and `smtp_from`; errors name the setting.
    pub fn from_config(c: &Config) -> std::result::Result<Self, String> {
        let Some(url) = c.smtp_url.as_ref().filter(|u| !u.expose().is_empty()) else {
            return Ok(Self {
                transport: None,
                from: None,
            });
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| format!("OCSUITE_SMTP_URL: {e}"))?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from = c
            .smtp_from
            .parse::<Mailbox>()
            .map_err(|e| format!("OCSUITE_SMTP_FROM: {e}"))?;
        Ok(Self {
            transport: Some(transport),
            from: Some(from),
        })
    }

    /// No SMTP: every message is held.
    pub fn disabled() -> Self {
        Self {
            transport: None,
            from: None,
        }
    }

    pub fn is_configured(&self) -> bool {
        self.transport.is_some()
    }

    /// The configured sender address, when SMTP is configured.
    pub fn sender(&self) -> Option<&Mailbox> {
        self.from.as_ref()
    }

    /// Sends a built message. Errors say whether a retry could help. Not configured:
    /// a permanent error (callers that hold mail check [`Self::is_configured`] first).
    pub async fn deliver(&self, msg: Message) -> std::result::Result<(), (String, bool)> {
        let Some(t) = &self.transport else {
            return Err((
                "no SMTP server is configured (OCSUITE_SMTP_URL)".into(),
                false,
            ));
        };
        match t.send(msg).await {
            Ok(_) => Ok(()),
            // 5xx: the server refused for good (bad address, policy); else try again.
            Err(e) => Err((format!("SMTP: {e}"), !e.is_permanent())),
        }
    }

    /// Sends one message. `Ok(false)`: not configured (the message is held).
    async fn send(
        &self,
        to: &str,
        subject: &str,
        body: &str,
    ) -> std::result::Result<bool, (String, bool)> {
        let Some(from) = &self.from else {
            return Ok(false);
        };
        let to: Mailbox = to
            .parse()
            .map_err(|e| (format!("recipient address: {e}"), false))?;
        let msg = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .body(body.to_owned())
            .map_err(|e| (format!("building the message: {e}"), false))?;
        self.deliver(msg).await.map(|()| true)
    }
}

pub struct SendEmail {
    mailer: Arc<Mailer>,
}

impl SendEmail {
    pub fn new(mailer: Arc<Mailer>) -> Self {
        Self { mailer }
    }
}

fn email_of(job: &Claimed) -> Option<EmailId> {
    job.payload["email_id"].as_str().and_then(EmailId::parse)
}

impl Handler for SendEmail {
    fn queue(&self) -> &'static str {
        SEND_EMAIL
    }

    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            let Some(id) = email_of(job) else {
                return Ok(Start::Skip { events: vec![] });
            };
            let tenant = tx.tenant_id().clone();
            let row: Option<(String, String, String, String)> = tx
                .fetch_optional(
                    sql("SELECT to_email, subject, body, status FROM outbox WHERE tenant_id = $1 AND id = $2")
                        .bind(&tenant)
                        .bind(&id),
                )
                .await?;
            match row {
                Some((to, subject, body, status)) if status == "pending" => Ok(Start::Run {
                    timeout: Duration::from_secs(60),
                    events: vec![],
                    prepared: json!({"to": to, "subject": subject, "body": body}),
                }),
                _ => Ok(Start::Skip { events: vec![] }),
            }
        })
    }

    fn run(self: Arc<Self>, _job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let s = |k: &str| prepared[k].as_str().unwrap_or_default().to_owned();
            match self.mailer.send(&s("to"), &s("subject"), &s("body")).await {
                Ok(sent) => Outcome::Succeeded {
                    output: json!({"sent": sent}),
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
            let Some(id) = email_of(job) else {
                return Ok(vec![]);
            };
            let tenant = tx.tenant_id().clone();
            let (status, error) = match resolution {
                Resolution::Succeeded { output, .. } => (
                    if output["sent"] == true {
                        "sent"
                    } else {
                        "held"
                    },
                    None,
                ),
                Resolution::Retrying { error, .. } => ("pending", Some(error.as_str())),
                Resolution::Dead { error } | Resolution::Failed { error } => {
                    ("failed", Some(error.as_str()))
                }
                Resolution::Cancelled => ("failed", Some("cancelled")),
            };
            tx.execute(
                sql("UPDATE outbox SET status = $1, attempts = $2, last_error = COALESCE($3, last_error), \
                     sent_at = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at END WHERE tenant_id = $5 AND id = $6")
                    .bind(status)
                    .bind(job.attempts)
                    .bind(error)
                    .bind(Utc::now())
                    .bind(&tenant)
                    .bind(&id),
            )
            .await?;
            Ok(vec![])
        })
    }

    fn cancel_requested<'a>(&'a self, _: &'a Store, _: &'a Claimed) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }

    fn is_cancellation(&self, _: &Claimed, _: &Event) -> bool {
        false
    }
}
