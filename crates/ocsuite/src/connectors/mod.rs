//! Connectors: a tenant's OAuth 2.0 connections to its SaaS accounts (Google first).
//!
//! - **Providers** come from configuration ([`Providers`]): Google is built in (its
//!   endpoints and scopes are a preset every field of which can be overridden), any other
//!   OAuth 2.0 / OIDC provider is added by a `[[connector_providers]]` entry.
//! - **Connecting** ([`routes::authorize`], [`routes::callback`]) is the authorization
//!   code flow with PKCE (S256). The `state` is a single-use server-side row bound to
//!   tenant, user and provider, expiring in ten minutes; its value names the tenant so the
//!   callback (a browser redirect, which carries no tenant header) can enter the right
//!   scope, and only its SHA-256 is stored.
//! - **Tokens** are stored only encrypted, in `tenant_secrets` (purpose `oauth`, name =
//!   connector id) under the tenant's key: AES-256-GCM with a key derived by HKDF from
//!   the master key, tenant and key version; the associated data binds the ciphertext to
//!   the tenant and to its secret row, which belongs to exactly one connector (and the
//!   plaintext names that connector, checked on every decryption). [`vault::Vault`] is
//!   the one place that decrypts them: for one call, refreshing under a lease when they
//!   are near expiry; nothing decrypted is cached, logged or stored elsewhere.
//! - **Sync** ([`sync`]) is a `sync-connector` job per connection — queued on connect,
//!   on a schedule and on demand — that refreshes the tokens and asks the provider who
//!   the account is, so the status people see is a fact less than a few hours old.

pub mod module;
pub mod oauth;
pub mod routes;
pub mod sync;
pub mod vault;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use oauth2::url::Url;
use serde::Serialize;

use crate::config::{ClientAuth, Config, ConnectorProvider, Secret};
use crate::error::{AppError, Result};
use crate::ids::ConnectorId;
use crate::store::{TenantTx, scoped};

/// `tenant_secrets.purpose` of connector tokens.
pub const SECRET_PURPOSE: &str = "oauth";
/// How long a person has to finish an authorization at the provider.
pub const STATE_TTL_MINUTES: i64 = 10;

/// A configured OAuth provider, with Google's preset applied.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub display_name: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub authorization_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub userinfo_url: Option<String>,
    pub scopes: Vec<String>,
    pub authorize_params: BTreeMap<String, String>,
    pub client_auth: ClientAuth,
    /// Gmail-compatible mail API, when the provider has one.
    pub mail_api_url: Option<String>,
    /// The provider's data API (Drive, Notion), read by knowledge sources.
    pub api_url: Option<String>,
    /// Headers every API call (userinfo included) carries.
    pub api_headers: BTreeMap<String, String>,
}

/// Every provider tenants can connect, in configuration order.
#[derive(Debug, Default)]
pub struct Providers(Vec<Arc<Provider>>);

/// Google's endpoints and the scopes the C-suite's modules need: Gmail send and read,
/// Calendar, Drive read-only, plus `openid email` so a sync can name the account.
fn google_preset(p: &ConnectorProvider) -> ConnectorProvider {
    let scopes = [
        "openid",
        "email",
        "https://www.googleapis.com/auth/gmail.send",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/drive.readonly",
    ];
    // Offline access for a refresh token; `prompt=consent` so reconnecting issues a new
    // one (Google sends a refresh token only on consent).
    let params = [
        ("access_type", "offline"),
        ("prompt", "consent"),
        ("include_granted_scopes", "true"),
    ];
    let or = |v: &Option<String>, d: &str| Some(v.clone().unwrap_or_else(|| d.into()));
    ConnectorProvider {
        name: p.name.clone(),
        display_name: Some(
            p.display_name
                .clone()
                .unwrap_or_else(|| "Google Workspace".into()),
        ),
        client_id: p.client_id.clone(),
        client_secret: p.client_secret.clone(),
        authorization_url: or(
            &p.authorization_url,
            "https://accounts.google.com/o/oauth2/v2/auth",
        ),
        token_url: or(&p.token_url, "https://oauth2.googleapis.com/token"),
        revocation_url: or(&p.revocation_url, "https://oauth2.googleapis.com/revoke"),
        userinfo_url: or(
            &p.userinfo_url,
            "https://openidconnect.googleapis.com/v1/userinfo",
        ),
        scopes: Some(
            p.scopes
                .clone()
                .unwrap_or_else(|| scopes.iter().map(|s| s.to_string()).collect()),
        ),
        authorize_params: Some(p.authorize_params.clone().unwrap_or_else(|| {
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })),
        client_auth: p.client_auth,
        mail_api_url: or(&p.mail_api_url, "https://gmail.googleapis.com"),
        api_url: or(&p.api_url, "https://www.googleapis.com"),
        api_headers: p.api_headers.clone(),
    }
}

