//! Tool-use benchmark: what one tool step adds to an answer, excluding the model and
//! the capability's own work.
//!
//! Two measures, both against the real server (SQLite by default; PostgreSQL with
//! `BENCH_DATABASE_URL` / `BENCH_MIGRATION_DATABASE_URL`):
//!
//! 1. **Per call, in process**: `agents::tools::call` on `diagnostics.echo` (which does
//!    no work), `BENCH_TOOL_SAMPLES` times: resolving and checking the call, running it,
//!    and writing its task, timeline and audit in one transaction. This is the
//!    orchestration a tool step adds; target p99 ≤ 2 ms.
//! 2. **End to end**: a chat answer with one tool step against an instant fake model,
//!    minus the same answer without the step, minus one direct call to the fake model
//!    (the extra model call the step needs): the step's cost as a client sees it,
//!    HTTP and SSE included.

use std::time::Instant;

use futures_util::StreamExt;
use ocsuite_bench_tasks::{Res, Server, backend, env_num, percentile};
use serde_json::{Value, json};

/// The fake model: answers a turn that ends in tool results with text, one that offers
/// tools (unless the question says "plain") with a call to `diagnostics__echo`.
async fn fake_model() -> Res<String> {
    fn sse(chunks: &[Value]) -> axum::response::Response {
        let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        body.push_str(&format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 5}})
        ));
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from(body))
            .unwrap_or_default()
    }
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
            let msgs = body["messages"].as_array().cloned().unwrap_or_default();
            let last = msgs.last().cloned().unwrap_or_default();
            let plain = last["content"].as_str().is_some_and(|c| c.contains("plain"));
            if last["role"] == "tool" || plain || body.get("tools").is_none() {
                return sse(&[
                    json!({"choices": [{"index": 0, "delta": {"content": "Done."}}]}),
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                ]);
            }
            sse(&[
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1",
                    "function": {"name": "diagnostics__echo", "arguments": "{\"note\":\"bench\"}"}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            ])
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}

/// Milliseconds until the stream's `message_end`.
async fn answer(req: reqwest::RequestBuilder) -> Res<f64> {
    let t0 = Instant::now();
    let res = req.send().await?;
    if !res.status().is_success() {
        return Err(format!("status {}", res.status()).into());
    }
    let mut s = res.bytes_stream();
    let mut seen = String::new();
    while let Some(c) = s.next().await {
        seen.push_str(&String::from_utf8_lossy(&c?));
    }
    if !seen.contains("message_end") {
        return Err(format!("the answer did not finish: {seen}").into());
    }
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(v, 50.0), percentile(v, 99.0))
}

#[tokio::main]
async fn main() -> Res<()> {
    let samples = env_num("BENCH_TOOL_SAMPLES", 2000);
    let turns = env_num("BENCH_TOOL_TURNS", 300);
    let model = fake_model().await?;
    let server = Server::start(|c| {
        c.plan_free_monthly_tokens = u64::MAX / 4;
        c.plan_free_chats_per_minute = 1_000_000;
        c.llm_base_url = format!("{model}/v1");
        c.llm_api_key = Some(ocsuite::config::Secret::new("sk-bench"));
        c.llm_model = "bench-model".into();
    })
    .await?;
    let http = reqwest::Client::new();
    let (base, token, tenant) = (
        server.base.clone(),
        server.token.clone(),
        server.tenant.clone(),
    );
    let res = http
        .post(format!("{base}/api/v1/agents"))
        .bearer_auth(&token)
        .header("x-tenant-id", &tenant)
        .json(
            &json!({"slug": "echoer", "name": "Echoer", "title": "Bench",
                      "instructions": "Echo.", "capabilities": ["diagnostics.echo"]}),
        )
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("agent: {}", res.text().await?).into());
    }

    // --- 1. one call, in process ---------------------------------------------------
    let tenant_id = ocsuite::ids::TenantId::parse(&tenant).ok_or("tenant id")?;
    let toolbox = {
        let mut tx = server.state.store.tenant_read(&tenant_id).await?;
        let t = ocsuite::agents::tools::Toolbox::load(
            &server.state.registry,
            &mut tx,
            vec!["diagnostics.echo".into()],
        )
        .await?;
        tx.commit().await?;
        t
    };
    let caller = ocsuite::agents::tools::Caller {
        tenant: &tenant_id,
        agent: "echoer",
        conversation: None,
        meeting: None,
    };
    let call = ocsuite::llm::ToolCall {
        id: "c1".into(),
        name: "diagnostics__echo".into(),
        arguments: r#"{"note":"bench"}"#.into(),
    };
    let mut per_call = Vec::with_capacity(samples);
    for i in 0..samples + 50 {
        let t0 = Instant::now();
        let o = ocsuite::agents::tools::call(&server.state, &caller, &toolbox, &call).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if o.status != "succeeded" {
            return Err(format!("the echo call failed: {:?}", o.error).into());
        }
        if i >= 50 {
            per_call.push(ms);
        }
    }
    let (call_p50, call_p99) = stats(&mut per_call);

    // --- 2. end to end ---------------------------------------------------------------
    let chat = |message: &str| {
        http.post(format!("{base}/api/v1/c-suite/echoer/chat"))
            .bearer_auth(&token)
            .header("x-tenant-id", &tenant)
            .json(&json!({"message": message}))
    };
    let direct_body = json!({"model": "bench-model", "stream": true, "messages": [{"role": "user", "content": "plain"}]});
    let (mut with, mut without, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..turns + 20 {
        let w = answer(chat("Use the tool.")).await?;
        let p = answer(chat("A plain answer, please.")).await?;
        let t0 = Instant::now();
        let _ = http
            .post(format!("{model}/v1/chat/completions"))
            .json(&direct_body)
            .send()
            .await?
            .bytes()
            .await?;
        let d = t0.elapsed().as_secs_f64() * 1000.0;
        if i >= 20 {
            with.push(w);
            without.push(p);
            direct.push(d);
        }
    }
    let (w50, w99) = stats(&mut with);
    let (p50, p99) = stats(&mut without);
    let (d50, d99) = stats(&mut direct);
    println!(
        "tool-use bench ({}), {samples} calls, {turns} answers each way",
        backend()
    );
    println!(
        "one tool call, in process (orchestration, echo does no work): p50 {call_p50:.2} ms, p99 {call_p99:.2} ms (target p99 <= 2 ms)"
    );
    println!("answer with one tool step:    p50 {w50:.2} ms, p99 {w99:.2} ms");
    println!("answer without tools:         p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!("one direct fake model call:   p50 {d50:.2} ms, p99 {d99:.2} ms");
    println!(
        "a tool step end to end, less the extra model call: p50 {:.2} ms, p99 {:.2} ms",
        w50 - p50 - d50,
        w99 - p99 - d99
    );
    let ok = call_p99 <= 2.0;
    println!("target: {}", if ok { "met" } else { "MISSED" });
    server.stop().await;
    if !ok && std::env::var("BENCH_ENFORCE").is_ok() {
        std::process::exit(1);
    }
    Ok(())
}
