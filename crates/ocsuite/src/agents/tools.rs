//! The tools an agent may call, and what one call does.
//!
//! Every officer and agent can search the company's documents and read the modules'
//! summaries ([`BASICS`]); on top of that a built-in officer has its role's defaults
//! ([`role_defaults`], which the tenant may replace) and a custom agent its own
//! `capabilities`. Only capabilities the tenant can run now (module enabled) are offered,
//! as OpenAI tools whose parameters are the capability's input schema.
//!
//! A call never does more than its capability's side effect allows without a person:
//! - a name outside the list → refused, audited, and the model is told;
//! - arguments that are not a JSON object or break the schema → returned to the model
//!   with the violations;
//! - a `read` or `none` capability → runs at once as a real task ([`tasks::inline`]);
//! - anything else → a `proposed` task under the tenant's approval policy, exactly like
//!   a board item; the model is told it awaits approval.

use std::sync::Arc;

use ocsuite_module_sdk::{CapabilitySpec, SideEffect};
use serde::Serialize;
use serde_json::{Value, json};

use crate::approvals;
use crate::error::Result;
use crate::ids::{TaskId, TenantId};
use crate::llm::{ToolCall, ToolSpec};
use crate::modules::{self, Registry};
use crate::state::AppState;
use crate::store::TenantTx;
use crate::tasks::{self, NewTask, Status};

/// What every speaker may read.
pub const BASICS: &[&str] = &[
    "knowledge.search",
    "bookkeeping.financial_summary",
    "leadtracker.pipeline_summary",
    "email.campaign_stats",
];

/// A tool result longer than this (characters) is cut, so one call cannot fill the
/// context window.
pub const MAX_RESULT_CHARS: usize = 6000;

/// A built-in officer's tools beyond [`BASICS`], until the tenant chooses its own.
pub fn role_defaults(slug: &str) -> &'static [&'static str] {
    match slug {
        "ceo" => &["email.send", "leadtracker.update_stage"],
        "cfo" => &["bookkeeping.add_transaction", "bookkeeping.categorize"],
        "cmo" => &[
            "leadtracker.add_lead",
            "leadtracker.update_stage",
            "email.send",
            "email.campaign_send",
        ],
        "coo" => &["leadtracker.update_stage", "bookkeeping.categorize"],
        _ => &[],
    }
}

