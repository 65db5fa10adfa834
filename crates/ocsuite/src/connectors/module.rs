//! `connectors`: the built-in module through which tasks (and board action items) touch a
//! tenant's connected accounts. `connectors.check` proves a connection works: it
//! obtains a token through the vault — refreshing it when due — and asks the provider
//! who the account is. Modules that act on an account (Gmail, Calendar) get their tokens
//! the same way, from [`crate::modules::ExecContext::connectors`].

use ocsuite_module_sdk::{
    CapabilitySpec, ModuleManifest, SideEffect, TaskError, TaskExecutionRequest,
    TaskExecutionResult, Undo, Version,
};
use serde_json::json;

use crate::modules::{ExecContext, Module};
use futures_util::future::BoxFuture;

pub struct Connectors {
    manifest: ModuleManifest,
}

impl Connectors {
    pub fn new() -> Self {
        Self {
            manifest: ModuleManifest {
                name: "connectors".into(),
                version: Version::new(1, 0, 0),
                description: "The tenant's connected accounts (OAuth): check that one works."
                    .into(),
                capabilities: vec![CapabilitySpec {
                    name: "connectors.check".into(),
                    version: Version::new(1, 0, 0),
                    title: "Check a connected account".into(),
                    description: "Refreshes the connection's token when due and asks the provider which account it belongs to.".into(),
                    input_schema: json!({
                        "type": "object",
                        "required": ["provider"],
                        "properties": {
                            "provider": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$"}
                        },
                        "additionalProperties": false
                    }),
                    output_schema: json!({
                        "type": "object",
                        "required": ["provider", "scopes", "refreshed"],
                        "properties": {
                            "provider": {"type": "string"},
                            "account": {"type": ["string", "null"]},
                            "scopes": {"type": "array", "items": {"type": "string"}},
                            "refreshed": {"type": "boolean"}
                        }
                    }),
                    side_effect: SideEffect::Read,
                    undo: Undo::None,
                    max_attempts: 3,
                    timeout_secs: 60,
                }],
            },
        }
    }
}

impl Default for Connectors {
    fn default() -> Self {
        Self::new()
    }
}

impl Module for Connectors {
    fn manifest(&self) -> &ModuleManifest {
        &self.manifest
    }

    fn execute(
        &self,
        ctx: ExecContext,
        req: TaskExecutionRequest,
    ) -> BoxFuture<'static, Result<TaskExecutionResult, TaskError>> {
        Box::pin(async move {
            if req.capability != "connectors.check" {
                return Err(TaskError::Permanent(format!(
                    "connectors has no capability {}",
                    req.capability
                )));
            }
            let provider = req.input["provider"].as_str().unwrap_or_default();
            let report = ctx.connectors.check(provider).await?;
            let summary = format!(
                "{} account {} is reachable",
                report.provider,
                report.account.as_deref().unwrap_or("(unnamed)")
            );
            Ok(TaskExecutionResult {
                output: serde_json::to_value(&report)
                    .map_err(|e| TaskError::Permanent(e.to_string()))?,
                summary: Some(summary),
            })
        })
    }
}
