//! Knowledge benchmark: hybrid search latency at 10,000 and 100,000 chunks in one
//! tenant, PDF ingestion throughput, and what retrieval adds to chat time-to-first-token.
//!
//! A fake OpenAI-compatible server in this process answers chat completions at once and
//! `/v1/embeddings` with deterministic 384-dimension bag-of-words vectors (the size of
//! common small embedding models). Chunks for the search measure are written straight
//! into the tenant's tables (text from a 6,000-word vocabulary, about 800 characters
//! each, with their vectors); searches go through `POST /api/v1/knowledge/search`, so
//! every figure includes HTTP, auth, the query's embedding call, the keyword index, the
//! vector scan and the fusion. SQLite by default; PostgreSQL with `BENCH_DATABASE_URL` /
//! `BENCH_MIGRATION_DATABASE_URL`. See bench/README.md.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ocsuite_bench_tasks::{Res, Server, backend, env_num, percentile};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const DIMS: usize = 384;

/// The fake model's embedding: each word (and word pair) hashes to a dimension.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut add = |t: &str, w: f32| {
        let mut h: u64 = 1469598103934665603;
        for b in t.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
        }
        let i = (h % DIMS as u64) as usize;
        v[i] += if (h >> 32) & 1 == 0 { w } else { -w };
    };
    for w in &words {
        add(w, 1.0);
    }
    for p in words.windows(2) {
        add(&format!("{} {}", p[0], p[1]), 0.5);
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

async fn fake_model() -> Res<String> {
    let chat = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "Answer [1]."}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 50, "completion_tokens": 3}})
    );
    let router = axum::Router::new()
        .route(
            "/v1/chat/completions",
            axum::routing::post(move || {
                let body = chat.clone();
                async move {
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(axum::body::Body::from(body))
                        .unwrap_or_default()
                }
            }),
        )
        .route(
            "/v1/embeddings",
            axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
                let inputs: Vec<String> = match &body["input"] {
                    Value::Array(a) => a
                        .iter()
                        .map(|v| v.as_str().unwrap_or("").to_owned())
                        .collect(),
                    Value::String(s) => vec![s.clone()],
                    _ => vec![],
                };
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embed(t)}))
                    .collect();
                axum::Json(json!({"object": "list", "data": data}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}

/// A deterministic vocabulary of pronounceable words.
fn vocabulary(n: usize) -> Vec<String> {
    const SYL: &[&str] = &[
        "ka", "lo", "mi", "ren", "sa", "tu", "vel", "no", "pri", "dan", "qua", "ro", "ste", "li",
        "mor", "ga", "ze", "fin", "tal", "bo", "che", "ux", "pe", "dri",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let k = rng.random_range(2..=4);
        let w: String = (0..k)
            .map(|_| SYL[rng.random_range(0..SYL.len())])
            .collect();
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// About 800 characters of Zipf-like text from `vocab`.
fn passage(rng: &mut impl Rng, vocab: &[String]) -> String {
    let mut s = String::new();
    while s.len() < 800 {
        // Skewed towards the first words, like real text.
        let r: f64 = rng.random();
        let i = ((r * r * r) * vocab.len() as f64) as usize;
        s.push_str(&vocab[i.min(vocab.len() - 1)]);
        s.push(if rng.random_range(0..12) == 0 {
            '.'
        } else {
            ' '
        });
    }
    s
}

/// Writes `n` chunks with vectors into the server's tenant, under one source.
async fn fill(server: &Server, http: &reqwest::Client, n: usize, vocab: &[String]) -> Res<()> {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"# Seed\nseed".to_vec()).file_name("seed.md"),
    );
    let v: Value = http
        .post(format!("{}/api/v1/knowledge/sources", server.base))
        .bearer_auth(&server.token)
        .header("x-tenant-id", &server.tenant)
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let id = v["id"].as_str().ok_or("no source")?.to_owned();
    wait_ready(server, http, &id).await?;
    let source = ocsuite::ids::KnowledgeSourceId::parse(&id).ok_or("source id")?;
    let tenant = ocsuite::ids::TenantId::parse(&server.tenant).ok_or("tenant id")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42 + n as u64);
    let mut done = 0;
    while done < n {
        let mut tx = server.state.store.tenant(&tenant).await?;
        for _ in 0..(n - done).min(5000) {
            let text = passage(&mut rng, vocab);
            let vector = embed(&text);
            let location = format!("part {done}");
            let hash = format!("{done:x}");
            ocsuite::knowledge::insert_chunk(
                &mut tx,
                &ocsuite::knowledge::NewChunk {
                    source: &source,
                    position: done as i64,
                    document: "",
                    location: &location,
                    text: &text,
                    text_hash: &hash,
                    embedding: Some((&vector, "bench-embed")),
                },
            )
            .await?;
            done += 1;
        }
        tx.execute(ocsuite::store::scoped(
            "UPDATE tenants SET knowledge_generation = knowledge_generation + 1 WHERE id = $1",
        ))
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn wait_ready(server: &Server, http: &reqwest::Client, source: &str) -> Res<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v: Value = http
            .get(format!("{}/api/v1/knowledge/sources/{source}", server.base))
            .bearer_auth(&server.token)
            .header("x-tenant-id", &server.tenant)
            .send()
            .await?
            .json()
            .await?;
        match v["status"].as_str() {
            Some("ready") => return Ok(v),
            Some("failed") => return Err(format!("ingestion failed: {v}").into()),
            _ if Instant::now() > deadline => return Err("ingestion did not finish".into()),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Search latencies (ms, ascending) over `samples` queries after a warm-up.
async fn search_latency(
    server: &Server,
    http: &reqwest::Client,
    vocab: &[String],
    samples: usize,
) -> Res<(Vec<f64>, String)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut out = Vec::new();
    let mut mode = String::new();
    for i in 0..samples + 10 {
        let q: Vec<&str> = (0..4)
            .map(|_| vocab[rng.random_range(0..vocab.len() / 3)].as_str())
            .collect();
        let t0 = Instant::now();
        let v: Value = http
            .post(format!("{}/api/v1/knowledge/search", server.base))
            .bearer_auth(&server.token)
            .header("x-tenant-id", &server.tenant)
            .json(&json!({"query": q.join(" "), "k": 8}))
            .send()
            .await?
            .json()
            .await?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if v["items"].as_array().is_none_or(|a| a.is_empty()) {
            return Err(format!("a search found nothing: {v}").into());
        }
        mode = v["mode"].as_str().unwrap_or("").to_owned();
        if i >= 10 {
            out.push(ms);
        }
    }
    out.sort_by(f64::total_cmp);
    Ok((out, mode))
}

/// A text PDF of `pages` pages, each about 40 lines of 60 characters.
fn pdf(pages: usize, vocab: &[String]) -> Res<Vec<u8>> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica"},
    );
    let resources = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font}});
    let mut kids: Vec<Object> = Vec::new();
    for _ in 0..pages {
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 10.into()]),
            Operation::new("TL", vec![12.into()]),
            Operation::new("Td", vec![50.into(), 780.into()]),
        ];
        for _ in 0..40 {
            let line: String = passage(&mut rng, vocab).chars().take(60).collect();
            ops.push(Operation::new("Tj", vec![Object::string_literal(line)]));
            ops.push(Operation::new("T*", vec![]));
        }
        ops.push(Operation::new("ET", vec![]));
        let stream = doc.add_object(Stream::new(
            dictionary! {},
            Content { operations: ops }.encode()?,
        ));
        let page = doc
            .add_object(dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => stream});
        kids.push(page.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {"Type" => "Pages", "Kids" => kids, "Count" => count,
            "Resources" => resources, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()]}),
    );
    let catalog = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out)?;
    Ok(out)
}

