//! Plans as entitlements: what each plan (free, pro, enterprise) lets a company have
//! beyond its token budget — modules, member seats, knowledge storage, tasks a day,
//! automations, MCP servers and API keys.
//!
//! Every limit is enforced on the server where the thing is created, with 402
//! `plan_limit` (or 403 `feature_unavailable` where the plan allows none) naming the
//! limit and the plan that lifts it. A company moved to a smaller plan keeps what it
//! has; it is told what is over, and new ones are refused until it is under again.
//!
//! Defaults are in [`Entitlements::default_for`]; operators change them per plan in the
//! config file (`[plans.free] seats = 10`, `modules = ["leadtracker", "bookkeeping"]`;
//! a negative number means unlimited).

pub mod routes;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::config::PlansConfig;
use crate::error::{AppError, Result};
use crate::store::{TenantTx, scoped};
use crate::usage::Plan;

/// A countable limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Members plus pending invitations.
    Seats,
    ApiKeys,
    /// Automations (triggers).
    Triggers,
    McpServers,
    /// Tasks started since midnight UTC.
    TasksPerDay,
    /// Bytes of knowledge sources stored.
    KnowledgeBytes,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Limit::Seats,
        Limit::ApiKeys,
        Limit::Triggers,
        Limit::McpServers,
        Limit::TasksPerDay,
        Limit::KnowledgeBytes,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Limit::Seats => "seats",
            Limit::ApiKeys => "api_keys",
            Limit::Triggers => "triggers",
            Limit::McpServers => "mcp_servers",
            Limit::TasksPerDay => "tasks_per_day",
            Limit::KnowledgeBytes => "knowledge_bytes",
        }
    }

    /// In words, for messages ("3 API keys").
    fn noun(self) -> &'static str {
        match self {
            Limit::Seats => "member seats",
            Limit::ApiKeys => "API keys",
            Limit::Triggers => "automations",
            Limit::McpServers => "MCP servers",
            Limit::TasksPerDay => "tasks a day",
            Limit::KnowledgeBytes => "bytes of knowledge storage",
        }
    }
}

/// What one plan allows; `None` is unlimited (or, for modules, every module).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Entitlements {
    pub seats: Option<u64>,
    pub api_keys: Option<u64>,
    pub triggers: Option<u64>,
    pub mcp_servers: Option<u64>,
    pub tasks_per_day: Option<u64>,
    pub knowledge_bytes: Option<u64>,
    pub modules: Option<Vec<String>>,
}

const MB: u64 = 1024 * 1024;

impl Entitlements {
    pub fn default_for(plan: Plan) -> Self {
        match plan {
            Plan::Free => Self {
                seats: Some(5),
                api_keys: Some(10),
                triggers: Some(10),
                mcp_servers: Some(2),
                tasks_per_day: Some(500),
                knowledge_bytes: Some(100 * MB),
                modules: None,
            },
            Plan::Pro => Self {
                seats: Some(25),
                api_keys: Some(50),
                triggers: Some(100),
                mcp_servers: Some(20),
                tasks_per_day: Some(10_000),
                knowledge_bytes: Some(5 * 1024 * MB),
                modules: None,
            },
            Plan::Enterprise => Self {
                seats: None,
                api_keys: None,
                triggers: None,
                mcp_servers: None,
                tasks_per_day: None,
                knowledge_bytes: Some(50 * 1024 * MB),
                modules: None,
            },
        }
    }

    pub fn get(&self, l: Limit) -> Option<u64> {
        match l {
            Limit::Seats => self.seats,
            Limit::ApiKeys => self.api_keys,
            Limit::Triggers => self.triggers,
            Limit::McpServers => self.mcp_servers,
            Limit::TasksPerDay => self.tasks_per_day,
            Limit::KnowledgeBytes => self.knowledge_bytes,
        }
    }

    pub fn module_allowed(&self, module: &str) -> bool {
        self.modules
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == module))
    }
}

fn apply(base: Option<u64>, v: Option<i64>, scale: u64) -> Option<u64> {
    match v {
        None => base,
        Some(n) if n < 0 => None,
        Some(n) => Some(u64::try_from(n).unwrap_or(0).saturating_mul(scale)),
    }
}

