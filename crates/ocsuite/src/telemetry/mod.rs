//! What the process tells Prometheus, beyond HTTP requests: the queue, the model calls,
//! the database pools and live connections.
//!
//! A leaf: domains record through the functions here (so every name and label set is
//! spelled once), and `ops` renders them at `/metrics`. Gauges that describe the shared
//! database (queue depths, the oldest waiting job) are read when Prometheus scrapes, so
//! they are never stale and cost nothing between scrapes; every node reports the same
//! figures for them, which is why the alert rules in `deploy/` take `max`, not `sum`.
//!
//! Every label set known in advance is registered at zero when the recorder starts:
//! a rate over a series that does not exist yet is no rate at all, and an alert on it
//! would stay silent until the first failure it should have caught.

pub mod traces;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The queues whose series are registered at start (the names `queue::QUEUES` uses;
/// kept here so this file stays a leaf, and checked against them by a test).
pub const QUEUES: [&str; 8] = [
    "execute-task",
    "sync-connector",
    "send-email",
    "deliver-email",
    "ingest-source",
    "run-trigger",
    "deliver-webhook",
    "purge-tenant",
];

/// How a job's attempt ended, as counted by `ocsuite_queue_jobs_finished_total`.
pub const JOB_OUTCOMES: [&str; 6] = [
    "succeeded",
    "retrying",
    "dead",
    "failed",
    "cancelled",
    "lease_lost",
];

/// Latency buckets for every `_seconds` histogram, 0.5 ms to 30 s, with an edge at
/// each SLO threshold (15 ms task start, 50 ms chat overhead, 300 ms API p95, 1 s) so
/// the SLO queries read exact counts rather than interpolations.
const BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// The process-wide Prometheus recorder (metrics macros use one global recorder, and
/// tests start many apps in one process). `None` if another recorder was installed
/// first.
pub fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            register();
            Some(handle)
        })
        .clone()
}

/// Descriptions, and zero-valued series for every label set known in advance.
fn register() {
    use metrics::{
        Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    };
    describe_gauge!("ocsuite_build_info", "1, labelled with the running version");
    gauge!("ocsuite_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method, route and status"
    );
    describe_gauge!(
        "ocsuite_queue_jobs",
        "Jobs in the queue by status (dead: in the queue's dead-letter queue); the same on every node"
    );
    describe_gauge!(
        "ocsuite_queue_oldest_ready_age_seconds",
        Unit::Seconds,
        "Age of the oldest job that is due and not started, 0 when none"
    );
    describe_histogram!(
        "ocsuite_queue_claim_duration_seconds",
        Unit::Seconds,
        "Time to claim a job"
    );
    describe_histogram!(
        "ocsuite_queue_settle_duration_seconds",
        Unit::Seconds,
        "Time to record a job's outcome (its settling transaction)"
    );
    describe_histogram!(
        "ocsuite_queue_start_delay_seconds",
        Unit::Seconds,
        "Time from a job becoming due to a worker claiming it"
    );
    describe_counter!(
        "ocsuite_queue_jobs_finished_total",
        "Attempts that ended, by queue and outcome"
    );
    for q in QUEUES {
        for status in ["ready", "paused", "running", "dead"] {
            gauge!("ocsuite_queue_jobs", "queue" => q, "status" => status).set(0.0);
        }
        gauge!("ocsuite_queue_oldest_ready_age_seconds", "queue" => q).set(0.0);
        let _ = histogram!("ocsuite_queue_claim_duration_seconds", "queue" => q);
        let _ = histogram!("ocsuite_queue_settle_duration_seconds", "queue" => q);
        let _ = histogram!("ocsuite_queue_start_delay_seconds", "queue" => q);
        for outcome in JOB_OUTCOMES {
            counter!("ocsuite_queue_jobs_finished_total", "queue" => q, "outcome" => outcome)
                .increment(0);
        }
    }
    describe_counter!(
        "ocsuite_llm_requests_total",
        "Model calls by provider, model and outcome (ok, error)"
    );
    describe_histogram!(
        "ocsuite_llm_time_to_first_token_seconds",
        Unit::Seconds,
        "The model server's time to the first token"
    );
    describe_counter!(
        "ocsuite_llm_tokens_total",
        "Tokens by provider, model and kind (prompt, completion)"
    );
    describe_gauge!(
        "ocsuite_llm_circuit_open",
        "1 while the circuit breaker in front of a model server is open"
    );
    describe_histogram!(
        "ocsuite_chat_overhead_seconds",
        Unit::Seconds,
        "Server time spent on a chat message before the model call starts"
    );
    let _ = histogram!("ocsuite_chat_overhead_seconds");
    describe_gauge!(
        "ocsuite_db_pool_connections",
        "Database connections by pool and state (idle, in_use)"
    );
    describe_gauge!(
        "ocsuite_db_pool_max_connections",
        "The most connections a pool opens"
    );
    describe_gauge!(
        "ocsuite_realtime_connections",
        "Open live-update connections by transport (websocket, sse)"
    );
    describe_counter!(
        "ocsuite_realtime_dropped_frames_total",
        "Events a slow subscriber missed (it was told to resync)"
    );
    for transport in ["websocket", "sse"] {
        gauge!("ocsuite_realtime_connections", "transport" => transport).set(0.0);
        counter!("ocsuite_realtime_dropped_frames_total", "transport" => transport).increment(0);
    }
}