/// Notion's public-integration OAuth endpoints and API. Notion tokens do not expire and
/// carry no refresh token; every API call names the API version it speaks.
fn notion_preset(p: &ConnectorProvider) -> ConnectorProvider {
    let or = |v: &Option<String>, d: &str| Some(v.clone().unwrap_or_else(|| d.into()));
    ConnectorProvider {
        name: p.name.clone(),
        display_name: Some(p.display_name.clone().unwrap_or_else(|| "Notion".into())),
        client_id: p.client_id.clone(),
        client_secret: p.client_secret.clone(),
        authorization_url: or(
            &p.authorization_url,
            "https://api.notion.com/v1/oauth/authorize",
        ),
        token_url: or(&p.token_url, "https://api.notion.com/v1/oauth/token"),
        revocation_url: p.revocation_url.clone(),
        userinfo_url: or(&p.userinfo_url, "https://api.notion.com/v1/users/me"),
        scopes: Some(p.scopes.clone().unwrap_or_default()),
        authorize_params: Some(p.authorize_params.clone().unwrap_or_else(|| {
            [("owner".to_owned(), "user".to_owned())]
                .into_iter()
                .collect()
        })),
        client_auth: p.client_auth,
        mail_api_url: p.mail_api_url.clone(),
        api_url: or(&p.api_url, "https://api.notion.com"),
        api_headers: Some(p.api_headers.clone().unwrap_or_else(|| {
            [("Notion-Version".to_owned(), NOTION_VERSION.to_owned())]
                .into_iter()
                .collect()
        })),
    }
}

/// The Notion API version we speak.
pub const NOTION_VERSION: &str = "2022-06-28";

fn check_url(provider: &str, field: &str, u: &str) -> std::result::Result<(), String> {
    match Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(format!(
            "provider `{provider}`: {field} must be an absolute http(s) URL"
        )),
    }
}

