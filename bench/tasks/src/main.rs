//! Task pipeline benchmark, against the real server in this process on 127.0.0.1:0.
//!
//! 1. Saturated throughput: `BENCH_TASKS` no-op tasks (`diagnostics.echo`) are queued over
//!    HTTP by `BENCH_CLIENTS` concurrent clients; each is claimed, executed and committed
//!    one by one by the server's `BENCH_WORKERS` workers. Tasks/s from the first request
//!    to the last commit.
//! 2. Drain: the same number queued behind the kill switch, then released: what the
//!    workers alone sustain.
//!    Then the same number again, submitted 100 per request (`POST /tasks/execute-many`).
//! 3. Paced latency: `BENCH_RATE` tasks/s for `BENCH_RATE_SECS` seconds; enqueue-to-start
//!    (task `created_at` → `started_at`) percentiles at that steady load.
//! 4. Fan-out: `BENCH_SUBSCRIBERS` WebSocket clients subscribe to the `tasks` topic;
//!    `BENCH_FANOUT_TASKS` tasks run 30 ms apart; every event's delivery latency (event
//!    time → received by each subscriber) is measured, and split into commit (event time
//!    → the server's bus, after the event's transaction committed) and fan-out (bus →
//!    subscriber).
//!
//! SQLite by default (a temp dir); PostgreSQL with `BENCH_DATABASE_URL` (runtime role)
//! and `BENCH_MIGRATION_DATABASE_URL` (owner). `BENCH_ENFORCE=1` exits 1 on a missed
//! target. See bench/README.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ocsuite::ids::TenantId;
use ocsuite::store::sql;
use ocsuite_bench_tasks::{
    Delivery, Res, Server, backend, cpu_ms, env_num, ms, percentile, record_bus, subscribe_tasks,
};
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
    tenant: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Res<Value> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-tenant-id", &self.tenant)
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{path}: {status} {v}").into());
        }
        Ok(v)
    }
}

