//! Human-in-the-loop approval of proposed tasks.
//!
//! A board meeting proposes tasks; nothing runs until a person with a role the tenant's
//! policy allows approves it, with the exact input, side effect, risk and undo shown
//! first. The policy has two parts:
//!
//! - **Who may approve**: the lowest role per side-effect class. Defaults: members
//!   approve `none`/`read`; `write`, `external-send` and `financial` need an admin.
//!   `external-send` and `financial` can never go below admin, nothing below member.
//! - **Per-capability mode**: `ask` (default) or `auto` — approved by policy the moment
//!   it is proposed, allowed only for capabilities that change nothing (`none`/`read`).
//!
//! Approval is one conditional update (`… WHERE status = 'proposed'`) that queues the
//! task's job in the same transaction, so two concurrent approvals run it once: the
//! loser finds the status changed and gets 409.

pub mod routes;

use std::collections::BTreeMap;

use chrono::Utc;
use ocsuite_module_sdk::{CapabilitySpec, SideEffect, Undo, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{AppError, Result};
use crate::ids::TaskId;
use crate::modules::{self, Registry};
use crate::queue::{self, EXECUTE_TASK, NewJob};
use crate::realtime::{self, Event, Topic};
use crate::store::{TenantTx, scoped};
use crate::tasks::{self, Status, Task, job_id};
use crate::tenancy::Role;

pub const SIDE_EFFECTS: [SideEffect; 5] = [
    SideEffect::None,
    SideEffect::Read,
    SideEffect::Write,
    SideEffect::ExternalSend,
    SideEffect::Financial,
];

fn side_effect_named(s: &str) -> Option<SideEffect> {
    SIDE_EFFECTS.into_iter().find(|e| e.as_str() == s)
}

pub fn default_min_role(se: SideEffect) -> Role {
    match se {
        SideEffect::None | SideEffect::Read => Role::Member,
        SideEffect::Write | SideEffect::ExternalSend | SideEffect::Financial => Role::Admin,
    }
}

/// The lowest role a tenant may set for a class.
fn floor(se: SideEffect) -> Role {
    match se {
        SideEffect::ExternalSend | SideEffect::Financial => Role::Admin,
        _ => Role::Member,
    }
}

/// Whether a capability's proposals wait for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Ask,
    /// Approved by policy when proposed (read-only capabilities only).
    Auto,
}

/// The tenant's approval policy.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Policy {
    /// Side-effect class → the lowest role that may approve it.
    #[schema(value_type = Object)]
    pub min_roles: BTreeMap<String, Role>,
    /// Capability → mode, for capabilities not on `ask`.
    #[schema(value_type = Object)]
    pub modes: BTreeMap<String, Mode>,
}

pub async fn policy(tx: &mut TenantTx) -> Result<Policy> {
    let roles: Vec<(String, String)> = tx
        .fetch_all(scoped(
            "SELECT side_effect, min_role FROM approval_roles WHERE tenant_id = $1",
        ))
        .await?;
    let mut min_roles: BTreeMap<String, Role> = SIDE_EFFECTS
        .iter()
        .map(|e| (e.as_str().to_owned(), default_min_role(*e)))
        .collect();
    for (se, role) in roles {
        if let Ok(r) = Role::try_from(role) {
            min_roles.insert(se, r);
        }
    }
    let modes: Vec<(String, String)> = tx
        .fetch_all(scoped(
            "SELECT capability, mode FROM approval_modes WHERE tenant_id = $1 ORDER BY capability",
        ))
        .await?;
    let modes = modes
        .into_iter()
        .filter(|(_, m)| m == "auto")
        .map(|(c, _)| (c, Mode::Auto))
        .collect();
    Ok(Policy { min_roles, modes })
}

pub async fn min_role(tx: &mut TenantTx, se: SideEffect) -> Result<Role> {
    Ok(policy(tx)
        .await?
        .min_roles
        .get(se.as_str())
        .copied()
        .unwrap_or_else(|| default_min_role(se)))
}

