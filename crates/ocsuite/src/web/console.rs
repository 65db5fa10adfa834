//! The operator console's pages (`/admin`): the companies, searchable, with this
//! month's figures and the platform's health; and one company's page with its members,
//! usage, audit and the operator's actions (plan, suspend, view as). Everyone but a
//! super-admin gets the same 404 page as an unknown path.

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::Response;
use chrono::{Duration, Utc};
use serde::Deserialize;

use super::{Person, Redirected, Shell, render};
use crate::console::health::Health;
use crate::console::{TenantFacts, TenantSummary};
use crate::error::AppError;
use crate::state::AppState;

/// A super-admin looking at a console page.
pub struct Operator(Person);

impl FromRequestParts<AppState> for Operator {
    type Rejection = Redirected;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Redirected> {
        let p = Person::from_request_parts(parts, state).await?;
        if !p.user.is_super_admin {
            return Err(AppError::NotFound("page").into());
        }
        Ok(Self(p))
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: i64,
}

/// Page size of the company list.
const PAGE: i64 = 50;

#[derive(Template)]
#[template(path = "console.html")]
struct ConsolePage {
    shell: Shell,
    q: String,
    rows: Vec<TenantSummary>,
    total: i64,
    page: i64,
    pages: i64,
    health: Health,
    /// Deletion requests still open (waiting or approved) and the latest decided ones.
    deletions: Vec<crate::console::deletion::Deletion>,
    owner_invites: Vec<crate::owner_invites::OwnerInvite>,
    me: String,
    /// Set when the person is in a support session (the page offers to go back to it).
    viewing: Option<String>,
}

pub async fn tenants(
    State(state): State<AppState>,
    Operator(p): Operator,
    Query(q): Query<ListQuery>,
) -> Result<Response, Redirected> {
    let query: String = q.q.trim().chars().take(200).collect();
    let page = q.page.max(0);
    let mut tx = state.store.platform_read().await?;
    let (rows, total) =
        crate::console::search(&mut tx, &query, PAGE, page * PAGE, Utc::now()).await?;
    let deletions = crate::console::deletion::list(&mut tx, 10).await?;
    let owner_invites = crate::owner_invites::list(&mut tx, 20).await?;
    tx.commit().await?;
    let health = crate::console::health::check(&state).await?;
    Ok(render(&ConsolePage {
        shell: Shell::console(&p.user, "Console", state.banner.current(Utc::now())),
        q: query,
        rows,
        total,
        page,
        pages: (total + PAGE - 1) / PAGE,
        health,
        deletions,
        owner_invites,
        me: p.user.id.to_string(),
        viewing: p.impersonating.map(|i| i.tenant.to_string()),
    }))
}

struct UsageRow {
    day: String,
    tokens: i64,
    cost: String,
}

#[derive(Template)]
#[template(path = "console_tenant.html")]
struct TenantPage {
    shell: Shell,
    t: TenantFacts,
    members: Vec<crate::tenancy::members::MemberOut>,
    usage: Vec<UsageRow>,
    audit: Vec<crate::audit::AuditOut>,
    queues: Vec<crate::queue::Depth>,
    impersonations: Vec<crate::impersonation::ImpersonationOut>,
    /// The operator is in a support session (in this company or another).
    in_support: bool,
    /// The company's open deletion request, if any.
    deletion: Option<crate::console::deletion::Deletion>,
}

pub async fn tenant(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
) -> Result<Response, Redirected> {
    let tenant = crate::console::routes::tenant_in_path(&id)?;
    let mut tx = state.store.tenant_read(&tenant).await?;
    let t = crate::console::facts(&mut tx)
        .await?
        .ok_or(AppError::NotFound("company"))?;
    let members = crate::tenancy::members::list(&mut tx).await?;
    let usage =
        crate::console::usage_by_day(&mut tx, (Utc::now() - Duration::days(30)).date_naive())
            .await?
            .into_iter()
            .map(|(day, tokens, cost, _)| UsageRow {
                day,
                tokens,
                cost: format!("{:.2} USD", cost as f64 / 1_000_000.0),
            })
            .collect();
    let audit = crate::audit::list(&mut tx, 20, None).await?;
    let queues = crate::queue::tenant_depths(&mut tx)
        .await?
        .into_iter()
        .filter(|d| d.ready + d.running + d.dead > 0)
        .collect();
    let impersonations = crate::impersonation::list(&mut tx, 10).await?;
    let deletion = crate::console::deletion::list(&mut tx, 100)
        .await?
        .into_iter()
        .find(|d| d.target_tenant == t.id && matches!(d.status.as_str(), "requested" | "approved"));
    tx.commit().await?;
    Ok(render(&TenantPage {
        shell: Shell::console(&p.user, &t.name, state.banner.current(Utc::now())),
        t,
        members,
        usage,
        audit,
        queues,
        impersonations,
        in_support: p.impersonating.is_some(),
        deletion,
    }))
}

#[derive(Template)]
#[template(path = "owner_invite.html")]
struct OwnerInvitePage {
    token: String,
    company: String,
    plan: String,
    /// The invited address (fixed in the sign-up form).
    email: String,
    /// `pending`, `accepted`, `expired` or `revoked`.
    status: String,
    /// Who is signed in, if anyone.
    signed_in_as: Option<String>,
}

/// The link of an owner invite: sign up (the email fixed) or log in, then accept.
pub async fn owner_invite(
    State(state): State<AppState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    Path(token): Path<String>,
) -> Result<Response, Redirected> {
    let invite = crate::owner_invites::check(&state.store, &token).await?;
    let signed_in_as = match principal.as_deref() {
        Some(crate::auth::Principal::User { user, .. }) => Some(user.email.clone()),
        _ => None,
    };
    Ok(render(&OwnerInvitePage {
        token,
        company: invite.company_name,
        plan: invite.plan,
        email: invite.email,
        status: invite.status,
        signed_in_as,
    }))
}
