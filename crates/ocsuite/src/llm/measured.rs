//! Error rate and latency per model, as this process saw them, for the operators'
//! health page: a [`Measured`] provider wraps the configured one and watches each
//! stream go by (time to its first token and to its end, and whether it ended in an
//! error). In memory and per process: the health page is a live view, not a history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{ChatRequest, LlmError, Provider, StreamEvent, compat};

/// How many recent calls per model the latency figures cover.
const WINDOW: usize = 500;

#[derive(Default)]
struct ModelCalls {
    calls: u64,
    errors: u64,
    /// Recent calls: (time to first token or end, total time, failed), oldest first.
    recent: std::collections::VecDeque<(Duration, Duration, bool)>,
}

/// Calls per model since the process started.
#[derive(Default)]
pub struct LlmStats {
    models: Mutex<HashMap<String, ModelCalls>>,
}

/// One model's figures.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelHealth {
    pub model: String,
    pub calls: u64,
    pub errors: u64,
    /// Errors among the recent calls, 0-1.
    pub recent_error_rate: f64,
    /// Time to the first token over the recent calls, in milliseconds.
    pub first_token_p50_ms: u64,
    pub first_token_p95_ms: u64,
    /// Whole-answer time over the recent calls, in milliseconds.
    pub total_p95_ms: u64,
}

fn percentile(mut v: Vec<Duration>, p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    u64::try_from(v[i.min(v.len() - 1)].as_millis()).unwrap_or(u64::MAX)
}

impl LlmStats {
    fn record(&self, model: &str, first: Duration, total: Duration, failed: bool) {
        let Ok(mut m) = self.models.lock() else {
            return;
        };
        let e = m.entry(model.to_owned()).or_default();
        e.calls += 1;
        e.errors += u64::from(failed);
        e.recent.push_back((first, total, failed));
        if e.recent.len() > WINDOW {
            e.recent.pop_front();
        }
    }

    /// Every model called so far, by name.
    pub fn snapshot(&self) -> Vec<ModelHealth> {
        let Ok(m) = self.models.lock() else {
            return Vec::new();
        };
        let mut out: Vec<ModelHealth> = m
            .iter()
            .map(|(model, c)| {
                let n = c.recent.len().max(1) as f64;
                ModelHealth {
                    model: model.clone(),
                    calls: c.calls,
                    errors: c.errors,
                    recent_error_rate: c.recent.iter().filter(|r| r.2).count() as f64 / n,
                    first_token_p50_ms: percentile(c.recent.iter().map(|r| r.0).collect(), 0.5),
                    first_token_p95_ms: percentile(c.recent.iter().map(|r| r.0).collect(), 0.95),
                    total_p95_ms: percentile(c.recent.iter().map(|r| r.1).collect(), 0.95),
                }
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }
}

/// The configured provider, measured.
pub struct Measured {
    inner: Arc<dyn Provider>,
    stats: Arc<LlmStats>,
}

impl Measured {
    pub fn new(inner: Arc<dyn Provider>, stats: Arc<LlmStats>) -> Self {
        Self { inner, stats }
    }
}

impl Provider for Measured {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn stream(&self, req: ChatRequest) -> mpsc::Receiver<StreamEvent> {
        let model = req.model.clone();
        let provider = self.inner.name();
        // A child of the request's or job's span; it lasts until the stream ends.
        let span = tracing::info_span!(
            "llm.chat",
            gen_ai.system = provider,
            gen_ai.request.model = %model,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            first_token_ms = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let started = Instant::now();
        let mut upstream = span.in_scope(|| self.inner.stream(req));
        let (tx, rx) = mpsc::channel(64);
        let stats = self.stats.clone();
        let traced = span.clone();
        tokio::spawn(
            async move {
                let mut first = None;
                let mut failed = true;
                let mut tokens = None;
                while let Some(ev) = upstream.recv().await {
                    if first.is_none()
                        && matches!(ev, StreamEvent::Delta(_) | StreamEvent::ToolCall(_))
                    {
                        first = Some(started.elapsed());
                    }
                    match &ev {
                        StreamEvent::Done { .. } => failed = false,
                        StreamEvent::Error(_) => failed = true,
                        StreamEvent::Usage(u) => {
                            tokens = Some((u.prompt_tokens, u.completion_tokens))
                        }
                        _ => {}
                    }
                    if tx.send(ev).await.is_err() {
                        // The reader went away: not the model's failure.
                        return;
                    }
                }
                let total = started.elapsed();
                stats.record(&model, first.unwrap_or(total), total, failed);
                crate::telemetry::llm_call(provider, &model, first, failed, tokens);
                if let Some((input, output)) = tokens {
                    traced.record("gen_ai.usage.input_tokens", input);
                    traced.record("gen_ai.usage.output_tokens", output);
                }
                if let Some(f) = first {
                    traced.record("first_token_ms", f.as_millis() as u64);
                }
                traced.record("error", failed);
            }
            .instrument(span),
        );
        rx
    }

    fn support(&self, model: &str) -> Option<compat::ModelSupport> {
        self.inner.support(model)
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        texts: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>> {
        let span = tracing::info_span!(
            "llm.embed",
            gen_ai.system = self.inner.name(),
            gen_ai.request.model = %model,
            inputs = texts.len(),
        );
        Box::pin(self.inner.embed(model, texts).instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_cover_the_recent_calls() {
        let s = LlmStats::default();
        for i in 0..10 {
            s.record(
                "m",
                Duration::from_millis(10 * (i + 1)),
                Duration::from_millis(200),
                i == 9,
            );
        }
        let h = &s.snapshot()[0];
        assert_eq!((h.calls, h.errors), (10, 1));
        assert!((h.recent_error_rate - 0.1).abs() < 1e-9);
        assert_eq!(h.first_token_p50_ms, 60);
        assert_eq!(h.first_token_p95_ms, 100);
        assert_eq!(h.total_p95_ms, 200);
    }
}
