//! The Email Orchestrator: campaigns to the tenant's leads or to a list, sent one
//! recipient at a time through the queue at the campaign's rate, over SMTP or the
//! tenant's connected Gmail, with per-recipient status, an unsubscribe link in every
//! message and a suppression list that is always honoured.
//!
//! A campaign is `draft` until someone sends it; sending creates an
//! `email.campaign_send` task (so the approval policy and the task timeline apply), which
//! fixes the recipient list (`email_recipients`; suppressed and invalid addresses are
//! `skipped` with the reason) and queues one `deliver-email` job per recipient, spaced by
//! the rate ([`deliver`]). The campaign is `sending` until no recipient is pending, then
//! `sent`. Contacts are the tenant's leads (filtered by stage) or an explicit list with
//! per-recipient variables.

pub mod deliver;
pub mod module;
pub mod routes;
pub mod template;
pub mod unsubscribe;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{AppError, Result};
use crate::ids::CampaignId;
use crate::store::{TenantTx, scoped};

pub const MAX_SUBJECT: usize = 200;
pub const MAX_BODY: usize = 50_000;
pub const MAX_LIST: usize = 5_000;
pub const DEFAULT_RATE: i64 = 60;
pub const MAX_RATE: i64 = 600;

/// One person on an explicit list.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub email: String,
    pub name: Option<String>,
    pub company: Option<String>,
    /// Extra template variables for this person.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// Who a campaign goes to: leads with an email (in the given stages; all when empty),
/// or an explicit list.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<Contact>>,
}

impl Audience {
    /// Variable names the list's recipients carry (for template checks).
    pub fn extra_vars(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .recipients
            .iter()
            .flatten()
            .flat_map(|c| c.vars.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Campaign {
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub id: CampaignId,
    pub name: String,
    pub subject: String,
    pub body: String,
    /// `smtp` or `gmail`.
    pub channel: String,
    #[sqlx(try_from = "String")]
    pub audience: AudienceJson,
    pub rate_per_minute: i64,
    /// `draft`, `scheduled`, `sending`, `sent` or `cancelled`.
    pub status: String,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub task_id: Option<String>,
    pub origin: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The stored audience.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct AudienceJson(pub Audience);

impl TryFrom<String> for AudienceJson {
    type Error = serde_json::Error;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        serde_json::from_str(&s).map(Self)
    }
}

macro_rules! select_campaigns {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, subject, body, channel, audience, rate_per_minute, status, scheduled_at, started_at, \
             finished_at, task_id, origin, created_by, created_at, updated_at FROM email_campaigns ",
            $tail
        )
    };
}

/// A new campaign's or an edit's fields.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    pub name: Option<String>,
    pub subject: Option<String>,
    /// Plain text with `{{ variables }}`; the unsubscribe link is added when the body
    /// does not place `{{ unsubscribe_url }}` itself.
    pub body: Option<String>,
    /// `smtp` (default) or `gmail` (the connected Google account).
    pub channel: Option<String>,
    pub audience: Option<Audience>,
    /// Messages per minute, 1-600 (default 60).
    pub rate_per_minute: Option<i64>,
}

/// Checked values, ready to store.
pub struct Checked {
    pub name: String,
    pub subject: String,
    pub body: String,
    pub channel: String,
    pub audience: Audience,
    pub rate: i64,
}

fn required(
    v: Option<&str>,
    base: Option<&str>,
    field: &'static str,
    max: usize,
) -> Result<String> {
    let v = v.or(base).map(str::trim).unwrap_or("");
    if v.is_empty() || v.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("{field} is required, at most {max} characters"),
        ));
    }
    Ok(v.to_owned())
}

