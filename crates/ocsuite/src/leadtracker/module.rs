//! `leadtracker`: the pipeline as capabilities, so tasks and board action items can add
//! leads, move them, and read the pipeline's figures.

use chrono::{DateTime, Utc};
use ocsuite_module_sdk::{
    ModuleManifest, SideEffect, TaskError, TaskExecutionRequest, TaskExecutionResult, Undo, Version,
};
use serde_json::{Value, json};

use super::summary::{self, Window};
use super::{LeadInput, to_output};
use crate::ids::LeadId;
use crate::modules::{ExecContext, Module, capability};
use crate::store::scoped;
use futures_util::future::BoxFuture;

pub struct LeadTracker {
    manifest: ModuleManifest,
}

fn lead_output() -> Value {
    json!({
        "type": "object",
        "required": ["lead_id", "name", "stage", "value_minor", "currency"],
        "properties": {
            "lead_id": {"type": "string"},
            "name": {"type": "string"},
            "company": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "stage": {"type": "string"},
            "value_minor": {"type": "integer"},
            "currency": {"type": "string"}
        }
    })
}

impl LeadTracker {
    pub fn new() -> Self {
        let text = |max: u32| json!({"type": "string", "maxLength": max});
        let manifest = ModuleManifest {
            name: "leadtracker".into(),
            version: Version::new(1, 0, 0),
            description: "The sales pipeline: leads, stages, conversion and stale deals.".into(),
            capabilities: vec![
                capability(
                    "leadtracker.add_lead",
                    "Add a lead",
                    "Adds a lead to the pipeline (first open stage unless a stage is given).",
                    SideEffect::Write,
                    Undo::Capability {
                        capability: "leadtracker.remove_lead".into(),
                    },
                    json!({
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 200},
                            "company": text(200), "email": text(254), "source": text(100),
                            "value": {"type": "string", "maxLength": 30, "description": "decimal amount, e.g. \"1200.00\""},
                            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                            "stage": text(40), "owner": text(200), "notes": text(5000)
                        },
                        "additionalProperties": false
                    }),
                    lead_output(),
                ),
                capability(
                    "leadtracker.remove_lead",
                    "Remove a lead",
                    "Deletes a lead and its stage history (the undo of add_lead).",
                    SideEffect::Write,
                    Undo::Instructions {
                        text: "Add the lead again from its details in the task's input.".into(),
                    },
                    json!({"type": "object", "required": ["lead_id"], "properties": {"lead_id": {"type": "string"}}}),
                    json!({"type": "object", "required": ["lead_id", "removed"], "properties": {"lead_id": {"type": "string"}, "removed": {"type": "boolean"}}}),
                ),
                capability(
                    "leadtracker.update_stage",
                    "Move a lead to another stage",
                    "Moves a lead (by id, or by its email) to a stage of the pipeline, recording when and why.",
                    SideEffect::Write,
                    Undo::Instructions {
                        text: "Move the lead back to `previous_stage` (in the task's output)."
                            .into(),
                    },
                    json!({
                        "type": "object",
                        "required": ["stage"],
                        "properties": {
                            "lead_id": {"type": "string"},
                            "email": text(254),
                            "stage": {"type": "string", "minLength": 1, "maxLength": 40},
                            "note": text(1000),
                            "changed_at": {"type": "string", "format": "date-time"}
                        },
                        "additionalProperties": false
                    }),
                    json!({
                        "type": "object",
                        "required": ["lead_id", "stage", "previous_stage", "changed"],
                        "properties": {
                            "lead_id": {"type": "string"}, "stage": {"type": "string"},
                            "previous_stage": {"type": "string"}, "changed": {"type": "boolean"}
                        }
                    }),
                ),
                capability(
                    "leadtracker.pipeline_summary",
                    "Pipeline summary",
                    "Count and value by stage, stage-to-stage conversion, average days in stage, stale leads, won and lost in the period.",
                    SideEffect::Read,
                    Undo::None,
                    json!({
                        "type": "object",
                        "properties": {
                            "period_days": {"type": "integer", "minimum": 1, "maximum": 3660},
                            "stale_days": {"type": "integer", "minimum": 1, "maximum": 3660},
                            "as_of": {"type": "string", "format": "date-time"}
                        },
                        "additionalProperties": false
                    }),
                    json!({"type": "object", "required": ["currency", "stages", "conversions", "open_count"]}),
                ),
            ],
        };
        Self { manifest }
    }
}

impl Default for LeadTracker {
    fn default() -> Self {
        Self::new()
    }
}

fn by(req: &TaskExecutionRequest) -> String {
    format!("task:{}", req.task_id)
}

