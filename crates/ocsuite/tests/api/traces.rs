//! Traces over OTLP: one trace from an HTTP request through the job it queued to the
//! model call the job made, with the tenant as an attribute, continuing the caller's
//! `traceparent`. The server runs as its own process (`ocsuite serve`), since traces are
//! wired where `main` sets up logging; the collector is a local fake that takes
//! OTLP/HTTP JSON, and the model server a fake embeddings endpoint.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Db, test_config};

/// The caller's trace, which the request's span must continue.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Every span the collector got: (trace id, span id, parent span id, name, attributes).
async fn spans(collector: &MockServer) -> Vec<(String, String, String, String, Value)> {
    let mut out = Vec::new();
    for req in collector.received_requests().await.unwrap_or_default() {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let mut attrs = serde_json::Map::new();
                    for a in s["attributes"].as_array().into_iter().flatten() {
                        let v = &a["value"];
                        let v = v
                            .get("stringValue")
                            .or(v.get("intValue"))
                            .or(v.get("boolValue"))
                            .cloned()
                            .unwrap_or(Value::Null);
                        attrs.insert(a["key"].as_str().unwrap_or("").to_owned(), v);
                    }
                    let text = |k: &str| s[k].as_str().unwrap_or("").to_lowercase();
                    out.push((
                        text("traceId"),
                        text("spanId"),
                        text("parentSpanId"),
                        text("name"),
                        Value::Object(attrs),
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_request_through_job_to_model_sqlite() {
    a_request_its_job_and_the_model_call_share_one_trace(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_request_through_job_to_model_postgres() {
    a_request_its_job_and_the_model_call_share_one_trace(Db::Postgres).await;
}

async fn a_request_its_job_and_the_model_call_share_one_trace(db: Db) {
    // A fresh database (the server migrates it when it starts).
    let Some(c) = test_config(db).await else {
        return;
    };
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&collector)
        .await;
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "model": "fake-embed",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        })))
        .mount(&model)
        .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ocsuite"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OCSUITE_ADDR", format!("127.0.0.1:{port}"))
        .env("OCSUITE_DATABASE_URL", &c.database_url)
        .env("OCSUITE_MIGRATION_DATABASE_URL", c.owner_database_url())
        .env(
            "OCSUITE_MASTER_KEY",
            c.master_key.as_ref().unwrap().expose(),
        )
        .env("OCSUITE_DATA_DIR", &c.data_dir)
        .env("OCSUITE_WORKERS", "2")
        .env("OCSUITE_LLM_BASE_URL", format!("{}/v1", model.uri()))
        .env("OCSUITE_LLM_API_KEY", "sk-test")
        .env("OCSUITE_EMBEDDING_MODEL", "fake-embed")
        .env("OCSUITE_LLM_MAX_RETRIES", "0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.uri())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_SERVICE_NAME", "ocsuite-test")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the server did not start");

    let v: Value = http
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&json!({"email": "trace@x.example", "password": "trace password 123", "name": "T"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let v: Value = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&token)
        .json(&json!({"name": "Traced Co"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = v["id"].as_str().unwrap().to_owned();

    // Queue an ingestion (a job whose run calls the embeddings model) as part of the
    // caller's own trace.
    let part = reqwest::multipart::Part::bytes(b"# Pricing\nWe charge per seat.".to_vec())
        .file_name("pricing.md");
    let res = http
        .post(format!("{base}/api/v1/knowledge/sources"))
        .bearer_auth(&token)
        .header("x-tenant-id", &tenant)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{:?}", res.text().await);

    // The job's span and the model call's arrive once the job ran (batches go out
    // every 100 ms).
    let mut found = Vec::new();
    for _ in 0..200 {
        found = spans(&collector).await;
        let traced: Vec<_> = found.iter().filter(|s| s.0 == TRACE_ID).collect();
        if traced.iter().any(|s| s.3 == "llm.embed") && traced.iter().any(|s| s.3 == "job") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_trace: Vec<_> = found.iter().filter(|s| s.0 == TRACE_ID).collect();
    let http_span = in_trace
        .iter()
        .find(|s| s.3 == "http" && s.4["path"] == "/api/v1/knowledge/sources")
        .unwrap_or_else(|| panic!("no request span in the caller's trace: {found:?}"));
    assert_eq!(
        http_span.2, "00f067aa0ba902b7",
        "the caller's span is the parent"
    );
    assert_eq!(http_span.4["tenant_id"], tenant.as_str());
    let job = in_trace
        .iter()
        .find(|s| s.3 == "job")
        .unwrap_or_else(|| panic!("no job span in the trace: {found:?}"));
    assert_eq!(job.4["queue"], "ingest-source", "{job:?}");
    assert_eq!(job.4["tenant_id"], tenant.as_str());
    assert_eq!(job.4["outcome"], "succeeded", "{job:?}");
    let embed = in_trace
        .iter()
        .find(|s| s.3 == "llm.embed")
        .unwrap_or_else(|| panic!("no model call in the trace: {found:?}"));
    assert_eq!(embed.2, job.1, "the model call is the job's child");
    assert_eq!(embed.4["gen_ai.request.model"], "fake-embed");
    let resource_named = collector
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("ocsuite-test"));
    assert!(resource_named, "OTEL_SERVICE_NAME names the service");

    // A request without a traceparent starts a trace of its own.
    http.get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let _ = tokio::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status()
        .await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the server stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    // What was buffered at shutdown was sent before the process exited.
    let me = spans(&collector).await;
    let own = me
        .iter()
        .find(|s| s.3 == "http" && s.4["path"] == "/api/v1/me")
        .unwrap_or_else(|| panic!("the last request's span was not flushed at exit: {me:?}"));
    assert_ne!(own.0, TRACE_ID);
    assert!(own.2.is_empty(), "a root span: {own:?}");
}