impl CampaignInput {
    pub fn check(
        &self,
        base: Option<&Campaign>,
        stages: &[crate::leadtracker::Stage],
    ) -> Result<Checked> {
        let name = required(
            self.name.as_deref(),
            base.map(|b| b.name.as_str()),
            "name",
            200,
        )?;
        let subject = required(
            self.subject.as_deref(),
            base.map(|b| b.subject.as_str()),
            "subject",
            MAX_SUBJECT,
        )?;
        if subject.chars().any(char::is_control) {
            return Err(AppError::invalid("subject", "the subject must be one line"));
        }
        let body = required(
            self.body.as_deref(),
            base.map(|b| b.body.as_str()),
            "body",
            MAX_BODY,
        )?;
        let channel = self
            .channel
            .clone()
            .or_else(|| base.map(|b| b.channel.clone()))
            .unwrap_or_else(|| "smtp".into());
        if !["smtp", "gmail"].contains(&channel.as_str()) {
            return Err(AppError::invalid("channel", "channel is smtp or gmail"));
        }
        let audience = match (&self.audience, base) {
            (Some(a), _) => a.clone(),
            (None, Some(b)) => b.audience.0.clone(),
            (None, None) => Audience {
                stages: Some(Vec::new()),
                recipients: None,
            },
        };
        match (&audience.stages, &audience.recipients) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AppError::invalid(
                    "audience",
                    "audience is either {\"stages\": [...]} (leads) or {\"recipients\": [...]} (a list)",
                ));
            }
            (Some(s), None) => {
                for k in s {
                    if !stages.iter().any(|st| &st.key == k) {
                        return Err(crate::leadtracker::unknown_stage(k, stages));
                    }
                }
            }
            (None, Some(list)) => {
                if list.is_empty() || list.len() > MAX_LIST {
                    return Err(AppError::invalid(
                        "audience",
                        format!("a list has 1-{MAX_LIST} recipients"),
                    ));
                }
                for c in list {
                    crate::leadtracker::check_email(&c.email)
                        .map_err(|m| AppError::invalid("audience", m))?;
                }
            }
        }
        let extra = audience.extra_vars();
        template::check(&subject, &extra).map_err(|m| AppError::invalid("subject", m))?;
        template::check(&body, &extra).map_err(|m| AppError::invalid("body", m))?;
        let rate = self
            .rate_per_minute
            .or(base.map(|b| b.rate_per_minute))
            .unwrap_or(DEFAULT_RATE);
        if !(1..=MAX_RATE).contains(&rate) {
            return Err(AppError::invalid(
                "rate_per_minute",
                format!("rate_per_minute must be 1-{MAX_RATE}"),
            ));
        }
        Ok(Checked {
            name,
            subject,
            body,
            channel,
            audience,
            rate,
        })
    }
}

pub async fn insert(tx: &mut TenantTx, c: &Checked, origin: &str, by: &str) -> Result<CampaignId> {
    let id = CampaignId::new();
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO email_campaigns (tenant_id, id, name, subject, body, channel, audience, rate_per_minute, status, \
             origin, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'draft', $9, $10, $11, $11)")
            .bind(&id)
            .bind(&c.name)
            .bind(&c.subject)
            .bind(&c.body)
            .bind(&c.channel)
            .bind(serde_json::to_string(&c.audience).map_err(AppError::internal)?)
            .bind(c.rate)
            .bind(origin)
            .bind(by)
            .bind(now),
    )
    .await?;
    Ok(id)
}

pub async fn update(tx: &mut TenantTx, id: &CampaignId, c: &Checked) -> Result<()> {
    tx.execute(
        scoped("UPDATE email_campaigns SET name = $2, subject = $3, body = $4, channel = $5, audience = $6, rate_per_minute = $7, \
             updated_at = $8 WHERE tenant_id = $1 AND id = $9")
            .bind(&c.name)
            .bind(&c.subject)
            .bind(&c.body)
            .bind(&c.channel)
            .bind(serde_json::to_string(&c.audience).map_err(AppError::internal)?)
            .bind(c.rate)
            .bind(Utc::now())
            .bind(id),
    )
    .await?;
    Ok(())
}

