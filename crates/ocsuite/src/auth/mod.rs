//! Identity: who is calling.
//!
//! `extract::authenticate` runs once per API request: it resolves the bearer token or
//! session cookie into a [`Principal`], applies the per-caller rate limit, and leaves the
//! principal in the request for the extractors ([`Caller`], [`CurrentUser`], and
//! `tenancy::TenantCtx`), whose impls live in `extract.rs`. Three kinds of bearer token are told apart by shape:
//! `ocs_s_…` sessions, `ocs_k_…` tenant API keys, and `xxx.yyy.zzz` OIDC JWTs.

pub mod admin;
pub mod extract;
pub mod oidc;
pub mod password;
pub mod routes;
pub mod sessions;
pub mod tokens;
pub mod totp;
pub mod users;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use chrono::{DateTime, Utc};

use crate::ids::ApiKeyId;
use crate::ids::{ImpersonationId, SessionId, TenantId};
use crate::tenancy::Role;
pub use sessions::AuthUser;

pub const SESSION_COOKIE: &str = "ocsuite_session";

/// The caller behind a valid API key (looked up by `tenancy::api_keys::authenticate`).
#[derive(Clone, Debug)]
pub struct ApiKeyAuth {
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
    pub role: Role,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub enum Principal {
    User {
        user: AuthUser,
        /// None when the caller presented an identity-provider JWT.
        session: Option<SessionId>,
        active_tenant: Option<TenantId>,
        via_cookie: bool,
        /// The super-admin's open "view as" session, while it lasts.
        impersonating: Option<Impersonating>,
    },
    ApiKey(ApiKeyAuth),
}

/// A super-admin's live impersonation, carried by their session: within it (and only
/// within it) they act in `tenant` as its admin, as actor type `support_admin`.
#[derive(Clone, Debug)]
pub struct Impersonating {
    pub id: ImpersonationId,
    pub tenant: TenantId,
    pub until: DateTime<Utc>,
}

/// Request facts recorded with security events and audit rows.
#[derive(Clone, Debug, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl ClientMeta {
    pub fn from_parts(parts: &Parts, trust_proxy: bool) -> Self {
        Self::from_http(&parts.headers, &parts.extensions, trust_proxy)
    }

    /// The same from a request's headers and extensions (before it is split).
    pub fn from_http(
        h: &HeaderMap,
        extensions: &axum::http::Extensions,
        trust_proxy: bool,
    ) -> Self {
        let forwarded = trust_proxy
            .then(|| {
                h.get("x-forwarded-for")?
                    .to_str()
                    .ok()?
                    .rsplit(',')
                    .next()
                    .map(|s| s.trim().to_owned())
            })
            .flatten();
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Self {
            ip: forwarded.or(peer),
            user_agent: header_str(h, header::USER_AGENT.as_str())
                .map(|s| s.chars().take(300).collect()),
            request_id: header_str(h, "x-request-id").map(str::to_owned),
        }
    }
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Any authenticated caller.
pub struct Caller(pub Principal);

/// A platform super-admin, signed in as a person (an API key never is one); see
/// `extract.rs`.
pub struct SuperAdmin(pub CurrentUser);

/// A signed-in person (not an API key).
pub struct CurrentUser {
    pub user: AuthUser,
    pub session: Option<SessionId>,
    pub via_cookie: bool,
    pub impersonating: Option<Impersonating>,
}