impl Providers {
    /// Builds and checks the providers; an error names the provider and field to fix.
    pub fn from_config(c: &Config) -> std::result::Result<Self, String> {
        let mut entries = c.connector_providers.clone();
        if let (Some(id), Some(secret)) = (&c.google_client_id, &c.google_client_secret) {
            if entries.iter().any(|p| p.name == "google") {
                return Err("configure Google either with OCSUITE_GOOGLE_CLIENT_ID/SECRET or with a `google` [[connector_providers]] entry, not both".into());
            }
            entries.push(ConnectorProvider {
                name: "google".into(),
                display_name: None,
                client_id: id.clone(),
                client_secret: Some(secret.clone()),
                authorization_url: None,
                token_url: None,
                revocation_url: None,
                userinfo_url: None,
                scopes: None,
                authorize_params: None,
                client_auth: ClientAuth::Basic,
                mail_api_url: None,
                api_url: None,
                api_headers: None,
            });
        }
        let mut out: Vec<Arc<Provider>> = Vec::new();
        for raw in entries {
            let p = match raw.name.as_str() {
                "google" => google_preset(&raw),
                "notion" => notion_preset(&raw),
                _ => raw,
            };
            let name = p.name.clone();
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!(
                    "provider name `{name}` must be 1-32 lowercase letters, digits or `-`"
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(format!("provider `{name}` is configured twice"));
            }
            if p.client_id.trim().is_empty() {
                return Err(format!("provider `{name}`: client_id is required"));
            }
            let authorization_url = p
                .authorization_url
                .ok_or_else(|| format!("provider `{name}`: authorization_url is required"))?;
            let token_url = p
                .token_url
                .ok_or_else(|| format!("provider `{name}`: token_url is required"))?;
            check_url(&name, "authorization_url", &authorization_url)?;
            check_url(&name, "token_url", &token_url)?;
            for (field, u) in [
                ("revocation_url", &p.revocation_url),
                ("userinfo_url", &p.userinfo_url),
                ("mail_api_url", &p.mail_api_url),
                ("api_url", &p.api_url),
            ] {
                if let Some(u) = u {
                    check_url(&name, field, u)?;
                }
            }
            let api_headers = p.api_headers.unwrap_or_default();
            for (k, v) in &api_headers {
                if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || http::HeaderValue::from_str(v).is_err()
                {
                    return Err(format!(
                        "provider `{name}`: api_headers has an invalid header `{k}`"
                    ));
                }
            }
            out.push(Arc::new(Provider {
                display_name: p.display_name.unwrap_or_else(|| name.clone()),
                name,
                client_id: p.client_id,
                client_secret: p.client_secret,
                authorization_url,
                token_url,
                revocation_url: p.revocation_url,
                userinfo_url: p.userinfo_url,
                scopes: p.scopes.unwrap_or_default(),
                authorize_params: p.authorize_params.unwrap_or_default(),
                client_auth: p.client_auth,
                mail_api_url: p.mail_api_url,
                api_url: p.api_url,
                api_headers,
            }));
        }
        Ok(Self(out))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.0.iter().find(|p| p.name == name)
    }

    pub fn all(&self) -> &[Arc<Provider>] {
        &self.0
    }
}

/// What a person sees about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    NotConnected,
    Connected,
    /// Works now, but stops soon without a reconnect (no refresh token, or one that
    /// expires within a week).
    Expiring,
    /// The tokens no longer work: reconnect.
    Expired,
    /// Access was withdrawn at the provider: reconnect.
    Revoked,
    /// The last refresh, sync or connect attempt failed; see `last_error`.
    Error,
}

/// A connector row as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Row {
    #[sqlx(try_from = "String")]
    pub id: ConnectorId,
    pub provider: String,
    pub status: String,
    pub account: Option<String>,
    pub scopes: String,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub has_refresh_token: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub sync_job_id: Option<String>,
    pub connected_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Row {
    /// The stored status, adjusted for what time has done since.
    pub fn effective_status(&self, now: DateTime<Utc>) -> Status {
        let access_gone = self.access_expires_at.is_some_and(|t| t <= now);
        match self.status.as_str() {
            "revoked" => Status::Revoked,
            "expired" => Status::Expired,
            _ if !self.has_refresh_token && access_gone => Status::Expired,
            _ if self.refresh_expires_at.is_some_and(|t| t <= now) => Status::Expired,
            "error" => Status::Error,
            _ if self
                .refresh_expires_at
                .is_some_and(|t| t <= now + Duration::days(7))
                || (!self.has_refresh_token
                    && self
                        .access_expires_at
                        .is_some_and(|t| t <= now + Duration::hours(1))) =>
            {
                Status::Expiring
            }
            _ => Status::Connected,
        }
    }

    /// True when the tokens cannot work without a person reconnecting.
    pub fn needs_reconnect(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.effective_status(now),
            Status::Expired | Status::Revoked
        )
    }
}

macro_rules! select_connectors {
    ($where:literal) => {
        scoped(concat!(
            "SELECT id, provider, status, account, scopes, access_expires_at, refresh_expires_at, has_refresh_token, last_error, last_error_at, last_sync_at, last_refresh_at, sync_job_id, connected_by, created_at, updated_at FROM connectors WHERE tenant_id = $1",
            $where
        ))
    };
}