/// Queues `n` no-op tasks from `clients` concurrent HTTP clients, `batch` per request
/// (1: `POST /tasks/execute`; more: `POST /tasks/execute-many`).
async fn enqueue_echo(api: &Arc<Api>, clients: usize, n: usize, batch: usize) -> Res<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (api, next) = (api.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let echo = json!({"capability": "diagnostics.echo", "input": {}});
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= n {
                    break;
                }
                let take = batch.min(n - first);
                if batch == 1 {
                    api.post("/api/v1/tasks/execute", echo.clone()).await?;
                } else {
                    let tasks = vec![echo.clone(); take];
                    api.post("/api/v1/tasks/execute-many", json!({ "tasks": tasks }))
                        .await?;
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(())
}

/// The tenant's succeeded tasks, counted in the database.
async fn succeeded(state: &ocsuite::AppState, tenant: &TenantId) -> Res<usize> {
    let mut tx = state.store.tenant_read(tenant).await?;
    let (done,): (i64,) = tx
        .fetch_one(
            sql("SELECT count(*) FROM tasks WHERE tenant_id = $1 AND status = 'succeeded'")
                .bind(tenant),
        )
        .await?;
    tx.commit().await?;
    Ok(done as usize)
}

/// Waits until the tenant has `n` succeeded tasks (at most ten minutes from `since`).
///
/// Counting in the database every few milliseconds would make the bench a large part
/// of the load it measures (the count walks every finished task). So it follows the
/// server's own event bus and asks the database only when the events say the count may
/// have been reached, when it fell behind the bus, or once a second.
async fn wait_succeeded(
    state: &ocsuite::AppState,
    tenant: &TenantId,
    n: usize,
    since: Instant,
) -> Res<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = state.bus.subscribe(tenant);
    let mut estimate = succeeded(state, tenant).await?;
    loop {
        if estimate >= n {
            let done = succeeded(state, tenant).await?;
            if done >= n {
                return Ok(());
            }
            estimate = done;
        }
        if since.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {estimate} of {n} tasks succeeded in 10 minutes").into());
        }
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Ok(ev)) => {
                if ev.kind == "succeeded" {
                    estimate += 1;
                }
            }
            Ok(Err(RecvError::Lagged(_))) | Err(_) => estimate = succeeded(state, tenant).await?,
            Ok(Err(RecvError::Closed)) => return Err("the event bus closed".into()),
        }
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let tasks = env_num("BENCH_TASKS", 8_000);
    let clients = env_num("BENCH_CLIENTS", 32);
    let subscribers = env_num("BENCH_SUBSCRIBERS", 1000);
    let fanout_tasks = env_num("BENCH_FANOUT_TASKS", 100);
    let paced_rate = env_num("BENCH_RATE", 500);
    let paced_secs = env_num("BENCH_RATE_SECS", 10);
    let workers = env_num("BENCH_WORKERS", 8) as u32;

    let server = Server::start(|c| c.workers = workers).await?;
    let backend = backend();
    let (state, base, tenant) = (
        server.state.clone(),
        server.base.clone(),
        server.tenant.clone(),
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let token = server.token.clone();
    let api = Arc::new(Api {
        base: base.clone(),
        http,
        token,
        tenant: tenant.clone(),
    });
    // One tenant drives the whole bench: let it use every worker.
    api.http
        .patch(format!("{base}/api/v1/queues"))
        .bearer_auth(&api.token)
        .header("x-tenant-id", &tenant)
        .json(&json!({"concurrency": 64}))
        .send()
        .await?;
    let tenant_id = TenantId::parse(&tenant).ok_or("bad tenant id")?;

    // --- throughput -------------------------------------------------------------------
    eprintln!("[bench] {backend}: {tasks} no-op tasks from {clients} clients, {workers} workers");
    let started = Instant::now();
    let cpu_started = cpu_ms();
    enqueue_echo(&api, clients, tasks, 1).await?;
    let enqueued_in = started.elapsed();
    wait_succeeded(&state, &tenant_id, tasks, started).await?;
    let total = started.elapsed();
    let cpu_e2e = (cpu_ms() - cpu_started) / tasks as f64;
    let mut tx = state.store.tenant_read(&tenant_id).await?;
    let rows: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = tx
        .fetch_all(
            sql("SELECT created_at, started_at, finished_at FROM tasks WHERE tenant_id = $1 AND started_at IS NOT NULL AND finished_at IS NOT NULL")
                .bind(&tenant_id),
        )
        .await?;
    tx.commit().await?;
    let mut to_start: Vec<f64> = rows.iter().map(|(c, s, _)| ms(*c, *s)).collect();
    let mut to_finish: Vec<f64> = rows.iter().map(|(c, _, f)| ms(*c, *f)).collect();
    to_start.sort_by(f64::total_cmp);
    to_finish.sort_by(f64::total_cmp);
    let rate = tasks as f64 / total.as_secs_f64();

    // --- drain: the workers alone, on a backlog queued behind the kill switch ----------
    eprintln!("[bench] drain: {tasks} tasks queued while paused, then resumed");
    api.post("/api/v1/queues/pause", json!({})).await?;
    enqueue_echo(&api, clients, tasks, 1).await?;
    let drain_started = Instant::now();
    let cpu_started = cpu_ms();
    api.post("/api/v1/queues/resume", json!({})).await?;
    wait_succeeded(&state, &tenant_id, 2 * tasks, drain_started).await?;
    let drain_rate = tasks as f64 / drain_started.elapsed().as_secs_f64();
    let cpu_drain = (cpu_ms() - cpu_started) / tasks as f64;

    // --- bulk: the saturated load again, submitted 100 per request ---------------------
    let bulk_clients = (clients / 8).max(1);
    eprintln!("[bench] bulk: {tasks} tasks, 100 per request, from {bulk_clients} clients");
    let bulk_started = Instant::now();
    let cpu_started = cpu_ms();
    enqueue_echo(&api, bulk_clients, tasks, 100).await?;
    wait_succeeded(&state, &tenant_id, 3 * tasks, bulk_started).await?;
    let bulk_rate = tasks as f64 / bulk_started.elapsed().as_secs_f64();
    let cpu_bulk = (cpu_ms() - cpu_started) / tasks as f64;

    // --- paced: enqueue-to-start latency at a steady offered load ----------------------
    eprintln!("[bench] paced: {paced_rate} tasks/s for {paced_secs} s");
    // Task ids are time-ordered (UUIDv7), so every paced task's id sorts after this one:
    // the wait below reads them by primary key, not by scanning every task.
    let paced_after = ocsuite::ids::TaskId::new();
    let total_paced = paced_rate * paced_secs;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / paced_rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    for _ in 0..total_paced {
        tick.tick().await;
        let api = api.clone();
        inflight.spawn(async move {
            api.post(
                "/api/v1/tasks/execute",
                json!({"capability": "diagnostics.echo", "input": {}}),
            )
            .await
        });
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    let paced_deadline = Instant::now() + Duration::from_secs(120);
    let paced_rows = loop {
        let mut tx = state.store.tenant_read(&tenant_id).await?;
        let rows: Vec<(
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = tx
            .fetch_all(
                sql("SELECT created_at, started_at FROM tasks WHERE tenant_id = $1 AND id > $2")
                    .bind(&tenant_id)
                    .bind(&paced_after),
            )
            .await?;
        tx.commit().await?;
        if rows.len() >= total_paced && rows.iter().all(|(_, s)| s.is_some()) {
            break rows;
        }
        if Instant::now() > paced_deadline {
            return Err("paced tasks did not all start within 2 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if std::env::var("BENCH_PACED_TRACE").is_ok() {
        // Where the tail sits in time: the slowest start of each 250 ms of the phase.
        let first = paced_rows.iter().map(|(c, _)| *c).min();
        let mut worst: std::collections::BTreeMap<i64, f64> = Default::default();
        for (c, s) in &paced_rows {
            if let (Some(s), Some(first)) = (s, first) {
                let slot = (*c - first).num_milliseconds() / 250;
                let w = worst.entry(slot).or_insert(0.0);
                *w = w.max(ms(*c, *s));
            }
        }
        for (slot, w) in worst.iter().filter(|(_, w)| **w > 15.0) {
            eprintln!(
                "[paced] {:>6} ms into the phase: slowest start {w:.1} ms",
                slot * 250
            );
        }
    }
    let mut paced: Vec<f64> = paced_rows
        .iter()
        .filter_map(|(c, s)| s.map(|s| ms(*c, s)))
        .collect();
    paced.sort_by(f64::total_cmp);

    // --- fan-out ----------------------------------------------------------------------
    // When each event reached the server's bus (after its commit), to split a delivery's
    // latency into commit (event time → bus) and fan-out (bus → subscriber). Subscribed
    // before the WebSocket sessions, so it is woken first.
    let (on_bus, bus_task) = record_bus(&state, &tenant_id);
    eprintln!("[bench] opening {subscribers} WebSocket subscribers");
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
    let subs = subscribe_tasks(&server, subscribers, 0, &lat_tx).await?;
    drop(lat_tx);
    eprintln!("[bench] running {fanout_tasks} tasks to {subscribers} subscribers");
    for _ in 0..fanout_tasks {
        api.post(
            "/api/v1/tasks/execute",
            json!({"capability": "diagnostics.echo", "input": {}}),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in &subs {
        s.abort();
    }
    bus_task.abort();
    let on_bus = on_bus.lock().map(|m| m.clone()).unwrap_or_default();
    let mut deliveries = Vec::new();
    let mut fanout = Vec::new();
    let mut delivered = std::collections::HashSet::new();
    while let Ok(d) = lat_rx.try_recv() {
        deliveries.push(d.ms);
        delivered.insert(d.id);
        if let Some((_, bus)) = on_bus.get(&d.id) {
            fanout.push(ms(*bus, d.received));
        }
    }
    deliveries.sort_by(f64::total_cmp);
    fanout.sort_by(f64::total_cmp);
    let mut commit: Vec<f64> = on_bus
        .iter()
        .filter(|(id, _)| delivered.contains(*id))
        .map(|(_, (at, bus))| ms(*at, *bus))
        .collect();
    commit.sort_by(f64::total_cmp);
    let expected = subscribers * fanout_tasks * 3;

    server.stop().await;

    // --- report -----------------------------------------------------------------------
    let mut failed = false;
    let mut row = |label: &str, value: String, target: &str, ok: bool| {
        failed |= !ok;
        println!(
            "{label:<40} {value:>12} {target:>12} {:>6}",
            if ok { "ok" } else { "MISS" }
        );
    };
    println!();
    println!(
        "ocsuite task bench: backend={backend}, {tasks} tasks, {clients} clients, {workers} workers, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<40} {:>12} {:>12} {:>6}",
        "measure", "value", "target", "result"
    );
    row(
        "no-op tasks/s (end to end)",
        format!("{rate:.0}"),
        ">= 1500",
        rate >= 1500.0,
    );
    row(
        "enqueue rate (requests/s)",
        format!("{:.0}", tasks as f64 / enqueued_in.as_secs_f64()),
        "",
        true,
    );
    row(
        "tasks/s end to end, 100 per request",
        format!("{bulk_rate:.0}"),
        "",
        true,
    );
    row(
        "drain rate (claim+run+commit/s)",
        format!("{drain_rate:.0}"),
        "",
        true,
    );
    row(
        "CPU ms per task, this process: end to end / bulk / drain",
        format!("{cpu_e2e:.2} / {cpu_bulk:.2} / {cpu_drain:.2}"),
        "",
        true,
    );
    row(
        "enqueue-to-start p99 ms, saturated",
        format!("{:.2}", percentile(&to_start, 99.0)),
        "",
        true,
    );
    let p99s = percentile(&paced, 99.0);
    row(
        &format!("enqueue-to-start p50 ms @ {paced_rate}/s"),
        format!("{:.2}", percentile(&paced, 50.0)),
        "",
        true,
    );
    row(
        &format!("enqueue-to-start p99 ms @ {paced_rate}/s"),
        format!("{p99s:.2}"),
        "<= 15",
        p99s <= 15.0,
    );
    row(
        "enqueue-to-finish p99 ms",
        format!("{:.2}", percentile(&to_finish, 99.0)),
        "",
        true,
    );
    let p99d = percentile(&deliveries, 99.0);
    row(
        "WS deliveries (received/expected)",
        format!("{}/{}", deliveries.len(), expected),
        "all",
        deliveries.len() >= expected,
    );
    row(
        "WS delivery p50 ms",
        format!("{:.2}", percentile(&deliveries, 50.0)),
        "",
        true,
    );
    row(
        "WS delivery p99 ms",
        format!("{p99d:.2}"),
        "<= 10",
        p99d <= 10.0,
    );
    row(
        "  of which commit p50 / p99 ms",
        format!(
            "{:.2} / {:.2}",
            percentile(&commit, 50.0),
            percentile(&commit, 99.0)
        ),
        "",
        true,
    );
    row(
        "  of which fan-out p50 / p99 ms",
        format!(
            "{:.2} / {:.2}",
            percentile(&fanout, 50.0),
            percentile(&fanout, 99.0)
        ),
        "",
        true,
    );
    println!();
    if failed && std::env::var("BENCH_ENFORCE").is_ok_and(|v| v == "1") {
        std::process::exit(1);
    }
    Ok(())
}
