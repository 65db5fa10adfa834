//! What the benchmarks share: settings from the environment, percentiles, a real server
//! in this process with one signed-up user and tenant (and more nodes on its database),
//! and WebSocket subscribers timing the task events they receive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use ocsuite::config::{Config, Secret};
use ocsuite::ids::TenantId;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time this process has used so far (user + system, all threads), in ms, from
/// `/proc/self/stat` (Linux; clock ticks of 10 ms). With the server, its database
/// (SQLite) and the load generator in one process, CPU per task over a phase is the
/// whole cost of a task, and `2 CPUs / that` its ceiling on this machine. NaN elsewhere.
pub fn cpu_ms() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The fields after the command name (which may hold spaces) start after ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) * 10.0,
        _ => f64::NAN,
    }
}

/// The `p`th percentile of an ascending slice (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Milliseconds from `from` to `to`.
pub fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// `postgres` with `BENCH_DATABASE_URL`, else `sqlite`.
pub fn backend() -> &'static str {
    if std::env::var("BENCH_DATABASE_URL").is_ok() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// The server on 127.0.0.1:0 and the user and tenant that drive it.
pub struct Server {
    pub state: ocsuite::AppState,
    pub base: String,
    pub token: String,
    pub tenant: String,
    dir: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Starts on SQLite in a temp dir, or on `BENCH_DATABASE_URL` (runtime role) with
    /// `BENCH_MIGRATION_DATABASE_URL` (owner); rate limits out of the way; `tweak` last.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Res<Self> {
        let dir = temp_dir()?;
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        let mut c = Config {
            data_dir: dir.clone(),
            master_key: Some(Secret::new(
                base64::engine::general_purpose::STANDARD.encode(key),
            )),
            rate_limit_auth_per_minute: 1_000_000,
            rate_limit_api_per_second: 1_000_000,
            rate_limit_api_burst: 1_000_000,
            db_max_connections: 32,
            ..Config::default()
        };
        // The benches measure the queue, search and triggers, not the plans: the free
        // plan is unlimited here.
        c.plans.free = ocsuite::config::EntitlementsConfig {
            seats: Some(-1),
            api_keys: Some(-1),
            triggers: Some(-1),
            mcp_servers: Some(-1),
            tasks_per_day: Some(-1),
            knowledge_mb: Some(-1),
            modules: None,
        };
        match std::env::var("BENCH_DATABASE_URL") {
            Ok(url) => {
                c.database_url = url;
                c.migration_database_url = std::env::var("BENCH_MIGRATION_DATABASE_URL").ok();
            }
            Err(_) => c.database_url = format!("sqlite://{}/ocsuite.db", dir.display()),
        }
        tweak(&mut c);
        let (state, base, stop, handle) = launch(c).await?;
        let http = reqwest::Client::new();
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
        let v: Value = http
            .post(format!("{base}/api/v1/auth/signup"))
            .json(&json!({"email": email, "password": "bench password 123", "name": "Bench"}))
            .send()
            .await?
            .json()
            .await?;
        let token = v["token"].as_str().ok_or("signup failed")?.to_owned();
        let v: Value = http
            .post(format!("{base}/api/v1/tenants"))
            .bearer_auth(&token)
            .json(&json!({"name": "Bench Co"}))
            .send()
            .await?
            .json()
            .await?;
        let tenant = v["id"].as_str().ok_or("tenant creation failed")?.to_owned();
        Ok(Self {
            state,
            base,
            token,
            tenant,
            dir,
            stop,
            handle,
        })
    }

    /// Another node of the same deployment in this process: this one's config (database,
    /// master key) with its own temp dir, `tweak` last, signed in as the same user and
    /// tenant (sessions live in the database). On PostgreSQL each node has its own pools,
    /// bus and LISTEN connection, so events cross between them as between separate
    /// processes; on SQLite they do not cross.
    pub async fn start_peer(&self, tweak: impl FnOnce(&mut Config)) -> Res<Self> {
        let dir = temp_dir()?;
        let mut c = self.state.config.clone();
        c.data_dir = dir.clone();
        tweak(&mut c);
        let (state, base, stop, handle) = launch(c).await?;
        Ok(Self {
            state,
            base,
            token: self.token.clone(),
            tenant: self.tenant.clone(),
            dir,
            stop,
            handle,
        })
    }

    /// Shuts the server down and removes its temp dir.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> Res<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ocsuite-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