/// The tenant's connection to `provider`, if any.
pub async fn by_provider(tx: &mut TenantTx, provider: &str) -> Result<Option<Row>> {
    Ok(tx
        .fetch_optional(select_connectors!(" AND provider = $2").bind(provider))
        .await?)
}

pub async fn by_id(tx: &mut TenantTx, id: &ConnectorId) -> Result<Option<Row>> {
    Ok(tx
        .fetch_optional(select_connectors!(" AND id = $2").bind(id))
        .await?)
}

pub async fn all(tx: &mut TenantTx) -> Result<Vec<Row>> {
    Ok(tx
        .fetch_all(select_connectors!(" ORDER BY provider"))
        .await?)
}

/// Records a failure people should see on the connector; a connection that needs a
/// reconnect keeps saying so.
pub async fn record_error(tx: &mut TenantTx, id: &ConnectorId, error: &str) -> Result<()> {
    let now = Utc::now();
    tx.execute(
        scoped("UPDATE connectors SET status = CASE WHEN status IN ('expired', 'revoked') THEN status ELSE 'error' END, \
             last_error = $2, last_error_at = $3, updated_at = $3 WHERE tenant_id = $1 AND id = $4")
            .bind(truncate(error, 500))
            .bind(now)
            .bind(id),
    )
    .await?;
    Ok(())
}

