//! `email`: sending as capabilities: a single message, a whole campaign, and a
//! campaign's figures. Both sending capabilities are `external-send`, so the approval
//! policy decides who may run them; a campaign's approval preview names how many
//! people it reaches (see [`EmailModule::hints`]).

use chrono::Utc;
use ocsuite_module_sdk::{
    ModuleManifest, SideEffect, TaskError, TaskExecutionRequest, TaskExecutionResult, Undo, Version,
};
use serde_json::{Value, json};

use super::deliver::{self, Outgoing};
use super::template;
use crate::error::{AppError, Result};
use crate::ids::{CampaignId, JobId, RecipientId};
use crate::modules::{ExecContext, Hint, Module, capability};
use crate::queue::{self, DELIVER_EMAIL, NewJob};
use crate::store::{TenantTx, cross_tenant};
use futures_util::future::BoxFuture;

/// Most recipients one insert statement writes (the bound JSON stays well under a
/// megabyte).
const RECIPIENT_CHUNK: usize = 500;

pub struct EmailModule {
    manifest: ModuleManifest,
}

impl EmailModule {
    pub fn new() -> Self {
        let campaign_in = json!({
            "type": "object", "required": ["campaign_id"],
            "properties": {"campaign_id": {"type": "string"}}, "additionalProperties": false
        });
        let mut campaign_send = capability(
            "email.campaign_send",
            "Send an email campaign",
            "Sends a campaign to its audience through the queue at the campaign's rate, skipping suppressed addresses.",
            SideEffect::ExternalSend,
            Undo::None,
            campaign_in.clone(),
            json!({"type": "object", "required": ["campaign_id", "status", "recipients", "queued", "skipped"]}),
        );
        campaign_send.max_attempts = 5;
        let manifest = ModuleManifest {
            name: "email".into(),
            version: Version::new(1, 0, 0),
            description:
                "Email outreach: single messages and campaigns over SMTP or the connected Gmail."
                    .into(),
            capabilities: vec![
                capability(
                    "email.send",
                    "Send an email",
                    "Sends one plain-text email to up to 50 people (suppressed addresses are skipped and reported).",
                    SideEffect::ExternalSend,
                    Undo::None,
                    json!({
                        "type": "object",
                        "required": ["to", "subject", "body"],
                        "properties": {
                            "to": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"type": "string", "maxLength": 254}},
                            "subject": {"type": "string", "minLength": 1, "maxLength": 200},
                            "body": {"type": "string", "minLength": 1, "maxLength": 50000},
                            "channel": {"enum": ["smtp", "gmail"]}
                        },
                        "additionalProperties": false
                    }),
                    json!({"type": "object", "required": ["sent", "skipped", "failed", "channel"]}),
                ),
                campaign_send,
                capability(
                    "email.campaign_stats",
                    "Campaign figures",
                    "A campaign's status and per-recipient counts: sent, failed, skipped, pending, unsubscribed. Without campaign_id: the most recent campaign.",
                    SideEffect::Read,
                    Undo::None,
                    json!({
                        "type": "object",
                        "properties": {"campaign_id": {"type": "string", "description": "absent: the most recent campaign"}},
                        "additionalProperties": false
                    }),
                    json!({"type": "object", "required": ["campaign_id", "status", "stats"]}),
                ),
            ],
        };
        Self { manifest }
    }
}

impl Default for EmailModule {
    fn default() -> Self {
        Self::new()
    }
}

fn permanent(e: impl std::fmt::Display) -> TaskError {
    TaskError::Permanent(e.to_string())
}

/// Whether `channel` can send for this tenant now; the error says how to fix it.
pub async fn channel_ready(
    app: &crate::state::AppState,
    tx: &mut TenantTx,
    channel: &str,
) -> Result<()> {
    if channel == "gmail" {
        let row = crate::connectors::by_provider(tx, deliver::GMAIL_PROVIDER).await?;
        if !row.is_some_and(|r| matches!(r.status.as_str(), "connected" | "expiring")) {
            return Err(AppError::Conflict(
                "the gmail channel needs a connected Google account; connect it under Connectors"
                    .into(),
            ));
        }
    } else if !app.mailer.is_configured() {
        return Err(AppError::Conflict(
            "no SMTP server is configured on this server (OCSUITE_SMTP_URL); configure one or use the gmail channel".into(),
        ));
    }
    Ok(())
}

