//! Any OpenAI-compatible `/chat/completions` endpoint, streamed.
//!
//! Faults, and what the client sees:
//! - connect failure, 5xx, 429 or a stream that breaks **before the first token**: retried
//!   up to `max_retries` times with exponential backoff (honouring `Retry-After`); after
//!   that an `Error` with `upstream_unavailable`, `upstream_error` or
//!   `upstream_rate_limited`;
//! - after the first token nothing is retried (the client already has part of an answer):
//!   a silence longer than the read timeout is `upstream_timeout`, a stream that ends
//!   without a finish reason or `[DONE]` is `upstream_cut`, a chunk that is not JSON is
//!   `upstream_malformed`;
//! - other 4xx: `upstream_refused` with the upstream's message (bad model name, bad key);
//! - five consecutive failures open a circuit breaker for 30 s: calls fail at once with
//!   `circuit_open` instead of piling onto a dead upstream;
//! - a refusal (4xx or 5xx) whose message names a feature the request used
//!   (`response_format`, `tools`, `stream_options`) is not a failure: the model steps
//!   down one level in [`super::compat`] and the call is made again at once.
//!
//! The SSE parsing is written here (about forty lines): the format is fixed and small, and
//! it keeps the gateway's per-chunk overhead to one JSON parse.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::compat::{self, Feature, ModelSupport, Sent};
use super::{
    ChatRequest, LlmError, Provider, StreamEvent, ToolCall, Usage, estimate_prompt_tokens,
    estimate_tokens,
};
use crate::config::Secret;

pub struct Settings {
    pub base_url: String,
    pub api_key: Secret,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_retries: u32,
}

const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_OPEN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct OpenAi {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    settings: Settings,
    http: reqwest::Client,
    breaker: Mutex<Breaker>,
    /// What each model's server accepts, learned from its refusals.
    support: compat::Memory,
}

impl OpenAi {
    pub fn new(settings: Settings) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        // The gauge exists from the start, so an alert on it has a series to watch.
        crate::telemetry::circuit("openai", false);
        Self {
            inner: std::sync::Arc::new(Inner {
                settings,
                http,
                breaker: Mutex::new(Breaker::default()),
                support: compat::Memory::default(),
            }),
        }
    }
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        texts: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>> {
        Box::pin(self.inner.embed(model, texts))
    }

    fn support(&self, model: &str) -> Option<ModelSupport> {
        Some(self.inner.support.get(model))
    }

    fn stream(&self, req: ChatRequest) -> mpsc::Receiver<StreamEvent> {
        let (tx, rx) = mpsc::channel(64);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let ev = inner.run(&req, &tx).await;
            let _ = tx.send(ev).await;
        });
        rx
    }
}

/// How one attempt ended.
enum Attempt {
    /// Finished (`Done`) or failed after output began (`Error`): the final event.
    Final(StreamEvent),
    /// Failed before any output: may be retried after the delay.
    Retry(LlmError, Option<Duration>),
    /// The server refused a feature the request used: ask again without it.
    Refused(Feature, String),
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: usize,
    embedding: Vec<f32>,
}

impl Inner {
    /// `POST /embeddings`; retried like a chat call that has produced nothing yet.
    async fn embed(&self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let url = format!("{}/embeddings", self.settings.base_url);
        let mut attempt = 0u32;
        loop {
            self.breaker_check()?;
            let send = self
                .http
                .post(&url)
                .bearer_auth(self.settings.api_key.expose())
                .json(&json!({"model": model, "input": texts}))
                .send();
            let failure = match tokio::time::timeout(self.settings.read_timeout, send).await {
                Err(_) => LlmError::new(
                    "upstream_timeout",
                    format!("no embeddings from {url} in time"),
                ),
                Ok(Err(e)) => {
                    LlmError::new("upstream_unavailable", format!("cannot reach {url}: {e}"))
                }
                Ok(Ok(res)) if res.status().is_success() => {
                    let body: EmbeddingResponse = res.json().await.map_err(|e| {
                        LlmError::new(
                            "upstream_malformed",
                            format!("embeddings response is not what the API promises: {e}"),
                        )
                    })?;
                    if body.data.len() != texts.len() {
                        return Err(LlmError::new(
                            "upstream_malformed",
                            "the embeddings response has the wrong number of vectors",
                        ));
                    }
                    self.breaker_record(true);
                    let mut data = body.data;
                    data.sort_by_key(|d| d.index);
                    return Ok(data.into_iter().map(|d| d.embedding).collect());
                }
                Ok(Ok(res)) if res.status().is_client_error() && res.status().as_u16() != 429 => {
                    let status = res.status();
                    return Err(LlmError::new(
                        "upstream_refused",
                        format!("the model server refused the embeddings request ({status})"),
                    ));
                }
                Ok(Ok(res)) => LlmError::new(
                    "upstream_error",
                    format!("the model server failed ({})", res.status()),
                ),
            };
            self.breaker_record(false);
            if attempt >= self.settings.max_retries {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(250u64 << attempt.min(6))).await;
            attempt += 1;
        }
    }

