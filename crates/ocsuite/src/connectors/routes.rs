//! HTTP handlers: connect (authorize + callback), list, sync, disconnect.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use oauth2::PkceCodeVerifier;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Provider, STATE_TTL_MINUTES, Status, redirect_uri, require, sync};
use crate::audit;
use crate::auth::{ClientMeta, CurrentUser};
use crate::crypto::{Binding, KeyScope};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{JobId, TenantId};
use crate::json::ApiQuery;
use crate::queue;
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::extract::{Admin, Member};
use crate::tenancy::{Actor, Role, TenantCtx, members};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(disconnect))
        .routes(routes!(authorize))
        .routes(routes!(callback))
        .routes(routes!(sync))
}

/// Pending authorizations a tenant may have at once (each lives ten minutes).
const MAX_PENDING_STATES: i64 = 50;
const STATE_PURPOSE: &str = "oauth-state";

fn provider_or_404<'a>(state: &'a AppState, name: &str) -> Result<&'a std::sync::Arc<Provider>> {
    state
        .vault
        .providers()
        .get(name)
        .ok_or(AppError::NotFound("provider"))
}

/// One provider and the tenant's connection to it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectorOut {
    pub provider: String,
    pub display_name: String,
    /// False for a connection whose provider was since removed from the configuration.
    pub configured: bool,
    pub status: Status,
    pub account: Option<String>,
    pub scopes: Vec<String>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub connected_at: Option<DateTime<Utc>>,
    pub connected_by: Option<String>,
    /// A sync job is queued or running.
    pub sync_pending: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectorList {
    pub connectors: Vec<ConnectorOut>,
}

/// Every configured provider with this tenant's connection status.
#[utoipa::path(get, path = "/connectors", tag = "connectors",
    responses((status = 200, body = ConnectorList)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<ConnectorList>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let rows = super::all(&mut tx).await?;
    tx.commit().await?;
    let now = Utc::now();
    let mut out: Vec<ConnectorOut> = state
        .vault
        .providers()
        .all()
        .iter()
        .map(|p| ConnectorOut {
            provider: p.name.clone(),
            display_name: p.display_name.clone(),
            configured: true,
            status: Status::NotConnected,
            account: None,
            scopes: vec![],
            access_expires_at: None,
            last_error: None,
            last_error_at: None,
            last_sync_at: None,
            last_refresh_at: None,
            connected_at: None,
            connected_by: None,
            sync_pending: false,
        })
        .collect();
    for r in rows {
        let i = match out.iter().position(|o| o.provider == r.provider) {
            Some(i) => i,
            None => {
                out.push(ConnectorOut {
                    provider: r.provider.clone(),
                    display_name: r.provider.clone(),
                    configured: false,
                    status: Status::NotConnected,
                    account: None,
                    scopes: vec![],
                    access_expires_at: None,
                    last_error: None,
                    last_error_at: None,
                    last_sync_at: None,
                    last_refresh_at: None,
                    connected_at: None,
                    connected_by: None,
                    sync_pending: false,
                });
                out.len() - 1
            }
        };
        let o = &mut out[i];
        o.status = r.effective_status(now);
        o.account = r.account.clone();
        o.scopes = r.scopes.split_whitespace().map(str::to_owned).collect();
        o.access_expires_at = r.access_expires_at;
        o.last_error = r.last_error.clone();
        o.last_error_at = r.last_error_at;
        o.last_sync_at = r.last_sync_at;
        o.last_refresh_at = r.last_refresh_at;
        o.connected_at = Some(r.created_at);
        o.connected_by = Some(r.connected_by.clone());
        o.sync_pending = r.sync_job_id.is_some();
    }
    Ok(Json(ConnectorList { connectors: out }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthorizeOut {
    /// Send the person's browser here.
    pub authorization_url: String,
    /// The authorization must be finished before this time.
    pub expires_at: DateTime<Utc>,
    /// Where the provider sends the browser back; register it with the provider.
    pub redirect_uri: String,
}

/// Starts connecting an account: returns the provider's authorization URL (PKCE S256,
/// single-use `state` bound to this tenant, user and provider, valid ten minutes).
#[utoipa::path(post, path = "/connectors/{provider}/authorize", tag = "connectors",
    responses((status = 200, body = AuthorizeOut), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "provider not configured")))]
