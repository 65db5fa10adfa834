//! Owner invites: an operator invites someone to start a company on a plan. The
//! branded email goes through the outbox (the HQ company's, since no company exists
//! yet); its link leads to sign-up or log-in with the email fixed, and accepting,
//! signed in as that email, creates the company with the invitee as its owner on the
//! plan — in the same transaction that spends the invite, so it is used once.
//!
//! Only the token's digest is stored; an invite expires after seven days and can be
//! revoked until it is used.

pub mod routes;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;

use crate::auth::{AuthUser, ClientMeta, tokens};
use crate::error::{AppError, Result};
use crate::ids::{InviteId, TenantId};
use crate::store::{Store, Tx, scoped, sql};
use crate::tenancy::tenants::{self, Profile, TenantOut};
use crate::usage::Plan;

pub const TTL_DAYS: i64 = 7;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OwnerInvite {
    pub id: String,
    pub email: String,
    pub company_name: String,
    pub plan: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    /// The company its acceptance created.
    pub created_tenant: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `pending`, `accepted`, `expired` or `revoked`.
    #[sqlx(skip)]
    pub status: String,
}

fn with_status(mut i: OwnerInvite, now: DateTime<Utc>) -> OwnerInvite {
    i.status = if i.accepted_at.is_some() {
        "accepted"
    } else if i.revoked_at.is_some() {
        "revoked"
    } else if i.expires_at <= now {
        "expired"
    } else {
        "pending"
    }
    .into();
    i
}

macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT id, email, company_name, plan, created_by, created_at, expires_at, accepted_at, ",
            "created_tenant, revoked_at FROM owner_invites ",
            $rest
        )
    };
}

pub async fn list(tx: &mut Tx, limit: i64) -> Result<Vec<OwnerInvite>> {
    let rows: Vec<OwnerInvite> = tx
        .fetch_all(sql(select!("ORDER BY created_at DESC, id DESC LIMIT $1")).bind(limit))
        .await?;
    let now = Utc::now();
    Ok(rows.into_iter().map(|i| with_status(i, now)).collect())
}

pub async fn get(tx: &mut Tx, id: &str) -> Result<OwnerInvite> {
    let row: Option<OwnerInvite> = tx
        .fetch_optional(sql(select!("WHERE id = $1")).bind(id))
        .await?;
    row.map(|i| with_status(i, Utc::now()))
        .ok_or(AppError::NotFound("owner invite"))
}

/// The invite a presented token names, whatever its state (404 when none).
pub async fn by_token(tx: &mut Tx, token: &str) -> Result<OwnerInvite> {
    if !token.starts_with(tokens::OWNER_INVITE_PREFIX) || token.len() > 100 {
        return Err(AppError::NotFound("owner invite"));
    }
    let row: Option<OwnerInvite> = tx
        .fetch_optional(sql(select!("WHERE token_hash = $1")).bind(tokens::digest(token)))
        .await?;
    row.map(|i| with_status(i, Utc::now()))
        .ok_or(AppError::NotFound("owner invite"))
}

/// What an operator asks for.
pub struct NewInvite<'a> {
    pub email: &'a str,
    pub company_name: &'a str,
    pub plan: Plan,
    pub by: &'a AuthUser,
}