/// The capability names a speaker may call: the basics, then `extra`, without repeats.
pub fn allowed(extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = BASICS.iter().map(|s| (*s).to_owned()).collect();
    for c in extra {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// A capability's name as a function name (`bookkeeping__financial_summary`): servers
/// accept only `[a-zA-Z0-9_-]{1,64}`.
pub fn tool_name(capability: &str) -> String {
    capability.replacen('.', "__", 1)
}

/// One tool on offer.
#[derive(Clone)]
pub struct Tool {
    pub name: String,
    pub spec: Arc<CapabilitySpec>,
}

/// The tools a speaker has in this tenant right now.
#[derive(Clone, Default)]
pub struct Toolbox {
    pub tools: Vec<Tool>,
    /// Everything the speaker is allowed, offered or not (a disabled module's names).
    pub allowed: Vec<String>,
}

impl Toolbox {
    /// The allowed capabilities the tenant can run, at their newest version.
    pub async fn load(
        registry: &Registry,
        tx: &mut TenantTx,
        allowed: Vec<String>,
    ) -> Result<Self> {
        Ok(Self::from_catalog(
            &modules::catalog(registry, tx).await?,
            allowed,
        ))
    }

    /// [`Toolbox::load`] from a catalog already read.
    pub fn from_catalog(catalog: &[modules::CatalogModule], allowed: Vec<String>) -> Self {
        let mut tools: Vec<Tool> = Vec::new();
        for m in catalog.iter().filter(|m| m.enabled) {
            for c in &m.capabilities {
                if !allowed.contains(&c.name) {
                    continue;
                }
                let name = tool_name(&c.name);
                if name.len() > 64 {
                    continue;
                }
                match tools.iter_mut().find(|t| t.name == name) {
                    Some(t) if t.spec.version < c.version => t.spec = Arc::new(c.clone()),
                    Some(_) => {}
                    None => tools.push(Tool {
                        name,
                        spec: Arc::new(c.clone()),
                    }),
                }
            }
        }
        Self { tools, allowed }
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The tools as the model sees them.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .map(|t| {
                let how = match t.spec.side_effect {
                    SideEffect::None | SideEffect::Read => "Runs at once and returns its result.",
                    _ => "Changes something: it is proposed to a person for approval, not run.",
                };
                ToolSpec {
                    name: t.name.clone(),
                    description: format!("{}: {} {how}", t.spec.title, t.spec.description),
                    parameters: t.spec.input_schema.clone(),
                }
            })
            .collect()
    }

    /// Only the read-only tools (for board members, who may look things up in their
    /// turn but propose through the meeting's action items).
    pub fn read_only(&self) -> Self {
        Self {
            tools: self
                .tools
                .iter()
                .filter(|t| matches!(t.spec.side_effect, SideEffect::None | SideEffect::Read))
                .cloned()
                .collect(),
            allowed: self.allowed.clone(),
        }
    }

    fn find(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// The capability behind a tool name, when it is one of these tools.
    pub fn capability_of(&self, name: &str) -> Option<String> {
        self.find(name).map(|t| t.spec.name.clone())
    }
}

/// How a call ended, for the client, the stored message and the model.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CallOutcome {
    /// The model's call id.
    pub id: String,
    /// `module.capability`, when the name was one.
    pub capability: Option<String>,
    #[schema(value_type = Object)]
    pub input: Value,
    /// `succeeded`, `failed`, `awaiting_approval` or `refused` (`queued` when the
    /// approval policy approved it at once).
    pub status: &'static str,
    #[schema(value_type = Option<String>)]
    pub task_id: Option<TaskId>,
    /// The capability's output (cut to [`MAX_RESULT_CHARS`] for the model).
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
}

impl CallOutcome {
    fn failed(
        call: &ToolCall,
        capability: Option<&str>,
        status: &'static str,
        error: String,
    ) -> Self {
        Self {
            id: call.id.clone(),
            capability: capability.map(str::to_owned),
            input: serde_json::from_str(&call.arguments).unwrap_or(Value::Null),
            status,
            task_id: None,
            output: None,
            error: Some(error),
        }
    }

    /// The tool message the model reads: data, with our prompt markers removed, cut to
    /// the budget.
    pub fn for_model(&self) -> String {
        let body = match self.status {
            "succeeded" => {
                json!({"status": "succeeded", "task_id": self.task_id, "output": self.output})
            }
            "awaiting_approval" => json!({"status": "awaiting_approval", "task_id": self.task_id,
                "note": "Proposed to a person for approval; it has not run. Tell the user it awaits their approval in Approvals."}),
            _ => json!({"status": self.status, "error": self.error}),
        };
        let text = crate::personas::defang(&body.to_string());
        if text.chars().count() <= MAX_RESULT_CHARS {
            return text;
        }
        let cut: String = text.chars().take(MAX_RESULT_CHARS).collect();
        format!("{cut}… [cut: the result was longer than {MAX_RESULT_CHARS} characters]")
    }
}

/// Who calls, from where.
pub struct Caller<'a> {
    pub tenant: &'a TenantId,
    /// The speaker's slug: the actor is `agent:<slug>`.
    pub agent: &'a str,
    pub conversation: Option<&'a str>,
    /// The board meeting whose turn made the call.
    pub meeting: Option<&'a str>,
}

/// Handles one tool call (see the module doc). Never fails as a whole: what went wrong
/// is the outcome, for the model to read.
pub async fn call(
    state: &AppState,
    caller: &Caller<'_>,
    toolbox: &Toolbox,
    call: &ToolCall,
) -> CallOutcome {
    match try_call(state, caller, toolbox, call).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, tool = %call.name, "a tool call failed");
            CallOutcome::failed(call, None, "failed", e.to_string())
        }
    }
}

