//! Policy as code: privileged actions are authorised by Cedar.
//!
//! The platform's floors (forbids nobody can loosen) and the company's own policy
//! (versioned, edited by its admins, validated against the published schema before it
//! is saved) are evaluated together on every privileged action, after the handler's
//! role check by type. The default policy mirrors the role rules, so a company that
//! never edits its policy sees no change. Every decision is a `policy_decisions` row
//! (the question, the answer, the determining policies and the version) sealed into a
//! signed receipt (`policy.allow` / `policy.deny`), in the action's own transaction; a
//! denial commits its row and answers 403 `policy_denied`.

pub mod engine;
pub mod routes;
pub mod texts;
pub mod versions;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Datelike, Timelike, Utc};
use serde_json::json;
use tokio::sync::RwLock;

use engine::Engine;
pub use engine::{Answer, Circumstances, Compiled, Principal, Question, Resource};

use crate::error::{AppError, Result};
use crate::ids::{DecisionId, TenantId};
use crate::store::{TenantTx, scoped, sql};
use crate::tenancy::{Actor, TenantCtx};

/// The engine and each company's compiled policy, by version.
pub struct Policies {
    pub engine: Engine,
    cache: RwLock<HashMap<TenantId, (i64, Arc<Compiled>)>>,
}

impl Policies {
    pub fn new() -> std::result::Result<Self, String> {
        Ok(Self {
            engine: Engine::new()?,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The company's policy in force (floors included) and its version (0: the
    /// default). One indexed read when the cached version is current.
    pub async fn current(&self, tx: &mut TenantTx) -> Result<(i64, Arc<Compiled>)> {
        let (version,): (Option<i64>,) = tx
            .fetch_one(scoped(
                "SELECT MAX(version) FROM policy_versions WHERE tenant_id = $1",
            ))
            .await?;
        let Some(version) = version else {
            return Ok((0, self.engine.default_combined()));
        };
        let tenant = tx.tenant_id().clone();
        if let Some((v, set)) = self.cache.read().await.get(&tenant)
            && *v == version
        {
            return Ok((version, set.clone()));
        }
        let (text,): (String,) = tx
            .fetch_one(
                scoped("SELECT text FROM policy_versions WHERE tenant_id = $1 AND version = $2")
                    .bind(version),
            )
            .await?;
        let set = Arc::new(self.engine.compile_saved(&text));
        self.cache
            .write()
            .await
            .insert(tenant, (version, set.clone()));
        Ok((version, set))
    }
}

/// Whether the signed-in person used a second factor (users with TOTP enabled must).
async fn mfa(tx: &mut TenantTx, actor: &Actor) -> Result<bool> {
    let Actor::User(user) = actor else {
        return Ok(false);
    };
    let row: Option<(bool,)> = tx
        .fetch_optional(sql("SELECT totp_enabled FROM users WHERE id = $1").bind(user))
        .await?;
    Ok(row.is_some_and(|(m,)| m))
}

/// The question a request asks.
pub async fn question(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    action: &str,
    resource: Resource,
) -> Result<Question> {
    let now = Utc::now();
    Ok(Question {
        action: action.to_owned(),
        principal: Principal {
            kind: ctx.actor.kind().to_owned(),
            id: ctx.actor.id().to_owned(),
            role: ctx.role.as_str().to_owned(),
            email: String::new(),
            company: None,
        },
        resource,
        context: Circumstances {
            mfa: mfa(tx, &ctx.actor).await?,
            impersonated: matches!(ctx.actor, Actor::SupportAdmin(_)),
            // A support session's address is the operator's, not the company's to keep.
            ip: match ctx.actor {
                Actor::SupportAdmin(_) => String::new(),
                _ => ctx.meta.ip.clone().unwrap_or_default(),
            },
            hour: i64::from(now.hour()),
            weekday: i64::from(now.weekday().number_from_monday()),
        },
    })
}

/// Authorises a privileged action inside the transaction that will do it (before any
/// write). Allowed: the decision is written into `tx`, which comes back. Denied: the
/// decision is committed on its own and the answer is 403 `policy_denied`.
pub async fn authorize(
    policies: &Policies,
    mut tx: TenantTx,
    ctx: &TenantCtx,
    action: &str,
    resource: Resource,
) -> Result<TenantTx> {
    let q = question(&mut tx, ctx, action, resource).await?;
    let (version, set) = policies.current(&mut tx).await?;
    let answer = policies.engine.evaluate(&*set, tx.tenant_id().as_str(), &q);
    record(&mut tx, ctx, &q, &answer, version).await?;
    if answer.allowed {
        return Ok(tx);
    }
    tx.commit().await?;
    Err(denied(action, &answer))
}

/// Writes the decision and seals it into a receipt, in `tx`.
async fn record(
    tx: &mut TenantTx,
    ctx: &TenantCtx,
    q: &Question,
    answer: &Answer,
    version: i64,
) -> Result<()> {
    let id = DecisionId::new();
    let at = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let question = serde_json::to_string(q).map_err(AppError::internal)?;
    let policies = serde_json::to_string(&answer.policies).map_err(AppError::internal)?;
    tx.defer(
        scoped(
            "INSERT INTO policy_decisions (tenant_id, id, action, principal_type, principal_id, allowed, policies, errors, \
             version, question, request_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(q.action.as_str())
        .bind(ctx.actor.kind())
        .bind(ctx.actor.id())
        .bind(answer.allowed)
        .bind(policies.as_str())
        .bind(serde_json::to_string(&answer.errors).map_err(AppError::internal)?)
        .bind(version)
        .bind(question.as_str())
        .bind(ctx.meta.request_id.clone())
        .bind(at),
    )
    .await?;
    let details = json!({ "question": q, "answer": answer, "version": version }).to_string();
    crate::receipts::append(
        tx,
        &crate::receipts::Entry {
            audit_id: id.as_str(),
            actor: (ctx.actor.kind(), ctx.actor.id()),
            action: if answer.allowed {
                "policy.allow"
            } else {
                "policy.deny"
            },
            target: ("policy", &q.action),
            details: &details,
            request_id: ctx.meta.request_id.as_deref(),
            at,
        },
    )
    .await?;
    Ok(())
}

fn denied(action: &str, answer: &Answer) -> AppError {
    let why = if answer.policies.is_empty() {
        "no policy permits it".to_owned()
    } else {
        format!("forbidden by {}", answer.policies.join(", "))
    };
    AppError::Detailed {
        status: axum::http::StatusCode::FORBIDDEN,
        code: "policy_denied",
        message: format!("the company's policy does not allow {action}: {why}"),
        details: json!({ "policies": answer.policies, "errors": answer.errors }),
    }
}

/// A whole number from JSON: an integer, a float (rounded up) or a numeric string;
/// values beyond `i64` read as `i64::MAX`, so a limit is never dodged by the form.
fn whole(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64().map(|f| {
                if f >= i64::MAX as f64 {
                    i64::MAX
                } else {
                    f.ceil() as i64
                }
            })
        }),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().map(|f| {
            if f >= i64::MAX as f64 {
                i64::MAX
            } else {
                f.ceil() as i64
            }
        }),
        _ => None,
    }
}

/// The money a capability's input names, in minor units: the largest of `amount_minor`,
/// `amount`, `total_minor`, `amount_cents` (integers, floats or numeric strings); 0
/// when it names none. Policies compare it.
pub fn input_amount(input: &serde_json::Value) -> i64 {
    ["amount_minor", "amount", "total_minor", "amount_cents"]
        .iter()
        .filter_map(|k| input.get(*k).and_then(whole))
        .max()
        .unwrap_or(0)
}

/// How many outside recipients a capability's input names, over `to`, `cc`, `bcc`,
/// `recipients`, `emails` and `contacts` (lists, or comma-separated addresses); 0 when
/// none.
pub fn input_recipients(input: &serde_json::Value) -> i64 {
    ["to", "cc", "bcc", "recipients", "emails", "contacts"]
        .iter()
        .map(|k| match input.get(*k) {
            Some(serde_json::Value::Array(a)) => a.len() as i64,
            Some(serde_json::Value::String(s)) => {
                s.split([',', ';']).filter(|p| !p.trim().is_empty()).count() as i64
            }
            _ => 0,
        })
        .sum()
}
