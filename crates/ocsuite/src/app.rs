//! Router assembly: every domain's routes, the middleware stack and the fallbacks.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::AppError;
use crate::state::AppState;
use crate::{
    agents, alerts, approvals, audit, auth, banner, board, bookkeeping, chat, connectors, console,
    demo, digests, email, erasures, exports, flags, impersonation, knowledge, leadtracker, metrics,
    modules, notifications, openapi, ops, owner_invites, plans, policy, queue, realtime, receipts,
    retention, security, tasks, tenancy, triggers, usage, webhooks,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The JSON API under `/api/v1`: every domain's router, each route declared once in its
/// domain, so the router and the OpenAPI description cannot drift apart.
pub fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let credentials = auth::routes::credentials_router()
        .route_layer(from_fn_with_state(state.clone(), ops::per_ip));
    let domains = OpenApiRouter::new()
        .merge(auth::routes::router())
        .merge(tenancy::routes::router())
        .merge(audit::routes::router())
        .merge(modules::routes::router())
        .merge(tasks::routes::router())
        .merge(approvals::routes::router())
        .merge(board::routes::router())
        .merge(notifications::routes::router())
        .merge(queue::admin::router())
        .merge(chat::routes::router())
        .merge(agents::routes::router())
        .merge(connectors::routes::router())
        .merge(usage::routes::router())
        .merge(realtime::routes::router())
        .merge(leadtracker::routes::router())
        .merge(bookkeeping::routes::router())
        .merge(email::routes::router())
        .merge(metrics::routes::router())
        .merge(triggers::routes::router())
        .merge(alerts::routes::router())
        .merge(webhooks::routes::router())
        .merge(digests::routes::router())
        .merge(flags::routes::router())
        .merge(banner::routes::router())
        .merge(console::routes::router())
        .merge(impersonation::routes::router())
        .merge(owner_invites::routes::router())
        .merge(plans::routes::router())
        .merge(security::routes::router())
        .merge(receipts::routes::router())
        .merge(policy::routes::router())
        .merge(exports::routes::router())
        .merge(retention::routes::router())
        .merge(erasures::routes::router())
        .merge(knowledge::routes::router(
            state.meter.largest_knowledge_file(),
        ))
        .merge(demo::router())
        .merge(credentials)
        .layer(from_fn_with_state(
            state.clone(),
            auth::extract::authenticate,
        ));
    // The description itself is public, like the sign-up it documents.
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1", domains)
        .merge(openapi::router())
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let (api, spec) = api(&state).split_for_parts();
    let spec = openapi::Spec::new(spec);

    api.layer(axum::Extension(spec))
        .merge(crate::web::router(&state))
        .route(
            "/unsubscribe/{token}",
            get(email::unsubscribe::show).post(email::unsubscribe::confirm),
        )
        .route(
            "/.well-known/ocsuite-log-keys",
            get(receipts::routes::well_known_keys),
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
                    let span = tracing::info_span!(
                        "http",
                        method = %req.method(),
                        path = %redact_path(req.uri().path()),
                        request_id = %request_id,
                        tenant_id = tracing::field::Empty,
                    );
                    crate::telemetry::traces::continue_request(&span, req.headers());
                    span
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
