//! `/api/v1/policy…`: the schema, the company's policy and its versions, simulation and
//! the decision log (admins).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::versions::{self, Version};
use super::{Answer, Question};
use crate::error::{AppError, Result};
use crate::ids::DecisionId;
use crate::json::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::extract::Admin;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(schema))
        .routes(routes!(show, save))
        .routes(routes!(list_versions))
        .routes(routes!(diff))
        .routes(routes!(rollback))
        .routes(routes!(simulate))
        .routes(routes!(decisions))
}

/// The schema, floors and default policy.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SchemaOut {
    /// Cedar schema (human-readable syntax).
    pub schema: String,
    /// The platform's floors: forbids nobody can loosen.
    pub floors: String,
    /// The default company policy (today's role rules).
    pub default_policy: String,
    pub actions: Vec<String>,
}

/// The published schema policies are validated against, with the floors.
#[utoipa::path(get, path = "/policy/schema", tag = "policy",
    responses((status = 200, body = SchemaOut)))]
pub async fn schema(_ctx: Admin) -> Json<SchemaOut> {
    Json(SchemaOut {
        schema: super::texts::SCHEMA.to_owned(),
        floors: super::texts::FLOORS.to_owned(),
        default_policy: super::texts::DEFAULT_POLICY.to_owned(),
        actions: super::texts::ACTIONS
            .iter()
            .map(|a| (*a).to_owned())
            .collect(),
    })
}

/// The company's policy in force.
#[utoipa::path(get, path = "/policy", tag = "policy",
    responses((status = 200, body = Version)))]
pub async fn show(State(state): State<AppState>, ctx: Admin) -> Result<Json<Version>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let v = versions::current(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(v))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// Cedar policies, each with an `@id("…")`.
    pub text: String,
    /// Why it changed.
    #[serde(default)]
    pub note: String,
}

/// Saves a new version after checking it against the schema and the floors; it
/// takes effect at once.
#[utoipa::path(put, path = "/policy", tag = "policy", request_body = PolicyIn,
    responses((status = 200, body = Version), (status = 422, body = crate::error::ErrorBody)))]
pub async fn save(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<PolicyIn>,
) -> Result<Json<Version>> {
    ctx.deny_support("changing the company's policy")?;
    let note = input.note.trim();
    if note.chars().count() > 500 {
        return Err(AppError::invalid(
            "note",
            "a note is at most 500 characters",
        ));
    }
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let v = versions::save(&state.policies, &mut tx, &ctx, &input.text, note).await?;
    tx.commit().await?;
    Ok(Json(v))
}

/// Every saved version, newest first, ending with the built-in default (version 0).
#[utoipa::path(get, path = "/policy/versions", tag = "policy",
    responses((status = 200, body = Vec<Version>)))]
