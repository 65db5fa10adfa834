//! Tenancy: companies, their members and roles, invites and API keys.
//!
//! [`TenantCtx`] is how a handler says "this is tenant-scoped": it reads the tenant from
//! `X-Tenant-Id` (an API key implies its own tenant; a browser session falls back to
//! its active tenant), resolves the caller's role there, and answers 404 — not 403 —
//! to a caller who is not a member, so the existence of other tenants never leaks.

pub mod api_keys;
pub mod extract;
pub mod invites;
pub mod members;
pub mod routes;
pub mod tenants;

use serde::{Deserialize, Serialize};

use crate::auth::ClientMeta;
use crate::error::{AppError, Result};
use crate::ids::{ApiKeyId, TenantId, UserId};

/// A member's role in a tenant, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Owner => 3,
            Role::Admin => 2,
            Role::Member => 1,
            Role::Viewer => 0,
        }
    }

    /// True when `self` grants at least what `min` grants.
    pub fn at_least(self, min: Role) -> bool {
        self.rank() >= min.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

impl From<Role> for crate::store::Arg {
    fn from(r: Role) -> Self {
        crate::store::Arg::Text(r.as_str().to_owned())
    }
}

/// The reserved tenant that holds HQ (platform-wide) knowledge. Nobody is its member,
/// no support session enters it and no tenant endpoint acts on it; only the HQ
/// knowledge routes open its scope.
pub const HQ_TENANT: &str = "ten_00000000000000000000000000000000";

/// True for the reserved HQ tenant.
pub fn is_reserved(id: &crate::ids::TenantId) -> bool {
    id.as_str() == HQ_TENANT
}

/// Who acts inside a tenant.
#[derive(Clone, Debug)]
pub enum Actor {
    User(UserId),
    ApiKey(ApiKeyId),
    /// A platform super-admin in a support session ("view as") in a tenant they are
    /// not a member of.
    SupportAdmin(UserId),
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::ApiKey(_) => "api_key",
            Actor::SupportAdmin(_) => "support_admin",
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Actor::User(u) | Actor::SupportAdmin(u) => u.as_str(),
            Actor::ApiKey(k) => k.as_str(),
        }
    }
    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Actor::User(u) | Actor::SupportAdmin(u) => Some(u),
            Actor::ApiKey(_) => None,
        }
    }
}

/// The caller, resolved inside one tenant.
#[derive(Clone, Debug)]
pub struct TenantCtx {
    pub tenant_id: TenantId,
    pub role: Role,
    pub actor: Actor,
    pub meta: ClientMeta,
}

/// The refusal of something a support session may not do.
pub fn support_denied(what: &str) -> AppError {
    AppError::Detailed {
        status: axum::http::StatusCode::FORBIDDEN,
        code: "impersonation_forbidden",
        message: format!("a support session cannot do this: {what}"),
        details: serde_json::json!({}),
    }
}

impl TenantCtx {
    /// 403 `impersonation_forbidden` in a support session: for what only the company's
    /// own people may do (see secrets, touch ownership, create API keys).
    pub fn deny_support(&self, what: &str) -> Result<()> {
        match self.actor {
            Actor::SupportAdmin(_) => Err(support_denied(what)),
            _ => Ok(()),
        }
    }

    /// 403 unless the caller's role is at least `min`.
    pub fn require(&self, min: Role) -> Result<()> {
        if self.role.at_least(min) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "this action needs the {} role or higher; you are {}",
                min.as_str(),
                self.role.as_str()
            )))
        }
    }
}
