//! Application state and router assembly.

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post, put};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::oidc::OidcVerifier;
use crate::config::Config;
use crate::crypto::Crypto;
use crate::error::AppError;
use crate::modules::Registry;
use crate::ops::ratelimit::{self, Limits};
use crate::realtime::Bus;
use crate::store::{Backend, Store};
use crate::{
    agents, approvals, audit, auth, board, bookkeeping, chat, connectors, demo, email, imports,
    leadtracker, metrics, modules, notifications, openapi, ops, queue, realtime, tasks, tenancy,
    usage,
};

/// The core modules' own API: leads, books, email campaigns, metrics and demo data.
fn module_routes() -> Router<AppState> {
    use bookkeeping::routes as bk;
    use email::routes as em;
    use leadtracker::routes as lt;
    // CSV imports may be larger than other requests.
    const UPLOAD_MAX: usize = imports::MAX_CSV_BYTES + 64 * 1024;
    let upload = || {
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn(|req, next| {
                crate::json::refuse_declared_oversize(UPLOAD_MAX, req, next)
            }))
            .layer(DefaultBodyLimit::max(UPLOAD_MAX))
    };
    Router::new()
        .route("/leadtracker/leads", get(lt::list).post(lt::create))
        .route(
            "/leadtracker/leads/{id}",
            get(lt::get).patch(lt::update).delete(lt::delete),
        )
        .route("/leadtracker/leads/{id}/stage", post(lt::move_stage))
        .route(
            "/leadtracker/stages",
            get(lt::get_stages).put(lt::put_stages),
        )
        .route("/leadtracker/import", post(lt::import).layer(upload()))
        .route("/leadtracker/summary", get(lt::summary))
        .route(
            "/bookkeeping/accounts",
            get(bk::list_accounts).post(bk::create_account),
        )
        .route(
            "/bookkeeping/transactions",
            get(bk::list_transactions).post(bk::create_transaction),
        )
        .route(
            "/bookkeeping/transactions/{id}",
            get(bk::get_transaction)
                .patch(bk::update_transaction)
                .delete(bk::delete_transaction),
        )
        .route(
            "/bookkeeping/categories",
            get(bk::get_categories).put(bk::put_categories),
        )
        .route(
            "/bookkeeping/rules",
            get(bk::list_rules).post(bk::create_rule),
        )
        .route("/bookkeeping/rules/{id}", delete(bk::delete_rule))
        .route("/bookkeeping/categorize", post(bk::categorize))
        .route("/bookkeeping/import", post(bk::import).layer(upload()))
        .route("/bookkeeping/summary", get(bk::summary))
        .route("/email/campaigns", get(em::list).post(em::create))
        .route(
            "/email/campaigns/{id}",
            get(em::get).patch(em::update).delete(em::delete),
        )
        .route("/email/campaigns/{id}/send", post(em::send))
        .route("/email/campaigns/{id}/cancel", post(em::cancel))
        .route("/email/campaigns/{id}/recipients", get(em::recipients))
        .route(
            "/email/suppressions",
            get(em::list_suppressions).post(em::suppress),
        )
        .route("/email/suppressions/{email}", delete(em::unsuppress))
        .route("/metrics", get(metrics::routes::list))
        .route("/demo-data", post(demo::load).delete(demo::remove))
}

pub struct AppInner {
    pub config: Config,
    pub store: Store,
    pub crypto: Crypto,
    pub oidc: OidcVerifier,
    pub limits: Arc<Limits>,
    /// Built-in modules.
    pub registry: Arc<Registry>,
    /// Realtime fan-out to this process's subscribers.
    pub bus: Arc<Bus>,
    /// Wakes idle workers of this process when a job may be ready.
    pub jobs_wake: Arc<crate::queue::Wake>,
    /// The model gateway (offline when no API key is configured).
    pub llm: Arc<dyn crate::llm::Provider>,
    /// Plans, prices and chat rate limits.
    pub meter: crate::usage::Meter,
    /// Connector providers and the token vault.
    pub vault: Arc<crate::connectors::vault::Vault>,
    /// SMTP delivery for the outbox (unconfigured: messages are held).
    pub mailer: Arc<crate::notifications::email::Mailer>,
    /// Each tenant's open tasks, for the cap on queued work.
    pub open_tasks: crate::tasks::gauge::OpenTasks,
}

