//! The monitoring in `deploy/` watches what the server exports: every metric the alert
//! rules and the dashboard name appears at `/metrics` after one chat against a fake
//! model server, the figures move with what happened, and `promtool` (where installed)
//! accepts the rules.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::chat::chat;
use crate::llm::{delta, finish, sse_body, upstream_app};
use crate::tasks::owner;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Metric names a rule or panel reads: words that start like ours, less the suffixes
/// Prometheus adds to a histogram's series. Recording rules' own names (with `:`) are
/// not metrics the server exports and are skipped.
fn used_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !(word(bytes[i - 1]) || bytes[i - 1] == b':')) {
            let start = i;
            while i < bytes.len() && (word(bytes[i]) || bytes[i] == b':') {
                i += 1;
            }
            let w = &text[start..i];
            if (w.starts_with("ocsuite_") || w.starts_with("http_request")) && !w.contains(':') {
                out.insert(w.to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Series names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_deploy_files_use_is_exported() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse_body(
                    &[
                        delta("Hire slowly."),
                        finish(),
                        json!({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 3}}),
                    ],
                    true,
                )),
        )
        .mount(&server)
        .await;
    let app = upstream_app(&server, |c| c.llm_model = "deploy-test-model".into()).await;
    let (u, t) = owner(&app, "ops@x.example").await;
    let (s, _) = chat(&app, &u, &t, "ceo", json!({"message": "Hiring?"})).await;
    assert_eq!(s, StatusCode::OK);

    let mut text = String::new();
    // The model call is counted when its stream ends, just after the answer does.
    for _ in 0..50 {
        text = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("model=\"deploy-test-model\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let names = exported(&text);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    assert!(
        text.contains(
            "ocsuite_llm_tokens_total{provider=\"openai\",model=\"deploy-test-model\",kind=\"prompt\"} 40"
        ),
        "{text}"
    );
    assert!(
        text.contains("ocsuite_llm_requests_total{provider=\"openai\",model=\"deploy-test-model\",outcome=\"ok\"} 1"),
        "{text}"
    );
    let overheads: f64 = line("ocsuite_chat_overhead_seconds_count")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overheads >= 1.0, "{text}");
    assert!(
        text.contains("ocsuite_llm_circuit_open{provider=\"openai\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("ocsuite_queue_jobs{queue=\"execute-task\",status=\"ready\"}"),
        "{text}"
    );
    assert!(
        text.contains("ocsuite_db_pool_max_connections{pool=\"write\"} 1"),
        "{text}"
    );

    let mut used = BTreeSet::new();
    for f in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/ocsuite.json",
    ] {
        let body = std::fs::read_to_string(repo().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        used.extend(used_in(&body));
    }
    assert!(
        used.len() >= 15,
        "too few metrics found in deploy/: {used:?}"
    );
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| {
            !names.contains(*m)
                && !["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| names.contains(&format!("{m}{s}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ uses metrics /metrics does not export: {missing:?}"
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/ocsuite.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| p.len() >= 10)
    );
}

/// The rules are valid for Prometheus itself and fire when they should (their unit
/// tests, `alerts_test.yml`), where its checker is installed.
#[test]
fn promtool_accepts_the_rules_and_their_tests_pass() {
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let Ok(out) = std::process::Command::new("promtool")
            .args(args)
            .current_dir(repo())
            .output()
        else {
            eprintln!("promtool is not installed: skipped");
            return;
        };
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