/// Every plan's entitlements, as configured.
#[derive(Clone, Debug)]
pub struct Plans {
    by_plan: HashMap<&'static str, Entitlements>,
}

pub const ORDER: [Plan; 3] = [Plan::Free, Plan::Pro, Plan::Enterprise];

impl Plans {
    pub fn new(c: &PlansConfig) -> Self {
        let mut by_plan = HashMap::new();
        for (plan, o) in [
            (Plan::Free, &c.free),
            (Plan::Pro, &c.pro),
            (Plan::Enterprise, &c.enterprise),
        ] {
            let d = Entitlements::default_for(plan);
            by_plan.insert(
                plan.as_str(),
                Entitlements {
                    seats: apply(d.seats, o.seats, 1),
                    api_keys: apply(d.api_keys, o.api_keys, 1),
                    triggers: apply(d.triggers, o.triggers, 1),
                    mcp_servers: apply(d.mcp_servers, o.mcp_servers, 1),
                    tasks_per_day: apply(d.tasks_per_day, o.tasks_per_day, 1),
                    knowledge_bytes: apply(d.knowledge_bytes, o.knowledge_mb, MB),
                    modules: o.modules.clone().or(d.modules),
                },
            );
        }
        Self { by_plan }
    }

    pub fn of(&self, plan: Plan) -> Entitlements {
        self.by_plan
            .get(plan.as_str())
            .cloned()
            .unwrap_or_else(|| Entitlements::default_for(plan))
    }

    /// The first plan above `plan` that allows `more` of `limit` (`None`: none does).
    fn lifted_by(&self, plan: Plan, limit: Limit, more: u64) -> Option<Plan> {
        ORDER
            .iter()
            .skip_while(|p| **p != plan)
            .skip(1)
            .copied()
            .find(|p| self.of(*p).get(limit).is_none_or(|n| n >= more))
    }

    /// The first plan above `plan` that has `module`.
    pub fn module_lifted_by(&self, plan: Plan, module: &str) -> Option<Plan> {
        ORDER
            .iter()
            .skip_while(|p| **p != plan)
            .skip(1)
            .copied()
            .find(|p| self.of(*p).module_allowed(module))
    }

    /// Per plan, the modules it is limited to (`None`: all), for the module registry.
    pub fn module_lists(&self) -> HashMap<&'static str, Option<Vec<String>>> {
        self.by_plan
            .iter()
            .map(|(k, v)| (*k, v.modules.clone()))
            .collect()
    }

    /// 402 `plan_limit` (403 `feature_unavailable` where the plan allows none) unless
    /// the company of `tx` may have `adding` more of `limit`.
    pub async fn ensure_room(&self, tx: &mut TenantTx, limit: Limit, adding: u64) -> Result<()> {
        let plan = plan_of(tx).await?;
        let Some(allowed) = self.of(plan).get(limit) else {
            return Ok(());
        };
        let used = used(tx, limit, Utc::now()).await?;
        if used.saturating_add(adding) <= allowed {
            return Ok(());
        }
        let lift = self.lifted_by(plan, limit, used.saturating_add(adding));
        let upgrade = lift.map_or_else(
            || "no plan allows more".to_owned(),
            |p| {
                format!(
                    "the {} plan allows {}",
                    p.as_str(),
                    describe(self.of(p).get(limit))
                )
            },
        );
        let details = json!({
            "limit": limit.key(), "plan": plan.as_str(), "allowed": allowed, "used": used,
            "upgrade_to": lift.map(Plan::as_str),
        });
        if allowed == 0 {
            return Err(AppError::Detailed {
                status: axum::http::StatusCode::FORBIDDEN,
                code: "feature_unavailable",
                message: format!(
                    "the {} plan does not include {}; {upgrade}",
                    plan.as_str(),
                    limit.noun()
                ),
                details,
            });
        }
        Err(AppError::Detailed {
            status: axum::http::StatusCode::PAYMENT_REQUIRED,
            code: "plan_limit",
            message: format!(
                "the {} plan allows {allowed} {}, and this company uses {used}; {upgrade}",
                plan.as_str(),
                limit.noun()
            ),
            details,
        })
    }
}

