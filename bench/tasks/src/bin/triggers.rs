//! Proactive C-suite benchmark, against the real server (SQLite by default; PostgreSQL
//! with `BENCH_DATABASE_URL` / `BENCH_MIGRATION_DATABASE_URL`):
//!
//! 1. **Trigger evaluation at scale**: `BENCH_TRIGGER_TENANTS` companies (default
//!    10,000) with five metric triggers each (plus each one's weekly digest). Every
//!    company's figures change (a bookkeeping snapshot, half of them with runway under
//!    six months); then the scheduler runs until no trigger is due. Measured: the time
//!    from the last snapshot change to the last trigger evaluated, and the runs fired.
//!    Target: within one minute.
//! 2. **Webhook delivery**: `BENCH_WEBHOOK_SAMPLES` test messages (default 500), one at a
//!    time, to a local sink: from the API call that queues it to the sink receiving it,
//!    signed. Target p99 ≤ 50 ms.

use std::time::Instant;

use ocsuite::triggers::{Action, Condition, NewTrigger};
use ocsuite_bench_tasks::{Res, Server, backend, env_num, percentile};
use serde_json::{Value, json};

const RULES: [&str; 5] = [
    "runway_months < 6",
    "monthly_burn > 50000",
    "cash_balance < 1000",
    "uncategorized > 100",
    "revenue_last_month < 1",
];

/// A bookkeeping snapshot: runway under six months when `short`.
fn snapshot(short: bool) -> Vec<ocsuite_module_sdk::Metric> {
    vec![
        ocsuite::metrics::money("cash_balance", "Cash balance", 2_000_000, "USD"),
        ocsuite::metrics::money("monthly_burn", "Monthly burn", 500_000, "USD"),
        ocsuite::metrics::ratio(
            "runway_months",
            "Runway",
            if short { 4.0 } else { 12.0 },
            "months",
        ),
        ocsuite::metrics::count("uncategorized", "Uncategorised", 3, "transactions"),
        ocsuite::metrics::money("revenue_last_month", "Revenue", 100_000, "USD"),
    ]
}

async fn evaluation(tenants: usize) -> Res<(f64, f64, usize, usize)> {
    let server = Server::start(|c| {
        c.workers = 0;
        c.db_max_connections = 16;
    })
    .await?;
    let state = server.state.clone();
    let owner = {
        let me: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/me", server.base))
            .bearer_auth(&server.token)
            .send()
            .await?
            .json()
            .await?;
        ocsuite::ids::UserId::parse(me["user"]["id"].as_str().ok_or("me")?).ok_or("user id")?
    };
    eprintln!("creating {tenants} companies with 5 metric triggers each…");
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(tenants);
    let now = chrono::Utc::now();
    for i in 0..tenants {
        let t = ocsuite::tenancy::tenants::create(
            &state.store,
            &owner,
            &Default::default(),
            &format!("Company {i}"),
            Default::default(),
        )
        .await?;
        let id = ocsuite::ids::TenantId::parse(t.id.as_str()).ok_or("tenant id")?;
        let mut tx = state.store.tenant(&id).await?;
        for rule in RULES {
            let mut condition = Condition::Metric {
                rule: Some(rule.into()),
                metric: None,
                op: None,
                value: None,
                window: None,
            };
            condition.normalise()?;
            ocsuite::triggers::insert(
                &mut tx,
                NewTrigger {
                    name: rule.into(),
                    condition,
                    action: Action::Alert {
                        severity: ocsuite::alerts::Severity::Warning,
                        title: None,
                        body: None,
                    },
                    paused: false,
                    created_by: "bench".into(),
                },
                now,
            )
            .await?;
        }
        tx.commit().await?;
        ids.push(id);
    }
    eprintln!("  set up in {:.1} s", t0.elapsed().as_secs_f64());
    // Let the background scheduler give every trigger its first due time, then settle.
    while ocsuite::triggers::schedule::tick(&state).await? > 0 {}

    // Every company's figures change.
    let t_change = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let mut tx = state.store.tenant(id).await?;
        ocsuite::metrics::store(&mut tx, "bookkeeping", &snapshot(i % 2 == 0)).await?;
        tx.commit().await?;
    }
    let changed = t_change.elapsed().as_secs_f64();
    let t_eval = Instant::now();
    loop {
        let n = ocsuite::triggers::schedule::tick(&state).await?;
        if n == 0 && ocsuite::triggers::schedule::due_count(&state).await? == 0 {
            break;
        }
    }
    let evaluated = t_eval.elapsed().as_secs_f64();
    // The background scheduler ticks too: count the runs where they are.
    let mut fired = 0;
    for id in &ids {
        let mut tx = state.store.tenant_read(id).await?;
        let (n,): (i64,) = tx
            .fetch_one(ocsuite::store::scoped(
                "SELECT COUNT(*) FROM trigger_runs WHERE tenant_id = $1 AND reason = 'metric'",
            ))
            .await?;
        tx.commit().await?;
        fired += usize::try_from(n)?;
    }
    server.stop().await;
    Ok((changed, evaluated, fired, tenants * RULES.len()))
}

async fn webhooks(samples: usize) -> Res<(f64, f64)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let tx = tx.clone();
            async move {
                if headers.contains_key("webhook-signature") {
                    let _ = tx.send(Instant::now());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let server = Server::start(|_| {}).await?;
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("{}/api/v1/webhooks", server.base))
        .bearer_auth(&server.token)
        .header("x-tenant-id", &server.tenant)
        .json(&json!({"url": sink, "categories": ["alerts.critical"]}))
        .send()
        .await?
        .json()
        .await?;
    let id = v["webhook"]["id"]
        .as_str()
        .ok_or(format!("webhook: {v}"))?
        .to_owned();
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples + 20 {
        let t0 = Instant::now();
        let res = http
            .post(format!("{}/api/v1/webhooks/{id}/test", server.base))
            .bearer_auth(&server.token)
            .header("x-tenant-id", &server.tenant)
            .send()
            .await?;
        if res.status().as_u16() != 202 {
            return Err(format!("test: {}", res.text().await?).into());
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await?
            .ok_or("sink closed")?;
        if i >= 20 {
            ms.push(got.duration_since(t0).as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(f64::total_cmp);
    server.stop().await;
    Ok((percentile(&ms, 50.0), percentile(&ms, 99.0)))
}

#[tokio::main]
async fn main() -> Res<()> {
    let tenants = env_num("BENCH_TRIGGER_TENANTS", 10_000);
    let samples = env_num("BENCH_WEBHOOK_SAMPLES", 500);
    let (w50, w99) = webhooks(samples).await?;
    let (changed, evaluated, fired, triggers) = evaluation(tenants).await?;
    println!("proactive bench ({})", backend());
    println!(
        "trigger evaluation: {tenants} companies x 5 metric triggers ({triggers}): snapshots written in {changed:.1} s, \
         every trigger evaluated {evaluated:.1} s after the last change, {fired} runs fired (target <= 60 s)"
    );
    println!(
        "webhook delivery, API call to signed message at a local sink, {samples} messages: p50 {w50:.2} ms, p99 {w99:.2} ms (target p99 <= 50 ms)"
    );
    let ok = evaluated <= 60.0 && w99 <= 50.0;
    println!("targets: {}", if ok { "met" } else { "MISSED" });
    if !ok && std::env::var("BENCH_ENFORCE").is_ok() {
        std::process::exit(1);
    }
    Ok(())
}
