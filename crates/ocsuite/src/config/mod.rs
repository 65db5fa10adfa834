//! Layered configuration: built-in defaults → optional `ocsuite.toml` (or the file named
//! by `OCSUITE_CONFIG`) → `OCSUITE_*` environment variables.
//!
//! Everything is validated once at start; an error names the setting to fix, so a
//! misconfigured server never half-starts.

mod validate;

use std::fmt;
use std::path::PathBuf;

use base64::Engine;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A string that never prints (`Debug` and `Display` show `[redacted]`) and is zeroed
/// when dropped.
#[derive(
    Clone, Serialize, Deserialize, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// An external OpenID Connect issuer whose JWTs are accepted as bearer tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OidcProvider {
    /// Exact `iss` claim, e.g. `https://example.eu.auth0.com/`.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// JWKS URL; when absent it is discovered from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
}

/// How a connector provider wants the client to authenticate at its token endpoint.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`), the RFC 6749 default.
    #[default]
    Basic,
    /// Client id and secret in the form body (`client_secret_post`).
    Post,
}

/// An OAuth 2.0 / OIDC provider whose accounts tenants can connect (`[[connector_providers]]`).
/// `name = "google"` starts from Google's endpoints and scopes; every field set here
/// overrides them, so tests and self-hosters can point Google at another server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectorProvider {
    /// The provider's slug in URLs: lowercase letters, digits and `-`.
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub authorization_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    /// RFC 7009 revocation endpoint; without one, disconnecting only deletes our copy.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// OIDC userinfo (or any JSON "who am I") endpoint: names the account and is the
    /// health check a sync performs.
    #[serde(default)]
    pub userinfo_url: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Extra authorization-request parameters (Google: `access_type = "offline"`).
    #[serde(default)]
    pub authorize_params: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Base URL of the provider's Gmail-compatible mail API (Google:
    /// `https://gmail.googleapis.com`); the Email Orchestrator sends through it.
    #[serde(default)]
    pub mail_api_url: Option<String>,
    /// Base URL of the provider's data API, read by knowledge sources (Google:
    /// `https://www.googleapis.com` for Drive; Notion: `https://api.notion.com`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Headers every call to the provider's APIs carries (Notion: `Notion-Version`).
    #[serde(default)]
    pub api_headers: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub env: Environment,
    pub addr: String,
    pub database_url: String,
    /// Owner connection used for migrations and platform CLI commands (PostgreSQL);
    /// defaults to `database_url`.
    pub migration_database_url: Option<String>,
    /// A direct PostgreSQL connection for LISTEN/NOTIFY (and, behind a pooler, for
    /// migrations when `migration_database_url` is unset); defaults to `database_url`.
    /// Needed when `database_url` goes through a transaction-pooling proxy, which
    /// cannot hold a LISTEN.
    pub database_listen_url: Option<String>,
    /// `database_url` goes through a proxy in transaction pooling mode (PgBouncer
    /// `pool_mode = transaction`): statements are sent unnamed and every read runs in
    /// a transaction. See docs/operations.md, "Behind PgBouncer".
    pub database_pooled: bool,
    pub data_dir: PathBuf,
    pub master_key: Option<Secret>,
    /// The URL users reach the server at; `https://` turns on `Secure` cookies.
    pub public_url: Option<String>,
    pub log_format: LogFormat,
    pub db_max_connections: u32,
    pub session_ttl_hours: u32,
    pub max_body_bytes: usize,
    pub rate_limit_auth_per_minute: u32,
    pub rate_limit_api_per_second: u32,
    pub rate_limit_api_burst: u32,
    pub login_max_failures: u32,
    /// Trust `X-Forwarded-For` for the client IP (only behind a proxy you run).
    pub trust_proxy: bool,
    /// When set, `GET /metrics` answers only `Authorization: Bearer <this>` (what a
    /// Prometheus scrape config's `authorization.credentials` sends). Unset: open, for a
    /// deployment that blocks the path at its proxy.
    pub metrics_token: Option<Secret>,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: Option<String>,
    pub oidc_jwks_url: Option<String>,
    #[serde(default)]
    pub oidc_providers: Vec<OidcProvider>,
    /// Jobs this process runs at once; 0 runs no workers here (use `ocsuite worker`).
    pub workers: u32,
    /// Seconds a claimed job is leased; a worker that stops renewing loses it after this.
    pub queue_lease_secs: u32,
    /// Milliseconds between queue polls when no wake-up arrives.
    pub queue_poll_ms: u32,
    /// First retry delay in milliseconds; doubles each attempt (with jitter), capped at 10 min.
    pub queue_retry_base_ms: u32,
    /// Days realtime events are kept for resume.
    pub events_retention_days: u32,
    /// Where `serve` writes a backup every `backup_every_minutes` (see `ocsuite
    /// backup`); unset: no scheduled backups. Set it on one node only.
    pub backup_dir: Option<PathBuf>,
    /// Minutes between scheduled backups. The most data a restore can lose (RPO) is this
    /// plus one backup's duration: 10 keeps it within the 15-minute objective.
    pub backup_every_minutes: u32,
    /// Scheduled backups kept in `backup_dir`; older ones are deleted.
    pub backup_keep: u32,
    /// OpenAI-compatible API base (…/v1). Any such server works: Fireworks, OpenAI,
    /// Ollama, vLLM, llama.cpp server, LiteLLM.
    pub llm_base_url: String,
    /// Without a key the offline provider answers (Ollama and llama.cpp accept any key).
    pub llm_api_key: Option<Secret>,
    /// Default model id; personas and agents may override it.
    pub llm_model: String,
    /// Seconds to establish the upstream connection.
    pub llm_connect_timeout_secs: u32,
    /// Seconds the upstream may stay silent (before the first token and between chunks).
    pub llm_read_timeout_secs: u32,
    /// Retries of a failed upstream call, only before its first token.
    pub llm_max_retries: u32,
    /// May tenants register MCP servers on loopback, private or link-local addresses?
    /// Unset: yes in development, no in production (where it would let a tenant admin
    /// reach the server's internal network).
    pub mcp_allow_private_networks: Option<bool>,
    /// Model prices for the usage ledger's cost column (file only: `[[llm_prices]]`).
    #[serde(default)]
    pub llm_prices: Vec<LlmPrice>,
    /// Monthly token budget (prompt + completion) of each plan.
    pub plan_free_monthly_tokens: u64,
    pub plan_pro_monthly_tokens: u64,
    pub plan_enterprise_monthly_tokens: u64,
    /// Chat requests per minute per tenant on each plan.
    pub plan_free_chats_per_minute: u32,
    pub plan_pro_chats_per_minute: u32,
    pub plan_enterprise_chats_per_minute: u32,
    /// Largest knowledge upload, in MB, on each plan.
    pub plan_free_knowledge_file_mb: u32,
    pub plan_pro_knowledge_file_mb: u32,
    pub plan_enterprise_knowledge_file_mb: u32,
    /// Each plan's entitlements beyond tokens (file: `[plans.free]` …; see
    /// `plans::Entitlements::default_for`).
    #[serde(default)]
    pub plans: PlansConfig,
    /// Embedding model for semantic search (an OpenAI-compatible `/embeddings` model).
    /// Unset: a sensible default where the provider is known (OpenAI, Fireworks), else
    /// none; `none` turns it off. Without one, knowledge search is keyword-only.
    pub embedding_model: Option<String>,
    /// Seconds between scheduled re-syncs of web, Drive and Notion knowledge sources.
    pub knowledge_sync_interval_secs: u32,
    /// Google OAuth app credentials (shortcut for a `google` connector provider).
    pub google_client_id: Option<String>,
    pub google_client_secret: Option<Secret>,
    /// OAuth providers tenants can connect (file: `[[connector_providers]]`).
    #[serde(default)]
    pub connector_providers: Vec<ConnectorProvider>,
    /// Seconds between scheduled syncs (token refresh + health check) of each connector.
    pub connector_sync_interval_secs: u32,
    /// SMTP server for email notifications, as a URL: `smtps://user:pass@host:465`, or
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS). Unset: emails are kept in
    /// the development mailbox (`GET /api/v1/mailbox`).
    pub smtp_url: Option<Secret>,
    /// The sender of email notifications.
    pub smtp_from: String,
}

