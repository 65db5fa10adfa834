//! External modules: MCP servers reached over streamable HTTP.
//!
//! A tenant admin registers a server by URL (and optionally a bearer credential, stored
//! encrypted under the tenant's key). We connect, list its tools and store them; each tool
//! becomes a capability `<server name>.<tool name>` whose input schema is the tool's and
//! whose version is the server's own (leniently parsed; `1.0.0` when it is not semver).
//! Calls go through the task pipeline like any built-in capability: at run time the worker
//! connects, calls the tool, and maps the result (structured content when the tool gives
//! it, otherwise its text) to the task output. A transport failure is retryable; a tool
//! that reports an error is a permanent failure.
//!
//! The tool list is a snapshot: `POST /api/v1/mcp-servers/{id}/refresh` re-reads it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ocsuite_module_sdk::{
    CapabilitySpec, ModuleManifest, SideEffect, TaskError, Undo, Version, is_capability_name,
};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, Tool};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ssrf::{Destination, check_destination, http_client};
use crate::crypto::Crypto;
use crate::crypto::secrets;
use crate::error::{AppError, Result};
use crate::ids::McpServerId;
use crate::store::{TenantTx, scoped};

const SECRET_PURPOSE: &str = "mcp_auth";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A tool as we keep it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolInfo {
    /// The tool's own name, sent back to the server.
    pub tool: String,
    /// The capability name (`server.tool`, made to fit the naming rule).
    pub capability: String,
    pub title: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    pub side_effect: SideEffect,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
}

/// A registered MCP server.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct McpServer {
    #[schema(value_type = String)]
    pub id: McpServerId,
    pub name: String,
    pub url: String,
    pub has_credentials: bool,
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<ToolInfo>,
    #[schema(value_type = Object)]
    pub server_info: ServerInfo,
    /// `ready` or `error`.
    pub status: String,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub refreshed_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    url: String,
    secret_id: Option<String>,
    tools: String,
    server_info: Option<String>,
    status: String,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    refreshed_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_server(self) -> Option<McpServer> {
        Some(McpServer {
            id: McpServerId::parse(&self.id)?,
            name: self.name,
            url: self.url,
            has_credentials: self.secret_id.is_some(),
            tools: serde_json::from_str(&self.tools).unwrap_or_default(),
            server_info: self
                .server_info
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            status: self.status,
            last_error: self.last_error,
            created_at: self.created_at,
            refreshed_at: self.refreshed_at,
        })
    }
}

impl McpServer {
    /// The server as a module manifest.
    pub fn manifest(&self) -> ModuleManifest {
        let version = ocsuite_module_sdk::parse_requested_version(&self.server_info.version)
            .unwrap_or_else(|_| Version::new(1, 0, 0));
        ModuleManifest {
            name: self.name.clone(),
            version: version.clone(),
            description: format!(
                "MCP server {} at {}",
                if self.server_info.name.is_empty() {
                    &self.name
                } else {
                    &self.server_info.name
                },
                self.url
            ),
            capabilities: self
                .tools
                .iter()
                .map(|t| CapabilitySpec {
                    name: t.capability.clone(),
                    version: version.clone(),
                    title: t.title.clone(),
                    description: t.description.clone(),
                    input_schema: t.input_schema.clone(),
                    output_schema: t.output_schema.clone(),
                    side_effect: t.side_effect,
                    undo: Undo::None,
                    max_attempts: 3,
                    timeout_secs: 120,
                })
                .collect(),
        }
    }
}

/// `SELECT <every server column> FROM mcp_servers <tail>`.
macro_rules! select_servers {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, url, secret_id, tools, server_info, status, last_error, created_at, refreshed_at FROM mcp_servers ",
            $tail
        )
    };
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<McpServer>> {
    let rows: Vec<Row> = tx
        .fetch_all(scoped(select_servers!(
            "WHERE tenant_id = $1 ORDER BY name"
        )))
        .await?;
    Ok(rows.into_iter().filter_map(Row::into_server).collect())
}