/// Changes the policy; every entry is checked before any is written.
pub async fn set_policy(
    tx: &mut TenantTx,
    registry: &Registry,
    min_roles: &BTreeMap<String, Role>,
    modes: &BTreeMap<String, Mode>,
) -> Result<Policy> {
    for (se, role) in min_roles {
        let e = side_effect_named(se).ok_or_else(|| {
            AppError::invalid(
                "min_roles",
                format!(
                    "unknown side effect `{se}`: use none, read, write, external-send or financial"
                ),
            )
        })?;
        if !role.at_least(floor(e)) {
            return Err(AppError::invalid(
                "min_roles",
                format!(
                    "{se} tasks need at least the {} role to approve",
                    floor(e).as_str()
                ),
            ));
        }
    }
    for (cap, mode) in modes {
        if *mode == Mode::Auto {
            let r = modules::resolve(registry, tx, cap, None)
                .await
                .map_err(|_| AppError::invalid("modes", format!("unknown capability `{cap}`")))?;
            if !matches!(r.spec.side_effect, SideEffect::None | SideEffect::Read) {
                return Err(AppError::invalid(
                    "modes",
                    format!(
                        "{cap} is {}: only read-only capabilities can be approved automatically",
                        r.spec.side_effect.as_str()
                    ),
                ));
            }
        }
    }
    let now = Utc::now();
    for (se, role) in min_roles {
        tx.execute(
            scoped("INSERT INTO approval_roles (tenant_id, side_effect, min_role, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, side_effect) DO UPDATE SET min_role = $3, updated_at = $4")
                .bind(se.as_str())
                .bind(*role)
                .bind(now),
        )
        .await?;
    }
    for (cap, mode) in modes {
        let q = match mode {
            Mode::Ask => scoped("DELETE FROM approval_modes WHERE tenant_id = $1 AND capability = $2")
                .bind(cap.as_str()),
            Mode::Auto => scoped("INSERT INTO approval_modes (tenant_id, capability, mode, updated_at) VALUES ($1, $2, 'auto', $3) \
                               ON CONFLICT (tenant_id, capability) DO UPDATE SET mode = 'auto', updated_at = $3")
                .bind(cap.as_str())
                .bind(now),
        };
        tx.execute(q).await?;
    }
    policy(tx).await
}

/// Something a person should know before approving.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RiskHint {
    /// `external_send`, `money`, `irreversible`, `large_recipient_count`, `writes_data`.
    pub code: &'static str,
    pub message: String,
}

/// Recipients above this count are called out.
const MANY_RECIPIENTS: usize = 10;

fn count_recipients(v: &Value) -> usize {
    let keys = ["to", "recipients", "emails", "cc", "bcc", "contacts"];
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Array(a) if keys.contains(&k.as_str()) => a.len(),
                other => count_recipients(other),
            })
            .sum(),
        _ => 0,
    }
}

pub fn risk_hints(spec: &CapabilitySpec, input: &Value) -> Vec<RiskHint> {
    let mut out = Vec::new();
    match spec.side_effect {
        SideEffect::ExternalSend => out.push(RiskHint {
            code: "external_send",
            message: "sends something outside the company; it cannot be recalled".into(),
        }),
        SideEffect::Financial => out.push(RiskHint {
            code: "money",
            message: "moves or commits money".into(),
        }),
        SideEffect::Write => out.push(RiskHint {
            code: "writes_data",
            message: "changes the company's data".into(),
        }),
        SideEffect::None | SideEffect::Read => {}
    }
    if spec.undo == Undo::None && !matches!(spec.side_effect, SideEffect::None | SideEffect::Read) {
        out.push(RiskHint {
            code: "irreversible",
            message: "cannot be undone".into(),
        });
    }
    let n = count_recipients(input);
    if n > MANY_RECIPIENTS {
        out.push(RiskHint {
            code: "large_recipient_count",
            message: format!("goes to {n} recipients"),
        });
    }
    out
}

/// How a task could be reversed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UndoInfo {
    pub possible: bool,
    /// `capability` (ocsuite runs the compensation), `instructions` (a person does), `none`.
    pub how: &'static str,
    pub capability: Option<String>,
    pub instructions: Option<String>,
}

pub fn undo_info(spec: &CapabilitySpec) -> UndoInfo {
    match &spec.undo {
        Undo::Capability { capability } => UndoInfo {
            possible: true,
            how: "capability",
            capability: Some(capability.clone()),
            instructions: None,
        },
        Undo::Instructions { text } => UndoInfo {
            possible: false,
            how: "instructions",
            capability: None,
            instructions: Some(text.clone()),
        },
        Undo::None => UndoInfo {
            possible: false,
            how: "none",
            capability: None,
            instructions: None,
        },
    }
}

/// The capability a task runs, at the task's version.
pub async fn spec_of(
    registry: &Registry,
    tx: &mut TenantTx,
    task: &Task,
) -> Result<std::sync::Arc<CapabilitySpec>> {
    let version = Version::parse(&task.version).map_err(AppError::internal)?;
    Ok(
        modules::resolve(registry, tx, &task.capability, Some(&version))
            .await?
            .spec,
    )
}

