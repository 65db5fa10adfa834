//! WebSocket delivery across two `serve` nodes on one PostgreSQL.
//!
//! Node A serves HTTP and runs the job workers (`BENCH_WORKERS`, 8); node B, started
//! from node A's config (same database, same master key), serves HTTP and WebSockets
//! with no workers, as a second web node would. Both run in this process, each with its
//! own pools, event bus and LISTEN connection, as separate processes have.
//!
//! `BENCH_SUBSCRIBERS` (1000) WebSocket clients subscribe to the `tasks` topic, half on
//! each node, all as the same user and company. After a warm-up task that every
//! subscriber must see (so node B's listener is up), `BENCH_FANOUT_TASKS` (100)
//! `diagnostics.echo` tasks are submitted on node A, 30 ms apart. Every event is
//! committed on node A: A's subscribers get it from A's bus, B's through PostgreSQL
//! (A's relay, `NOTIFY`, B's listener, B's bus).
//!
//! Each delivery's latency (event time → received) is reported for A's subscribers, B's
//! and all, and split into commit (event time → A's bus, after the commit), relay (A's
//! bus → B's bus) and fan-out (a node's bus → its subscribers). Every subscriber must
//! receive every task event stored in the database: a missing one fails the run.
//! Target: delivery p99 ≤ 15 ms on each node and overall. `BENCH_ENFORCE=1` exits 1 on a
//! miss.
//!
//! Needs `BENCH_DATABASE_URL` (runtime role) and `BENCH_MIGRATION_DATABASE_URL` (owner).
//! See bench/README.md.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ocsuite::ids::TenantId;
use ocsuite::store::scoped;
use ocsuite_bench_tasks::{
    Delivery, Res, Server, env_num, ms, percentile, record_bus, subscribe_tasks,
};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

const TARGET_P99_MS: f64 = 15.0;

/// Submits one no-op task on `node`.
async fn submit(http: &reqwest::Client, node: &Server) -> Res<()> {
    let res = http
        .post(format!("{}/api/v1/tasks/execute", node.base))
        .bearer_auth(&node.token)
        .header("x-tenant-id", &node.tenant)
        .json(&json!({"capability": "diagnostics.echo", "input": {}}))
        .send()
        .await?;
    let status = res.status();
    if !status.is_success() {
        let body = res.text().await.unwrap_or_default();
        return Err(format!("submitting a task: {status} {body}").into());
    }
    Ok(())
}

/// The tenant's stored task events with an id above `after`: (id, kind), oldest first.
async fn task_events(
    state: &ocsuite::AppState,
    tenant: &TenantId,
    after: i64,
) -> Res<Vec<(i64, String)>> {
    let mut tx = state.store.tenant_read(tenant).await?;
    let rows: Vec<(i64, String)> = tx
        .fetch_all(
            scoped(
                "SELECT id, kind FROM events \
                 WHERE tenant_id = $1 AND topic LIKE $2 AND id > $3 ORDER BY id",
            )
            .bind("task:%")
            .bind(after),
        )
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Runs a task on node A until every subscriber, on either node, has received its last
/// event (node B's listener may connect a moment after B starts); returns that event's
/// id: every measured event comes after it.
async fn warm_up(
    http: &reqwest::Client,
    a: &Server,
    tenant: &TenantId,
    rx: &mut UnboundedReceiver<Delivery>,
    subscribers: usize,
) -> Res<i64> {
    // The highest event id each subscriber received.
    let mut seen = vec![0i64; subscribers];
    for attempt in 1..=6 {
        submit(http, a).await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Ok(d) = rx.try_recv() {
                seen[d.sub] = seen[d.sub].max(d.id);
            }
            let events = task_events(&a.state, tenant, 0).await?;
            if let Some((last, kind)) = events.last()
                && kind == "succeeded"
                && seen.iter().all(|s| s >= last)
            {
                return Ok(*last);
            }
        }
        eprintln!("[nodes] warm-up {attempt}: not every subscriber got the task in 5 s; again");
    }
    let last = task_events(&a.state, tenant, 0)
        .await?
        .last()
        .map_or(0, |(id, _)| *id);
    let (on_a, on_b) = seen.split_at(subscribers - subscribers / 2);
    let behind = |group: &[i64]| group.iter().filter(|s| **s < last).count();
    Err(format!(
        "warm-up: after 6 tasks, {} of node A's and {} of node B's subscribers had not \
         received the last event (node B's arrive over PostgreSQL LISTEN/NOTIFY)",
        behind(on_a),
        behind(on_b),
    )
    .into())
}