pub async fn get(tx: &mut TenantTx, id: &CampaignId) -> Result<Campaign> {
    tx.fetch_optional(scoped(select_campaigns!("WHERE tenant_id = $1 AND id = $2")).bind(id))
        .await?
        .ok_or(AppError::NotFound("campaign"))
}

pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<Campaign>> {
    Ok(tx
        .fetch_all(
            scoped(select_campaigns!(
                "WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(limit),
        )
        .await?)
}

pub async fn set_status(tx: &mut TenantTx, id: &CampaignId, status: &str) -> Result<()> {
    let now = Utc::now();
    tx.execute(
        scoped("UPDATE email_campaigns SET status = $2, updated_at = $3, \
             started_at = CASE WHEN $2 = 'sending' AND started_at IS NULL THEN $3 ELSE started_at END, \
             finished_at = CASE WHEN $2 IN ('sent', 'cancelled') THEN $3 ELSE finished_at END \
             WHERE tenant_id = $1 AND id = $4")
            .bind(status)
            .bind(now)
            .bind(id),
    )
    .await?;
    Ok(())
}

/// Per-recipient counts.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub recipients: i64,
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    pub cancelled: i64,
    /// Recipients who unsubscribed through this campaign's link.
    pub unsubscribed: i64,
}

pub async fn stats(tx: &mut TenantTx, id: &CampaignId) -> Result<Stats> {
    let rows: Vec<(String, i64)> = tx
        .fetch_all(
            scoped("SELECT status, COUNT(*) FROM email_recipients WHERE tenant_id = $1 AND campaign_id = $2 GROUP BY status")
                .bind(id),
        )
        .await?;
    let mut s = Stats::default();
    for (status, n) in rows {
        s.recipients += n;
        match status.as_str() {
            "pending" => s.pending = n,
            "sent" => s.sent = n,
            "failed" => s.failed = n,
            "skipped" => s.skipped = n,
            _ => s.cancelled += n,
        }
    }
    let (u,): (i64,) = tx
        .fetch_one(
            scoped("SELECT COUNT(*) FROM email_suppressions WHERE tenant_id = $1 AND campaign_id = $2 AND reason = 'unsubscribed'")
                .bind(id),
        )
        .await?;
    s.unsubscribed = u;
    Ok(s)
}

/// One recipient's row.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Recipient {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    /// `pending`, `sent`, `failed`, `skipped` or `cancelled`.
    pub status: String,
    pub reason: Option<String>,
    pub attempts: i64,
    pub message_id: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

pub async fn recipients(
    tx: &mut TenantTx,
    id: &CampaignId,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Recipient>> {
    Ok(tx
        .fetch_all(
            scoped("SELECT id, email, name, status, reason, attempts, message_id, sent_at FROM email_recipients \
                 WHERE tenant_id = $1 AND campaign_id = $2 AND ($3 IS NULL OR status = $3) ORDER BY id LIMIT $4")
                .bind(id)
                .bind(status)
                .bind(limit),
        )
        .await?)
}

/// Whether `email` (already lowercased) is on the suppression list.
pub async fn is_suppressed(tx: &mut TenantTx, email: &str) -> Result<bool> {
    let row: Option<(String,)> = tx
        .fetch_optional(
            scoped("SELECT email FROM email_suppressions WHERE tenant_id = $1 AND email = $2")
                .bind(email),
        )
        .await?;
    Ok(row.is_some())
}

/// The whole suppression list (lowercased addresses), read once for a whole audience.
pub async fn suppressed(tx: &mut TenantTx) -> Result<std::collections::HashSet<String>> {
    let rows: Vec<(String,)> = tx
        .fetch_all(scoped(
            "SELECT email FROM email_suppressions WHERE tenant_id = $1",
        ))
        .await?;
    Ok(rows.into_iter().map(|(e,)| e).collect())
}

/// Adds `email` to the suppression list (keeping the first reason).
pub async fn suppress(
    tx: &mut TenantTx,
    email: &str,
    reason: &str,
    campaign: Option<&str>,
) -> Result<bool> {
    Ok(tx
        .execute(
            scoped("INSERT INTO email_suppressions (tenant_id, email, reason, campaign_id, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant_id, email) DO NOTHING")
                .bind(email)
                .bind(reason)
                .bind(campaign)
                .bind(Utc::now()),
        )
        .await?
        > 0)
}

/// Everyone the campaign's audience names now: `(email, name, company, vars)`, deduplicated.
pub async fn resolve_audience(
    tx: &mut TenantTx,
    a: &Audience,
) -> Result<
    Vec<(
        String,
        Option<String>,
        Option<String>,
        BTreeMap<String, String>,
    )>,
> {
    let mut out = Vec::new();
    if let Some(list) = &a.recipients {
        for c in list {
            out.push((
                c.email.trim().to_lowercase(),
                c.name.clone(),
                c.company.clone(),
                c.vars.clone(),
            ));
        }
    } else {
        let stages = a.stages.clone().unwrap_or_default();
        let leads: Vec<(String, String, Option<String>, String)> = tx
            .fetch_all(
                scoped("SELECT email, name, company, stage FROM leads WHERE tenant_id = $1 AND email IS NOT NULL ORDER BY created_at, id"),
            )
            .await?;
        for (email, name, company, stage) in leads {
            if stages.is_empty() || stages.contains(&stage) {
                out.push((email, Some(name), company, BTreeMap::new()));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|r| seen.insert(r.0.clone()));
    Ok(out)
}

/// How many would receive the campaign now (its audience less suppressed and invalid
/// addresses): the figure a person approving the send sees.
pub async fn reach(tx: &mut TenantTx, a: &Audience) -> Result<(usize, usize)> {
    let all = resolve_audience(tx, a).await?;
    let blocked = suppressed(tx).await?;
    let mut skipped = 0;
    for (email, ..) in &all {
        if crate::leadtracker::check_email(email).is_err() || blocked.contains(email) {
            skipped += 1;
        }
    }
    Ok((all.len() - skipped, skipped))
}

/// Recomputes the email metric snapshot.
pub async fn refresh_metrics(tx: &mut TenantTx) -> Result<()> {
    let since = Utc::now() - chrono::Duration::days(30);
    let (sent, failed): (i64, i64) = tx
        .fetch_one(
            scoped("SELECT CAST(COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) FROM email_recipients \
                 WHERE tenant_id = $1 AND (sent_at IS NULL OR sent_at >= $2)")
                .bind(since),
        )
        .await?;
    let (campaigns,): (i64,) = tx
        .fetch_one(scoped("SELECT COUNT(*) FROM email_campaigns WHERE tenant_id = $1 AND status = 'sent' AND finished_at >= $2").bind(since))
        .await?;
    let (unsub,): (i64,) = tx
        .fetch_one(scoped("SELECT COUNT(*) FROM email_suppressions WHERE tenant_id = $1 AND reason = 'unsubscribed' AND created_at >= $2").bind(since))
        .await?;
    let m = vec![
        crate::metrics::count(
            "campaigns_sent_30d",
            "Campaigns sent in the last 30 days",
            campaigns,
            "campaigns",
        ),
        crate::metrics::count(
            "emails_sent_30d",
            "Emails sent in the last 30 days",
            sent,
            "emails",
        ),
        crate::metrics::count(
            "emails_failed_30d",
            "Emails that failed in the last 30 days",
            failed,
            "emails",
        ),
        crate::metrics::count(
            "unsubscribes_30d",
            "Unsubscribes in the last 30 days",
            unsub,
            "people",
        ),
    ];
    crate::metrics::store(tx, "email", &m).await
}

/// A campaign with its counts, as the API shows it.
pub fn with_stats(c: Campaign, s: Stats) -> Value {
    let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
    v["stats"] = serde_json::to_value(s).unwrap_or(Value::Null);
    v
}