    fn breaker_check(&self) -> Result<(), LlmError> {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            Some(t) if Instant::now() < t => Err(LlmError::new(
                "circuit_open",
                format!(
                    "the model server at {} failed repeatedly; calls resume in {} s",
                    self.settings.base_url,
                    (t - Instant::now()).as_secs() + 1
                ),
            )),
            Some(_) => {
                // Half-open: let this call through; one more failure reopens.
                b.open_until = None;
                crate::telemetry::circuit("openai", false);
                b.failures = BREAKER_THRESHOLD - 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn breaker_record(&self, ok: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            b.failures = 0;
        } else {
            b.failures += 1;
            if b.failures >= BREAKER_THRESHOLD {
                b.open_until = Some(Instant::now() + BREAKER_OPEN);
                crate::telemetry::circuit("openai", true);
            }
        }
    }

    /// Runs attempts until one produces output or retries run out; returns the final event.
    async fn run(&self, req: &ChatRequest, tx: &mpsc::Sender<StreamEvent>) -> StreamEvent {
        let mut attempt = 0u32;
        loop {
            if let Err(e) = self.breaker_check() {
                return StreamEvent::Error(e);
            }
            match self.attempt(req, tx).await {
                Attempt::Final(ev) => {
                    let ok = !matches!(&ev, StreamEvent::Error(e) if e.code != "client_gone");
                    self.breaker_record(ok);
                    return ev;
                }
                Attempt::Refused(feature, why) => {
                    if !self.support.downgrade(&req.model, feature, &why) {
                        self.breaker_record(false);
                        return StreamEvent::Error(LlmError::new(
                            "upstream_refused",
                            format!("the model server refused the request: {why}"),
                        ));
                    }
                }
                Attempt::Retry(e, wait) => {
                    self.breaker_record(false);
                    if attempt >= self.settings.max_retries {
                        return StreamEvent::Error(e);
                    }
                    let backoff = Duration::from_millis(250u64 << attempt.min(6));
                    tokio::time::sleep(wait.unwrap_or(backoff).min(Duration::from_secs(10))).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, req: &ChatRequest, tx: &mpsc::Sender<StreamEvent>) -> Attempt {
        let (body, sent) = compat::body(req, self.support.get(&req.model));
        let url = format!("{}/chat/completions", self.settings.base_url);
        let send = self
            .http
            .post(&url)
            .bearer_auth(self.settings.api_key.expose())
            .json(&body)
            .send();
        let res = match tokio::time::timeout(self.settings.read_timeout, send).await {
            Err(_) => {
                return Attempt::Retry(
                    LlmError::new(
                        "upstream_timeout",
                        format!(
                            "no response from {url} within {} s",
                            self.settings.read_timeout.as_secs()
                        ),
                    ),
                    None,
                );
            }
            Ok(Err(e)) => {
                return Attempt::Retry(
                    LlmError::new(
                        "upstream_unavailable",
                        format!("cannot reach the model server at {url}: {e}"),
                    ),
                    None,
                );
            }
            Ok(Ok(r)) => r,
        };
        let status = res.status();
        if !status.is_success() {
            let retry_after = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = res.text().await.unwrap_or_default();
            let detail: String = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| match &v["error"] {
                    Value::String(s) => Some(s.clone()),
                    e => e["message"].as_str().map(str::to_owned),
                })
                .unwrap_or(text)
                .chars()
                .take(300)
                .collect();
            let about_auth = matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429);
            if !about_auth && let Some(feature) = compat::refused_feature(&detail, &sent) {
                return Attempt::Refused(feature, format!("{status}: {detail}"));
            }
            return if status.as_u16() == 429 {
                Attempt::Retry(
                    LlmError::new(
                        "upstream_rate_limited",
                        format!("the model server is rate limiting (429): {detail}"),
                    ),
                    retry_after,
                )
            } else if status.is_server_error() {
                Attempt::Retry(
                    LlmError::new(
                        "upstream_error",
                        format!("the model server failed ({status}): {detail}"),
                    ),
                    retry_after,
                )
            } else {
                Attempt::Final(StreamEvent::Error(LlmError::new(
                    "upstream_refused",
                    format!("the model server refused the request ({status}): {detail}"),
                )))
            };
        }
        self.read_stream(res, req, sent, tx).await
    }

    async fn read_stream(
        &self,
        res: reqwest::Response,
        req: &ChatRequest,
        sent: Sent,
        tx: &mpsc::Sender<StreamEvent>,
    ) -> Attempt {
        let mut bytes = res.bytes_stream();
        let mut lines = super::sse::Lines::default();
        let mut data = String::new();
        let mut output = String::new();
        let mut started = false;
        let mut usage: Option<Usage> = None;
        let mut finish: Option<String> = None;
        let mut tools: BTreeMap<u64, ToolCall> = BTreeMap::new();
        let fail = |started: bool, e: LlmError| {
            if started {
                Attempt::Final(StreamEvent::Error(e))
            } else {
                Attempt::Retry(e, None)
            }
        };
        loop {
            let chunk = match tokio::time::timeout(self.settings.read_timeout, bytes.next()).await {
                Err(_) => {
                    return fail(
                        started,
                        LlmError::new(
                            "upstream_timeout",
                            format!(
                                "the model server went silent for {} s",
                                self.settings.read_timeout.as_secs()
                            ),
                        ),
                    );
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return fail(
                        started,
                        LlmError::new("upstream_cut", format!("the model stream broke: {e}")),
                    );
                }
                Ok(Some(Ok(c))) => c,
            };
            lines.push(&chunk);
            while let Some(line) = lines.next_line() {
                let line = line.as_str();
                if let Some(d) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    continue;
                }
                if !line.is_empty() || data.is_empty() {
                    continue; // comments, `event:`/`id:` fields, keep-alives
                }
                let payload = std::mem::take(&mut data);
                if payload.trim() == "[DONE]" {
                    return self
                        .finish(
                            req,
                            &output,
                            usage,
                            finish.or(Some("stop".into())),
                            (tools, sent),
                            tx,
                        )
                        .await;
                }
                let chunk: Chunk = match serde_json::from_str(&payload) {
                    Ok(c) => c,
                    Err(e) => {
                        return fail(
                            started,
                            LlmError::new(
                                "upstream_malformed",
                                format!(
                                    "the model server sent a chunk that is not valid JSON: {e}"
                                ),
                            ),
                        );
                    }
                };
                if let Some(u) = chunk.usage {
                    usage = Some(Usage {
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: u.completion_tokens,
                        estimated: false,
                    });
                }
                for choice in chunk.choices {
                    if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                        started = true;
                        output.push_str(&text);
                        // A JSON tool-protocol answer is decoded whole at the end.
                        if sent.json_tools {
                            continue;
                        }
                        if tx.send(StreamEvent::Delta(text)).await.is_err() {
                            return Attempt::Final(StreamEvent::Error(LlmError::new(
                                "client_gone",
                                "the client disconnected",
                            )));
                        }
                    }
                    for tc in choice.delta.tool_calls.unwrap_or_default() {
                        started = true;
                        // Servers that send every call whole at index 0 tell them apart
                        // by id; the new call takes the next free slot.
                        let mut index = tc.index;
                        if let Some(id) = &tc.id
                            && tools
                                .get(&index)
                                .is_some_and(|t| !t.id.is_empty() && &t.id != id)
                        {
                            index = tools.keys().max().map_or(0, |k| k + 1);
                        }
                        let entry = tools.entry(index).or_default();
                        if let Some(id) = tc.id {
                            entry.id = id;
                        }
                        if let Some(f) = tc.function {
                            if let Some(n) = f.name {
                                entry.name.push_str(&n);
                            }
                            if let Some(a) = f.arguments {
                                entry.arguments.push_str(&a);
                            }
                        }
                    }
                    if let Some(f) = choice.finish_reason {
                        finish = Some(f);
                    }
                }
            }
        }
        // The body ended without `[DONE]`: complete only if a finish reason arrived.
        if finish.is_some() {
            return self
                .finish(req, &output, usage, finish, (tools, sent), tx)
                .await;
        }
        fail(
            started,
            LlmError::new(
                "upstream_cut",
                "the model stream ended before the answer was complete",
            ),
        )
    }

    async fn finish(
        &self,
        req: &ChatRequest,
        output: &str,
        usage: Option<Usage>,
        finish: Option<String>,
        (tools, sent): (BTreeMap<u64, ToolCall>, Sent),
        tx: &mpsc::Sender<StreamEvent>,
    ) -> Attempt {
        let mut calls: Vec<ToolCall> = tools.into_values().collect();
        if sent.json_tools {
            let (answer, decoded) = compat::decode_protocol(output);
            if !answer.is_empty() {
                let _ = tx.send(StreamEvent::Delta(answer)).await;
            }
            calls.extend(decoded);
        }
        for (i, mut t) in calls.into_iter().enumerate() {
            if t.id.is_empty() {
                t.id = format!("call_{}", i + 1);
            }
            let _ = tx.send(StreamEvent::ToolCall(t)).await;
        }
        let usage = usage.unwrap_or_else(|| Usage {
            prompt_tokens: estimate_prompt_tokens(&req.messages),
            completion_tokens: estimate_tokens(output),
            estimated: true,
        });
        let _ = tx.send(StreamEvent::Usage(usage)).await;
        Attempt::Final(StreamEvent::Done {
            finish_reason: finish.unwrap_or_else(|| "stop".into()),
        })
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}
