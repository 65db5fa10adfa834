//! What every API request runs through before its handler: [`authenticate`] (bearer
//! token or session cookie → [`Principal`], the CSRF origin check, the per-caller rate
//! limit) and the extractors that read its result ([`Caller`], [`CurrentUser`],
//! [`ClientMeta`]). Kept apart from the identity data in `auth` so that data depends on
//! nothing the server state holds.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::{
    AuthUser, Caller, ClientMeta, CurrentUser, Principal, SESSION_COOKIE, SuperAdmin, header_str,
    oidc, sessions, tokens, users,
};
use crate::error::{AppError, Result};
use crate::ids::UserId;
use crate::state::AppState;
use crate::store::sql;
use crate::tenancy::api_keys;

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        Ok(Self::from_parts(parts, state.config.trust_proxy))
    }
}

fn cookie_token(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Resolves a bearer token into a principal; `Err` for a token that is not valid.
async fn resolve_bearer(state: &AppState, token: &str, meta: &ClientMeta) -> Result<Principal> {
    if token.starts_with(tokens::SESSION_PREFIX) {
        let s = sessions::authenticate(&state.store, token)
            .await?
            .ok_or_else(|| {
                AppError::Unauthorized("session has expired or was revoked; log in again".into())
            })?;
        Ok(Principal::User {
            user: s.user,
            session: Some(s.session_id),
            active_tenant: s.active_tenant,
            via_cookie: false,
            impersonating: s.impersonating,
        })
    } else if token.starts_with(tokens::API_KEY_PREFIX) {
        let key = api_keys::authenticate(&state.store, token, meta)
            .await?
            .ok_or_else(|| AppError::Unauthorized("API key is invalid or was revoked".into()))?;
        Ok(Principal::ApiKey(key))
    } else if token.matches('.').count() == 2 {
        let identity = state.oidc.verify(token).await?;
        let user = external_user(state, identity).await?;
        Ok(Principal::User {
            user,
            session: None,
            active_tenant: None,
            via_cookie: false,
            impersonating: None,
        })
    } else {
        Err(AppError::Unauthorized(
            "bearer token is not a session token, API key or identity-provider JWT".into(),
        ))
    }
}

/// Maps an identity-provider subject to a user: by a linked identity, else by a
/// verified email (linking it), else by creating a user without a password.
async fn external_user(state: &AppState, id: oidc::ExternalIdentity) -> Result<AuthUser> {
    let mut tx = state.store.platform().await?;
    let linked: Option<(String,)> = tx
        .fetch_optional(
            sql("SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2")
                .bind(id.issuer.as_str())
                .bind(id.subject.as_str()),
        )
        .await?;
    let user = match linked {
        Some((uid,)) => {
            let uid = UserId::try_from(uid).map_err(AppError::internal)?;
            users::find(&mut tx, &uid)
                .await?
                .ok_or(AppError::NotFound("user"))?
        }
        None => {
            let raw = id.email.as_deref().ok_or_else(|| {
                AppError::Unauthorized("JWT carries no email claim to map to a user".into())
            })?;
            let email = users::normalize_email(raw).map_err(|_| {
                AppError::Unauthorized("JWT email claim is not a valid address".into())
            })?;
            let user = match users::find_by_email(&mut tx, &email).await? {
                Some(u) if id.email_verified => u,
                Some(_) => {
                    return Err(AppError::Unauthorized(
                        "an account with this email exists; the identity provider must mark the email verified to link it".into(),
                    ));
                }
                None => {
                    let name = id.name.clone().unwrap_or_else(|| email.clone());
                    let name =
                        users::clean_name("name", &name, 200).unwrap_or_else(|_| email.clone());
                    users::create(&mut tx, &email, &name, None, false).await?
                }
            };
            tx.execute(
                sql("INSERT INTO user_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(id.issuer.as_str())
                    .bind(id.subject.as_str())
                    .bind(&user.id)
                    .bind(Utc::now()),
            )
            .await?;
            user
        }
    };
    tx.commit().await?;
    Ok(AuthUser {
        id: user.id,
        email: user.email,
        name: user.name,
        is_super_admin: user.is_super_admin,
    })
}

/// Middleware for `/api/v1`: authenticate, check cookie-borne writes come from our own
/// origin (CSRF), and apply the per-caller rate limit.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate_inner(&state, &mut req).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn authenticate_inner(state: &AppState, req: &mut Request) -> Result<()> {
    let headers = req.headers();
    let principal = match header_str(headers, header::AUTHORIZATION.as_str()) {
        Some(auth) => {
            let token = auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    AppError::Unauthorized("Authorization header must be `Bearer <token>`".into())
                })?;
            let meta =
                ClientMeta::from_http(req.headers(), req.extensions(), state.config.trust_proxy);
            Some(resolve_bearer(state, token, &meta).await?)
        }
        None => match cookie_token(headers) {
            Some(t) if t.starts_with(tokens::SESSION_PREFIX) => {
                sessions::authenticate(&state.store, &t)
                    .await?
                    .map(|s| Principal::User {
                        user: s.user,
                        session: Some(s.session_id),
                        active_tenant: s.active_tenant,
                        via_cookie: true,
                        impersonating: s.impersonating,
                    })
            }
            _ => None,
        },
    };
    if let Some(Principal::User {
        via_cookie: true, ..
    }) = &principal
    {
        check_same_origin(req)?;
    }
    let key = match &principal {
        Some(Principal::ApiKey(k)) => Some(format!("k:{}", k.key_id)),
        // Keyed by who the caller is, never by a header they choose.
        Some(Principal::User { user, .. }) => Some(format!("u:{}", user.id)),
        None => None,
    };
    if let Some(key) = key {
        state.limits.check_api(&key)?;
    }
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    Ok(())
}

/// A browser write carried by the session cookie must come from a page of ours.
/// A WebSocket upgrade is a GET, but it opens a channel a hostile page could drive with
/// the user's cookie (cross-site WebSocket hijacking), so it is checked like a write.
fn check_same_origin(req: &Request) -> Result<()> {
    let ws_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) && !ws_upgrade {
        return Ok(());
    }
    let h = req.headers();
    let Some(origin) = header_str(h, header::ORIGIN.as_str()) else {
        return Ok(());
    };
    let host = header_str(h, header::HOST.as_str()).unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    if origin_host == host {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "cross-origin request with a session cookie refused; use a bearer token".into(),
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                AppError::Unauthorized(
                    "authentication required: send `Authorization: Bearer <token>` or log in"
                        .into(),
                )
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self> {
        match Caller::from_request_parts(parts, s).await?.0 {
            Principal::User {
                user,
                session,
                via_cookie,
                impersonating,
                ..
            } => Ok(Self {
                user,
                session,
                via_cookie,
                impersonating,
            }),
            Principal::ApiKey(_) => Err(AppError::Forbidden(
                "this endpoint is for signed-in users; API keys act only inside their tenant"
                    .into(),
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SuperAdmin {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self> {
        // Operator routes do not exist for anyone else (API keys included): the same 404
        // as an unknown path.
        let me = match CurrentUser::from_request_parts(parts, s).await {
            Ok(me) if me.user.is_super_admin => me,
            Ok(_) | Err(AppError::Forbidden(_)) => return Err(AppError::NotFound("route")),
            Err(e) => return Err(e),
        };
        Ok(Self(me))
    }
}
