//! `diagnostics`: a built-in module for checking the task pipeline end to end.
//!
//! An operator (or a test, or a benchmark) uses it to prove that a deployment's queue,
//! workers, retries, dead-letter queue, approvals and realtime progress work, without
//! touching any real system: `echo` returns its input, `flip` negates a boolean (and is its
//! own undo), `sleep` reports progress while it waits, and
//! `fail` fails on purpose (retryably, permanently, or by panicking) for a chosen number
//! of attempts.

use std::time::Duration;

use ocsuite_module_sdk::{
    CapabilitySpec, ModuleManifest, SideEffect, TaskError, TaskExecutionRequest,
    TaskExecutionResult, Undo, Version,
};
use serde_json::{Value, json};

use super::{ExecContext, Module};
use futures_util::future::BoxFuture;

pub struct Diagnostics {
    manifest: ModuleManifest,
}

fn cap(
    name: &str,
    title: &str,
    description: &str,
    input: Value,
    output: Value,
    max_attempts: u32,
    timeout_secs: u32,
) -> CapabilitySpec {
    CapabilitySpec {
        name: format!("diagnostics.{name}"),
        version: Version::new(1, 0, 0),
        title: title.into(),
        description: description.into(),
        input_schema: input,
        output_schema: output,
        side_effect: SideEffect::None,
        undo: Undo::None,
        max_attempts,
        timeout_secs,
    }
}

impl Diagnostics {
    pub fn new() -> Self {
        let manifest = ModuleManifest {
            name: "diagnostics".into(),
            version: Version::new(1, 0, 0),
            description:
                "Checks the task pipeline: echo, sleep with progress, and deliberate failures."
                    .into(),
            capabilities: vec![
                cap(
                    "echo",
                    "Echo",
                    "Returns its input unchanged; the cheapest possible task.",
                    json!({"type": "object", "maxProperties": 32}),
                    json!({"type": "object", "required": ["echo"], "properties": {"echo": {"type": "object"}}}),
                    3,
                    10,
                ),
                cap(
                    "sleep",
                    "Sleep",
                    "Waits, reporting progress in steps; shows live progress and cancellation.",
                    json!({
                        "type": "object",
                        "required": ["seconds"],
                        "properties": {
                            "seconds": {"type": "number", "minimum": 0, "maximum": 600},
                            "steps": {"type": "integer", "minimum": 1, "maximum": 100}
                        },
                        "additionalProperties": false
                    }),
                    json!({"type": "object", "required": ["slept_ms"], "properties": {"slept_ms": {"type": "integer"}}}),
                    3,
                    660,
                ),
                CapabilitySpec {
                    undo: Undo::Capability {
                        capability: "diagnostics.flip".into(),
                    },
                    ..cap(
                        "flip",
                        "Flip",
                        "Returns the opposite of a boolean. It is its own compensation, so it exercises approval and undo end to end.",
                        json!({"type": "object", "required": ["value"], "properties": {"value": {"type": "boolean"}}, "additionalProperties": false}),
                        json!({"type": "object", "required": ["value"], "properties": {"value": {"type": "boolean"}}}),
                        3,
                        10,
                    )
                },
                cap(
                    "fail",
                    "Fail",
                    "Fails on purpose for the first `attempts` attempts (all when absent): retryably, permanently, or by panicking.",
                    json!({
                        "type": "object",
                        "properties": {
                            "message": {"type": "string", "maxLength": 500},
                            "attempts": {"type": "integer", "minimum": 1, "maximum": 25},
                            "mode": {"enum": ["retryable", "permanent", "panic", "bad_output"]}
                        },
                        "additionalProperties": false
                    }),
                    json!({"type": "object", "required": ["attempt"], "properties": {"attempt": {"type": "integer"}}}),
                    3,
                    10,
                ),
            ],
        };
        Self { manifest }
    }
}

impl Default for Diagnostics {
    fn default() -> Self {
        Self::new()
    }
}

impl Module for Diagnostics {
    fn manifest(&self) -> &ModuleManifest {
        &self.manifest
    }

    fn execute(
        &self,
        ctx: ExecContext,
        req: TaskExecutionRequest,
    ) -> BoxFuture<'static, Result<TaskExecutionResult, TaskError>> {
        Box::pin(async move {
            match req.capability.as_str() {
                "diagnostics.echo" => Ok(TaskExecutionResult::new(json!({"echo": req.input}))),
                "diagnostics.flip" => {
                    let v = req.input["value"].as_bool().unwrap_or_default();
                    Ok(TaskExecutionResult::new(json!({"value": !v})))
                }
                "diagnostics.sleep" => {
                    let secs = req.input["seconds"]
                        .as_f64()
                        .unwrap_or(0.0)
                        .clamp(0.0, 600.0);
                    let steps = req.input["steps"].as_u64().unwrap_or(1).clamp(1, 100) as u32;
                    let step = Duration::from_secs_f64(secs / f64::from(steps));
                    for i in 1..=steps {
                        tokio::time::sleep(step).await;
                        ctx.progress
                            .report((i * 100 / steps) as u8, format!("step {i} of {steps}"));
                    }
                    Ok(TaskExecutionResult {
                        output: json!({"slept_ms": (secs * 1000.0) as i64}),
                        summary: Some(format!("slept {secs} s")),
                    })
                }
                "diagnostics.fail" => {
                    let failing = req.input["attempts"]
                        .as_u64()
                        .map_or(u32::MAX, |n| n as u32);
                    let message = req.input["message"]
                        .as_str()
                        .unwrap_or("deliberate failure")
                        .to_owned();
                    let mode = req.input["mode"].as_str().unwrap_or("retryable");
                    if req.attempt > failing {
                        return Ok(TaskExecutionResult::new(json!({"attempt": req.attempt})));
                    }
                    match mode {
                        "permanent" => Err(TaskError::Permanent(message)),
                        "bad_output" => {
                            Ok(TaskExecutionResult::new(json!({"attempt": "not a number"})))
                        }
                        "panic" => panic!("diagnostics.fail: {message}"),
                        _ => Err(TaskError::Retryable(message)),
                    }
                }
                other => Err(TaskError::Permanent(format!(
                    "diagnostics has no capability {other}"
                ))),
            }
        })
    }
}
