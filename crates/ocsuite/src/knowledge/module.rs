//! `knowledge`: the company's documents as a capability, so an agent can look something
//! up in the middle of an answer (and a person or a script can, through `/tasks`).

use ocsuite_module_sdk::{
    ModuleManifest, SideEffect, TaskError, TaskExecutionRequest, TaskExecutionResult, Undo, Version,
};
use serde_json::{Value, json};

use crate::modules::{ExecContext, Module, capability};
use futures_util::future::BoxFuture;

/// Most passages one search returns to a caller.
const MAX_RESULTS: u64 = 8;

pub struct KnowledgeModule {
    manifest: ModuleManifest,
}

impl KnowledgeModule {
    pub fn new() -> Self {
        let mut search = capability(
            "knowledge.search",
            "Search the company's documents",
            "Finds the passages of the company's uploaded documents, web pages, Drive and Notion sources (and the platform's help pages) that answer a question, with where each comes from.",
            SideEffect::Read,
            Undo::None,
            json!({
                "type": "object",
                "required": ["query"],
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": 500,
                              "description": "what to look for, in words the documents would use"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS,
                              "description": "how many passages (default 5)"}
                },
                "additionalProperties": false
            }),
            json!({"type": "object", "required": ["passages", "mode"]}),
        );
        search.max_attempts = 1;
        search.timeout_secs = 30;
        Self {
            manifest: ModuleManifest {
                name: "knowledge".into(),
                version: Version::new(1, 0, 0),
                description: "The company's documents: search them, with sources.".into(),
                capabilities: vec![search],
            },
        }
    }
}

impl Default for KnowledgeModule {
    fn default() -> Self {
        Self::new()
    }
}

async fn run(
    ctx: ExecContext,
    req: TaskExecutionRequest,
) -> Result<TaskExecutionResult, TaskError> {
    if req.capability != "knowledge.search" {
        return Err(TaskError::Permanent(format!(
            "knowledge has no capability {}",
            req.capability
        )));
    }
    let query = req.input["query"].as_str().unwrap_or_default();
    let limit = req.input["limit"]
        .as_u64()
        .unwrap_or(5)
        .clamp(1, MAX_RESULTS) as usize;
    let found = ctx
        .app
        .knowledge
        .search(&ctx.tenant, query, limit, &[])
        .await?;
    let passages: Vec<Value> = found
        .items
        .iter()
        .map(|h| {
            json!({"source": h.title, "document": h.document, "location": h.location,
                   "text": h.text, "hq": h.hq, "source_id": h.source_id})
        })
        .collect();
    Ok(TaskExecutionResult {
        summary: Some(format!("{} passages ({})", passages.len(), found.mode)),
        output: json!({"passages": passages, "mode": found.mode, "note": found.note}),
    })
}

impl Module for KnowledgeModule {
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