/// Milliseconds until the first `delta` of a chat answer.
async fn ttft(server: &Server, http: &reqwest::Client, question: &str) -> Res<f64> {
    let t0 = Instant::now();
    let res = http
        .post(format!("{}/api/v1/c-suite/cfo/chat", server.base))
        .bearer_auth(&server.token)
        .header("x-tenant-id", &server.tenant)
        .json(&json!({"message": question}))
        .send()
        .await?;
    let mut s = res.bytes_stream();
    let mut seen = String::new();
    while let Some(c) = s.next().await {
        seen.push_str(&String::from_utf8_lossy(&c?));
        if seen.contains("event: delta") {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            while s.next().await.is_some() {}
            return Ok(ms);
        }
    }
    Err(format!("no delta: {seen}").into())
}

async fn ttfts(
    server: &Server,
    http: &reqwest::Client,
    vocab: &[String],
    samples: usize,
) -> Res<Vec<f64>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut out = Vec::new();
    for i in 0..samples + 10 {
        let q: Vec<&str> = (0..5)
            .map(|_| vocab[rng.random_range(0..vocab.len() / 3)].as_str())
            .collect();
        let ms = ttft(
            server,
            http,
            &format!("What do our notes say about {}?", q.join(" ")),
        )
        .await?;
        if i >= 10 {
            out.push(ms);
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn row(label: &str, v: &[f64], target: Option<f64>, p: f64) -> bool {
    let got = percentile(v, p);
    let ok = target.is_none_or(|t| got <= t);
    println!(
        "{label:<44} p50 {:>7.2} ms  p{p:.0} {got:>7.2} ms  {}",
        percentile(v, 50.0),
        match target {
            Some(t) => format!("target ≤ {t} ms  {}", if ok { "ok" } else { "MISS" }),
            None => String::new(),
        }
    );
    ok
}

#[tokio::main]
async fn main() -> Res<()> {
    let samples = env_num("BENCH_KNOWLEDGE_SAMPLES", 300);
    let big = env_num("BENCH_KNOWLEDGE_CHUNKS", 100_000);
    let pages = env_num("BENCH_KNOWLEDGE_PAGES", 300);
    let model = fake_model().await?;
    let http = reqwest::Client::new();
    let vocab = vocabulary(6000);
    let mut all_ok = true;
    println!(
        "backend: {}; index: exact scan of {DIMS}-dimension f32 vectors in memory + {}",
        backend(),
        if backend() == "postgres" {
            "PostgreSQL full-text (GIN)"
        } else {
            "SQLite FTS5 (BM25)"
        }
    );

    // --- search at 10k and 100k chunks, hybrid ----------------------------------------
    let start = || {
        let model = model.clone();
        Server::start(move |c| {
            c.llm_base_url = format!("{model}/v1");
            c.llm_api_key = Some(ocsuite::config::Secret::new("sk-bench"));
            c.llm_model = "bench-model".into();
            c.embedding_model = Some("bench-embed".into());
            c.plan_free_monthly_tokens = u64::MAX / 4;
            c.plan_free_chats_per_minute = 1_000_000;
        })
    };
    let server = start().await?;
    // Chat TTFT with no documents first, then at 10,000 chunks.
    let base_ttft = ttfts(&server, &http, &vocab, samples).await?;
    let t0 = Instant::now();
    fill(&server, &http, 10_000, &vocab).await?;
    println!("wrote 10,000 chunks in {:.1} s", t0.elapsed().as_secs_f64());
    let (small, mode) = search_latency(&server, &http, &vocab, samples).await?;
    if mode != "hybrid" {
        return Err(format!("search ran in {mode} mode, not hybrid").into());
    }
    all_ok &= row("search, 10,000 chunks (hybrid)", &small, Some(5.0), 95.0);
    let grounded_ttft = ttfts(&server, &http, &vocab, samples).await?;
    row("chat TTFT, no documents", &base_ttft, None, 99.0);
    row("chat TTFT, 10,000 chunks", &grounded_ttft, None, 99.0);
    let added = percentile(&grounded_ttft, 99.0) - percentile(&base_ttft, 99.0);
    let ok = added <= 20.0;
    all_ok &= ok;
    println!(
        "{:<44} p99 {added:>7.2} ms  target ≤ 20 ms  {}",
        "retrieval added to chat TTFT",
        if ok { "ok" } else { "MISS" }
    );
    let t0 = Instant::now();
    fill(&server, &http, big.saturating_sub(10_000), &vocab).await?;
    println!(
        "wrote {} more chunks in {:.1} s",
        big.saturating_sub(10_000),
        t0.elapsed().as_secs_f64()
    );
    let (large, _) = search_latency(&server, &http, &vocab, samples).await?;
    all_ok &= row(
        &format!("search, {big} chunks (hybrid)"),
        &large,
        Some(15.0),
        95.0,
    );
    server.stop().await;

    // --- ingestion of a text PDF, no embedding model -----------------------------------
    let server = Server::start(|c| c.embedding_model = Some("none".into())).await?;
    let bytes = pdf(pages, &vocab)?;
    let t0 = Instant::now();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.clone()).file_name("report.pdf"),
    );
    let v: Value = http
        .post(format!("{}/api/v1/knowledge/sources", server.base))
        .bearer_auth(&server.token)
        .header("x-tenant-id", &server.tenant)
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| format!("upload failed: {v}"))?
        .to_owned();
    let done = wait_ready(&server, &http, &id).await?;
    let secs = t0.elapsed().as_secs_f64();
    let rate = pages as f64 / secs;
    let ok = rate >= 50.0;
    all_ok &= ok;
    println!(
        "{:<44} {rate:>7.1} pages/s ({pages} pages, {:.1} MB, {} passages, {secs:.2} s)  target ≥ 50  {}",
        "ingestion, text PDF (upload to ready)",
        bytes.len() as f64 / 1e6,
        done["chunk_count"],
        if ok { "ok" } else { "MISS" }
    );
    server.stop().await;
    if !all_ok && std::env::var("BENCH_ENFORCE").is_ok_and(|v| v == "1") {
        return Err("a target was missed".into());
    }
    Ok(())
}
