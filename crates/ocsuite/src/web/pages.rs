//! Sign-in pages, approvals, tasks, connectors and settings.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::{Redirected, Shell, Viewer, label, render};
use crate::approvals::{self, Preview};
use crate::auth::Principal;
use crate::ids::TaskId;
use crate::realtime::{self, Topic};
use crate::state::AppState;
use crate::store::scoped;
use crate::tasks::{self, Status, Task};

pub async fn home(principal: Option<axum::Extension<Principal>>) -> Response {
    match principal {
        Some(_) => Redirect::to("/dashboard").into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Template)]
#[template(path = "auth.html")]
struct AuthPage {
    title: &'static str,
    signup: bool,
}

pub async fn login() -> Response {
    render(&AuthPage {
        title: "Log in",
        signup: false,
    })
}

pub async fn signup() -> Response {
    render(&AuthPage {
        title: "Sign up",
        signup: true,
    })
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    shell: Shell,
    previews: Vec<Preview>,
}

pub async fn approvals(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let policy = approvals::policy(&mut tx).await?;
    let mut waiting = tasks::list(&mut tx, Some(Status::Proposed), 200, None).await?;
    waiting.reverse();
    let mut previews = Vec::new();
    for t in waiting {
        previews.push(approvals::preview(&state.registry, &mut tx, t, v.role, &policy).await?);
    }
    tx.commit().await?;
    Ok(render(&ApprovalsPage {
        shell: Shell::new(&v, "Approvals", "approvals"),
        previews,
    }))
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    shell: Shell,
    tasks: Vec<Task>,
}

pub async fn tasks(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let tasks = tasks::list(&mut tx, None, 100, None).await?;
    tx.commit().await?;
    Ok(render(&TasksPage {
        shell: Shell::new(&v, "Tasks", "tasks"),
        tasks,
    }))
}

/// One line of a task's timeline.
pub struct Step {
    pub at: String,
    pub kind: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    shell: Shell,
    task: Task,
    preview: Option<Preview>,
    input: String,
    result: String,
    steps: Vec<Step>,
    percent: i64,
    can_undo: bool,
    /// The dead job to retry from the dead-letter queue (admins).
    retry_job: Option<String>,
}

