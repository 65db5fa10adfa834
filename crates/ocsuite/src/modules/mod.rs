//! The module registry: what capabilities a tenant can run, and who runs them.
//!
//! Built-in modules are Rust types implementing [`Module`], registered in-process at
//! start (`crate::builtin_modules`). External modules are MCP servers a tenant registers
//! ([`mcp`]); each of their tools is a capability. Both are described by the same
//! [`ModuleManifest`] from the module SDK, validated the same way, and executed through
//! the same task pipeline. A tenant may switch any module off (`tenant_modules`).

pub mod diagnostics;
pub mod mcp;
pub mod routes;
pub mod ssrf;

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::Utc;
use ocsuite_module_sdk::{
    CapabilitySpec, ModuleManifest, Progress, Schema, TaskError, TaskExecutionRequest,
    TaskExecutionResult, Version, resolve_version,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::{AppError, Result};
use crate::ids::{McpServerId, TenantId};
use crate::store::{TenantTx, scoped};
use futures_util::future::BoxFuture;

/// Where a module's progress reports go; reporting never blocks the module.
#[derive(Clone)]
pub struct ProgressSink(mpsc::UnboundedSender<Progress>);

impl ProgressSink {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    pub fn report(&self, percent: u8, message: impl Into<String>) {
        let _ = self.0.send(Progress {
            percent: percent.min(100),
            message: message.into(),
        });
    }
}

/// What a module gets besides the request.
#[derive(Clone)]
pub struct ExecContext {
    pub progress: ProgressSink,
    /// Tokens of the task's tenant's connected accounts (and no other tenant's).
    pub connectors: crate::connectors::vault::TokenSource,
    /// The task's tenant: built-in modules keep their data in its scope.
    pub tenant: TenantId,
    /// The server's services (store, model gateway, mailer) for built-in modules, which
    /// run in-process and are trusted like the rest of the server.
    pub app: crate::state::AppState,
}

impl ExecContext {
    /// A write transaction in the task's tenant scope.
    pub async fn tx(&self) -> Result<TenantTx, TaskError> {
        self.app
            .store
            .tenant(&self.tenant)
            .await
            .map_err(|e| TaskError::Retryable(format!("database: {e}")))
    }
}

/// A module's failure from a server error: the database or a transient fault may pass
/// (retry); bad input, a missing row or a conflict will not.
impl From<AppError> for TaskError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Database(_) | AppError::Internal(_) | AppError::Unavailable(_) => {
                TaskError::Retryable(e.to_string())
            }
            AppError::NotFound(what) => TaskError::Permanent(format!("{what} not found")),
            AppError::Invalid { field, message } => {
                TaskError::Permanent(format!("{field}: {message}"))
            }
            other => TaskError::Permanent(other.to_string()),
        }
    }
}

/// A capability with the usual limits (3 attempts, 60 s), for built-in manifests.
pub fn capability(
    name: &str,
    title: &str,
    description: &str,
    side_effect: ocsuite_module_sdk::SideEffect,
    undo: ocsuite_module_sdk::Undo,
    input: serde_json::Value,
    output: serde_json::Value,
) -> CapabilitySpec {
    CapabilitySpec {
        name: name.into(),
        version: Version::new(1, 0, 0),
        title: title.into(),
        description: description.into(),
        input_schema: input,
        output_schema: output,
        side_effect,
        undo,
        max_attempts: 3,
        timeout_secs: 60,
    }
}

/// Something a person should weigh before approving a task, beyond its side effect.
#[derive(Clone, Debug)]
pub struct Hint {
    pub code: &'static str,
    pub message: String,
}

/// A built-in module.
pub trait Module: Send + Sync + 'static {
    fn manifest(&self) -> &ModuleManifest;
    /// Runs one attempt of `req.capability` at `req.version` (a version the manifest has).
    fn execute(
        &self,
        ctx: ExecContext,
        req: TaskExecutionRequest,
    ) -> BoxFuture<'static, Result<TaskExecutionResult, TaskError>>;

    /// Risk hints that need the tenant's data to compute (how many recipients a
    /// campaign reaches); shown before approval. None by default.
    fn hints<'a>(
        &'a self,
        _tx: &'a mut TenantTx,
        _capability: &'a str,
        _input: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<Vec<Hint>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// One built-in capability version, with its schemas compiled once at start.
pub struct BuiltinCapability {
    pub spec: Arc<CapabilitySpec>,
    pub input: Arc<Schema>,
    pub output: Arc<Schema>,
}

/// The built-in modules of this build.
pub struct Registry {
    modules: Vec<Arc<dyn Module>>,
    capabilities: Vec<BuiltinCapability>,
    /// Plans limited to some built-in modules: plan → the modules it has. Empty when
    /// every plan has every module (no plan is read then).
    plan_modules: std::collections::HashMap<&'static str, Vec<String>>,
}

