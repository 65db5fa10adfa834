//! The [`TenantCtx`] extractor: resolves the caller inside one tenant from the principal
//! `auth::extract::authenticate` left and `X-Tenant-Id`, answering 404 for a tenant the
//! caller is not in.

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;

use super::{Actor, Role, TenantCtx, members};
use crate::auth::{Caller, ClientMeta, Principal};
use crate::error::{AppError, Result};
use crate::ids::TenantId;
use crate::state::AppState;

fn tenant_header(parts: &Parts) -> Result<Option<TenantId>> {
    let Some(v) = parts.headers.get("x-tenant-id") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| AppError::bad_request("bad_tenant_header", "X-Tenant-Id must be ASCII"))?;
    TenantId::parse(s.trim()).map(Some).ok_or_else(|| {
        AppError::bad_request(
            "bad_tenant_header",
            "X-Tenant-Id must be a tenant id of the form ten_<32 hex digits>",
        )
    })
}

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        let header = tenant_header(parts)?;
        let meta = ClientMeta::from_parts(parts, state.config.trust_proxy);
        let ctx = match principal {
            Principal::ApiKey(k) => {
                if header.as_ref().is_some_and(|h| *h != k.tenant_id) {
                    return Err(AppError::NotFound("tenant"));
                }
                TenantCtx {
                    tenant_id: k.tenant_id,
                    role: k.role,
                    actor: Actor::ApiKey(k.key_id),
                    meta,
                }
            }
            Principal::User {
                user,
                active_tenant,
                via_cookie,
                impersonating,
                ..
            } => {
                let tenant = match (header, via_cookie) {
                    (Some(t), _) => t,
                    (None, true) => active_tenant.ok_or_else(no_tenant)?,
                    (None, false) => return Err(no_tenant()),
                };
                let (role, exists) = members::lookup(&state.store, &tenant, &user.id).await?;
                let (role, actor) = match role {
                    Some(r) => (r, Actor::User(user.id)),
                    // A super-admin enters only the company of their open support
                    // session; anywhere else they are a stranger.
                    None if user.is_super_admin
                        && exists
                        && !super::is_reserved(&tenant)
                        && impersonating.as_ref().is_some_and(|i| i.tenant == tenant) =>
                    {
                        (Role::Admin, Actor::SupportAdmin(user.id))
                    }
                    None => {
                        // Someone signed in reaching for a company that is not theirs.
                        if exists
                            && !super::is_reserved(&tenant)
                            && let Err(e) = crate::security::record_about(
                                state,
                                &tenant,
                                Some(&user.id),
                                "tenant.denied",
                                &meta,
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "recording a denied company failed");
                        }
                        return Err(AppError::NotFound("tenant"));
                    }
                };
                TenantCtx {
                    tenant_id: tenant,
                    role,
                    actor,
                    meta,
                }
            }
        };
        tracing::Span::current().record("tenant_id", ctx.tenant_id.as_str());
        if let Actor::SupportAdmin(admin) = &ctx.actor {
            // Every request of a support session goes in the company's own log.
            // The full path (nested routers see theirs without the `/api/v1` prefix).
            let path = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or_else(|| parts.uri.path().to_owned(), |u| u.path().to_owned());
            let mut tx = state.store.tenant(&ctx.tenant_id).await?;
            crate::audit::insert(
                &mut tx,
                ("support_admin", admin.as_str()),
                "support.request",
                "request",
                &path,
                serde_json::json!({ "method": parts.method.as_str(), "path": path }),
                ctx.meta.request_id.clone(),
            )
            .await?;
            tx.commit().await?;
        }
        let read = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
            || allowed_while_suspended(
                parts
                    .extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or_else(|| parts.uri.path(), |u| u.path()),
            );
        if !read && let Some(reason) = state.suspensions.reason(&ctx.tenant_id) {
            return Err(crate::console::suspended_error(&reason));
        }
        Ok(ctx)
    }
}

/// Writes a suspended company may still make: taking its data out, and erasing a
/// person (a legal duty that does not wait for the account to be in good standing).
fn allowed_while_suspended(path: &str) -> bool {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    path == "/exports" || path == "/erasures" || path.starts_with("/erasures/")
}

fn no_tenant() -> AppError {
    AppError::bad_request(
        "tenant_required",
        "this endpoint is tenant-scoped: send the X-Tenant-Id header (see GET /api/v1/tenants)",
    )
}

/// The rule for roles: a handler states the least role its endpoint needs by the type it
/// extracts — [`TenantCtx`] (any member, viewers included), [`Member`], [`Admin`] — and
/// never checks a role in its body. A rule that depends on the data (who may change
/// whose role, who may approve which task) belongs to the domain function that reads
/// that data. Platform-wide endpoints take `auth::SuperAdmin`.
macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(pub TenantCtx);

        impl std::ops::Deref for $name {
            type Target = TenantCtx;
            fn deref(&self) -> &TenantCtx {
                &self.0
            }
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = AppError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
                let ctx = TenantCtx::from_request_parts(parts, state).await?;
                ctx.require($role)?;
                Ok(Self(ctx))
            }
        }
    };
}

role_extractor!(
    Member,
    Role::Member,
    "A caller with at least the member role in the tenant (viewers get 403)."
);
role_extractor!(
    Admin,
    Role::Admin,
    "A caller with at least the admin role in the tenant."
);
