//! Operations: health, readiness, Prometheus metrics, request logging, rate limits.

pub mod ratelimit;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::ClientMeta;
use crate::state::AppState;

/// Counts requests and records latency by method, route template and status.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", res.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// Prometheus text exposition; behind `OCSUITE_METRICS_TOKEN` when one is set.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            token.expose().as_bytes(),
        )) {
            let mut res = (
                StatusCode::UNAUTHORIZED,
                "metrics need Authorization: Bearer <OCSUITE_METRICS_TOKEN>\n",
            )
                .into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    }
    sample(&state).await;
    let body = crate::telemetry::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

/// Reads the gauges that describe the shared database (queue depths and age, pool
/// use) just before they are rendered. A database that does not answer in two seconds
/// leaves the last reading in place: the scrape itself must not hang on it.
async fn sample(state: &AppState) {
    for (pool, open, idle, max) in state.store.pool_stats() {
        crate::telemetry::pool_read(pool, open, idle, max);
    }
    let read = async {
        let mut tx = state.store.platform_read().await?;
        crate::store::cross_tenant::queue_stats(&mut tx, chrono::Utc::now()).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), read).await {
        Ok(Ok(rows)) => {
            let depths: Vec<_> = rows
                .iter()
                .map(|r| crate::telemetry::QueueGauge {
                    queue: &r.0,
                    status: &r.1,
                    jobs: r.2,
                })
                .collect();
            let oldest: Vec<(String, f64)> = rows
                .iter()
                .filter_map(|r| Some((r.0.clone(), r.3?)))
                .collect();
            crate::telemetry::queue_read(&depths, &oldest);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "reading queue figures for /metrics failed"),
        Err(_) => tracing::warn!("reading queue figures for /metrics took over 2 s"),
    }
}

/// Middleware for the auth routes: limit by client IP.
pub async fn per_ip(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let ip = ClientMeta::from_parts(&parts, state.config.trust_proxy)
        .ip
        .unwrap_or_default();
    if let Err(e) = state.limits.check_auth(&ip) {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