impl Registry {
    /// Which built-in modules each plan has (`None`: all); from the plans' config.
    pub fn set_plan_modules(
        &mut self,
        lists: std::collections::HashMap<&'static str, Option<Vec<String>>>,
    ) {
        self.plan_modules = lists
            .into_iter()
            .filter_map(|(plan, m)| m.map(|m| (plan, m)))
            .collect();
    }

    /// 403 `feature_unavailable` when the plan of `tx`'s company lacks built-in
    /// `module`.
    async fn check_plan(&self, tx: &mut TenantTx, module: &str) -> Result<()> {
        if self.plan_modules.is_empty() || self.get(module).is_none() {
            return Ok(());
        }
        let (plan,): (String,) = tx
            .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
            .await?;
        let Some(allowed) = self.plan_modules.get(plan.as_str()) else {
            return Ok(());
        };
        if allowed.iter().any(|m| m == module) {
            return Ok(());
        }
        let lift = ["free", "pro", "enterprise"]
            .into_iter()
            .skip_while(|p| *p != plan)
            .skip(1)
            .find(|p| {
                self.plan_modules
                    .get(p)
                    .is_none_or(|m| m.iter().any(|x| x == module))
            });
        Err(AppError::Detailed {
            status: StatusCode::FORBIDDEN,
            code: "feature_unavailable",
            message: format!(
                "the {plan} plan does not include the {module} module; {}",
                lift.map_or_else(
                    || "no plan includes it".to_owned(),
                    |p| format!("the {p} plan does")
                )
            ),
            details: json!({"feature": format!("module:{module}"), "plan": plan, "upgrade_to": lift}),
        })
    }