/// Records the invite and queues its email (in the HQ company's outbox); returns it and
/// the one-time link.
pub async fn create(
    store: &Store,
    base_url: &str,
    n: NewInvite<'_>,
) -> Result<(OwnerInvite, String)> {
    let id = InviteId::new();
    let token = tokens::new_owner_invite_token();
    let now = Utc::now();
    let link = format!("{}/owner-invite/{token}", base_url.trim_end_matches('/'));
    let mut tx = store.tenant(&crate::knowledge::hq_tenant()).await?;
    tx.execute(
        sql("INSERT INTO owner_invites (id, email, company_name, plan, token_hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&id)
        .bind(n.email)
        .bind(n.company_name)
        .bind(n.plan.as_str())
        .bind(tokens::digest(&token))
        .bind(&n.by.id)
        .bind(now)
        .bind(now + Duration::days(TTL_DAYS)),
    )
    .await?;
    let body = format!(
        "Hello,\n\n{inviter} invited you to set up {company} on ocsuite, your company's AI board of \
         directors (plan: {plan}).\n\nOpen this link to create your account, or log in with this \
         email address, and accept:\n\n{link}\n\nThe link works once and expires on {expires} UTC. \
         If you did not expect this invitation, ignore this email.\n\n— ocsuite",
        inviter = n.by.name,
        company = n.company_name,
        plan = n.plan.as_str(),
        expires = (now + Duration::days(TTL_DAYS)).format("%Y-%m-%d %H:%M"),
    );
    crate::notifications::queue_email(
        &mut tx,
        n.email,
        &format!("You're invited to set up {} on ocsuite", n.company_name),
        &body,
    )
    .await?;
    crate::audit::record_platform(
        &mut tx,
        n.by.id.as_str(),
        "owner_invite.create",
        &format!("owner_invite:{id}"),
        json!({ "email": n.email, "company_name": n.company_name, "plan": n.plan.as_str() }),
    )
    .await?;
    let invite = get(&mut tx, id.as_str()).await?;
    tx.commit().await?;
    Ok((invite, link))
}

/// Why an invite cannot be used now, if it cannot.
fn unusable(i: &OwnerInvite) -> Option<AppError> {
    match i.status.as_str() {
        "pending" => None,
        "accepted" => Some(AppError::Gone("this invitation was already used".into())),
        "revoked" => Some(AppError::Gone("this invitation was withdrawn".into())),
        _ => Some(AppError::Gone(
            "this invitation has expired; ask for a new one".into(),
        )),
    }
}

/// Checks that `token` can be accepted by `user` (for the page before accepting).
pub async fn check(store: &Store, token: &str) -> Result<OwnerInvite> {
    let mut tx = store.platform_read().await?;
    let invite = by_token(&mut tx, token).await?;
    tx.commit().await?;
    Ok(invite)
}

/// Accepts: `user` (whose email must be the invited one) becomes the owner of a new
/// company on the invite's plan. The invite is spent in the same transaction, so two
/// acceptances cannot both create one.
pub async fn accept(
    store: &Store,
    token: &str,
    user: &AuthUser,
    meta: &ClientMeta,
) -> Result<TenantOut> {
    let invite = check(store, token).await?;
    if let Some(e) = unusable(&invite) {
        return Err(e);
    }
    if !invite.email.eq_ignore_ascii_case(&user.email) {
        return Err(AppError::Forbidden(format!(
            "this invitation is for {}; log in with that email to accept it",
            invite.email
        )));
    }
    let plan = Plan::parse(&invite.plan).unwrap_or(Plan::Free);
    let tenant = TenantId::new();
    let now = Utc::now();
    let mut tx = store.tenant(&tenant).await?;
    let spent = tx
        .execute(
            sql(
                "UPDATE owner_invites SET accepted_at = $2, created_tenant = $3 \
                  WHERE id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
            )
            .bind(invite.id.as_str())
            .bind(now)
            .bind(&tenant),
        )
        .await?;
    if spent == 0 {
        return Err(AppError::Gone("this invitation was already used".into()));
    }
    let out = tenants::create_in(
        &mut tx,
        &user.id,
        meta,
        &invite.company_name,
        Profile::default(),
        now,
    )
    .await?;
    tx.execute(scoped("UPDATE tenants SET plan = $2 WHERE id = $1").bind(plan.as_str()))
        .await?;
    crate::audit::insert(
        &mut tx,
        ("user", user.id.as_str()),
        "owner_invite.accept",
        "owner_invite",
        &invite.id,
        json!({ "plan": plan.as_str(), "invited_by": invite.created_by }),
        meta.request_id.clone(),
    )
    .await?;
    crate::audit::record_platform(
        &mut tx,
        user.id.as_str(),
        "owner_invite.accept",
        &format!("owner_invite:{}", invite.id),
        json!({ "tenant_id": tenant }),
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// Withdraws an invite that is still pending (409 otherwise).
pub async fn revoke(tx: &mut Tx, id: &str, by: &AuthUser) -> Result<OwnerInvite> {
    let invite = get(tx, id).await?;
    if invite.status != "pending" {
        return Err(AppError::Conflict(format!(
            "this invitation is {}; only a pending one can be withdrawn",
            invite.status
        )));
    }
    tx.execute(
        sql("UPDATE owner_invites SET revoked_at = $2 WHERE id = $1 AND accepted_at IS NULL")
            .bind(id)
            .bind(Utc::now()),
    )
    .await?;
    crate::audit::record_platform(
        tx,
        by.id.as_str(),
        "owner_invite.revoke",
        &format!("owner_invite:{id}"),
        json!({}),
    )
    .await?;
    get(tx, id).await
}
