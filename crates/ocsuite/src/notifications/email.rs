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
use futures_util::future::BoxFuture;

use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, SEND_EMAIL};
use crate::realtime::Event;
use crate::store::{TenantTx, scoped};

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
    job.payload_as::<super::EmailJob>().map(|j| j.email_id)
}

/// What `start` read from the outbox row for the attempt.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    to: String,
    subject: String,
    body: String,
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
            let row: Option<(String, String, String, String)> = tx
                .fetch_optional(
                    scoped("SELECT to_email, subject, body, status FROM outbox WHERE tenant_id = $1 AND id = $2")
                        .bind(&id),
                )
                .await?;
            match row {
                Some((to, subject, body, status)) if status == "pending" => Start::run(
                    Duration::from_secs(60),
                    vec![],
                    &Prepared { to, subject, body },
                ),
                _ => Ok(Start::Skip { events: vec![] }),
            }
        })
    }

    fn run(self: Arc<Self>, _job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: Prepared = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            match self.mailer.send(&p.to, &p.subject, &p.body).await {
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
                scoped("UPDATE outbox SET status = $2, attempts = $3, last_error = COALESCE($4, last_error), \
                     sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END WHERE tenant_id = $1 AND id = $6")
                    .bind(status)
                    .bind(job.attempts)
                    .bind(error)
                    .bind(Utc::now())
                    .bind(&id),
            )
            .await?;
            Ok(vec![])
        })
    }
}