pub async fn task(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Response, Redirected> {
    let Some(id) = TaskId::parse(&id) else {
        return Err(crate::error::AppError::NotFound("task").into());
    };
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let task = tasks::get(&mut tx, &id).await?;
    let preview = if task.status == Status::Proposed {
        let policy = approvals::policy(&mut tx).await?;
        Some(approvals::preview(&state.registry, &mut tx, task.clone(), v.role, &policy).await?)
    } else {
        None
    };
    let can_undo = task.status == Status::Succeeded
        && approvals::spec_of(&state.registry, &mut tx, &task)
            .await
            .is_ok_and(|s| matches!(s.undo, ocsuite_module_sdk::Undo::Capability { .. }));
    let events = realtime::replay(&mut tx, &Topic::Task(id), 0).await?;
    tx.commit().await?;
    let mut percent = 0;
    let steps = events
        .iter()
        .map(|e| {
            if let Some(p) = e.data["percent"].as_i64() {
                percent = p;
            }
            let text = e.data["summary"]
                .as_str()
                .or(e.data["message"].as_str())
                .or(e.data["error"].as_str())
                .unwrap_or("")
                .to_owned();
            Step {
                at: e.at.format("%H:%M:%S").to_string(),
                kind: e.kind.clone(),
                text,
            }
        })
        .collect();
    if task.status == Status::Succeeded {
        percent = 100;
    }
    let retry_job = (task.status == Status::Dead && v.role.at_least(crate::tenancy::Role::Admin))
        .then(|| tasks::job_id(&task.id).to_string());
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    Ok(render(&TaskPage {
        shell: Shell::new(&v, "Task", "tasks"),
        input: pretty(&task.input),
        result: task.result.as_ref().map(pretty).unwrap_or_default(),
        task,
        preview,
        steps,
        percent,
        can_undo,
        retry_job,
    }))
}

pub struct ConnectorRow {
    pub name: String,
    pub label: String,
    pub status: String,
    pub account: String,
    pub error: String,
    pub last_sync: String,
}

#[derive(Template)]
#[template(path = "connectors.html")]
struct ConnectorsPage {
    shell: Shell,
    rows: Vec<ConnectorRow>,
    is_admin: bool,
}

pub async fn connectors(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let mut rows = Vec::new();
    for p in state.vault.providers().all() {
        let row = crate::connectors::by_provider(&mut tx, &p.name).await?;
        rows.push(ConnectorRow {
            name: p.name.clone(),
            label: p.display_name.clone(),
            status: row.as_ref().map_or_else(
                || "not_connected".to_owned(),
                |r| label(r.effective_status(Utc::now())),
            ),
            account: row
                .as_ref()
                .and_then(|r| r.account.clone())
                .unwrap_or_default(),
            error: row
                .as_ref()
                .and_then(|r| r.last_error.clone())
                .unwrap_or_default(),
            last_sync: row
                .as_ref()
                .and_then(|r| r.last_sync_at)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
        });
    }
    tx.commit().await?;
    Ok(render(&ConnectorsPage {
        shell: Shell::new(&v, "Connectors", "connectors"),
        rows,
        is_admin: v.role.at_least(crate::tenancy::Role::Admin),
    }))
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    shell: Shell,
    me: String,
    members: Vec<crate::tenancy::members::MemberOut>,
    invites: Vec<crate::tenancy::invites::InviteOut>,
    keys: Vec<crate::tenancy::api_keys::ApiKeyOut>,
    notifications: Vec<crate::notifications::Notification>,
    audit: Vec<crate::audit::AuditOut>,
    plan: String,
    tokens_used: i64,
    tokens_limit: u64,
    /// Each entitlement of the plan: what it is, how much is used, of how much.
    entitlements: Vec<Entitlement>,
    /// The latest security events about the company and its members (admins).
    security: Vec<crate::security::SecurityEventOut>,
    /// Some entitlement is over its limit (after a move to a smaller plan).
    over_plan: bool,
    is_admin: bool,
}

/// One row of the plan card.
struct Entitlement {
    what: &'static str,
    used: String,
    allowed: String,
    over: bool,
    upgrade_to: Option<String>,
}

fn entitlement_rows(e: crate::plans::EntitlementsOut) -> Vec<Entitlement> {
    use crate::plans::Limit;
    let mb = |n: u64| {
        if n >= 1 << 30 {
            format!("{:.1} GB", n as f64 / f64::from(1u32 << 30))
        } else {
            format!("{:.1} MB", n as f64 / 1_048_576.0)
        }
    };
    e.limits
        .into_iter()
        .map(|l| {
            let bytes = l.limit == Limit::KnowledgeBytes;
            let show = |n: u64| if bytes { mb(n) } else { n.to_string() };
            Entitlement {
                what: match l.limit {
                    Limit::Seats => "Member seats (with pending invitations)",
                    Limit::ApiKeys => "API keys",
                    Limit::Triggers => "Automations",
                    Limit::McpServers => "MCP servers",
                    Limit::TasksPerDay => "Tasks today",
                    Limit::KnowledgeBytes => "Knowledge storage",
                },
                used: show(l.used),
                allowed: l.allowed.map_or_else(|| "unlimited".into(), show),
                over: l.over,
                upgrade_to: l.upgrade_to,
            }
        })
        .collect()
}

pub async fn settings(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let is_admin = v.role.at_least(crate::tenancy::Role::Admin);
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let members = crate::tenancy::members::list(&mut tx).await?;
    let (invites, keys, audit) = if is_admin {
        (
            crate::tenancy::invites::list(&mut tx)
                .await?
                .into_iter()
                .filter(|i| i.accepted_at.is_none())
                .collect(),
            crate::tenancy::api_keys::list(&mut tx).await?,
            crate::audit::list(&mut tx, 30, None).await?,
        )
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let notifications = crate::notifications::list(&mut tx, &v.user.id, false, 20).await?;
    let (plan,): (String,) = tx
        .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
        .await?;
    let (used, held) = crate::usage::consumed(&mut tx, Utc::now()).await?;
    let entitlements = entitlement_rows(crate::plans::report(&state.plans, &mut tx).await?);
    let security = if is_admin {
        crate::security::list(&mut tx, None, 20).await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    let limits = state
        .meter
        .limits(crate::usage::Plan::parse(&plan).unwrap_or(crate::usage::Plan::Free));
    Ok(render(&SettingsPage {
        shell: Shell::new(&v, "Settings", "settings"),
        me: v.user.id.to_string(),
        members,
        invites,
        keys,
        notifications,
        audit,
        plan,
        tokens_used: used + held,
        tokens_limit: limits.monthly_tokens,
        over_plan: entitlements.iter().any(|e| e.over),
        security,
        entitlements,
        is_admin,
    }))
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    token: String,
    signed_in: bool,
    email: String,
}

/// An invite link: sign up or log in, then accept.
pub async fn invite(
    principal: Option<axum::Extension<Principal>>,
    Path(token): Path<String>,
) -> Response {
    let (signed_in, email) = match principal.as_deref() {
        Some(Principal::User { user, .. }) => (true, user.email.clone()),
        _ => (false, String::new()),
    };
    let token: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(200)
        .collect();
    render(&InvitePage {
        token,
        signed_in,
        email,
    })
}