pub async fn authorize(
    State(state): State<AppState>,
    ctx: Admin,
    Path(provider): Path<String>,
) -> Result<Json<AuthorizeOut>> {
    let Actor::User(user) = &ctx.actor else {
        return Err(AppError::Forbidden(
            "connecting an account is done by a signed-in member in a browser, not by an API key"
                .into(),
        ));
    };
    let p = provider_or_404(&state, &provider)?;
    let now = Utc::now();
    let tx = state.store.tenant(&ctx.tenant_id).await?;
    let resource = crate::policy::Resource {
        kind: "connector".into(),
        id: p.name.clone(),
        operation: "create".into(),
        provider: p.name.clone(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "connector.connect", resource).await?;
    tx.execute(
        scoped("DELETE FROM oauth_states WHERE tenant_id = $1 AND expires_at < $2").bind(now),
    )
    .await?;
    let (pending,): (i64,) = tx
        .fetch_one(scoped(
            "SELECT COUNT(*) FROM oauth_states WHERE tenant_id = $1",
        ))
        .await?;
    if pending >= MAX_PENDING_STATES {
        return Err(AppError::TooManyRequests {
            retry_after: std::time::Duration::from_secs(60),
        });
    }
    let state_value = new_state(&ctx.tenant_id);
    let state_id = state_digest(&state_value);
    let verifier = PkceCodeVerifier::new(random_b64(48));
    let redirect = redirect_uri(&state.config, &p.name);
    let url = state
        .vault
        .oauth()
        .authorization_url(p, &redirect, &state_value, &verifier)
        .map_err(AppError::internal)?;
    let version = crate::crypto::secrets::current_version(&mut tx).await?;
    let sealed_verifier = state.crypto.encrypt(
        KeyScope::Tenant(&ctx.tenant_id),
        version,
        Binding {
            purpose: STATE_PURPOSE,
            row_id: &state_id,
        },
        verifier.secret().as_bytes(),
    );
    let expires_at = now + Duration::minutes(STATE_TTL_MINUTES);
    tx.execute(
        scoped("INSERT INTO oauth_states (tenant_id, id, provider, user_id, verifier, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(state_id.as_str())
            .bind(p.name.as_str())
            .bind(user)
            .bind(sealed_verifier)
            .bind(now)
            .bind(expires_at),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(AuthorizeOut {
        authorization_url: url,
        expires_at,
        redirect_uri: redirect,
    }))
}

/// `<tenant id>.<43 random base64url characters>`: the prefix lets the callback find
/// the tenant; the random part is what makes it unguessable.
fn new_state(tenant: &TenantId) -> String {
    format!("{tenant}.{}", random_b64(32))
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn state_digest(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the person declined or the request was refused.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

fn bad_state(message: &str) -> AppError {
    AppError::bad_request("invalid_state", message.to_owned())
}

/// Where the browser goes after the callback: the connectors page, told what happened.
fn back_to_page(provider: &str, outcome: &[(&str, &str)]) -> Response {
    let mut q = oauth2::url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("provider", provider);
    for (k, v) in outcome {
        q.append_pair(k, v);
    }
    Redirect::to(&format!("/connectors?{}", q.finish())).into_response()
}

/// The provider sends the browser here. Verifies the state (single use, unexpired,
/// this provider, the user who started it, still an admin), exchanges the code with
/// the PKCE verifier, stores the tokens encrypted and redirects to the connectors page.
#[utoipa::path(get, path = "/connectors/{provider}/callback", tag = "connectors",
    params(CallbackQuery),
    responses((status = 303, description = "back to the connectors page, with `connected=1` or `error=<code>`"),
              (status = 400, body = ErrorBody, description = "missing, unknown, reused, expired or foreign state"),
              (status = 404, body = ErrorBody, description = "provider not configured")))]
pub async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    current: CurrentUser,
    meta: ClientMeta,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Result<Response> {
    let p = provider_or_404(&state, &provider)?.clone();
    let raw_state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(|| bad_state("the `state` parameter is missing; start connecting again"))?;
    let tenant = raw_state
        .split_once('.')
        .and_then(|(t, _)| TenantId::parse(t))
        .ok_or_else(|| bad_state("the `state` parameter is not one this server issued"))?;
    let state_id = state_digest(raw_state);

    // Consume the state first: whatever happens next, it cannot be used again.
    let mut tx = state.store.tenant(&tenant).await?;
    let row: Option<(String, String, Vec<u8>, DateTime<Utc>)> = tx
        .fetch_optional(
            scoped(
                "DELETE FROM oauth_states WHERE tenant_id = $1 AND id = $2 \
                 RETURNING provider, user_id, verifier, expires_at",
            )
            .bind(state_id.as_str()),
        )
        .await?;
    tx.commit().await?;
    let Some((state_provider, state_user, sealed_verifier, expires_at)) = row else {
        return Err(bad_state(
            "this authorization is unknown or was already used; start connecting again",
        ));
    };
    if expires_at < Utc::now() {
        return Err(bad_state(
            "this authorization expired (they last ten minutes); start connecting again",
        ));
    }
    if state_provider != p.name {
        return Err(bad_state(
            "this authorization was started for another provider",
        ));
    }
    if state_user != current.user.id.as_str() {
        return Err(bad_state(
            "this authorization was started by another user; it must be finished by the same person",
        ));
    }
    let (role, _) = members::lookup(&state.store, &tenant, &current.user.id).await?;
    let role = role.ok_or_else(|| bad_state("you are no longer a member of this company"))?;
    let ctx = TenantCtx {
        tenant_id: tenant.clone(),
        role,
        actor: Actor::User(current.user.id.clone()),
        meta,
    };
    ctx.require(Role::Admin)?;

    if let Some(error) = q.error.as_deref() {
        let error = super::truncate(error, 64);
        let mut tx = state.store.tenant(&tenant).await?;
        audit::record(
            &mut tx,
            &ctx,
            "connector.connect_denied",
            "provider",
            &p.name,
            json!({"error": error, "description": q.error_description.as_deref().map(|d| super::truncate(d, 200))}),
        )
        .await?;
        tx.commit().await?;
        return Ok(back_to_page(&p.name, &[("error", &error)]));
    }
    let code = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or_else(|| {
            AppError::bad_request(
                "invalid_code",
                "the `code` parameter is missing or too long",
            )
        })?;
    let verifier = state
        .crypto
        .decrypt(
            KeyScope::Tenant(&tenant),
            Binding {
                purpose: STATE_PURPOSE,
                row_id: &state_id,
            },
            &sealed_verifier,
        )
        .map_err(|_| bad_state("this authorization's stored data is unreadable; start again"))?;
    let verifier = String::from_utf8_lossy(&verifier.0).into_owned();

    let redirect = redirect_uri(&state.config, &p.name);
    let exchanged = state
        .vault
        .oauth()
        .exchange_code(&p, &redirect, code, verifier)
        .await;
    let mut tokens = match exchanged {
        Ok(t) => t,
        Err(e) => {
            let reason = format!("connecting failed: {e}");
            let mut tx = state.store.tenant(&tenant).await?;
            let id = super::ensure_row(&mut tx, &p.name, &current.user.id.to_string()).await?;
            super::record_error(&mut tx, &id, &reason).await?;
            audit::record(
                &mut tx,
                &ctx,
                "connector.connect_failed",
                "connector",
                id.as_str(),
                json!({"provider": p.name, "error": e.to_string()}),
            )
            .await?;
            tx.commit().await?;
            return Ok(back_to_page(&p.name, &[("error", "token_exchange_failed")]));
        }
    };
    if tokens.scopes.is_none() {
        tokens.scopes = Some(p.scopes.clone());
    }
    // Best effort: a provider without userinfo, or a hiccup, leaves the account unnamed
    // until the first sync.
    let account = state
        .vault
        .oauth()
        .account(&p, &tokens.access_token)
        .await
        .ok()
        .flatten();

    let mut tx = state.store.tenant(&tenant).await?;
    let id = super::store_connection(
        &state.vault,
        &mut tx,
        &p,
        &current.user.id.to_string(),
        &tokens,
        account.as_deref(),
    )
    .await?;
    sync::enqueue(&mut tx, &id).await?;
    audit::record(
        &mut tx,
        &ctx,
        "connector.connect",
        "connector",
        id.as_str(),
        json!({"provider": p.name, "account": account, "scopes": tokens.scopes}),
    )
    .await?;
    tx.commit().await?;
    state.jobs_wake.notify_one();
    Ok(back_to_page(&p.name, &[("connected", "1")]))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SyncOut {
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// False when a sync was already queued (its job is returned).
    pub queued: bool,
}

/// Queues a sync now: refresh the tokens and check the account answers.
#[utoipa::path(post, path = "/connectors/{provider}/sync", tag = "connectors",
    responses((status = 202, body = SyncOut), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the connection needs a reconnect")))]
pub async fn sync(
    State(state): State<AppState>,
    ctx: Member,
    Path(provider): Path<String>,
) -> Result<(StatusCode, Json<SyncOut>)> {
    provider_or_404(&state, &provider)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let row = require(&mut tx, &provider).await?;
    if row.needs_reconnect(Utc::now()) {
        return Err(AppError::Conflict(format!(
            "the {provider} connection is {}: an admin must reconnect it",
            row.status
        )));
    }
    let (job_id, queued) = sync::enqueue(&mut tx, &row.id)
        .await?
        .ok_or(AppError::NotFound("connector"))?;
    if queued {
        audit::record(
            &mut tx,
            &ctx,
            "connector.sync",
            "connector",
            row.id.as_str(),
            json!({"provider": provider}),
        )
        .await?;
    }
    tx.commit().await?;
    state.jobs_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(SyncOut { job_id, queued })))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DisconnectOut {
    pub provider: String,
    /// The provider confirmed the revocation.
    pub revoked_at_provider: bool,
    /// Why revocation at the provider failed or was skipped (the tokens are deleted
    /// here regardless).
    pub revoke_error: Option<String>,
}

/// Revokes the grant at the provider (best effort) and deletes the tokens.
#[utoipa::path(delete, path = "/connectors/{provider}", tag = "connectors",
    responses((status = 200, body = DisconnectOut), (status = 404, body = ErrorBody)))]
pub async fn disconnect(
    State(state): State<AppState>,
    ctx: Admin,
    Path(provider): Path<String>,
) -> Result<Json<DisconnectOut>> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let row = require(&mut tx, &provider).await?;
    let resource = crate::policy::Resource {
        kind: "connector".into(),
        id: row.id.to_string(),
        operation: "delete".into(),
        provider: provider.clone(),
        ..Default::default()
    };
    let mut tx =
        crate::policy::authorize(&state.policies, tx, &ctx, "connector.disconnect", resource)
            .await?;
    let tokens = state
        .vault
        .tokens_for_revocation(&mut tx, &row.id, &provider)
        .await;
    tx.commit().await?;

    let (revoked, revoke_error) = match (state.vault.providers().get(&provider), tokens) {
        (None, _) => (
            false,
            Some("the provider is no longer configured".to_owned()),
        ),
        (Some(_), Err(e)) => (false, Some(format!("no usable tokens to revoke: {e}"))),
        (Some(p), Ok((access, refresh))) => {
            // Revoking the refresh token ends the whole grant at most providers; the
            // access token is revoked too for those where it does not.
            let mut result = Ok(false);
            if let Some(r) = refresh {
                result = state.vault.oauth().revoke(p, &r, true).await;
            }
            let access_result = state.vault.oauth().revoke(p, &access, false).await;
            if result.is_err() || matches!(result, Ok(false)) {
                result = access_result;
            }
            match result {
                Ok(true) => (true, None),
                Ok(false) => (
                    false,
                    Some("the provider has no revocation endpoint".to_owned()),
                ),
                Err(e) => (false, Some(e.to_string())),
            }
        }
    };

    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    if let Some(job) = row.sync_job_id.as_deref().and_then(JobId::parse) {
        queue::remove_pending(&mut tx, &job).await?;
    }
    tx.execute(
        scoped("DELETE FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2 AND name = $3")
            .bind(super::SECRET_PURPOSE)
            .bind(&row.id),
    )
    .await?;
    let n = tx
        .execute(scoped("DELETE FROM connectors WHERE tenant_id = $1 AND id = $2").bind(&row.id))
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("connector"));
    }
    audit::record(
        &mut tx,
        &ctx,
        "connector.disconnect",
        "connector",
        row.id.as_str(),
        json!({"provider": provider, "revoked_at_provider": revoked, "revoke_error": revoke_error}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(DisconnectOut {
        provider,
        revoked_at_provider: revoked,
        revoke_error,
    }))
}