/// The decision on a proposed task.
pub enum Decision<'a> {
    Approve { rationale: Option<&'a str> },
    Reject { rationale: &'a str },
}

/// Applies a decision to a proposed task: exactly once (409 for the second), with its
/// event and, on approval, the job queued in the same transaction. `by` is recorded as
/// the decider (`user:…`, `api_key:…`, `policy:auto`).
pub async fn decide(
    tx: &mut TenantTx,
    task: &Task,
    max_attempts: u32,
    by: &str,
    decision: Decision<'_>,
) -> Result<Event> {
    let now = Utc::now();
    let (status, rationale, kind) = match &decision {
        Decision::Approve { rationale } => ("queued", *rationale, "approved"),
        Decision::Reject { rationale } => ("rejected", Some(*rationale), "rejected"),
    };
    let row: Option<(i64,)> = tx
        .fetch_optional(
            scoped("UPDATE tasks SET status = $2, decided_by = $3, decided_at = $4, decision_rationale = $5, \
                   finished_at = CASE WHEN $2 = 'rejected' THEN $4 ELSE finished_at END, \
                   event_seq = event_seq + 1, updated_at = $4 \
                 WHERE tenant_id = $1 AND id = $6 AND status = 'proposed' RETURNING event_seq")
                .bind(status)
                .bind(by)
                .bind(now)
                .bind(rationale)
                .bind(&task.id),
        )
        .await?;
    let Some((seq,)) = row else {
        return Err(AppError::Conflict(
            "this task was already approved or rejected".into(),
        ));
    };
    if status == "queued" {
        queue::enqueue(
            tx,
            NewJob {
                queue: EXECUTE_TASK,
                payload: crate::queue::payload(&crate::tasks::TaskJob {
                    task_id: task.id.clone(),
                }),
                priority: 0,
                run_at: now,
                max_attempts,
                id: Some(&job_id(&task.id)),
            },
        )
        .await?;
    }
    realtime::record(
        tx,
        &Topic::Task(task.id.clone()).name(),
        seq,
        kind,
        json!({"task_id": task.id, "status": status, "decided_by": by, "rationale": rationale}),
    )
    .await
}

/// A proposed task as the approval queue shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub task: Task,
    /// The action item it came from.
    pub title: Option<String>,
    pub description: Option<String>,
    pub capability_title: String,
    pub side_effect: String,
    pub risk: Vec<RiskHint>,
    pub undo: UndoInfo,
    /// The lowest role that may approve it.
    pub approver_role: Role,
    /// Whether the caller may approve it.
    pub can_approve: bool,
}

pub async fn preview(
    registry: &Registry,
    tx: &mut TenantTx,
    task: Task,
    caller: Role,
    policy: &Policy,
) -> Result<Preview> {
    let spec = spec_of(registry, tx, &task).await?;
    let item: Option<(String, String)> = tx
        .fetch_optional(
            scoped(
                "SELECT title, description FROM action_items WHERE tenant_id = $1 AND task_id = $2",
            )
            .bind(&task.id),
        )
        .await?;
    let approver_role = policy
        .min_roles
        .get(spec.side_effect.as_str())
        .copied()
        .unwrap_or_else(|| default_min_role(spec.side_effect));
    let (title, description) = item.map_or((None, None), |(t, d)| (Some(t), Some(d)));
    let mut risk = risk_hints(&spec, &task.input);
    if let Some(m) = registry.get(spec.module()) {
        for h in m.hints(tx, &spec.name, &task.input).await? {
            // The module's count replaces the generic guess from the input.
            risk.retain(|r| r.code != h.code);
            risk.push(RiskHint {
                code: h.code,
                message: h.message,
            });
        }
    }
    Ok(Preview {
        risk,
        undo: undo_info(&spec),
        capability_title: spec.title.clone(),
        side_effect: spec.side_effect.as_str().to_owned(),
        can_approve: caller.at_least(approver_role),
        approver_role,
        title,
        description,
        task,
    })
}

/// Proposes `id` and, when the capability is on `auto` and changes nothing, approves it
/// by policy at once. Returns the task's status and events.
pub async fn propose(
    tx: &mut TenantTx,
    id: &TaskId,
    new: &tasks::NewTask<'_>,
    spec: &CapabilitySpec,
    policy: &Policy,
) -> Result<(Status, Vec<Event>)> {
    let mut events = vec![tasks::insert(tx, id, new).await?];
    let auto = policy.modes.get(&spec.name) == Some(&Mode::Auto)
        && matches!(spec.side_effect, SideEffect::None | SideEffect::Read);
    if !auto {
        return Ok((Status::Proposed, events));
    }
    let task = tasks::get(tx, id).await?;
    events.push(
        decide(
            tx,
            &task,
            spec.max_attempts,
            "policy:auto",
            Decision::Approve {
                rationale: Some("read-only capability on automatic approval"),
            },
        )
        .await?,
    );
    Ok((Status::Queued, events))
}