/// Marks a connection as needing a reconnect (`expired` or `revoked`).
pub async fn mark_dead(
    tx: &mut TenantTx,
    id: &ConnectorId,
    status: &'static str,
    error: &str,
) -> Result<()> {
    let now = Utc::now();
    let before: Option<(String, String)> = tx
        .fetch_optional(
            scoped("SELECT status, provider FROM connectors WHERE tenant_id = $1 AND id = $2")
                .bind(id),
        )
        .await?;
    if let Some((was, provider)) = before
        && was != "expired"
        && was != "revoked"
    {
        sync::connection_lost(tx, id, &provider, status, error, now).await?;
    }
    tx.execute(
        scoped("UPDATE connectors SET status = $2, last_error = $3, last_error_at = $4, updated_at = $4 \
             WHERE tenant_id = $1 AND id = $5")
            .bind(status)
            .bind(truncate(error, 500))
            .bind(now)
            .bind(id),
    )
    .await?;
    Ok(())
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The redirect URI registered with every provider: `<public url>/api/v1/connectors/<provider>/callback`.
pub fn redirect_uri(config: &Config, provider: &str) -> String {
    format!(
        "{}/api/v1/connectors/{provider}/callback",
        config.base_url()
    )
}

/// The connector's row must exist; 404 otherwise (also for another tenant's).
pub async fn require(tx: &mut TenantTx, provider: &str) -> Result<Row> {
    by_provider(tx, provider)
        .await?
        .ok_or(AppError::NotFound("connector"))
}

/// The tenant's connector row for `provider`, created (without tokens) if absent.
pub(crate) async fn ensure_row(
    tx: &mut TenantTx,
    provider: &str,
    user: &str,
) -> Result<ConnectorId> {
    if let Some(r) = by_provider(tx, provider).await? {
        return Ok(r.id);
    }
    let id = ConnectorId::new();
    let now = Utc::now();
    tx.execute(
        scoped("INSERT INTO connectors (tenant_id, id, provider, status, scopes, has_refresh_token, connected_by, created_at, updated_at) \
             VALUES ($1, $2, $3, 'error', '', FALSE, $4, $5, $5)")
            .bind(&id)
            .bind(provider)
            .bind(user)
            .bind(now),
    )
    .await?;
    Ok(id)
}

pub(crate) async fn store_connection(
    vault: &vault::Vault,
    tx: &mut TenantTx,
    p: &Provider,
    user: &str,
    tokens: &oauth::Tokens,
    account: Option<&str>,
) -> Result<ConnectorId> {
    let id = ensure_row(tx, &p.name, user).await?;
    // Providers send a refresh token only at consent; a reconnect without one keeps the
    // previous grant's.
    let previous = vault
        .tokens_for_revocation(tx, &id, &p.name)
        .await
        .ok()
        .and_then(|(_, r)| r);
    vault.save(tx, &id, tokens, previous).await?;
    let now = Utc::now();
    tx.execute(
        scoped("UPDATE connectors SET account = $2, connected_by = $3, last_sync_at = CASE WHEN $2 IS NULL THEN last_sync_at ELSE $4 END, \
             updated_at = $4 WHERE tenant_id = $1 AND id = $5")
            .bind(account)
            .bind(user)
            .bind(now)
            .bind(&id),
    )
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: Vec<ConnectorProvider>) -> Config {
        Config {
            connector_providers: entries,
            ..Config::default()
        }
    }

    fn entry(name: &str) -> ConnectorProvider {
        ConnectorProvider {
            name: name.into(),
            display_name: None,
            client_id: "cid".into(),
            client_secret: Some(Secret::new("shh")),
            authorization_url: Some("https://idp.example/authorize".into()),
            token_url: Some("https://idp.example/token".into()),
            revocation_url: None,
            userinfo_url: None,
            scopes: Some(vec!["read".into()]),
            authorize_params: None,
            client_auth: ClientAuth::Basic,
            mail_api_url: None,
            api_url: None,
            api_headers: None,
        }
    }

    #[test]
    fn google_preset_fills_what_is_not_overridden() {
        let mut g = entry("google");
        g.authorization_url = None;
        g.scopes = None;
        let p = Providers::from_config(&cfg(vec![g])).unwrap();
        let g = p.get("google").unwrap();
        assert_eq!(
            g.authorization_url,
            "https://accounts.google.com/o/oauth2/v2/auth"
        );
        assert_eq!(g.token_url, "https://idp.example/token");
        assert!(g.scopes.iter().any(|s| s.ends_with("gmail.send")));
        assert_eq!(g.authorize_params["access_type"], "offline");
    }

    #[test]
    fn bad_providers_name_what_to_fix() {
        let mut no_token = entry("acme");
        no_token.token_url = None;
        let e = Providers::from_config(&cfg(vec![no_token])).unwrap_err();
        assert!(e.contains("token_url"), "{e}");
        let e = Providers::from_config(&cfg(vec![entry("Bad Name")])).unwrap_err();
        assert!(e.contains("lowercase"), "{e}");
        let e = Providers::from_config(&cfg(vec![entry("a"), entry("a")])).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let mut bad_url = entry("acme");
        bad_url.revocation_url = Some("ftp://x".into());
        let e = Providers::from_config(&cfg(vec![bad_url])).unwrap_err();
        assert!(e.contains("revocation_url"), "{e}");
        let c = Config {
            google_client_id: Some("id".into()),
            google_client_secret: Some(Secret::new("s")),
            connector_providers: vec![entry("google")],
            ..Config::default()
        };
        assert!(Providers::from_config(&c).unwrap_err().contains("not both"));
    }

    #[test]
    fn status_follows_time() {
        let now = Utc::now();
        let mut r = Row {
            id: ConnectorId::new(),
            provider: "acme".into(),
            status: "connected".into(),
            account: None,
            scopes: String::new(),
            access_expires_at: Some(now + Duration::minutes(30)),
            refresh_expires_at: None,
            has_refresh_token: true,
            last_error: None,
            last_error_at: None,
            last_sync_at: None,
            last_refresh_at: None,
            sync_job_id: None,
            connected_by: "u".into(),
            created_at: now,
            updated_at: now,
        };
        assert_eq!(r.effective_status(now), Status::Connected);
        r.has_refresh_token = false;
        assert_eq!(r.effective_status(now), Status::Expiring);
        r.access_expires_at = Some(now - Duration::seconds(1));
        assert_eq!(r.effective_status(now), Status::Expired);
        r.has_refresh_token = true;
        r.status = "error".into();
        assert_eq!(r.effective_status(now), Status::Error);
        r.status = "revoked".into();
        assert!(r.needs_reconnect(now));
    }
}