async fn try_call(
    state: &AppState,
    caller: &Caller<'_>,
    toolbox: &Toolbox,
    call: &ToolCall,
) -> Result<CallOutcome> {
    let Some(tool) = toolbox.find(&call.name) else {
        let mut tx = state.store.tenant(caller.tenant).await?;
        crate::audit::insert(
            &mut tx,
            ("agent", caller.agent),
            "agent.tool_refused",
            "capability",
            &call.name.chars().take(100).collect::<String>(),
            json!({"conversation_id": caller.conversation, "reason": "not one of this agent's tools"}),
            None,
        )
        .await?;
        tx.commit().await?;
        let offered: Vec<&str> = toolbox.tools.iter().map(|t| t.name.as_str()).collect();
        return Ok(CallOutcome::failed(
            call,
            None,
            "refused",
            format!(
                "`{}` is not one of your tools; you may call: {}",
                call.name.chars().take(100).collect::<String>(),
                offered.join(", ")
            ),
        ));
    };
    let name = tool.spec.name.as_str();
    let args = if call.arguments.trim().is_empty() {
        "{}"
    } else {
        call.arguments.as_str()
    };
    let input: Value = match serde_json::from_str(args) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Ok(CallOutcome::failed(
                call,
                Some(name),
                "failed",
                "the arguments are not a JSON object; call again with a JSON object matching the parameters".into(),
            ));
        }
    };
    // Resolved again: the module may have been disabled since the toolbox was built.
    let mut read = state.store.tenant_read(caller.tenant).await?;
    let resolved = match modules::resolve(&state.registry, &mut read, name, None).await {
        Ok(r) => r,
        Err(e) => {
            return Ok(CallOutcome::failed(
                call,
                Some(name),
                "refused",
                e.to_string(),
            ));
        }
    };
    if let Err(e) = modules::validate(&resolved.input, &input, "the arguments") {
        return Ok(CallOutcome {
            input,
            ..CallOutcome::failed(
                call,
                Some(name),
                "failed",
                format!("{e}; fix them and call again"),
            )
        });
    }
    if matches!(
        resolved.spec.side_effect,
        SideEffect::None | SideEffect::Read
    ) {
        read.commit().await?;
        let ran = tasks::inline::run_read(
            state,
            caller.tenant,
            &tasks::inline::Caller {
                actor: ("agent", caller.agent),
                conversation: caller.conversation,
                meeting: caller.meeting,
            },
            &resolved,
            input.clone(),
        )
        .await?;
        return Ok(match ran.outcome {
            Ok(output) => CallOutcome {
                id: call.id.clone(),
                capability: Some(name.to_owned()),
                input,
                status: "succeeded",
                task_id: Some(ran.task),
                output: Some(output),
                error: None,
            },
            Err(e) => CallOutcome {
                id: call.id.clone(),
                capability: Some(name.to_owned()),
                input,
                status: "failed",
                task_id: Some(ran.task),
                output: None,
                error: Some(e),
            },
        });
    }
    let policy = approvals::policy(&mut read).await?;
    let mut tx = state.store.writable(read).await?;
    let id = TaskId::new();
    let version = resolved.spec.version.to_string();
    let by = format!("agent:{}", caller.agent);
    let (status, events) = approvals::propose(
        &mut tx,
        &id,
        &NewTask {
            capability: name,
            version: &version,
            input: &input,
            max_attempts: resolved.spec.max_attempts,
            idempotency_key: None,
            created_by: &by,
            status: Status::Proposed,
            meeting_id: caller.meeting,
            conversation_id: caller.conversation,
            undo_of: None,
        },
        &resolved.spec,
        &policy,
    )
    .await?;
    crate::audit::insert(
        &mut tx,
        ("agent", caller.agent),
        "task.proposed",
        "task",
        id.as_str(),
        json!({"capability": name, "version": version, "side_effect": resolved.spec.side_effect,
               "via": "tool_call", "conversation_id": caller.conversation}),
        None,
    )
    .await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    if status == Status::Queued {
        state.jobs_wake.notify_one();
    }
    Ok(CallOutcome {
        id: call.id.clone(),
        capability: Some(name.to_owned()),
        input,
        status: if status == Status::Proposed {
            "awaiting_approval"
        } else {
            "queued"
        },
        task_id: Some(id),
        output: None,
        error: None,
    })
}

/// Whether an outcome was the model's fault in a way it can fix (bad arguments).
pub fn is_fixable(o: &CallOutcome) -> bool {
    o.status == "failed" && o.task_id.is_none()
}