/// Shared state handed to every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl AppState {
    pub fn new(config: Config, store: Store, crypto: Crypto, registry: Registry) -> Self {
        let oidc = OidcVerifier::new(config.oidc());
        let limits = Limits::new(&config);
        let relay = (store.backend() == Backend::Postgres)
            .then(|| Arc::new(crate::realtime::relay::Relay::new()));
        let bus = Arc::new(Bus::new(relay.clone()));
        let llm = crate::llm::from_config(&config);
        let meter = crate::usage::Meter::new(&config);
        // Validated with the rest of the configuration at load.
        let providers = crate::connectors::Providers::from_config(&config).unwrap_or_default();
        let vault = Arc::new(crate::connectors::vault::Vault::new(
            providers,
            store.clone(),
            crypto.clone(),
        ));
        // Validated with the rest of the configuration at load; a transport that cannot
        // be built here holds email rather than stopping the server.
        let mailer = Arc::new(
            crate::notifications::email::Mailer::from_config(&config)
                .unwrap_or_else(|_| crate::notifications::email::Mailer::disabled()),
        );
        Self(Arc::new(AppInner {
            config,
            store,
            crypto,
            oidc,
            limits,
            registry: Arc::new(registry),
            bus,
            jobs_wake: Arc::new(crate::queue::Wake::new(relay)),
            llm,
            meter,
            vault,
            mailer,
            open_tasks: Default::default(),
        }))
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    use auth::routes as a;
    use tenancy::routes as t;

    let credentials = Router::new()
        .route("/auth/signup", post(a::signup))
        .route("/auth/login", post(a::login))
        .route_layer(from_fn_with_state(state.clone(), ratelimit::per_ip));

    let api = Router::new()
        .route("/auth/logout", post(a::logout))
        .route("/me", get(a::me))
        .route("/me/active-tenant", put(a::set_active_tenant))
        .route("/me/mfa/totp/setup", post(a::totp_setup))
        .route("/me/mfa/totp/enable", post(a::totp_enable))
        .route("/me/mfa/totp/disable", post(a::totp_disable))
        .route("/sessions", get(a::list_sessions))
        .route("/sessions/revoke-others", post(a::revoke_other_sessions))
        .route("/sessions/{id}", delete(a::revoke_session))
        .route("/tenants", post(t::create_tenant).get(t::list_tenants))
        .route("/tenant", get(t::get_tenant).patch(t::update_tenant))
        .route("/members", get(t::list_members).post(t::create_invite))
        .route(
            "/members/{user_id}",
            patch(t::change_role).delete(t::remove_member),
        )
        .route("/invites", get(t::list_invites).post(t::create_invite))
        .route("/invites/{id}", delete(t::revoke_invite))
        .route("/invites/{token}/accept", post(t::accept_invite))
        .route("/api-keys", get(t::list_api_keys).post(t::create_api_key))
        .route("/api-keys/{id}", delete(t::revoke_api_key))
        .route("/audit", get(audit::routes::list))
        .route("/modules", get(modules::routes::list))
        .route("/modules/{name}/enable", post(modules::routes::enable))
        .route("/modules/{name}/disable", post(modules::routes::disable))
        .route(
            "/mcp-servers",
            get(modules::routes::list_servers).post(modules::routes::register),
        )
        .route("/mcp-servers/{id}", delete(modules::routes::remove))
        .route("/mcp-servers/{id}/refresh", post(modules::routes::refresh))
        .route("/tasks", get(tasks::routes::list))
        .route("/tasks/execute", post(tasks::routes::execute))
        .route("/tasks/{id}", get(tasks::routes::get))
        .route("/tasks/{id}/cancel", post(tasks::routes::cancel))
        .route("/tasks/{id}/approve", post(approvals::routes::approve))
        .route("/tasks/{id}/reject", post(approvals::routes::reject))
        .route("/tasks/{id}/undo", post(approvals::routes::undo))
        .route("/approvals", get(approvals::routes::list))
        .route(
            "/approval-policy",
            get(approvals::routes::get_policy).put(approvals::routes::put_policy),
        )
        .route("/c-suite/board-meeting", post(board::routes::hold))
        .route("/notifications", get(notifications::routes::list))
        .route(
            "/notifications/read",
            post(notifications::routes::mark_read),
        )
        .route("/mailbox", get(notifications::routes::mailbox))
        .route("/board-meetings", get(board::routes::list))
        .route("/board-meetings/{id}", get(board::routes::get))
        .route("/board-meetings/{id}/rating", post(board::routes::rate))
        .route(
            "/queues",
            get(queue::admin::show).patch(queue::admin::settings),
        )
        .route("/queues/pause", post(queue::admin::pause))
        .route("/queues/resume", post(queue::admin::resume))
        .route("/queues/dead", get(queue::admin::dead))
        .route("/queues/dead/{id}/retry", post(queue::admin::retry_dead))
        .route(
            "/queues/dead/{id}/discard",
            post(queue::admin::discard_dead),
        )
        .route("/admin/queues", get(queue::admin::platform))
        .route("/c-suite", get(chat::routes::personas))
        .route(
            "/c-suite/{persona}/customization",
            put(agents::routes::customize).delete(agents::routes::reset),
        )
        .route(
            "/agents",
            get(agents::routes::list).post(agents::routes::create),
        )
        .route("/agents/{slug}", patch(agents::routes::update))
        .route("/c-suite/{persona}/chat", post(chat::routes::chat))
        .route("/conversations", get(chat::routes::list))
        .route(
            "/conversations/{id}",
            get(chat::routes::get)
                .patch(chat::routes::rename)
                .delete(chat::routes::delete),
        )
        .route("/messages/{id}/rating", post(chat::routes::rate))
        .route("/connectors", get(connectors::routes::list))
        .route(
            "/connectors/{provider}",
            delete(connectors::routes::disconnect),
        )
        .route(
            "/connectors/{provider}/authorize",
            post(connectors::routes::authorize),
        )
        .route(
            "/connectors/{provider}/callback",
            get(connectors::routes::callback),
        )
        .route(
            "/connectors/{provider}/sync",
            post(connectors::routes::sync),
        )
        .merge(module_routes())
        .route("/usage", get(usage::routes::show))
        .route("/admin/tenants/{id}/plan", put(usage::routes::set_plan))
        .route("/ws", get(realtime::routes::ws))
        .route("/events", get(realtime::routes::events))
        .merge(credentials)
        .layer(from_fn_with_state(state.clone(), auth::authenticate))
        .route("/openapi.json", get(openapi::spec));

    Router::new()
        .nest("/api/v1", api)
        .merge(crate::web::router(&state))
        .route(
            "/unsubscribe/{token}",
            get(email::unsubscribe::show).post(email::unsubscribe::confirm),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(from_fn(ops::track))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            AppError::Internal("handler panicked".into()).into_response()
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let request_id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "http",
                        method = %req.method(),
                        path = %redact_path(req.uri().path()),
                        request_id = %request_id,
                        tenant_id = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(from_fn(drop_unusable_request_id))
        .with_state(state)
}

/// A client may send its own `x-request-id` to correlate logs, but it is stored in
/// audit rows and echoed into logs: one that is long or holds anything beyond
/// `[A-Za-z0-9._-]` is dropped, and the server assigns a UUID instead.
async fn drop_unusable_request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let usable = req.headers().get(&REQUEST_ID).map(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    });
    if usable == Some(false) {
        req.headers_mut().remove(&REQUEST_ID);
    }
    next.run(req).await
}

/// The request path for logs, with any secret path segment (an invite token) masked.
fn redact_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with("ocs_") {
                "[redacted]"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn not_found() -> AppError {
    AppError::NotFound("route")
}

async fn method_not_allowed() -> AppError {
    AppError::Rejected {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this route does not accept that HTTP method".into(),
    }
}