fn describe(n: Option<u64>) -> String {
    n.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// The plan of the company of `tx`.
pub async fn plan_of(tx: &mut TenantTx) -> Result<Plan> {
    let (p,): (String,) = tx
        .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
        .await?;
    Ok(Plan::parse(&p).unwrap_or(Plan::Free))
}

/// How much of `limit` the company of `tx` uses now.
pub async fn used(tx: &mut TenantTx, limit: Limit, now: DateTime<Utc>) -> Result<u64> {
    let q = match limit {
        Limit::Seats => scoped(
            "SELECT (SELECT count(*) FROM memberships WHERE tenant_id = $1) \
                  + (SELECT count(*) FROM invites WHERE tenant_id = $1 AND accepted_at IS NULL \
                        AND revoked_at IS NULL AND expires_at > $2)",
        )
        .bind(now),
        Limit::ApiKeys => {
            scoped("SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL")
        }
        Limit::Triggers => scoped("SELECT count(*) FROM triggers WHERE tenant_id = $1"),
        Limit::McpServers => scoped("SELECT count(*) FROM mcp_servers WHERE tenant_id = $1"),
        Limit::TasksPerDay => {
            scoped("SELECT count(*) FROM tasks WHERE tenant_id = $1 AND created_at >= $2").bind(
                now.date_naive()
                    .and_hms_opt(0, 0, 0)
                    .unwrap_or_default()
                    .and_utc(),
            )
        }
        Limit::KnowledgeBytes => scoped(
            "SELECT CAST(COALESCE(sum(size_bytes), 0) AS BIGINT) FROM knowledge_sources WHERE tenant_id = $1",
        ),
    };
    let (n,): (i64,) = tx.fetch_one(q).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitUse {
    pub limit: Limit,
    /// `null`: unlimited.
    pub allowed: Option<u64>,
    pub used: u64,
    /// Over the limit (after a move to a smaller plan): new ones are refused.
    pub over: bool,
    /// The next plan that allows more, if any.
    pub upgrade_to: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntitlementsOut {
    pub plan: String,
    pub limits: Vec<LimitUse>,
    /// Built-in modules the plan includes; `null`: all of them.
    pub modules: Option<Vec<String>>,
}

/// The entitlements of the company of `tx`, with its use.
pub async fn report(plans: &Plans, tx: &mut TenantTx) -> Result<EntitlementsOut> {
    let plan = plan_of(tx).await?;
    let e = plans.of(plan);
    let now = Utc::now();
    let mut limits = Vec::new();
    for l in Limit::ALL {
        let allowed = e.get(l);
        let used = used(tx, l, now).await?;
        let upgrade_to = ORDER
            .iter()
            .skip_while(|p| **p != plan)
            .skip(1)
            .find(|p| {
                let next = plans.of(**p).get(l);
                next.is_none_or(|n| allowed.is_some_and(|a| n > a))
            })
            .map(|p| p.as_str().to_owned());
        limits.push(LimitUse {
            limit: l,
            allowed,
            used,
            over: allowed.is_some_and(|a| used > a),
            upgrade_to,
        });
    }
    Ok(EntitlementsOut {
        plan: plan.as_str().into(),
        limits,
        modules: e.modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EntitlementsConfig;

    #[test]
    fn config_overrides_and_unlimited() {
        let p = Plans::new(&PlansConfig {
            free: EntitlementsConfig {
                seats: Some(2),
                knowledge_mb: Some(1),
                modules: Some(vec!["leadtracker".into()]),
                ..Default::default()
            },
            pro: EntitlementsConfig {
                seats: Some(-1),
                ..Default::default()
            },
            ..Default::default()
        });
        let free = p.of(Plan::Free);
        assert_eq!(free.seats, Some(2));
        assert_eq!(free.knowledge_bytes, Some(MB));
        assert_eq!(free.api_keys, Some(10));
        assert!(free.module_allowed("leadtracker") && !free.module_allowed("email"));
        assert_eq!(p.of(Plan::Pro).seats, None);
        assert_eq!(p.lifted_by(Plan::Free, Limit::Seats, 3), Some(Plan::Pro));
        assert_eq!(
            p.lifted_by(Plan::Free, Limit::KnowledgeBytes, u64::MAX),
            None
        );
        assert_eq!(p.module_lifted_by(Plan::Free, "email"), Some(Plan::Pro));
        assert_eq!(p.lifted_by(Plan::Enterprise, Limit::ApiKeys, 5), None);
    }
}
