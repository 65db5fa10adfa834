//! Board meeting benchmark: what orchestration costs on top of the model.
//!
//! A fake OpenAI-compatible upstream in this process answers instantly (a 20-chunk
//! position, or the action items as JSON when asked for structured output). First
//! `BENCH_BOARD_SAMPLES` meetings run one after another (CEO, CFO and CMO, two rounds):
//! each reports `overhead_ms` in `meeting_end`, the server's own measure of everything
//! except waiting for the model (prompts, stream relay, the final transaction). Then
//! `BENCH_BOARD_CONCURRENT` meetings are held at once, and every one must end with
//! `meeting_end`. SQLite by default; PostgreSQL with `BENCH_DATABASE_URL` /
//! `BENCH_MIGRATION_DATABASE_URL`. See bench/README.md.

use std::time::Instant;

use futures_util::StreamExt;
use ocsuite_bench_tasks::{Res, Server, backend, env_num, percentile};
use serde_json::{Value, json};

fn chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

async fn fake_upstream() -> Res<String> {
    let tail = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 400, "completion_tokens": 60}})
    );
    let position: String = (0..20)
        .map(|i| chunk(&format!("w{i} ")))
        .collect::<String>()
        + &tail;
    let items = json!({"items": [
        {"title": "Record the decision", "description": "d", "owner": "ceo", "capability": "diagnostics.echo",
         "input_json": "{\"note\": \"bench\"}", "priority": "low", "due_date": null, "expected_impact": "trace"},
        {"title": "Review pricing", "description": "d", "owner": "cfo", "capability": null,
         "input_json": null, "priority": "high", "due_date": "2026-12-31", "expected_impact": "margin"}
    ]});
    let structured = chunk(&items.to_string()) + &tail;
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |body: String| {
            let out = if body.contains("response_format") {
                structured.clone()
            } else {
                position.clone()
            };
            async move {
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from(out))
                    .unwrap_or_default()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}

/// Where meetings are held, and as whom.
#[derive(Clone)]
struct Target {
    base: String,
    token: String,
    tenant: String,
}

/// Holds one meeting; returns its `meeting_end` data and the client-side wall time.
async fn hold(http: &reqwest::Client, at: &Target, agenda: &str) -> Res<(Value, f64)> {
    let t0 = Instant::now();
    let res = http
        .post(format!("{}/api/v1/c-suite/board-meeting", at.base))
        .bearer_auth(&at.token)
        .header("x-tenant-id", &at.tenant)
        .json(&json!({"agenda": agenda, "rounds": 2}))
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("status {}: {}", res.status(), res.text().await?).into());
    }
    let mut stream = res.bytes_stream();
    let mut all = String::new();
    while let Some(c) = stream.next().await {
        all.push_str(&String::from_utf8_lossy(&c?));
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let end = all
        .split("\n\n")
        .find(|f| f.starts_with("event: meeting_end"))
        .and_then(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .ok_or_else(|| {
            format!(
                "no meeting_end in: …{}",
                &all[all.len().saturating_sub(300)..]
            )
        })?;
    Ok((serde_json::from_str(end)?, ms))
}

#[tokio::main]
async fn main() -> Res<()> {
    let samples = env_num("BENCH_BOARD_SAMPLES", 300);
    let concurrent = env_num("BENCH_BOARD_CONCURRENT", 100);
    let upstream = fake_upstream().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let server = Server::start(|c| {
        c.plan_free_monthly_tokens = u64::MAX / 4;
        c.plan_free_chats_per_minute = 1_000_000;
        c.llm_base_url = format!("{upstream}/v1");
        c.llm_api_key = Some(ocsuite::config::Secret::new("sk-bench"));
        c.llm_model = "bench-model".into();
    })
    .await?;

    let target = Target {
        base: server.base.clone(),
        token: server.token.clone(),
        tenant: server.tenant.clone(),
    };
    let mut overhead = Vec::new();
    let mut wall = Vec::new();
    let mut setup = Vec::new();
    let mut store = Vec::new();
    for i in 0..samples + 10 {
        let (end, ms) = hold(&http, &target, &format!("Raise prices? (sample {i})")).await?;
        if i >= 10 {
            overhead.push(end["overhead_ms"].as_f64().unwrap_or(f64::NAN));
            setup.push(end["setup_ms"].as_f64().unwrap_or(f64::NAN));
            store.push(end["store_ms"].as_f64().unwrap_or(f64::NAN));
            wall.push(ms);
        }
    }
    for v in [&mut overhead, &mut wall, &mut setup, &mut store] {
        v.sort_by(f64::total_cmp);
    }

    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..concurrent {
        let (http, target) = (http.clone(), target.clone());
        set.spawn(async move {
            hold(&http, &target, &format!("Concurrent meeting {i}"))
                .await
                .map(|_| ())
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => ok += 1,
            other => {
                if failed == 0 {
                    eprintln!("[bench] first failed meeting: {other:?}");
                }
                failed += 1;
            }
        }
    }
    let took = started.elapsed();
    server.stop().await;

    let p99 = percentile(&overhead, 99.0);
    println!();
    println!(
        "ocsuite board bench: backend={}, {samples} sequential meetings (3 members, 2 rounds), {concurrent} concurrent",
        backend()
    );
    println!(
        "{:<44} {:>14} {:>10} {:>6}",
        "measure", "value", "target", "result"
    );
    println!(
        "{:<44} {:>14} {:>10} {:>6}",
        "orchestration overhead p50 / p99 ms",
        format!("{:.2} / {:.2}", percentile(&overhead, 50.0), p99),
        "<= 5",
        if p99 <= 5.0 { "ok" } else { "MISS" }
    );
    for (label, v) in [
        ("  of which setup (checks, hold, row)", &setup),
        ("  of which the final transaction", &store),
    ] {
        println!(
            "{:<44} {:>14} {:>10} {:>6}",
            format!("{label} p50 / p99 ms"),
            format!("{:.2} / {:.2}", percentile(v, 50.0), percentile(v, 99.0)),
            "",
            ""
        );
    }
    println!(
        "{:<44} {:>14} {:>10} {:>6}",
        "meeting wall time p50 / p99 ms (fake model)",
        format!(
            "{:.2} / {:.2}",
            percentile(&wall, 50.0),
            percentile(&wall, 99.0)
        ),
        "",
        ""
    );
    println!(
        "{:<44} {:>14} {:>10} {:>6}",
        format!("{concurrent} concurrent meetings: completed / failed"),
        format!("{ok} / {failed}"),
        "0 failed",
        if failed == 0 { "ok" } else { "MISS" }
    );
    println!(
        "{:<44} {:>14} {:>10} {:>6}",
        "  all done in s",
        format!("{:.2}", took.as_secs_f64()),
        "",
        ""
    );
    Ok(())
}