async fn run(
    ctx: ExecContext,
    req: TaskExecutionRequest,
) -> Result<TaskExecutionResult, TaskError> {
    let i = &req.input;
    let mut tx = ctx.tx().await?;
    let out = match req.capability.as_str() {
        "leadtracker.add_lead" => {
            let input: LeadInput = serde_json::from_value(i.clone())
                .map_err(|e| TaskError::Permanent(format!("input: {e}")))?;
            let stages = super::stages(&mut tx).await?;
            let currency = crate::tenancy::tenants::currency(&mut tx).await?;
            let checked = input.check(None, &stages, &currency)?;
            // An attempt that committed but was not recorded (a worker lost mid-settle)
            // is found again rather than adding the lead twice.
            let earlier: Option<(String,)> = tx
                .fetch_optional(
                    scoped("SELECT id FROM leads WHERE tenant_id = $1 AND created_by = $2 AND origin = 'task'")
                        .bind(by(&req)),
                )
                .await
                .map_err(crate::error::AppError::from)?;
            let id = match earlier.and_then(|(id,)| LeadId::parse(&id)) {
                Some(id) => id,
                None => super::insert(&mut tx, &checked, "task", &by(&req), Utc::now()).await?,
            };
            super::refresh_metrics(&mut tx).await?;
            let lead = super::get(&mut tx, &id).await?;
            TaskExecutionResult {
                summary: Some(format!("added {} to {}", lead.name, lead.stage)),
                output: to_output(&lead),
            }
        }
        "leadtracker.remove_lead" => {
            let id = i["lead_id"].as_str().and_then(LeadId::parse);
            let removed = match &id {
                Some(id) => super::delete(&mut tx, id).await?,
                None => false,
            };
            if removed {
                super::refresh_metrics(&mut tx).await?;
            }
            TaskExecutionResult::new(json!({"lead_id": i["lead_id"], "removed": removed}))
        }
        "leadtracker.update_stage" => {
            let id = match (i["lead_id"].as_str(), i["email"].as_str()) {
                (Some(id), _) => LeadId::parse(id)
                    .ok_or_else(|| TaskError::Permanent(format!("no lead {id}")))?,
                (None, Some(email)) => {
                    let email = super::check_email(email).map_err(TaskError::Permanent)?;
                    let row: Option<(String,)> = tx
                        .fetch_optional(
                            scoped("SELECT id FROM leads WHERE tenant_id = $1 AND email = $2 ORDER BY created_at LIMIT 1")
                                .bind(&email),
                        )
                        .await
                        .map_err(crate::error::AppError::from)?;
                    row.and_then(|(id,)| LeadId::parse(&id)).ok_or_else(|| {
                        TaskError::Permanent(format!("no lead with email {email}"))
                    })?
                }
                (None, None) => return Err(TaskError::Permanent("give lead_id or email".into())),
            };
            let at = match i["changed_at"].as_str() {
                Some(t) => Some(
                    DateTime::parse_from_rfc3339(t)
                        .map_err(|e| TaskError::Permanent(format!("changed_at: {e}")))?
                        .with_timezone(&Utc),
                ),
                None => None,
            };
            let stage = i["stage"].as_str().unwrap_or_default();
            let (lead, from) =
                super::change_stage(&mut tx, &id, stage, at, &by(&req), i["note"].as_str()).await?;
            if from.is_some() {
                super::refresh_metrics(&mut tx).await?;
            }
            TaskExecutionResult {
                summary: Some(match &from {
                    Some(f) => format!("moved {} from {f} to {}", lead.name, lead.stage),
                    None => format!("{} was already in {}", lead.name, lead.stage),
                }),
                output: json!({
                    "lead_id": lead.id, "stage": lead.stage,
                    "previous_stage": from.clone().unwrap_or_else(|| lead.stage.clone()),
                    "changed": from.is_some()
                }),
            }
        }
        "leadtracker.pipeline_summary" => {
            let mut w = Window::default_at(Utc::now());
            if let Some(d) = i["period_days"].as_i64() {
                w.period_days = d;
            }
            if let Some(d) = i["stale_days"].as_i64() {
                w.stale_days = d;
            }
            if let Some(t) = i["as_of"].as_str() {
                w.as_of = DateTime::parse_from_rfc3339(t)
                    .map_err(|e| TaskError::Permanent(format!("as_of: {e}")))?
                    .with_timezone(&Utc);
            }
            let currency = crate::tenancy::tenants::currency(&mut tx).await?;
            let stages = super::stages(&mut tx).await?;
            let (leads, moves) = super::everything(&mut tx).await?;
            let s = summary::compute(&stages, &leads, &moves, &currency, &w);
            TaskExecutionResult {
                summary: Some(format!(
                    "{} open leads worth {} {}; {} won in {} days",
                    s.open_count,
                    crate::money::format(s.open_value_minor, &s.currency),
                    s.currency,
                    s.won_count,
                    w.period_days
                )),
                output: serde_json::to_value(&s)
                    .map_err(|e| TaskError::Permanent(e.to_string()))?,
            }
        }
        other => {
            return Err(TaskError::Permanent(format!(
                "leadtracker has no capability {other}"
            )));
        }
    };
    tx.commit()
        .await
        .map_err(|e| TaskError::Retryable(format!("database: {e}")))?;
    Ok(out)
}

impl Module for LeadTracker {
    fn manifest(&self) -> &ModuleManifest {
        &self.manifest
    }

    fn execute(
        &self,
        ctx: ExecContext,
        req: TaskExecutionRequest,
    ) -> BoxFuture<'static, Result<TaskExecutionResult, TaskError>> {
        Box::pin(run(ctx, req))
    }
}