async fn send_one(
    ctx: &ExecContext,
    i: &Value,
) -> std::result::Result<TaskExecutionResult, TaskError> {
    let channel = i["channel"].as_str().unwrap_or("smtp").to_owned();
    let (company, suppressed) = {
        let mut tx = ctx.tx().await?;
        channel_ready(&ctx.app, &mut tx, &channel).await?;
        let mut suppressed = Vec::new();
        for to in i["to"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let Ok(e) = crate::leadtracker::check_email(to)
                && super::is_suppressed(&mut tx, &e).await?
            {
                suppressed.push(e);
            }
        }
        let company = crate::tenancy::tenants::name(&mut tx).await?;
        tx.commit().await.map_err(AppError::from)?;
        (company, suppressed)
    };
    let (mut sent, mut skipped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_retryable = true;
    for to in i["to"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let email = match crate::leadtracker::check_email(to) {
            Ok(e) => e,
            Err(m) => {
                skipped.push(json!({"email": to, "reason": m}));
                continue;
            }
        };
        if suppressed.contains(&email) {
            skipped.push(json!({"email": email, "reason": "suppressed: unsubscribed or blocked"}));
            continue;
        }
        let m = Outgoing {
            to: email.clone(),
            to_name: None,
            from_name: company.clone(),
            subject: i["subject"].as_str().unwrap_or_default().to_owned(),
            body: i["body"].as_str().unwrap_or_default().to_owned(),
            unsubscribe_url: None,
        };
        match deliver::send(&ctx.app, &ctx.tenant, &channel, &m).await {
            Ok(id) => sent.push(json!({"email": email, "message_id": id})),
            Err((error, retryable)) => {
                all_retryable &= retryable;
                failed.push(json!({"email": email, "error": error}));
            }
        }
    }
    // Nothing went out: a retry cannot send anyone a second copy.
    if sent.is_empty() && !failed.is_empty() {
        let why = failed[0]["error"].as_str().unwrap_or_default().to_owned();
        return Err(if all_retryable {
            TaskError::Retryable(why)
        } else {
            TaskError::Permanent(why)
        });
    }
    Ok(TaskExecutionResult {
        summary: Some(format!(
            "sent {}, skipped {}, failed {}",
            sent.len(),
            skipped.len(),
            failed.len()
        )),
        output: json!({"sent": sent, "skipped": skipped, "failed": failed, "channel": channel}),
    })
}

/// Fixes the campaign's recipients and queues one delivery per recipient, spaced by the
/// campaign's rate. Running it again (a retry) finds the campaign sending and changes
/// nothing.
pub async fn start_campaign(
    ctx: &ExecContext,
    id: &CampaignId,
) -> std::result::Result<TaskExecutionResult, TaskError> {
    let mut tx = ctx.tx().await?;
    let c = super::get(&mut tx, id).await?;
    match c.status.as_str() {
        "cancelled" => {
            tx.commit().await.map_err(AppError::from)?;
            return Ok(TaskExecutionResult {
                summary: Some("the campaign was cancelled before it was sent".into()),
                output: json!({"campaign_id": id, "status": "cancelled", "recipients": 0, "queued": 0, "skipped": 0}),
            });
        }
        "draft" | "scheduled" => {}
        _ => {
            let s = super::stats(&mut tx, id).await?;
            tx.commit().await.map_err(AppError::from)?;
            return Ok(TaskExecutionResult::new(json!({
                "campaign_id": id, "status": c.status, "recipients": s.recipients, "queued": s.pending + s.sent + s.failed, "skipped": s.skipped
            })));
        }
    }
    channel_ready(&ctx.app, &mut tx, &c.channel).await?;
    let people = super::resolve_audience(&mut tx, &c.audience.0).await?;
    let blocked = super::suppressed(&mut tx).await?;
    let now = Utc::now();
    let spacing_ms = 60_000 / c.rate_per_minute.max(1);
    let (mut queued, mut skipped) = (0i64, 0i64);
    // Recipients and their delivery jobs go in a few array-bound statements, not two
    // per person: a campaign to thousands is queued in one short transaction.
    let mut rows = Vec::with_capacity(people.len());
    let mut jobs = Vec::with_capacity(people.len());
    let mut job_ids = Vec::with_capacity(people.len());
    for (email, name, company, own) in &people {
        let rid = RecipientId::new();
        let reason = if crate::leadtracker::check_email(email).is_err() {
            Some("invalid address")
        } else if blocked.contains(email) {
            Some("suppressed: unsubscribed or blocked")
        } else {
            None
        };
        let vars = template::variables(email, name.as_deref(), company.as_deref(), own);
        rows.push(json!({
            "id": rid,
            "email": email,
            "name": name,
            "vars": serde_json::to_string(&vars).map_err(permanent)?,
            "status": if reason.is_some() { "skipped" } else { "pending" },
            "reason": reason,
        }));
        if reason.is_some() {
            skipped += 1;
            continue;
        }
        job_ids.push(JobId::from_hex(rid.hex()));
        jobs.push((
            rid,
            now + chrono::Duration::milliseconds(spacing_ms * queued),
        ));
        queued += 1;
    }
    for chunk in rows.chunks(RECIPIENT_CHUNK) {
        let q = cross_tenant::add_email_recipients(&tx)
            .bind(id)
            .bind(Value::from(chunk.to_vec()).to_string());
        tx.defer(q).await.map_err(AppError::from)?;
    }
    let jobs = jobs
        .into_iter()
        .zip(&job_ids)
        .map(|((rid, run_at), job_id)| NewJob {
            queue: DELIVER_EMAIL,
            payload: queue::payload(&deliver::DeliveryJob {
                recipient_id: rid,
                campaign_id: id.clone(),
            }),
            priority: 0,
            run_at,
            max_attempts: deliver::MAX_ATTEMPTS,
            id: job_id.as_ref(),
        })
        .collect();
    queue::enqueue_many(&mut tx, jobs).await?;
    super::set_status(&mut tx, id, if queued > 0 { "sending" } else { "sent" }).await?;
    super::refresh_metrics(&mut tx).await?;
    tx.commit().await.map_err(AppError::from)?;
    if queued > 0 {
        ctx.app.jobs_wake.notify_waiters();
    }
    Ok(TaskExecutionResult {
        summary: Some(format!(
            "queued {queued} messages ({skipped} skipped) at {} per minute",
            c.rate_per_minute
        )),
        output: json!({"campaign_id": id, "status": if queued > 0 { "sending" } else { "sent" }, "recipients": people.len(), "queued": queued, "skipped": skipped}),
    })
}

fn campaign_id(i: &Value) -> std::result::Result<CampaignId, TaskError> {
    i["campaign_id"]
        .as_str()
        .and_then(CampaignId::parse)
        .ok_or_else(|| permanent("campaign not found"))
}

async fn run(
    ctx: ExecContext,
    req: TaskExecutionRequest,
) -> std::result::Result<TaskExecutionResult, TaskError> {
    let i = &req.input;
    match req.capability.as_str() {
        "email.send" => send_one(&ctx, i).await,
        "email.campaign_send" => start_campaign(&ctx, &campaign_id(i)?).await,
        "email.campaign_stats" => {
            let mut tx = ctx.tx().await?;
            let id = match i.get("campaign_id") {
                Some(_) => campaign_id(i)?,
                None => super::list(&mut tx, 1)
                    .await?
                    .into_iter()
                    .next()
                    .map(|c| c.id)
                    .ok_or_else(|| permanent("this company has no campaign yet"))?,
            };
            let c = super::get(&mut tx, &id).await?;
            let s = super::stats(&mut tx, &id).await?;
            tx.commit().await.map_err(AppError::from)?;
            Ok(TaskExecutionResult {
                summary: Some(format!(
                    "{}: {} sent, {} failed, {} skipped, {} unsubscribed",
                    c.name, s.sent, s.failed, s.skipped, s.unsubscribed
                )),
                output: json!({"campaign_id": id, "name": c.name, "status": c.status, "stats": s}),
            })
        }
        other => Err(permanent(format!("email has no capability {other}"))),
    }
}

impl Module for EmailModule {
    fn manifest(&self) -> &ModuleManifest {
        &self.manifest
    }

    fn execute(
        &self,
        ctx: ExecContext,
        req: TaskExecutionRequest,
    ) -> BoxFuture<'static, std::result::Result<TaskExecutionResult, TaskError>> {
        Box::pin(run(ctx, req))
    }

    fn hints<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        capability: &'a str,
        input: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Hint>>> {
        Box::pin(async move {
            if capability != "email.campaign_send" {
                return Ok(Vec::new());
            }
            let Some(id) = input["campaign_id"].as_str().and_then(CampaignId::parse) else {
                return Ok(Vec::new());
            };
            let c = super::get(tx, &id).await?;
            let (reach, skipped) = super::reach(tx, &c.audience.0).await?;
            let mut message = format!("\"{}\" goes to {reach} recipient(s)", c.name);
            if skipped > 0 {
                message.push_str(&format!(
                    "; {skipped} more are suppressed or invalid and will be skipped"
                ));
            }
            Ok(vec![Hint {
                code: "large_recipient_count",
                message,
            }])
        })
    }
}