type Running = (
    ocsuite::AppState,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Prepares `c` and serves it on 127.0.0.1:0: the state, base URL, stop signal and task.
async fn launch(c: Config) -> Res<Running> {
    let state = ocsuite::prepare(c).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(ocsuite::serve(state.clone(), listener, async move {
        let _ = rx.await;
    }));
    Ok((state, base, stop, handle))
}

/// Event id → (event time, when it reached a node's bus).
pub type BusTimes = Arc<Mutex<HashMap<i64, (DateTime<Utc>, DateTime<Utc>)>>>;

/// Records, until the task is aborted, when each of `tenant`'s events reaches `state`'s
/// bus: on the node that committed it, just after the commit; on another node, when the
/// relay brought it there. Call it before opening the WebSocket sessions, so it is woken
/// before them.
pub fn record_bus(
    state: &ocsuite::AppState,
    tenant: &TenantId,
) -> (BusTimes, tokio::task::JoinHandle<()>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = state.bus.subscribe(tenant);
    let times = BusTimes::default();
    let task = {
        let times = times.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let now = Utc::now();
                        if let Ok(mut m) = times.lock() {
                            m.insert(ev.id, (ev.at, now));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        })
    };
    (times, task)
}

/// One event as one WebSocket subscriber received it.
pub struct Delivery {
    /// The subscriber: `first` + its index in [`subscribe_tasks`].
    pub sub: usize,
    /// The event's id.
    pub id: i64,
    /// Event time → received, in ms.
    pub ms: f64,
    pub received: DateTime<Utc>,
}

/// A server message as the subscribers read it.
#[derive(serde::Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    at: Option<&'a str>,
    id: Option<i64>,
}

/// Opens `n` WebSocket sessions on `server` as its user and tenant, subscribes each to
/// the `tasks` topic and waits until all are subscribed (one minute at most). Each event
/// a session receives goes to `out`, numbered `first + i`. Abort the handles to close.
pub async fn subscribe_tasks(
    server: &Server,
    n: usize,
    first: usize,
    out: &tokio::sync::mpsc::UnboundedSender<Delivery>,
) -> Res<Vec<tokio::task::JoinHandle<()>>> {
    let ws_url = format!("{}/api/v1/ws", server.base.replace("http://", "ws://"));
    let ready = Arc::new(AtomicUsize::new(0));
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        let mut req = ws_url.as_str().into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {}", server.token).parse()?);
        req.headers_mut()
            .insert("x-tenant-id", server.tenant.parse()?);
        // A small read buffer: tungstenite zero-fills the whole buffer (128 KiB by
        // default) before each read, which would make the subscribers, not the server,
        // the measured cost.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
        ws.send(Message::Text(
            json!({"type": "subscribe", "topic": "tasks"})
                .to_string()
                .into(),
        ))
        .await?;
        let (out, ready, sub) = (out.clone(), ready.clone(), first + i);
        subs.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else {
                    continue;
                };
                let now = Utc::now();
                // Only the fields the bench needs, borrowed: a subscriber that builds a
                // whole JSON tree per event would spend the shared CPU the server's
                // fan-out is measured on.
                let Ok(msg) = serde_json::from_str::<Incoming<'_>>(&t) else {
                    continue;
                };
                match msg.kind {
                    "subscribed" => {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    "event" => {
                        let at = msg.at.and_then(|a| DateTime::parse_from_rfc3339(a).ok());
                        if let Some(at) = at {
                            let _ = out.send(Delivery {
                                sub,
                                id: msg.id.unwrap_or(0),
                                ms: ms(at.with_timezone(&Utc), now),
                                received: now,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {n} WebSocket sessions on {} subscribed within a minute",
                ready.load(Ordering::Relaxed),
                server.base
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(subs)
}