/// A claim's round trip, found or not.
pub fn job_claimed(queue: &'static str, took: Duration) {
    metrics::histogram!("ocsuite_queue_claim_duration_seconds", "queue" => queue)
        .record(took.as_secs_f64());
}

/// A job started `delay` after it became due.
pub fn job_started(queue: &'static str, delay: Duration) {
    metrics::histogram!("ocsuite_queue_start_delay_seconds", "queue" => queue)
        .record(delay.as_secs_f64());
}

/// A job's attempt ended with `outcome` (one of [`JOB_OUTCOMES`]); `settle` is how long
/// recording it took, when it was recorded.
pub fn job_finished(queue: &'static str, outcome: &'static str, settle: Option<Duration>) {
    metrics::counter!("ocsuite_queue_jobs_finished_total", "queue" => queue, "outcome" => outcome)
        .increment(1);
    if let Some(took) = settle {
        metrics::histogram!("ocsuite_queue_settle_duration_seconds", "queue" => queue)
            .record(took.as_secs_f64());
    }
}

/// One queue's state in the database, read at scrape time.
pub struct QueueGauge<'a> {
    pub queue: &'a str,
    pub status: &'a str,
    pub jobs: i64,
}

/// Sets the queue gauges from a fresh reading: `depths` by queue and status (a
/// dead-letter queue's jobs count as its queue's `dead`), `oldest` the age of each
/// queue's oldest due job. Queues absent from the reading read 0.
pub fn queue_read(depths: &[QueueGauge<'_>], oldest: &[(String, f64)]) {
    for q in QUEUES {
        for status in ["ready", "paused", "running", "dead"] {
            let n: i64 = depths
                .iter()
                .filter(|d| {
                    d.status == status
                        && (d.queue == q
                            || (status == "dead" && d.queue.strip_suffix("-dlq") == Some(q)))
                })
                .map(|d| d.jobs)
                .sum();
            metrics::gauge!("ocsuite_queue_jobs", "queue" => q, "status" => status).set(n as f64);
        }
        let age = oldest
            .iter()
            .find(|(name, _)| name == q)
            .map(|(_, age)| age.max(0.0))
            .unwrap_or(0.0);
        metrics::gauge!("ocsuite_queue_oldest_ready_age_seconds", "queue" => q).set(age);
    }
}

/// One pool's connections, read at scrape time.
pub fn pool_read(pool: &'static str, open: u32, idle: usize, max: u32) {
    let idle = idle as f64;
    metrics::gauge!("ocsuite_db_pool_connections", "pool" => pool, "state" => "idle").set(idle);
    metrics::gauge!("ocsuite_db_pool_connections", "pool" => pool, "state" => "in_use")
        .set((f64::from(open) - idle).max(0.0));
    metrics::gauge!("ocsuite_db_pool_max_connections", "pool" => pool).set(f64::from(max));
}

/// One model call ended.
pub fn llm_call(
    provider: &'static str,
    model: &str,
    first_token: Option<Duration>,
    failed: bool,
    tokens: Option<(u32, u32)>,
) {
    let model = model.to_owned();
    let outcome = if failed { "error" } else { "ok" };
    metrics::counter!("ocsuite_llm_requests_total", "provider" => provider, "model" => model.clone(), "outcome" => outcome)
        .increment(1);
    if let Some(t) = first_token {
        metrics::histogram!("ocsuite_llm_time_to_first_token_seconds", "provider" => provider, "model" => model.clone())
            .record(t.as_secs_f64());
    }
    if let Some((prompt, completion)) = tokens {
        metrics::counter!("ocsuite_llm_tokens_total", "provider" => provider, "model" => model.clone(), "kind" => "prompt")
            .increment(u64::from(prompt));
        metrics::counter!("ocsuite_llm_tokens_total", "provider" => provider, "model" => model, "kind" => "completion")
            .increment(u64::from(completion));
    }
}

/// The circuit breaker in front of `provider` opened or closed.
pub fn circuit(provider: &'static str, open: bool) {
    metrics::gauge!("ocsuite_llm_circuit_open", "provider" => provider)
        .set(f64::from(u8::from(open)));
}

/// Time a chat message spent in the server before its model call started.
pub fn chat_overhead(took: Duration) {
    metrics::histogram!("ocsuite_chat_overhead_seconds").record(took.as_secs_f64());
}

/// A live connection, counted while it is held.
pub struct Connection(&'static str);

impl Connection {
    /// `transport`: `websocket` or `sse`.
    pub fn open(transport: &'static str) -> Self {
        metrics::gauge!("ocsuite_realtime_connections", "transport" => transport).increment(1.0);
        Self(transport)
    }

    /// The subscriber fell behind and missed `n` events.
    pub fn dropped(&self, n: u64) {
        metrics::counter!("ocsuite_realtime_dropped_frames_total", "transport" => self.0)
            .increment(n);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        metrics::gauge!("ocsuite_realtime_connections", "transport" => self.0).decrement(1.0);
    }
}