/// p50, p95, p99 and max of `v`.
fn stats(v: &[f64]) -> [f64; 4] {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    [
        percentile(&v, 50.0),
        percentile(&v, 95.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
    ]
}

/// `| label | count | p50 | p95 | p99 | max |` of `v`, in ms.
fn cells(label: &str, count: &str, v: &[f64]) -> String {
    let [p50, p95, p99, max] = stats(v);
    format!("| {label} | {count} | {p50:.2} | {p95:.2} | {p99:.2} | {max:.2} |")
}

#[tokio::main]
async fn main() -> Res<()> {
    if std::env::var("BENCH_DATABASE_URL").is_err() {
        eprintln!(
            "fanout_nodes needs PostgreSQL: two serve nodes share one database and pass \
             events over its LISTEN/NOTIFY. Set BENCH_DATABASE_URL (runtime role) and \
             BENCH_MIGRATION_DATABASE_URL (owner); see bench/README.md."
        );
        std::process::exit(2);
    }
    let subscribers = env_num("BENCH_SUBSCRIBERS", 1000);
    let tasks = env_num("BENCH_FANOUT_TASKS", 100);
    let workers = env_num("BENCH_WORKERS", 8) as u32;
    // Subscribers 0..n_a are on node A, n_a.. on node B.
    let n_a = subscribers - subscribers / 2;
    let n_b = subscribers - n_a;

    let a = Server::start(|c| c.workers = workers).await?;
    let b = a.start_peer(|c| c.workers = 0).await?;
    let tenant = TenantId::parse(&a.tenant).ok_or("bad tenant id")?;
    let http = reqwest::Client::new();
    // When each event reached each node's bus; subscribed before the WebSocket sessions,
    // so woken before them.
    let (bus_a, rec_a) = record_bus(&a.state, &tenant);
    let (bus_b, rec_b) = record_bus(&b.state, &tenant);
    eprintln!("[nodes] opening {n_a} WebSocket subscribers on node A and {n_b} on node B");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
    let mut subs = subscribe_tasks(&a, n_a, 0, &tx).await?;
    subs.extend(subscribe_tasks(&b, n_b, n_a, &tx).await?);
    drop(tx);
    let after = warm_up(&http, &a, &tenant, &mut rx, subscribers).await?;

    eprintln!("[nodes] running {tasks} tasks on node A, 30 ms apart");
    for _ in 0..tasks {
        submit(&http, &a).await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Two seconds to settle, then up to ten more while tasks or deliveries are missing
    // (a late delivery still counts, with its latency).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let events = loop {
        while let Ok(d) = rx.try_recv() {
            if d.id > after {
                got.push(d);
            }
        }
        let events = task_events(&a.state, &tenant, after).await?;
        let done = events.iter().filter(|(_, k)| k == "succeeded").count() >= tasks;
        if (done && got.len() >= events.len() * subscribers) || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for s in &subs {
        s.abort();
    }
    rec_a.abort();
    rec_b.abort();
    let bus_a = bus_a.lock().map(|m| m.clone()).unwrap_or_default();
    let bus_b = bus_b.lock().map(|m| m.clone()).unwrap_or_default();
    b.stop().await;
    a.stop().await;

    // --- every subscriber × every stored event ---------------------------------------
    let expected: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
    let succeeded = events.iter().filter(|(_, k)| k == "succeeded").count();
    let mut received: Vec<HashSet<i64>> = vec![HashSet::new(); subscribers];
    // Per node (0: A, 1: B): delivery latencies, and bus → subscriber.
    let mut delivery = [Vec::new(), Vec::new()];
    let mut fanout = [Vec::new(), Vec::new()];
    let mut duplicates = 0usize;
    for d in &got {
        if !received[d.sub].insert(d.id) {
            duplicates += 1;
            continue;
        }
        let node = usize::from(d.sub >= n_a);
        delivery[node].push(d.ms);
        let bus = if node == 0 { &bus_a } else { &bus_b };
        if let Some((_, on_bus)) = bus.get(&d.id) {
            fanout[node].push(ms(*on_bus, d.received));
        }
    }
    let missing = |group: &[HashSet<i64>]| -> usize {
        group
            .iter()
            .map(|r| expected.iter().filter(|id| !r.contains(id)).count())
            .sum()
    };
    let (on_a, on_b) = received.split_at(n_a);
    let missing = [missing(on_a), missing(on_b)];
    let all: Vec<f64> = delivery.concat();
    let commit: Vec<f64> = expected
        .iter()
        .filter_map(|id| bus_a.get(id).map(|(at, bus)| ms(*at, *bus)))
        .collect();
    let relay: Vec<f64> = expected
        .iter()
        .filter_map(|id| Some(ms(bus_a.get(id)?.1, bus_b.get(id)?.1)))
        .collect();

    // --- report -----------------------------------------------------------------------
    let mut failed = succeeded < tasks;
    println!();
    println!("## WebSocket fan-out across two nodes (PostgreSQL)");
    println!();
    println!(
        "{subscribers} subscribers to `tasks` ({n_a} on node A, {n_b} on node B), {tasks} \
         `diagnostics.echo` tasks submitted on node A 30 ms apart ({succeeded} succeeded, \
         {} events), {workers} workers on node A and none on node B, {} CPUs.",
        expected.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| subscribers | deliveries | p50 ms | p95 ms | p99 ms | max ms | missing | target p99 | result |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let groups = [
        ("node A (local)", n_a, &delivery[0], missing[0]),
        ("node B (relayed)", n_b, &delivery[1], missing[1]),
        ("all", subscribers, &all, missing[0] + missing[1]),
    ];
    for (label, n, lat, miss) in groups {
        let p99 = stats(lat)[2];
        let ok = miss == 0 && p99 <= TARGET_P99_MS;
        failed |= !ok;
        let count = format!("{}/{}", lat.len(), n * expected.len());
        println!(
            "{} {miss} | ≤ {TARGET_P99_MS} ms | {} |",
            cells(&format!("{label}, {n}"), &count, lat),
            if ok { "ok" } else { "MISS" }
        );
    }
    println!();
    println!("| stage | measured | p50 ms | p95 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let per_event = |v: &[f64]| format!("{}/{} events", v.len(), expected.len());
    println!(
        "{}",
        cells(
            "commit: event time → node A's bus",
            &per_event(&commit),
            &commit
        )
    );
    println!(
        "{}",
        cells(
            "relay: node A's bus → node B's bus",
            &per_event(&relay),
            &relay
        )
    );
    for (node, label) in [
        (0usize, "fan-out on node A: bus → subscriber"),
        (1, "fan-out on node B: bus → subscriber"),
    ] {
        let count = format!("{} deliveries", fanout[node].len());
        println!("{}", cells(label, &count, &fanout[node]));
    }
    println!();
    if duplicates > 0 {
        println!("{duplicates} duplicate deliveries (counted once).");
    }
    if succeeded < tasks {
        println!("MISS: only {succeeded} of {tasks} tasks succeeded in time.");
    }
    println!("targets: {}", if failed { "MISSED" } else { "met" });
    if failed && std::env::var("BENCH_ENFORCE").is_ok_and(|v| v == "1") {
        std::process::exit(1);
    }
    Ok(())
}
