//! LLM gateway benchmark: what ocsuite adds on top of the model server.
//!
//! A fake OpenAI-compatible upstream in this process streams instantly. Time to first
//! token (TTFT) is measured from the client side, `BENCH_CHAT_SAMPLES` times one after
//! another, (a) calling the fake upstream directly and (b) through
//! `POST /api/v1/c-suite/ceo/chat`; the gateway's overhead is the difference. Then
//! `BENCH_CHAT_STREAMS` chats are opened at once against an upstream that streams for a
//! few seconds, and every one must complete. SQLite by default; PostgreSQL with
//! `BENCH_DATABASE_URL` / `BENCH_MIGRATION_DATABASE_URL`. See bench/README.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ocsuite_bench_tasks::{Res, Server, backend, env_num, percentile};
use serde_json::json;

fn chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// The fake upstream: `/fast/v1/…` streams 20 chunks at once; `/slow/v1/…` one chunk
/// every 100 ms for `slow_chunks` chunks.
async fn fake_upstream(slow_chunks: u32) -> Res<String> {
    let tail = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 20}})
    );
    let fast_body: String = (0..20)
        .map(|i| chunk(&format!("w{i} ")))
        .collect::<String>()
        + &tail;
    let tail2 = tail.clone();
    let router = axum::Router::new()
        .route(
            "/fast/v1/chat/completions",
            axum::routing::post(move || {
                let body = fast_body.clone();
                async move {
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(axum::body::Body::from(body))
                        .unwrap_or_default()
                }
            }),
        )
        .route(
            "/slow/v1/chat/completions",
            axum::routing::post(move || {
                let tail = tail2.clone();
                async move {
                    let s = futures_util::stream::unfold(0u32, move |i| {
                        let tail = tail.clone();
                        async move {
                            if i > slow_chunks {
                                return None;
                            }
                            if i == slow_chunks {
                                return Some((Ok::<_, std::convert::Infallible>(tail), i + 1));
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Ok(chunk("tick ")), i + 1))
                        }
                    });
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(axum::body::Body::from_stream(s))
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

/// Milliseconds until the first response bytes that contain `marker`.
async fn ttft(req: reqwest::RequestBuilder, marker: &str) -> Res<f64> {
    let t0 = Instant::now();
    let res = req.send().await?;
    if !res.status().is_success() {
        return Err(format!("status {}", res.status()).into());
    }
    let mut s = res.bytes_stream();
    let mut seen = String::new();
    while let Some(c) = s.next().await {
        seen.push_str(&String::from_utf8_lossy(&c?));
        if seen.contains(marker) {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            while s.next().await.is_some() {}
            return Ok(ms);
        }
    }
    Err("the stream ended before the first token".into())
}

/// A server whose model is the fake upstream's fast or slow endpoint.
async fn start(upstream: &str, slow: bool) -> Res<Server> {
    Server::start(|c| {
        c.plan_free_monthly_tokens = u64::MAX / 4;
        c.plan_free_chats_per_minute = 1_000_000;
        c.llm_base_url = format!("{upstream}/{}/v1", if slow { "slow" } else { "fast" });
        c.llm_api_key = Some(ocsuite::config::Secret::new("sk-bench"));
        c.llm_model = "bench-model".into();
    })
    .await
}

#[tokio::main]
async fn main() -> Res<()> {
    let samples = env_num("BENCH_CHAT_SAMPLES", 500);
    let streams = env_num("BENCH_CHAT_STREAMS", 1000);
    let upstream = fake_upstream(30).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .build()?;
    let backend = backend();

    // --- TTFT, sequential -------------------------------------------------------------
    let server = start(&upstream, false).await?;
    let (app, token, tenant) = (
        server.base.clone(),
        server.token.clone(),
        server.tenant.clone(),
    );
    let body = json!({"model": "bench-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut direct = Vec::new();
    let mut via = Vec::new();
    for i in 0..samples + 20 {
        let d = ttft(
            http.post(format!("{upstream}/fast/v1/chat/completions"))
                .json(&body),
            "\"content\"",
        )
        .await?;
        let g = ttft(
            http.post(format!("{app}/api/v1/c-suite/ceo/chat"))
                .bearer_auth(&token)
                .header("x-tenant-id", &tenant)
                .json(&json!({"message": format!("question {i}")})),
            "event: delta",
        )
        .await?;
        if i >= 20 {
            direct.push(d);
            via.push(g);
        }
    }
    server.stop().await;
    direct.sort_by(f64::total_cmp);
    via.sort_by(f64::total_cmp);

    // --- concurrent streams -----------------------------------------------------------
    let server = start(&upstream, true).await?;
    let (app, token, tenant) = (
        server.base.clone(),
        server.token.clone(),
        server.tenant.clone(),
    );
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..streams {
        let (http, app, token, tenant, open, peak) = (
            http.clone(),
            app.clone(),
            token.clone(),
            tenant.clone(),
            open.clone(),
            peak.clone(),
        );
        set.spawn(async move {
            let res = http
                .post(format!("{app}/api/v1/c-suite/ceo/chat"))
                .bearer_auth(&token)
                .header("x-tenant-id", &tenant)
                .json(&json!({"message": format!("stream {i}")}))
                .send()
                .await?;
            let mut s = res.bytes_stream();
            let mut all = String::new();
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            while let Some(c) = s.next().await {
                all.push_str(&String::from_utf8_lossy(&c?));
            }
            open.fetch_sub(1, Ordering::SeqCst);
            if !all.contains("event: message_end") {
                let tail: String = all
                    .chars()
                    .rev()
                    .take(300)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(format!("stream ended without message_end: …{tail}").into());
            }
            Ok::<bool, Box<dyn std::error::Error + Send + Sync>>(true)
        });
    }
    let mut completed = 0;
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(true)) => completed += 1,
            other => {
                if failed == 0 {
                    eprintln!("[bench] first failed stream: {other:?}");
                }
                failed += 1;
            }
        }
    }
    let took = started.elapsed();
    server.stop().await;

    let overhead50 = percentile(&via, 50.0) - percentile(&direct, 50.0);
    let overhead99 = percentile(&via, 99.0) - percentile(&direct, 99.0);
    let mut failed_target = false;
    let mut row = |label: &str, value: String, target: &str, ok: bool| {
        failed_target |= !ok;
        println!(
            "{label:<44} {value:>12} {target:>10} {:>6}",
            if ok { "ok" } else { "MISS" }
        );
    };
    println!();
    println!(
        "ocsuite gateway bench: backend={backend}, {samples} sequential samples, {streams} concurrent streams"
    );
    println!(
        "{:<44} {:>12} {:>10} {:>6}",
        "measure", "value", "target", "result"
    );
    row(
        "TTFT direct to upstream p50 / p99 ms",
        format!(
            "{:.2} / {:.2}",
            percentile(&direct, 50.0),
            percentile(&direct, 99.0)
        ),
        "",
        true,
    );
    row(
        "TTFT through ocsuite p50 / p99 ms",
        format!(
            "{:.2} / {:.2}",
            percentile(&via, 50.0),
            percentile(&via, 99.0)
        ),
        "",
        true,
    );
    row(
        "gateway overhead p50 ms",
        format!("{overhead50:.2}"),
        "",
        true,
    );
    row(
        "gateway overhead p99 ms",
        format!("{overhead99:.2}"),
        "<= 1",
        overhead99 <= 1.0,
    );
    row(
        "concurrent streams completed",
        format!("{completed}/{streams}"),
        "all",
        completed == streams && failed == 0,
    );
    row(
        "peak streams open at once",
        format!("{}", peak.load(Ordering::SeqCst)),
        &format!(">= {streams}"),
        peak.load(Ordering::SeqCst) >= streams,
    );
    row(
        "time for all streams s",
        format!("{:.1}", took.as_secs_f64()),
        "",
        true,
    );
    println!();
    if failed_target && std::env::var("BENCH_ENFORCE").is_ok_and(|v| v == "1") {
        std::process::exit(1);
    }
    Ok(())
}