pub async fn list_versions(
    State(state): State<AppState>,
    ctx: Admin,
) -> Result<Json<Vec<Version>>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let v = versions::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(v))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DiffQuery {
    /// The version to compare with (default: the one before).
    pub against: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DiffOut {
    pub from: i64,
    pub to: i64,
    /// Unified diff.
    pub diff: String,
}

/// What changed in a version.
#[utoipa::path(get, path = "/policy/versions/{version}/diff", tag = "policy", params(DiffQuery,
    ("version" = i64, Path, description = "Policy version")),
    responses((status = 200, body = DiffOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn diff(
    State(state): State<AppState>,
    ctx: Admin,
    Path(version): Path<i64>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<DiffOut>> {
    if version < 0 || q.against.is_some_and(|a| a < 0) {
        return Err(AppError::NotFound("policy version"));
    }
    let from = q
        .against
        .unwrap_or_else(|| version.saturating_sub(1).max(0));
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let a = versions::get(&mut tx, from).await?;
    let b = versions::get(&mut tx, version).await?;
    tx.commit().await?;
    Ok(Json(DiffOut {
        from,
        to: version,
        diff: versions::diff(&a, &b),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackIn {
    /// The version whose text becomes current again (0: the default).
    pub version: i64,
}

/// Makes an older version's text current again, as a new version.
#[utoipa::path(post, path = "/policy/rollback", tag = "policy", request_body = RollbackIn,
    responses((status = 200, body = Version), (status = 404, body = crate::error::ErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<RollbackIn>,
) -> Result<Json<Version>> {
    ctx.deny_support("changing the company's policy")?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let old = versions::get(&mut tx, input.version).await?;
    let note = format!("rollback to version {}", input.version);
    let v = versions::save(&state.policies, &mut tx, &ctx, &old.text, &note).await?;
    tx.commit().await?;
    Ok(Json(v))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateIn {
    /// One question to answer with the policy in force (and the draft, if given).
    pub request: Option<Question>,
    /// A draft policy text to try.
    pub draft: Option<String>,
    /// Replay this many of the latest recorded decisions against the draft
    /// (1–1000; default 200 when a draft is given).
    pub replay: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Changed {
    pub decision_id: String,
    pub action: String,
    pub principal: String,
    pub at: DateTime<Utc>,
    /// What was decided then.
    pub before: bool,
    /// What the draft decides.
    pub after: Answer,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SimulateOut {
    pub version: i64,
    /// The request under the policy in force.
    pub current: Option<Answer>,
    /// The request under the draft.
    pub draft: Option<Answer>,
    /// Recorded decisions replayed against the draft.
    pub replayed: usize,
    /// Those whose outcome the draft changes.
    pub changed: Vec<Changed>,
}

/// What if: answers a request under the policy in force and a draft, and lists the
/// recorded decisions the draft would change.
#[utoipa::path(post, path = "/policy/simulate", tag = "policy", request_body = SimulateIn,
    responses((status = 200, body = SimulateOut), (status = 422, body = crate::error::ErrorBody)))]
pub async fn simulate(
    State(state): State<AppState>,
    ctx: Admin,
    ApiJson(input): ApiJson<SimulateIn>,
) -> Result<Json<SimulateOut>> {
    if input.request.is_none() && input.draft.is_none() {
        return Err(AppError::invalid(
            "request",
            "give a request, a draft, or both",
        ));
    }
    let engine = &state.policies.engine;
    let draft = match input.draft.as_deref() {
        Some(text) => Some(versions::checked(&state.policies, text)?),
        None => None,
    };
    let company = ctx.tenant_id.to_string();
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let (version, set) = state.policies.current(&mut tx).await?;
    let (mut current, mut draft_answer) = (None, None);
    if let Some(q) = &input.request {
        if !super::texts::ACTIONS.contains(&q.action.as_str()) {
            return Err(AppError::invalid(
                "request.action",
                format!(
                    "unknown action; actions are {}",
                    super::texts::ACTIONS.join(", ")
                ),
            ));
        }
        current = Some(engine.evaluate(&*set, &company, q));
        draft_answer = draft.as_ref().map(|d| engine.evaluate(d, &company, q));
    }
    let mut changed = Vec::new();
    let mut replayed = 0;
    if let Some(d) = &draft {
        let n = input.replay.unwrap_or(200);
        if !(1..=1000).contains(&n) {
            return Err(AppError::invalid(
                "replay",
                "replay must be between 1 and 1000",
            ));
        }
        let rows: Vec<DecisionRow> = tx
            .fetch_all(
                scoped(concat!(
                    "SELECT id, action, allowed, principal_type, principal_id, policies, version, question, created_at ",
                    "FROM policy_decisions WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(i64::from(n)),
            )
            .await?;
        for r in rows {
            let Ok(q) = serde_json::from_str::<Question>(&r.question) else {
                continue;
            };
            replayed += 1;
            let after = engine.evaluate(d, &company, &q);
            if after.allowed != r.allowed {
                changed.push(Changed {
                    decision_id: r.id,
                    action: r.action,
                    principal: format!("{}:{}", r.principal_type, r.principal_id),
                    at: r.created_at,
                    before: r.allowed,
                    after,
                });
            }
        }
    }
    tx.commit().await?;
    Ok(Json(SimulateOut {
        version,
        current,
        draft: draft_answer,
        replayed,
        changed,
    }))
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: String,
    action: String,
    allowed: bool,
    principal_type: String,
    principal_id: String,
    policies: String,
    version: i64,
    question: String,
    created_at: DateTime<Utc>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DecisionsQuery {
    /// Only this privileged action (`api_key.create`).
    pub action: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// Only decisions this policy determined (its `@id`).
    pub policy: Option<String>,
    /// Only this principal's (a user or API key id).
    pub principal: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u32>,
    /// Decisions older than this one (its id, `pdc_…`).
    pub before: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DecisionOut {
    pub id: String,
    pub action: String,
    pub allowed: bool,
    pub principal_type: String,
    pub principal_id: String,
    /// The determining policies.
    pub policies: Vec<String>,
    pub version: i64,
    #[schema(value_type = Object)]
    pub question: Value,
    pub at: DateTime<Utc>,
}

/// The decision log, newest first.
#[utoipa::path(get, path = "/policy/decisions", tag = "policy", params(DecisionsQuery),
    responses((status = 200, body = Vec<DecisionOut>), (status = 422, body = crate::error::ErrorBody)))]
pub async fn decisions(
    State(state): State<AppState>,
    ctx: Admin,
    ApiQuery(q): ApiQuery<DecisionsQuery>,
) -> Result<Json<Vec<DecisionOut>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let decision = match q.decision.as_deref() {
        None => ("any", false),
        Some("allow") => ("one", true),
        Some("deny") => ("one", false),
        Some(_) => return Err(AppError::invalid("decision", "decision is allow or deny")),
    };
    let before = match q.before.as_deref() {
        Some(b) => DecisionId::parse(b)
            .ok_or_else(|| AppError::invalid("before", "before must be a decision id (pdc_…)"))?
            .to_string(),
        None => String::new(),
    };
    let policy = q.policy.unwrap_or_default();
    if policy
        .chars()
        .any(|c| c == '"' || c == '%' || c == '\\' || c.is_control())
    {
        return Err(AppError::invalid(
            "policy",
            "a policy id has no quotes, %, backslashes or control characters",
        ));
    }
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let rows: Vec<DecisionRow> = tx
        .fetch_all(
            scoped(concat!(
                "SELECT id, action, allowed, principal_type, principal_id, policies, version, question, created_at ",
                "FROM policy_decisions WHERE tenant_id = $1 AND ($2 = 'any' OR allowed = $3) ",
                "AND ($4 = '' OR action = $4) AND ($5 = '' OR principal_id = $5) AND ($6 = '' OR id < $6) ",
                "AND ($7 = '' OR policies LIKE $7 ESCAPE '\\') ORDER BY id DESC LIMIT $8"
            ))
            .bind(decision.0)
            .bind(decision.1)
            .bind(q.action.unwrap_or_default())
            .bind(q.principal.unwrap_or_default())
            .bind(before)
            .bind(if policy.is_empty() {
                String::new()
            } else {
                format!("%\"{}\"%", policy.replace('_', "\\_"))
            })
            .bind(i64::from(limit)),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(rows.into_iter().map(DecisionOut::from).collect()))
}

impl From<DecisionRow> for DecisionOut {
    fn from(r: DecisionRow) -> Self {
        DecisionOut {
            allowed: r.allowed,
            action: r.action,
            principal_type: r.principal_type,
            principal_id: r.principal_id,
            policies: serde_json::from_str(&r.policies).unwrap_or_default(),
            version: r.version,
            question: serde_json::from_str(&r.question).unwrap_or(Value::Null),
            at: r.created_at,
            id: r.id,
        }
    }
}

/// The latest decisions, newest first (the Trust page).
pub async fn recent(tx: &mut crate::store::TenantTx, limit: i64) -> Result<Vec<DecisionOut>> {
    let rows: Vec<DecisionRow> = tx
        .fetch_all(
            scoped(concat!(
                "SELECT id, action, allowed, principal_type, principal_id, policies, version, question, created_at ",
                "FROM policy_decisions WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(limit),
        )
        .await?;
    Ok(rows.into_iter().map(DecisionOut::from).collect())
}