    /// Every built-in module; a manifest that breaks the contract stops the server.
    pub fn new(modules: Vec<Arc<dyn Module>>) -> std::result::Result<Self, String> {
        let mut capabilities = Vec::new();
        for m in &modules {
            let mf = m.manifest();
            mf.validate()
                .map_err(|e| format!("built-in module {}: {e}", mf.name))?;
            for c in &mf.capabilities {
                capabilities.push(BuiltinCapability {
                    input: Arc::new(Schema::compile(&c.input_schema)?),
                    output: Arc::new(Schema::compile(&c.output_schema)?),
                    spec: Arc::new(c.clone()),
                });
            }
        }
        Ok(Self {
            modules,
            capabilities,
            plan_modules: Default::default(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Module>> {
        self.modules.iter().find(|m| m.manifest().name == name)
    }

    pub fn all(&self) -> &[Arc<dyn Module>] {
        &self.modules
    }

    /// A built-in capability at exactly `version`.
    pub fn capability(&self, name: &str, version: &Version) -> Option<Resolved> {
        self.capabilities
            .iter()
            .find(|c| c.spec.name == name && c.spec.version == *version)
            .map(|c| Resolved {
                spec: c.spec.clone(),
                source: Source::Builtin,
                input: c.input.clone(),
                output: c.output.clone(),
                tool: None,
            })
    }
}

/// Where a module comes from.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Builtin,
    Mcp {
        #[schema(value_type = String)]
        server_id: McpServerId,
        url: String,
    },
}

/// One module in a tenant's catalog.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogModule {
    pub name: String,
    pub version: String,
    pub description: String,
    pub source: Source,
    pub enabled: bool,
    #[schema(value_type = Vec<Object>)]
    pub capabilities: Vec<CapabilitySpec>,
}

async fn disabled_modules(tx: &mut TenantTx) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = tx
        .fetch_all(
            scoped("SELECT module FROM tenant_modules WHERE tenant_id = $1 AND enabled = $2")
                .bind(false),
        )
        .await?;
    Ok(rows.into_iter().map(|(m,)| m).collect())
}

/// The tenant's catalog: built-ins, then its MCP servers.
pub async fn catalog(registry: &Registry, tx: &mut TenantTx) -> Result<Vec<CatalogModule>> {
    let disabled = disabled_modules(tx).await?;
    let mut out: Vec<CatalogModule> = registry
        .all()
        .iter()
        .map(|m| {
            let mf = m.manifest();
            CatalogModule {
                name: mf.name.clone(),
                version: mf.version.to_string(),
                description: mf.description.clone(),
                source: Source::Builtin,
                enabled: !disabled.contains(&mf.name),
                capabilities: mf.capabilities.clone(),
            }
        })
        .collect();
    for s in mcp::list(tx).await? {
        let manifest = s.manifest();
        out.push(CatalogModule {
            enabled: !disabled.contains(&s.name),
            name: s.name.clone(),
            version: manifest.version.to_string(),
            description: manifest.description,
            source: Source::Mcp {
                server_id: s.id,
                url: s.url,
            },
            capabilities: manifest.capabilities,
        });
    }
    Ok(out)
}

/// Switches a module on or off for the tenant.
pub async fn set_enabled(tx: &mut TenantTx, module: &str, enabled: bool) -> Result<()> {
    tx.execute(
        scoped("INSERT INTO tenant_modules (tenant_id, module, enabled, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, module) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at")
            .bind(module)
            .bind(enabled)
            .bind(Utc::now()),
    )
    .await?;
    Ok(())
}

/// A capability picked to serve a request.
pub struct Resolved {
    pub spec: Arc<CapabilitySpec>,
    pub source: Source,
    pub input: Arc<Schema>,
    pub output: Arc<Schema>,
    /// For an MCP capability: the tool's own name on its server.
    pub tool: Option<String>,
}

async fn module_enabled(tx: &mut TenantTx, module: &str) -> Result<bool> {
    let row: Option<(bool,)> = tx
        .fetch_optional(
            scoped("SELECT enabled FROM tenant_modules WHERE tenant_id = $1 AND module = $2")
                .bind(module),
        )
        .await?;
    Ok(row.is_none_or(|(e,)| e))
}

/// Finds the capability `name` at the highest version compatible with `requested`, in
/// the tenant's catalog. Unknown name or version: 404 listing what exists; a disabled
/// module: 409. The module part of the name decides where to look: built-in module names
/// cannot be taken by an MCP server, so a name is served by exactly one source.
pub async fn resolve(
    registry: &Registry,
    tx: &mut TenantTx,
    name: &str,
    requested: Option<&Version>,
) -> Result<Resolved> {
    let module = name.split_once('.').map_or(name, |(m, _)| m);
    let mut candidates: Vec<Resolved> = Vec::new();
    if registry.get(module).is_some() {
        for c in registry.capabilities.iter().filter(|c| c.spec.name == name) {
            candidates.push(Resolved {
                spec: c.spec.clone(),
                source: Source::Builtin,
                input: c.input.clone(),
                output: c.output.clone(),
                tool: None,
            });
        }
    } else if let Some(server) = mcp::by_name(tx, module).await? {
        let manifest = server.manifest();
        for (c, t) in manifest.capabilities.into_iter().zip(server.tools.iter()) {
            if c.name != name {
                continue;
            }
            let input = Schema::compile(&c.input_schema).map_err(AppError::Internal)?;
            let output = Schema::compile(&c.output_schema).map_err(AppError::Internal)?;
            candidates.push(Resolved {
                spec: Arc::new(c),
                source: Source::Mcp {
                    server_id: server.id.clone(),
                    url: server.url.clone(),
                },
                input: Arc::new(input),
                output: Arc::new(output),
                tool: Some(t.tool.clone()),
            });
        }
    }
    let versions: Vec<&Version> = candidates.iter().map(|c| &c.spec.version).collect();
    let Some(v) = resolve_version(versions.iter().copied(), requested).cloned() else {
        let available: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
        let message = if available.is_empty() {
            format!(
                "no capability named `{name}`; GET /api/v1/modules lists what this tenant can run"
            )
        } else {
            format!(
                "capability `{name}` has no version compatible with {}; available: {}",
                requested.map_or_else(|| "the request".into(), ToString::to_string),
                available.join(", ")
            )
        };
        return Err(AppError::Detailed {
            status: StatusCode::NOT_FOUND,
            code: "capability_not_found",
            message,
            details: json!({"capability": name, "available_versions": available}),
        });
    };
    let Some(found) = candidates.into_iter().find(|c| c.spec.version == v) else {
        return Err(AppError::Internal("resolved version vanished".into()));
    };
    usable(registry, tx, module).await?;
    Ok(found)
}

/// Whether the tenant may run `module` now: its plan includes it and it is enabled.
/// The error says which and how to fix it.
pub async fn usable(registry: &Registry, tx: &mut TenantTx, module: &str) -> Result<()> {
    registry.check_plan(tx, module).await?;
    if !module_enabled(tx, module).await? {
        return Err(AppError::Conflict(format!(
            "module `{module}` is disabled for this tenant; enable it with POST /api/v1/modules/{module}/enable"
        )));
    }
    Ok(())
}

/// Checks `value` against `schema`; 422 listing every violation.
pub fn validate(schema: &Schema, value: &serde_json::Value, what: &str) -> Result<()> {
    schema
        .validate(value)
        .map_err(|violations| AppError::Detailed {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "schema_violation",
            message: format!(
                "{what} does not match the capability's schema: {}",
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            details: json!({ "violations": violations }),
        })
}
