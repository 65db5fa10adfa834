//! Checking a loaded configuration: each problem names the setting to fix.

use std::net::SocketAddr;

use super::{Config, ConfigError, Environment, decode_master_key, parse_usd_micros};

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |name: &str, msg: &str| Err(ConfigError(format!("OCSUITE_{name}: {msg}")));
        if self.addr.parse::<SocketAddr>().is_err() {
            return err(
                "ADDR",
                "must be host:port with a numeric IP, e.g. 127.0.0.1:8080",
            );
        }
        for (name, url) in [
            ("DATABASE_URL", Some(&self.database_url)),
            (
                "MIGRATION_DATABASE_URL",
                self.migration_database_url.as_ref(),
            ),
            ("DATABASE_LISTEN_URL", self.database_listen_url.as_ref()),
        ] {
            if let Some(url) = url
                && !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
            {
                return err(
                    name,
                    "must start with sqlite:, postgres:// or postgresql://",
                );
            }
        }
        if self.database_listen_url.is_some() && self.is_sqlite() {
            return err(
                "DATABASE_LISTEN_URL",
                "applies to PostgreSQL only; SQLite runs in one process and needs no listener",
            );
        }
        if self.database_pooled {
            if self.is_sqlite() {
                return err(
                    "DATABASE_POOLED",
                    "applies to PostgreSQL behind a pooler such as PgBouncer, not to SQLite",
                );
            }
            if self.database_listen_url.is_none() {
                return err(
                    "DATABASE_LISTEN_URL",
                    "is required with OCSUITE_DATABASE_POOLED=true: LISTEN cannot go through a \
                     transaction pooler; give a direct connection to PostgreSQL (not the pooler's port)",
                );
            }
        }
        if let Some(t) = &self.metrics_token
            && t.expose().trim().len() < 16
        {
            return err(
                "METRICS_TOKEN",
                "must be at least 16 characters (generate one with `openssl rand -hex 32`)",
            );
        }
        if let Some(k) = &self.master_key {
            decode_master_key(k.expose())
                .map_err(|m| ConfigError(format!("OCSUITE_MASTER_KEY: {m}")))?;
        } else if self.env == Environment::Production {
            return err(
                "MASTER_KEY",
                "is required when OCSUITE_ENV=production (generate one with `openssl rand -base64 32`)",
            );
        }
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return err("PUBLIC_URL", "must start with http:// or https://");
        }
        for (name, v) in [
            ("DB_MAX_CONNECTIONS", self.db_max_connections as u64),
            ("SESSION_TTL_HOURS", self.session_ttl_hours as u64),
            ("MAX_BODY_BYTES", self.max_body_bytes as u64),
            (
                "RATE_LIMIT_AUTH_PER_MINUTE",
                self.rate_limit_auth_per_minute as u64,
            ),
            (
                "RATE_LIMIT_API_PER_SECOND",
                self.rate_limit_api_per_second as u64,
            ),
            ("RATE_LIMIT_API_BURST", self.rate_limit_api_burst as u64),
            ("LOGIN_MAX_FAILURES", self.login_max_failures as u64),
            ("QUEUE_LEASE_SECS", self.queue_lease_secs as u64),
            ("QUEUE_POLL_MS", self.queue_poll_ms as u64),
            ("QUEUE_RETRY_BASE_MS", self.queue_retry_base_ms as u64),
            ("EVENTS_RETENTION_DAYS", self.events_retention_days as u64),
            ("BACKUP_EVERY_MINUTES", self.backup_every_minutes as u64),
            ("BACKUP_KEEP", self.backup_keep as u64),
            (
                "LLM_CONNECT_TIMEOUT_SECS",
                self.llm_connect_timeout_secs as u64,
            ),
            ("LLM_READ_TIMEOUT_SECS", self.llm_read_timeout_secs as u64),
            (
                "CONNECTOR_SYNC_INTERVAL_SECS",
                self.connector_sync_interval_secs as u64,
            ),
        ] {
            if v == 0 {
                return err(name, "must be greater than zero");
            }
        }
        if !(self.llm_base_url.starts_with("http://") || self.llm_base_url.starts_with("https://"))
        {
            return err("LLM_BASE_URL", "must start with http:// or https://");
        }
        for p in &self.llm_prices {
            if parse_usd_micros(&p.input_usd_per_mtok).is_none()
                || parse_usd_micros(&p.output_usd_per_mtok).is_none()
            {
                return err(
                    "LLM_PRICES",
                    &format!(
                        "prices for `{}` must be decimal dollars like \"0.90\"",
                        p.model
                    ),
                );
            }
        }
        for (name, v) in [
            (
                "PLAN_FREE_CHATS_PER_MINUTE",
                self.plan_free_chats_per_minute,
            ),
            ("PLAN_PRO_CHATS_PER_MINUTE", self.plan_pro_chats_per_minute),
            (
                "PLAN_ENTERPRISE_CHATS_PER_MINUTE",
                self.plan_enterprise_chats_per_minute,
            ),
        ] {
            if v == 0 {
                return err(name, "must be greater than zero");
            }
        }
        if self.llm_model.trim().is_empty() {
            return err("LLM_MODEL", "must name a model");
        }
        if self.google_client_id.is_some() != self.google_client_secret.is_some() {
            return err(
                "GOOGLE_CLIENT_ID",
                "OCSUITE_GOOGLE_CLIENT_ID and OCSUITE_GOOGLE_CLIENT_SECRET go together",
            );
        }
        if self.oidc_issuer.is_some() != self.oidc_audience.is_some() {
            return err(
                "OIDC_ISSUER",
                "OCSUITE_OIDC_ISSUER and OCSUITE_OIDC_AUDIENCE go together",
            );
        }
        Ok(())
    }
}
