//! HTTP handlers for sign-up, login, logout, the caller's profile, sessions and MFA.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::users::{self, UserOut, clean_name, normalize_email};
use super::{ClientMeta, CurrentUser, SESSION_COOKIE, password, sessions, totp};
use crate::audit::security_event;
use crate::crypto::secrets::current_version;
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{SessionId, TenantId};
use crate::json::ApiJson;
use crate::state::AppState;
use crate::store::cross_tenant;
use crate::tenancy::Role;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(set_active_tenant))
        .routes(routes!(totp_setup))
        .routes(routes!(totp_enable))
        .routes(routes!(totp_disable))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_other_sessions))
        .routes(routes!(revoke_session))
}

/// Sign-up and login: the routes that take a password, rate-limited per client IP by
/// the router assembly.
pub fn credentials_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupIn {
    pub email: String,
    /// At least 10 characters, not a common password, not the email.
    pub password: String,
    pub name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    pub email: String,
    pub password: String,
    /// The current code from the authenticator app, when MFA is on.
    #[serde(default)]
    pub totp: Option<String>,
}

/// A user and a fresh session token (also set as an HttpOnly cookie).
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthOut {
    pub user: UserOut,
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Membership {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub role: Role,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeOut {
    pub user: UserOut,
    pub memberships: Vec<Membership>,
}

fn session_cookie(state: &AppState, token: &str, max_age_secs: i64) -> Option<HeaderValue> {
    let secure = if state.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

async fn issue_session(
    state: &AppState,
    user: users::UserRow,
    meta: &ClientMeta,
    status: StatusCode,
    event: &str,
) -> Result<Response> {
    let mut tx = state.store.platform().await?;
    // A sign-in from a browser or client this person never signed in with before.
    let new_device = event == "login" && !sessions::seen_device(&mut tx, &user.id, meta).await?;
    let (_, token, expires_at) =
        sessions::create(&mut tx, &user.id, meta, state.config.session_ttl_hours).await?;
    security_event(&mut tx, Some(&user.id), Some(&user.email), event, meta).await?;
    if new_device {
        security_event(
            &mut tx,
            Some(&user.id),
            Some(&user.email),
            "login.new_device",
            meta,
        )
        .await?;
    }
    tx.commit().await?;
    let mut headers = HeaderMap::new();
    if let Some(c) = session_cookie(
        state,
        &token,
        i64::from(state.config.session_ttl_hours) * 3600,
    ) {
        headers.insert(header::SET_COOKIE, c);
    }
    Ok((
        status,
        headers,
        Json(AuthOut {
            user: user.into(),
            token,
            expires_at,
        }),
    )
        .into_response())
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/auth/signup", request_body = SignupIn, tag = "auth",
    responses((status = 201, body = AuthOut), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn signup(
    State(state): State<AppState>,
    meta: ClientMeta,
    ApiJson(input): ApiJson<SignupIn>,
) -> Result<Response> {
    let email = normalize_email(&input.email)?;
    let name = clean_name("name", &input.name, 200)?;
    password::check_policy(&input.password, &email)?;
    let hash = password::hash(input.password).await?;
    let mut tx = state.store.platform().await?;
    let user = users::create(&mut tx, &email, &name, Some(hash), false).await?;
    tx.commit().await?;
    issue_session(&state, user, &meta, StatusCode::CREATED, "signup").await
}

/// Signs in with email and password (plus a TOTP code when MFA is on).
///
/// Wrong credentials count against the account: after `OCSUITE_LOGIN_MAX_FAILURES`
/// the account locks for 30 s, doubling up to 15 minutes (429 with `Retry-After`).
#[utoipa::path(post, path = "/auth/login", request_body = LoginIn, tag = "auth",
    responses((status = 200, body = AuthOut), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    ApiJson(input): ApiJson<LoginIn>,
) -> Result<Response> {
    let bad = || AppError::Unauthorized("email or password is incorrect".into());
    if input.password.len() > password::MAX_LEN {
        return Err(bad());
    }
    let email = normalize_email(&input.email).map_err(|_| bad())?;
    let mut tx = state.store.platform_read().await?;
    let user = users::find_by_email(&mut tx, &email).await?;
    drop(tx);
    if let Some(until) = user.as_ref().and_then(|u| u.locked_until)
        && until > chrono::Utc::now()
    {
        return Err(AppError::TooManyRequests {
            retry_after: (until - chrono::Utc::now()).to_std().unwrap_or_default(),
        });
    }
    let ok = password::verify(
        input.password,
        user.as_ref().and_then(|u| u.password_hash.clone()),
    )
    .await?;
    let Some(user) = user else {
        let mut tx = state.store.platform().await?;
        security_event(&mut tx, None, Some(&email), "login.unknown_email", &meta).await?;
        tx.commit().await?;
        return Err(bad());
    };
    let mut tx = state.store.platform().await?;
    if !ok {
        let locked = users::record_failure(&mut tx, &user, state.config.login_max_failures).await?;
        security_event(&mut tx, Some(&user.id), Some(&email), "login.failed", &meta).await?;
        if locked.is_some() {
            security_event(&mut tx, Some(&user.id), Some(&email), "login.locked", &meta).await?;
        }
        tx.commit().await?;
        // A burst of these raises an alert in the person's companies.
        if let Err(e) = crate::security::after_failed_login(&state, &user.id).await {
            tracing::warn!(error = %e, "checking for a burst of failed sign-ins failed");
        }
        return Err(match locked {
            Some(until) => AppError::TooManyRequests {
                retry_after: (until - chrono::Utc::now()).to_std().unwrap_or_default(),
            },
            None => bad(),
        });
    }
    if user.totp_enabled {
        let Some(code) = input.totp.as_deref() else {
            return Err(AppError::MfaRequired);
        };
        let seed = totp::open_seed(
            &state.crypto,
            &user.id,
            user.totp_secret.as_deref().unwrap_or_default(),
        )?;
        let step = totp::check(&seed, code, user.totp_last_step);
        let accepted = match step {
            Some(step) => totp::consume_step(&mut tx, &user.id, step, None).await?,
            None => false,
        };
        if !accepted {
            users::record_failure(&mut tx, &user, state.config.login_max_failures).await?;
            security_event(
                &mut tx,
                Some(&user.id),
                Some(&email),
                "login.mfa_failed",
                &meta,
            )
            .await?;
            tx.commit().await?;
            return Err(AppError::Unauthorized(
                "TOTP code is wrong, expired or already used".into(),
            ));
        }
    }
    users::reset_failures(&mut tx, &user.id).await?;
    tx.commit().await?;
    issue_session(&state, user, &meta, StatusCode::OK, "login").await
}

/// Ends the current session and clears the cookie.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204)))]
pub async fn logout(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
) -> Result<Response> {
    if let Some(s) = &me.session {
        // Logging out ends a support session too.
        if let Some(imp) = &me.impersonating {
            crate::impersonation::finish(&state.store, imp, &me.user.id, s, "logout", &meta)
                .await?;
        }
        let mut tx = state.store.platform().await?;
        sessions::revoke(&mut tx, &me.user.id, s).await?;
        security_event(&mut tx, Some(&me.user.id), None, "logout", &meta).await?;
        tx.commit().await?;
    }
    let mut headers = HeaderMap::new();
    if let Some(c) = session_cookie(&state, "", 0) {
        headers.insert(header::SET_COOKIE, c);
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

#[derive(sqlx::FromRow)]
struct MembershipRow {
    #[sqlx(try_from = "String")]
    tenant_id: TenantId,
    tenant_name: String,
    #[sqlx(try_from = "String")]
    role: Role,
}

/// The signed-in user and the tenants they belong to.
#[utoipa::path(get, path = "/me", tag = "auth", responses((status = 200, body = MeOut), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, me: CurrentUser) -> Result<Json<MeOut>> {
    let mut tx = state.store.user(&me.user.id).await?;
    let user = users::find(&mut tx, &me.user.id)
        .await?
        .ok_or(AppError::NotFound("user"))?;
    let rows: Vec<MembershipRow> = cross_tenant::user_memberships(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(MeOut {
        user: user.into(),
        memberships: rows
            .into_iter()
            .map(|r| Membership {
                tenant_id: r.tenant_id,
                tenant_name: r.tenant_name,
                role: r.role,
            })
            .collect(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveTenantIn {
    pub tenant_id: TenantId,
}

/// Chooses the tenant a browser session works in when it sends no `X-Tenant-Id`.
#[utoipa::path(put, path = "/me/active-tenant", request_body = ActiveTenantIn, tag = "auth", responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn set_active_tenant(
    State(state): State<AppState>,
    me: CurrentUser,
    ApiJson(input): ApiJson<ActiveTenantIn>,
) -> Result<StatusCode> {
    let session = me.session.ok_or_else(|| {
        AppError::bad_request("no_session", "only a login session has an active tenant")
    })?;
    let mut tx = state.store.user(&me.user.id).await?;
    let member = cross_tenant::user_role_in(&mut tx, &input.tenant_id).await?;
    tx.commit().await?;
    if member.is_none() {
        return Err(AppError::NotFound("tenant"));
    }
    let mut tx = state.store.platform().await?;
    sessions::set_active_tenant(&mut tx, &session, &input.tenant_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/sessions", tag = "auth", responses((status = 200, body = Vec<sessions::SessionOut>)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Json<Vec<sessions::SessionOut>>> {
    let mut tx = state.store.platform_read().await?;
    Ok(Json(
        sessions::list(&mut tx, &me.user.id, me.session.as_ref()).await?,
    ))
}

/// Revokes one of the caller's sessions (sign out that device).
#[utoipa::path(delete, path = "/sessions/{id}", tag = "auth", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = SessionId::parse(&id).ok_or(AppError::NotFound("session"))?;
    let mut tx = state.store.platform().await?;
    if !sessions::revoke(&mut tx, &me.user.id, &id).await? {
        return Err(AppError::NotFound("session"));
    }
    security_event(&mut tx, Some(&me.user.id), None, "session.revoke", &meta).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// Signs out every other session of the caller.
#[utoipa::path(post, path = "/sessions/revoke-others", tag = "auth", responses((status = 200, body = Revoked)))]
pub async fn revoke_other_sessions(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
) -> Result<Json<Revoked>> {
    let mut tx = state.store.platform().await?;
    let revoked = sessions::revoke_others(&mut tx, &me.user.id, me.session.as_ref()).await?;
    security_event(
        &mut tx,
        Some(&me.user.id),
        None,
        "session.revoke_others",
        &meta,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Revoked { revoked }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfirm {
    pub password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpSetupOut {
    /// Base32 secret for manual entry.
    pub secret: String,
    /// `otpauth://` URL for a QR code.
    pub otpauth_url: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCodeIn {
    pub code: String,
    /// Required to turn MFA off.
    #[serde(default)]
    pub password: Option<String>,
}

async fn require_password(
    state: &AppState,
    me: &CurrentUser,
    password_in: String,
) -> Result<users::UserRow> {
    let mut tx = state.store.platform_read().await?;
    let user = users::find(&mut tx, &me.user.id)
        .await?
        .ok_or(AppError::NotFound("user"))?;
    drop(tx);
    // A stolen session must not become a password oracle: confirmations share the
    // login's failure count and lockout.
    if let Some(until) = user.locked_until
        && until > chrono::Utc::now()
    {
        return Err(AppError::TooManyRequests {
            retry_after: (until - chrono::Utc::now()).to_std().unwrap_or_default(),
        });
    }
    if !password::verify(password_in, user.password_hash.clone()).await? {
        let mut tx = state.store.platform().await?;
        users::record_failure(&mut tx, &user, state.config.login_max_failures).await?;
        tx.commit().await?;
        return Err(AppError::Forbidden("password is incorrect".into()));
    }
    Ok(user)
}

/// Starts TOTP enrolment: returns a new secret; MFA is on after `…/enable`.
#[utoipa::path(post, path = "/me/mfa/totp/setup", request_body = PasswordConfirm, tag = "auth", responses((status = 200, body = TotpSetupOut)))]
pub async fn totp_setup(
    State(state): State<AppState>,
    me: CurrentUser,
    ApiJson(input): ApiJson<PasswordConfirm>,
) -> Result<Json<TotpSetupOut>> {
    let user = require_password(&state, &me, input.password).await?;
    if user.totp_enabled {
        return Err(AppError::Conflict(
            "TOTP is already enabled; disable it first".into(),
        ));
    }
    let seed = totp::new_seed();
    let (secret, otpauth_url) = totp::provisioning(&seed, &user.email)?;
    let mut tx = state.store.platform().await?;
    let version = current_version(&mut tx).await?;
    totp::store_pending(&mut tx, &state.crypto, version, &user.id, &seed).await?;
    tx.commit().await?;
    Ok(Json(TotpSetupOut {
        secret,
        otpauth_url,
    }))
}

/// Confirms enrolment with a current code; from now on login needs a code.
#[utoipa::path(post, path = "/me/mfa/totp/enable", request_body = TotpCodeIn, tag = "auth", responses((status = 204), (status = 422, body = ErrorBody)))]
pub async fn totp_enable(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    ApiJson(input): ApiJson<TotpCodeIn>,
) -> Result<StatusCode> {
    let mut tx = state.store.platform().await?;
    let user = users::find(&mut tx, &me.user.id)
        .await?
        .ok_or(AppError::NotFound("user"))?;
    if user.totp_enabled {
        return Err(AppError::Conflict("TOTP is already enabled".into()));
    }
    let ct = user
        .totp_secret
        .as_deref()
        .ok_or_else(|| AppError::Conflict("start with POST /api/v1/me/mfa/totp/setup".into()))?;
    let seed = totp::open_seed(&state.crypto, &user.id, ct)?;
    let step = totp::check(&seed, &input.code, user.totp_last_step).ok_or_else(|| {
        AppError::invalid(
            "code",
            "code does not match; check the authenticator's clock",
        )
    })?;
    totp::consume_step(&mut tx, &user.id, step, Some(true)).await?;
    security_event(&mut tx, Some(&user.id), None, "mfa.enable", &meta).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Turns TOTP off (needs the password and a current code).
#[utoipa::path(post, path = "/me/mfa/totp/disable", request_body = TotpCodeIn, tag = "auth", responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn totp_disable(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    ApiJson(input): ApiJson<TotpCodeIn>,
) -> Result<StatusCode> {
    let password_in = input
        .password
        .ok_or_else(|| AppError::invalid("password", "password is required to turn MFA off"))?;
    let user = require_password(&state, &me, password_in).await?;
    let ct = match (&user.totp_secret, user.totp_enabled) {
        (Some(ct), true) => ct.clone(),
        _ => return Err(AppError::Conflict("TOTP is not enabled".into())),
    };
    let seed = totp::open_seed(&state.crypto, &user.id, &ct)?;
    if totp::check(&seed, &input.code, user.totp_last_step).is_none() {
        return Err(AppError::invalid("code", "code does not match"));
    }
    let mut tx = state.store.platform().await?;
    totp::clear(&mut tx, &user.id).await?;
    security_event(&mut tx, Some(&user.id), None, "mfa.disable", &meta).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
