//! Traces over OTLP/HTTP, sent when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; nothing is built or sent otherwise.
//!
//! The code already marks its units of work with `tracing` spans: `http` for a request
//! (app.rs), `job` for an attempt (queue::worker), `llm.chat` and `llm.embed` for a model
//! call (llm::measured). `tracing-opentelemetry` turns those into OpenTelemetry spans and
//! `opentelemetry-otlp` sends them in batches from its own thread, over the blocking
//! client of the reqwest we already build (that thread has no tokio runtime). The
//! standard `OTEL_*` variables apply: `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the
//! default, or `http/json`; gRPC is refused with a message: every collector also takes
//! OTLP/HTTP, on port 4318), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
//!
//! **One trace per request, across the queue.** A request's span context is written
//! into each job it queues as a W3C `traceparent` ([`traceparent`], stored under
//! [`TRACE_KEY`] in the job's payload), and the worker's `job` span continues it
//! ([`continue_trace`]). A model call made by the job is a child of the `job` span. An
//! incoming `traceparent` header is honoured, so a caller's own trace continues into ours.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The key under which a job's payload carries the trace it belongs to.
pub const TRACE_KEY: &str = "traceparent";

/// Whether the environment asks for traces.
pub fn wanted() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// The exporting half, kept by `main` to flush what is buffered at exit.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Sends the spans still buffered (bounded by the exporter's own timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("sending the last traces failed: {e}");
        }
    }
}

/// The layer that turns spans into OpenTelemetry spans, and the exporter behind it;
/// `None` when no endpoint is configured. An error says which setting to fix.
#[allow(clippy::type_complexity)]
pub fn layer<S>() -> Result<Option<(Box<dyn Layer<S> + Send + Sync>, Exporter)>, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !wanted() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_*: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "ocsuite".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ocsuite");
    // Our own spans at INFO and above, whatever RUST_LOG says about logs: a quiet log
    // should not mean an empty trace.
    let spans =
        tracing_subscriber::filter::Targets::new().with_target("ocsuite", tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(spans)
        .boxed();
    Ok(Some((layer, Exporter { provider })))
}

/// The current span's trace as a W3C `traceparent`; `None` when it is not traced (no
/// exporter, or not sampled).
pub fn traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACE_KEY)
}

/// Makes `span` a child of the trace in `traceparent` (a W3C header value); a missing
/// or malformed value leaves it a root.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACE_KEY.to_owned(), value.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Makes a request's span a child of the caller's trace, from its `traceparent` header.
pub fn continue_request(span: &tracing::Span, headers: &http::HeaderMap) {
    let value = headers.get(TRACE_KEY).and_then(|v| v.to_str().ok());
    continue_trace(span, value);
}