/// What a model costs, in US dollars per million tokens (decimal strings, e.g. `"0.90"`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LlmPrice {
    pub model: String,
    pub input_usd_per_mtok: String,
    pub output_usd_per_mtok: String,
}

/// `"0.90"` → 900_000 (millionths of a dollar per million tokens).
pub fn parse_usd_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 6 {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let w: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let f: i64 = format!("{frac:0<6}").parse().ok()?;
    w.checked_mul(1_000_000)?.checked_add(f)
}

/// A plan's overrides in the config file; a negative number is unlimited.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementsConfig {
    pub seats: Option<i64>,
    pub api_keys: Option<i64>,
    pub triggers: Option<i64>,
    pub mcp_servers: Option<i64>,
    pub tasks_per_day: Option<i64>,
    pub knowledge_mb: Option<i64>,
    pub modules: Option<Vec<String>>,
}

/// `[plans.free]`, `[plans.pro]`, `[plans.enterprise]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansConfig {
    #[serde(default)]
    pub free: EntitlementsConfig,
    #[serde(default)]
    pub pro: EntitlementsConfig,
    #[serde(default)]
    pub enterprise: EntitlementsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            addr: "127.0.0.1:8080".into(),
            database_url: "sqlite://data/ocsuite.db".into(),
            migration_database_url: None,
            database_listen_url: None,
            database_pooled: false,
            data_dir: PathBuf::from("data"),
            master_key: None,
            public_url: None,
            log_format: LogFormat::Json,
            db_max_connections: 16,
            session_ttl_hours: 24 * 30,
            max_body_bytes: 1024 * 1024,
            rate_limit_auth_per_minute: 30,
            rate_limit_api_per_second: 100,
            rate_limit_api_burst: 200,
            login_max_failures: 5,
            trust_proxy: false,
            metrics_token: None,
            oidc_issuer: None,
            oidc_audience: None,
            oidc_jwks_url: None,
            oidc_providers: Vec::new(),
            workers: 8,
            queue_lease_secs: 30,
            queue_poll_ms: 1000,
            queue_retry_base_ms: 1000,
            events_retention_days: 7,
            backup_dir: None,
            backup_every_minutes: 10,
            backup_keep: 96,
            llm_base_url: "https://api.fireworks.ai/inference/v1".into(),
            llm_api_key: None,
            llm_model: "accounts/fireworks/models/qwen3-235b-a22b-instruct-2507".into(),
            llm_connect_timeout_secs: 10,
            llm_read_timeout_secs: 60,
            llm_max_retries: 2,
            mcp_allow_private_networks: None,
            llm_prices: Vec::new(),
            plan_free_monthly_tokens: 300_000,
            plan_pro_monthly_tokens: 10_000_000,
            plan_enterprise_monthly_tokens: 100_000_000,
            plan_free_chats_per_minute: 10,
            plan_pro_chats_per_minute: 60,
            plan_enterprise_chats_per_minute: 300,
            plan_free_knowledge_file_mb: 10,
            plan_pro_knowledge_file_mb: 50,
            plan_enterprise_knowledge_file_mb: 200,
            plans: PlansConfig::default(),
            embedding_model: None,
            knowledge_sync_interval_secs: 24 * 3600,
            google_client_id: None,
            google_client_secret: None,
            connector_providers: Vec::new(),
            connector_sync_interval_secs: 6 * 3600,
            smtp_url: None,
            smtp_from: "ocsuite <noreply@localhost>".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults → TOML file → `OCSUITE_*` environment, then validates.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("OCSUITE_CONFIG").unwrap_or_else(|_| "ocsuite.toml".into());
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&file))
            .merge(Env::prefixed("OCSUITE_").ignore(&["config"]))
            .extract()
            .map_err(|e| {
                let key = e.path.join(".");
                ConfigError(format!(
                    "setting `{}` (env OCSUITE_{}): {}",
                    key,
                    key.to_uppercase(),
                    e.kind
                ))
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The embedding model to use, if any: the setting, or the provider's usual one.
    /// None offline (no model server) or when set to `none`.
    pub fn embedding_model(&self) -> Option<String> {
        if self
            .llm_api_key
            .as_ref()
            .is_none_or(|k| k.expose().trim().is_empty())
        {
            return None;
        }
        match self.embedding_model.as_deref().map(str::trim) {
            Some("") | Some("none") | Some("off") => None,
            Some(m) => Some(m.to_owned()),
            None if self.llm_base_url.contains("api.openai.com") => {
                Some("text-embedding-3-small".into())
            }
            None if self.llm_base_url.contains("fireworks.ai") => {
                Some("nomic-ai/nomic-embed-text-v1.5".into())
            }
            None => None,
        }
    }

    pub fn mcp_private_allowed(&self) -> bool {
        self.mcp_allow_private_networks
            .unwrap_or(self.env != Environment::Production)
    }

    /// The owner's connection (migrations, key rotation, backups): the migration URL,
    /// else, behind a pooler, the direct listen URL (a migration holds a session
    /// lock, which a transaction pooler would lose), else the runtime URL.
    pub fn owner_database_url(&self) -> &str {
        self.migration_database_url
            .as_deref()
            .or(self
                .database_listen_url
                .as_deref()
                .filter(|_| self.database_pooled))
            .unwrap_or(&self.database_url)
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    /// Where browsers reach this server: `public_url`, else the listen address.
    pub fn base_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }

    /// Single-provider env settings plus any `[[oidc_providers]]` from the file.
    pub fn oidc(&self) -> Vec<OidcProvider> {
        let mut all = self.oidc_providers.clone();
        if let (Some(issuer), Some(audience)) = (&self.oidc_issuer, &self.oidc_audience) {
            all.push(OidcProvider {
                issuer: issuer.clone(),
                audience: audience.clone(),
                jwks_url: self.oidc_jwks_url.clone(),
            });
        }
        all
    }
}

pub fn decode_master_key(b64: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "must be valid base64 (standard alphabet)".to_owned())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("must decode to exactly 32 bytes, got {}", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        let c = Config {
            addr: "nope".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().0.contains("OCSUITE_ADDR"));
        let c = Config {
            env: Environment::Production,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().0.contains("OCSUITE_MASTER_KEY"));
        let c = Config {
            master_key: Some(Secret::new("c2hvcnQ=")),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().0.contains("32 bytes"));
        let c = Config {
            metrics_token: Some(Secret::new("short")),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .0
                .contains("OCSUITE_METRICS_TOKEN: must be at least 16")
        );
        let c = Config {
            metrics_token: Some(Secret::new("0123456789abcdef")),
            ..Config::default()
        };
        assert!(c.validate().is_ok());
        assert!(Config::default().validate().is_ok());
        let pg = |pooled: bool, listen: Option<&str>| Config {
            database_url: "postgres://app@127.0.0.1:6432/ocsuite".into(),
            database_pooled: pooled,
            database_listen_url: listen.map(str::to_owned),
            ..Config::default()
        };
        let e = pg(true, None).validate().unwrap_err().0;
        assert!(
            e.contains("OCSUITE_DATABASE_LISTEN_URL: is required"),
            "{e}"
        );
        let c = pg(true, Some("postgres://app@127.0.0.1:5432/ocsuite"));
        assert!(c.validate().is_ok());
        assert_eq!(
            c.owner_database_url(),
            "postgres://app@127.0.0.1:5432/ocsuite",
            "migrations bypass the pooler"
        );
        let e = pg(false, Some("mysql://x")).validate().unwrap_err().0;
        assert!(
            e.contains("OCSUITE_DATABASE_LISTEN_URL: must start with"),
            "{e}"
        );
        let sqlite = Config {
            database_pooled: true,
            ..Config::default()
        };
        assert!(
            sqlite
                .validate()
                .unwrap_err()
                .0
                .contains("OCSUITE_DATABASE_POOLED")
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