pub async fn by_name(tx: &mut TenantTx, name: &str) -> Result<Option<McpServer>> {
    let row: Option<Row> = tx
        .fetch_optional(scoped(select_servers!("WHERE tenant_id = $1 AND name = $2")).bind(name))
        .await?;
    Ok(row.and_then(Row::into_server))
}

pub async fn get(tx: &mut TenantTx, id: &McpServerId) -> Result<McpServer> {
    let row: Option<Row> = tx
        .fetch_optional(scoped(select_servers!("WHERE tenant_id = $1 AND id = $2")).bind(id))
        .await?;
    row.and_then(Row::into_server)
        .ok_or(AppError::NotFound("MCP server"))
}

/// Checks a registration before any network call.
pub fn check_registration(name: &str, url: &str, builtin: &[&str]) -> Result<()> {
    if !is_capability_name(&format!("{name}.x")) {
        return Err(AppError::invalid(
            "name",
            "name must be 1-64 lowercase letters, digits or `_`, starting with a letter; it prefixes every tool's capability name",
        ));
    }
    if builtin.contains(&name) {
        return Err(AppError::Conflict(format!(
            "`{name}` is the name of a built-in module; choose another"
        )));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| AppError::invalid("url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(AppError::invalid("url", "the URL must be http(s)://host/…"));
    }
    if url.len() > 2000 {
        return Err(AppError::invalid(
            "url",
            "the URL is longer than 2000 characters",
        ));
    }
    Ok(())
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ()>;

async fn connect(dest: &Destination, token: Option<&str>) -> std::result::Result<Client, String> {
    let url = dest.url();
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(t) = token {
        cfg = cfg.auth_header(t.to_owned());
    }
    let transport = StreamableHttpClientTransport::with_client(http_client(dest)?, cfg);
    match tokio::time::timeout(CONNECT_TIMEOUT, ().serve(transport)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot initialise an MCP session with {url}: {e}")),
        Err(_) => Err(format!(
            "no MCP answer from {url} within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// Side effect from MCP's tool hints: read-only → read; open-world → external-send;
/// otherwise write (the careful default: MCP hints are only hints).
fn side_effect(t: &Tool) -> SideEffect {
    match &t.annotations {
        Some(a) if a.read_only_hint == Some(true) => SideEffect::Read,
        Some(a) if a.open_world_hint == Some(true) => SideEffect::ExternalSend,
        _ => SideEffect::Write,
    }
}

fn capability_name(server: &str, tool: &str) -> String {
    let mut s: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "t_");
    }
    s.truncate(64);
    format!("{server}.{s}")
}

/// Connects and lists the server's tools.
pub async fn discover(
    name: &str,
    dest: &Destination,
    token: Option<&str>,
) -> std::result::Result<(ServerInfo, Vec<ToolInfo>), String> {
    let client = connect(dest, token).await?;
    let info = client
        .peer_info()
        .and_then(|i| {
            i.server_info.as_ref().map(|s| ServerInfo {
                name: s.name.clone(),
                version: s.version.clone(),
            })
        })
        .unwrap_or_default();
    let tools = tokio::time::timeout(CONNECT_TIMEOUT, client.list_all_tools())
        .await
        .map_err(|_| "listing tools timed out".to_string())?
        .map_err(|e| format!("listing tools failed: {e}"))?;
    let _ = client.cancel().await;
    let mut out = Vec::new();
    for t in tools {
        let capability = capability_name(name, &t.name);
        if out.iter().any(|o: &ToolInfo| o.capability == capability) {
            continue;
        }
        let input_schema = Value::Object((*t.input_schema).clone());
        if ocsuite_module_sdk::Schema::compile(&input_schema).is_err() {
            tracing::warn!(tool = %t.name, "MCP tool has an invalid input schema; skipped");
            continue;
        }
        let output_schema = t
            .output_schema
            .as_ref()
            .map(|s| Value::Object((**s).clone()))
            .filter(|s| ocsuite_module_sdk::Schema::compile(s).is_ok())
            .unwrap_or_else(|| json!({}));
        out.push(ToolInfo {
            side_effect: side_effect(&t),
            tool: t.name.to_string(),
            capability,
            title: t.title.clone().unwrap_or_else(|| t.name.to_string()),
            description: t.description.as_deref().unwrap_or_default().to_owned(),
            input_schema,
            output_schema,
        });
    }
    Ok((info, out))
}

/// Stores a new server with its discovered tools (and encrypted credentials).
#[allow(clippy::too_many_arguments)]
pub async fn insert(
    tx: &mut TenantTx,
    crypto: &Crypto,
    name: &str,
    url: &str,
    token: Option<&str>,
    info: &ServerInfo,
    tools: &[ToolInfo],
    created_by: &str,
) -> Result<McpServerId> {
    let id = McpServerId::new();
    let secret_id = match token {
        Some(t) => {
            let version = secrets::current_version(tx).await?;
            Some(
                secrets::put(
                    tx,
                    crypto,
                    version,
                    SECRET_PURPOSE,
                    id.as_str(),
                    t.as_bytes(),
                )
                .await?,
            )
        }
        None => None,
    };
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO mcp_servers (tenant_id, id, name, url, secret_id, tools, server_info, status, last_error, created_by, created_at, updated_at, refreshed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'ready', NULL, $8, $9, $9, $9)")
            .bind(&id)
            .bind(name)
            .bind(url)
            .bind(secret_id.map(|s| s.as_str().to_owned()))
            .bind(serde_json::to_string(tools).map_err(AppError::internal)?)
            .bind(serde_json::to_string(info).map_err(AppError::internal)?)
            .bind(created_by)
            .bind(now),
    )
    .await?;
    Ok(id)
}

/// Records a refresh: new tools, or the error that stopped it (tools kept).
pub async fn record_refresh(
    tx: &mut TenantTx,
    id: &McpServerId,
    result: &std::result::Result<(ServerInfo, Vec<ToolInfo>), String>,
) -> Result<()> {
    let now = Utc::now();
    let q = match result {
        Ok((info, tools)) => scoped("UPDATE mcp_servers SET tools = $2, server_info = $3, status = 'ready', last_error = NULL, refreshed_at = $4, updated_at = $4 WHERE tenant_id = $1 AND id = $5")
            .bind(serde_json::to_string(tools).map_err(AppError::internal)?)
            .bind(serde_json::to_string(info).map_err(AppError::internal)?),
        Err(e) => scoped("UPDATE mcp_servers SET status = 'error', last_error = $2, updated_at = $3 WHERE tenant_id = $1 AND id = $4")
            .bind(e.as_str()),
    };
    tx.execute(q.bind(now).bind(id)).await?;
    Ok(())
}

pub async fn delete(tx: &mut TenantTx, id: &McpServerId) -> Result<bool> {
    tx.execute(
        scoped("DELETE FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2 AND name = $3")
            .bind(SECRET_PURPOSE)
            .bind(id.as_str()),
    )
    .await?;
    let n = tx
        .execute(scoped("DELETE FROM mcp_servers WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?;
    Ok(n == 1)
}

/// The server's credential, decrypted for one call.
pub async fn credential(
    tx: &mut TenantTx,
    crypto: &Crypto,
    id: &McpServerId,
) -> Result<Option<String>> {
    Ok(secrets::get(tx, crypto, SECRET_PURPOSE, id.as_str())
        .await?
        .map(|p| String::from_utf8_lossy(&p.0).into_owned()))
}

/// Calls one tool; maps the result to a task output.
pub async fn call(
    url: &str,
    token: Option<&str>,
    tool: &str,
    input: Value,
    allow_private: bool,
) -> std::result::Result<Value, TaskError> {
    let dest = check_destination(url, allow_private)
        .await
        .map_err(TaskError::Permanent)?;
    let client = connect(&dest, token).await.map_err(TaskError::Retryable)?;
    let args = match input {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await;
    let _ = client.cancel().await;
    let result = result.map_err(|e| TaskError::Retryable(format!("MCP call failed: {e}")))?;
    let text: Vec<String> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    if result.is_error == Some(true) {
        return Err(TaskError::Permanent(format!(
            "the tool reported an error: {}",
            text.join("\n").chars().take(2000).collect::<String>()
        )));
    }
    Ok(match result.structured_content {
        Some(v) => v,
        None => json!({ "text": text.join("\n") }),
    })
}
