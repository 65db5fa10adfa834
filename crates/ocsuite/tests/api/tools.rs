//! Agents that act: the tool loop in chat against fake OpenAI-compatible servers that
//! emit tool calls (reads run at once as tasks, writes are proposed and their outcome
//! reaches the next turn), allow-list and argument checks, step limits, board members
//! looking things up, and each model-server quirk the gateway must survive.

use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::board::{find, meeting};
use crate::chat::{chat, detail, names, text_of};
use crate::helpers::{Db, TestApp};
use crate::llm::{delta, finish, sse_body};
use crate::tasks::{owner, wait_status};

/// A streamed answer: the chunks, a finish, usage, `[DONE]`.
fn stream(chunks: Vec<Value>) -> ResponseTemplate {
    let mut all = chunks;
    all.push(json!({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 8}}));
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_string(sse_body(&all, true))
}

fn say(text: &str) -> ResponseTemplate {
    stream(vec![delta(text), finish()])
}

/// An answer that calls tools: `(id, name, arguments)`, streamed the way OpenAI does
/// (name first, arguments in pieces).
fn call_tools(calls: &[(&str, &str, &str)]) -> ResponseTemplate {
    let mut chunks = Vec::new();
    for (i, (id, name, args)) in calls.iter().enumerate() {
        let (a, b) = args.split_at(args.len() / 2);
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": a}}]}}]}));
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "function": {"arguments": b}}]}}]}));
    }
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
    stream(chunks)
}

/// The request bodies the fake received, in order.
async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/chat/completions"))
        .map(|r| r.body_json().unwrap())
        .collect()
}

/// How many tool results a request carries (its step number).
fn tool_results(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["role"] == "tool"
                || m["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("Result of tool call"))
        })
        .count()
}

async fn app_for(db: Db, server: &MockServer) -> Option<TestApp> {
    let uri = server.uri();
    TestApp::start_with(db, |c| {
        c.llm_base_url = format!("{uri}/v1");
        c.llm_api_key = Some(ocsuite::config::Secret::new("sk-test"));
        c.llm_model = "tool-model".into();
        c.llm_read_timeout_secs = 5;
        c.llm_max_retries = 0;
    })
    .await
}

/// Runs `$name(db)` on SQLite and PostgreSQL.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name(crate::helpers::Db::Sqlite).await; }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if crate::helpers::TestApp::start(crate::helpers::Db::Postgres).await.is_none() { return; }
                super::$name(crate::helpers::Db::Postgres).await;
            }
        }
    )*};
}

both!(
    a_read_runs_a_write_is_proposed_and_its_outcome_reaches_the_next_turn,
    tools_outside_the_list_and_bad_arguments_are_refused,
);

async fn a_read_runs_a_write_is_proposed_and_its_outcome_reaches_the_next_turn(db: Db) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|r: &Request| {
            let body: Value = r.body_json().unwrap();
            let last = body["messages"].as_array().unwrap().last().unwrap().clone();
            if last["role"] == "tool" {
                return say(
                    "The pipeline is empty, so I proposed adding Acme; it awaits your approval.",
                );
            }
            if last["content"]
                .as_str()
                .is_some_and(|c| c.contains("And now?"))
            {
                return say("Acme is in the pipeline now.");
            }
            call_tools(&[
                ("call_a", "leadtracker__pipeline_summary", "{}"),
                (
                    "call_b",
                    "leadtracker__add_lead",
                    r#"{"name": "Acme Robotics", "value": "1200.00"}"#,
                ),
            ])
        })
        .mount(&server)
        .await;
    let app = app_for(db, &server).await.unwrap();
    let (u, t) = owner(&app, "tools@acme.test").await;
    let (s, evs) = chat(
        &app,
        &u,
        &t,
        "cmo",
        json!({"message": "What is in my pipeline? Add Acme."}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "citations",
            "tool_call",
            "tool_result",
            "tool_call",
            "tool_result",
            "delta",
            "usage",
            "message_end"
        ],
        "{evs:?}"
    );
    let read = &evs[3].1;
    assert_eq!(read["status"], "succeeded", "{read}");
    assert_eq!(read["capability"], "leadtracker.pipeline_summary");
    assert!(read["output"].is_object(), "{read}");
    let write = &evs[5].1;
    assert_eq!(write["status"], "awaiting_approval", "{write}");
    assert_eq!(evs[4].1["input"]["name"], "Acme Robotics");
    // Usage covers both model calls.
    assert_eq!(evs[7].1["prompt_tokens"], 80);

    // The read is a real task, by the agent, finished; the write waits for a person.
    let read_task = read["task_id"].as_str().unwrap();
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{read_task}"))
        .await;
    assert_eq!(v["task"]["status"], "succeeded", "{v}");
    assert_eq!(v["task"]["created_by"], "agent:cmo");
    // Its audit entry is sealed into a receipt like every other (on both databases).
    let (_, receipts) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/receipts?action=task.succeeded")
        .await;
    assert_eq!(receipts.as_array().map(Vec::len), Some(1), "{receipts}");
    let conversation = evs[0].1["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(v["task"]["conversation_id"], conversation.as_str());
    let write_task = write["task_id"].as_str().unwrap().to_owned();
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/approvals").await;
    let pending: Vec<&Value> = v["approvals"].as_array().unwrap().iter().collect();
    assert_eq!(pending.len(), 1, "{v}");
    assert_eq!(pending[0]["task"]["id"], write_task.as_str());
    let (_, leads) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/leadtracker/leads")
        .await;
    assert_eq!(
        leads["leads"].as_array().map(Vec::len),
        Some(0),
        "nothing ran unapproved: {leads}"
    );

    // The second model call saw the calls and their results as tool messages.
    let sent = bodies(&server).await;
    assert_eq!(sent.len(), 2);
    assert!(
        sent[0]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "knowledge__search")
    );
    let msgs = sent[1]["messages"].as_array().unwrap();
    let asked = msgs.iter().find(|m| m["role"] == "assistant").unwrap();
    assert_eq!(
        asked["tool_calls"][1]["function"]["name"],
        "leadtracker__add_lead"
    );
    let results: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["tool_call_id"], "call_b");
    assert!(
        results[1]["content"]
            .as_str()
            .unwrap()
            .contains("awaiting_approval")
    );

    // Another company sees neither the tasks nor the conversation.
    let (u2, t2) = owner(&app, "other@beta.test").await;
    for path in [
        format!("/api/v1/tasks/{read_task}"),
        format!("/api/v1/tasks/{write_task}"),
        format!("/api/v1/conversations/{conversation}"),
    ] {
        let (s, _) = app.as_(&u2).tenant(&t2).get(&path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, _) = app
        .as_(&u2)
        .tenant(&t2)
        .post(&format!("/api/v1/tasks/{write_task}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Stored with the message.
    let d = detail(&app, &u, &t, &conversation).await;
    let calls = d["messages"][1]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["status"], "awaiting_approval");

    // Approve: it runs; the person is told; the next turn knows.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{write_task}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_status(&app, &u, &t, &write_task, "succeeded").await;
    let (_, n) = app.as_(&u).tenant(&t).get("/api/v1/notifications").await;
    assert!(
        n["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["task_id"] == write_task.as_str()),
        "{n}"
    );
    let (s, evs) = chat(
        &app,
        &u,
        &t,
        "cmo",
        json!({"message": "And now?", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(text_of(&evs), "Acme is in the pipeline now.");
    let sent = bodies(&server).await;
    let history = sent.last().unwrap()["messages"].to_string();
    assert!(
        history.contains("leadtracker.add_lead: awaiting_approval"),
        "{history}"
    );
    assert!(history.contains("since then: succeeded"), "{history}");
}

async fn tools_outside_the_list_and_bad_arguments_are_refused(db: Db) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|r: &Request| {
            let body: Value = r.body_json().unwrap();
            match tool_results(&body) {
                // Not its tool; an unknown name; not JSON.
                0 => call_tools(&[
                    ("c1", "email__campaign_send", r#"{"campaign_id": "x"}"#),
                    ("c2", "crm__delete_everything", "{}"),
                    ("c3", "knowledge__search", "{not json"),
                ]),
                // Wrong again for the same tool: tool use ends.
                3 => call_tools(&[("c4", "knowledge__search", r#"{"query": 5}"#)]),
                _ => say("I could not look that up."),
            }
        })
        .mount(&server)
        .await;
    let app = app_for(db, &server).await.unwrap();
    let (u, t) = owner(&app, "refuse@acme.test").await;
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/agents",
            json!({"slug": "scout", "name": "Scout", "title": "Researcher",
                   "instructions": "Find facts.", "capabilities": ["leadtracker.pipeline_summary"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, evs) = chat(
        &app,
        &u,
        &t,
        "scout",
        json!({"message": "Send the campaign."}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let results = find_all(&evs, "tool_result");
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["refused", "refused", "failed", "failed"],
        "{results:?}"
    );
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("not one of your tools")
    );
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON object")
    );
    assert!(
        results[3]["error"].as_str().unwrap().contains("schema"),
        "{}",
        results[3]
    );
    assert_eq!(text_of(&evs), "I could not look that up.");
    assert_eq!(names(&evs).last(), Some(&"message_end"));
    // No task was created for any of them; the refusals are audited.
    let (_, tasks) = app.as_(&u).tenant(&t).get("/api/v1/tasks").await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0), "{tasks}");
    let (_, audit) = app.as_(&u).tenant(&t).get("/api/v1/audit").await;
    let refused = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent.tool_refused")
        .count();
    assert_eq!(refused, 2, "{audit}");
    // After the second wrong call the last request offers no tools.
    let sent = bodies(&server).await;
    assert_eq!(sent.len(), 3);
    assert!(sent[2].get("tools").is_none(), "{}", sent[2]);
    assert!(
        sent[2]["messages"]
            .to_string()
            .contains("No more tool calls")
    );
}

fn find_all(evs: &[(String, Value)], name: &str) -> Vec<Value> {
    evs.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// A model that keeps calling tools stops at the step limit and must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_limit_ends_a_loop_and_repeats_are_caught() {
    let server = MockServer::start().await;
    let n = Arc::new(Mutex::new(0u32));
    let count = n.clone();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |r: &Request| {
            let body: Value = r.body_json().unwrap();
            let mut k = count.lock().unwrap();
            *k += 1;
            if body.get("tools").is_none() {
                return say("Here is what I found.");
            }
            let q = format!(r#"{{"query": "pricing {}"}}"#, *k);
            call_tools(&[("c", "knowledge__search", &q)])
        })
        .mount(&server)
        .await;
    let app = app_for(Db::Sqlite, &server).await.unwrap();
    let (u, t) = owner(&app, "loop@acme.test").await;
    let (s, evs) = chat(&app, &u, &t, "ceo", json!({"message": "Research pricing."})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(find_all(&evs, "tool_result").len(), 5);
    assert_eq!(text_of(&evs), "Here is what I found.");
    let sent = bodies(&server).await;
    assert_eq!(sent.len(), 6);
    assert!(
        sent[5]["messages"]
            .to_string()
            .contains("limit of 5 tool steps")
    );

    // The same call twice in one answer is not run again.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|r: &Request| {
            let body: Value = r.body_json().unwrap();
            if body.get("tools").is_none() {
                return say("Done.");
            }
            call_tools(&[("c", "knowledge__search", r#"{"query": "same"}"#)])
        })
        .mount(&server)
        .await;
    let app = app_for(Db::Sqlite, &server).await.unwrap();
    let (u, t) = owner(&app, "repeat@acme.test").await;
    let (_, evs) = chat(&app, &u, &t, "ceo", json!({"message": "Again and again."})).await;
    let results = find_all(&evs, "tool_result");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["status"], "succeeded");
    assert_eq!(results[1]["status"], "refused");
    assert_eq!(text_of(&evs), "Done.");
}

/// A server that rejects `tools` gets the JSON tool protocol instead, and remembers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tools_gets_the_json_protocol() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|r: &Request| {
            let body: Value = r.body_json().unwrap();
            if body.get("tools").is_some() {
                return ResponseTemplate::new(400)
                    .set_body_json(json!({"error": {"message": "tools is not supported by this server"}}));
            }
            let prompt = body["messages"].to_string();
            assert!(prompt.contains("You can call tools"), "{prompt}");
            // The protocol's schema rides on response_format.
            assert_eq!(body["response_format"]["json_schema"]["name"], "tool_protocol");
            if prompt.contains("Result of tool call") {
                return say(r#"{"answer": "Runway is fine.", "tool_calls": []}"#);
            }
            say(r#"{"answer": "", "tool_calls": [{"name": "bookkeeping__financial_summary", "arguments": "{}"}]}"#)
        })
        .mount(&server)
        .await;
    let app = app_for(Db::Sqlite, &server).await.unwrap();
    let (u, t) = owner(&app, "json@acme.test").await;
    let (s, evs) = chat(&app, &u, &t, "cfo", json!({"message": "Runway?"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        find_all(&evs, "tool_result")[0]["status"],
        "succeeded",
        "{evs:?}"
    );
    assert_eq!(text_of(&evs), "Runway is fine.");
    // One refusal, then the protocol from the start.
    let (_, evs) = chat(&app, &u, &t, "cfo", json!({"message": "Again?"})).await;
    assert_eq!(text_of(&evs), "Runway is fine.");
    let sent = bodies(&server).await;
    assert_eq!(sent.iter().filter(|b| b.get("tools").is_some()).count(), 1);
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/c-suite").await;
    let cfo = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "cfo")
        .unwrap();
    assert_eq!(cfo["model_support"]["tools"], "json", "{cfo}");
    assert_eq!(cfo["model_support"]["model"], "tool-model");
    assert_eq!(cfo["model_support"]["learned"], true);
    assert!(
        cfo["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("bookkeeping.add_transaction"))
    );
}

/// Servers that reject `json_schema` (then `json_object` too) still get the board's
/// action items stored; one that rejects `stream_options` and sends no usage still
/// answers, with the usage estimated; tool calls sent whole, several at index 0, and an
/// empty last delta are read right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_server_gets_the_board_its_items() {
    let items = json!({"items": [
        {"title": "Raise prices 10%", "description": "On new plans", "owner": "cfo",
         "capability": null, "input_json": null, "priority": "high", "due_date": null,
         "expected_impact": "margin"}]});
    for refuses_object in [false, true] {
        let server = MockServer::start().await;
        let items = items.clone();
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(move |r: &Request| {
                let body: Value = r.body_json().unwrap();
                if body.get("stream_options").is_some() {
                    return ResponseTemplate::new(400)
                        .set_body_json(json!({"error": "Unknown field: stream_options"}));
                }
                match body["response_format"]["type"].as_str() {
                    Some("json_schema") => ResponseTemplate::new(500)
                        .set_body_json(json!({"error": {
                        "message": "response_format type must be one of 'text', 'json_object'"}})),
                    Some("json_object") if refuses_object => ResponseTemplate::new(400)
                        .set_body_json(
                            json!({"error": {"message": "response_format is not supported"}}),
                        ),
                    Some(_) => stream_no_usage(&items.to_string()),
                    None if body["messages"]
                        .to_string()
                        .contains("matches this JSON Schema") =>
                    {
                        stream_no_usage(&format!("Here you go: {items}"))
                    }
                    None => stream_no_usage("Raise prices."),
                }
            })
            .mount(&server)
            .await;
        let app = app_for(Db::Sqlite, &server).await.unwrap();
        let (u, t) = owner(&app, "quirks@acme.test").await;
        let (s, evs) = meeting(&app, &u, &t, json!({"agenda": "Pricing?", "rounds": 1})).await;
        assert_eq!(s, StatusCode::OK);
        let got = &find(&evs, "action_items")[0];
        assert!(got["error"].is_null(), "{got}");
        assert_eq!(got["items"][0]["title"], "Raise prices 10%", "{got}");
        let ends = find(&evs, "turn_end");
        assert_eq!(ends[0]["usage"]["estimated"], true);
        let sent = bodies(&server).await;
        let schema_asks = sent
            .iter()
            .filter(|b| b["response_format"]["type"] == "json_schema")
            .count();
        assert_eq!(schema_asks, 1, "json_schema is asked once, then remembered");
        let last = sent.last().unwrap();
        if refuses_object {
            assert!(last.get("response_format").is_none());
        } else {
            assert_eq!(last["response_format"]["type"], "json_object");
            assert!(
                last["response_format"]["schema"].is_object(),
                "llama.cpp's schema field"
            );
        }
    }
}

fn stream_no_usage(text: &str) -> ResponseTemplate {
    // No usage chunk; an empty delta before the finish, as some servers end.
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_string(sse_body(
            &[
                delta(text),
                json!({"choices": [{"index": 0, "delta": {"content": ""}}]}),
                finish(),
            ],
            true,
        ))
}

/// Tool calls that arrive whole, several at index 0 told apart by id (as some servers
/// send them), are all run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_tool_calls_at_one_index_are_told_apart() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|r: &Request| {
            let body: Value = r.body_json().unwrap();
            if tool_results(&body) > 0 {
                return say("Both read.");
            }
            stream(vec![
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "x1",
                    "function": {"name": "bookkeeping__financial_summary", "arguments": "{}"}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "x2",
                    "function": {"name": "leadtracker__pipeline_summary", "arguments": "{}"}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            ])
        })
        .mount(&server)
        .await;
    let app = app_for(Db::Sqlite, &server).await.unwrap();
    let (u, t) = owner(&app, "whole@acme.test").await;
    let (_, evs) = chat(
        &app,
        &u,
        &t,
        "ceo",
        json!({"message": "Books and pipeline?"}),
    )
    .await;
    let results = find_all(&evs, "tool_result");
    assert_eq!(results.len(), 2, "{evs:?}");
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(text_of(&evs), "Both read.");
}

/// A board member may look things up in its turn (reads only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_members_quote_the_books() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|r: &Request| {
            let body: Value = r.body_json().unwrap();
            let text = body["messages"].to_string();
            if body.get("response_format").is_some() {
                return say(r#"{"items": []}"#);
            }
            if text.contains("You speak as the CFO") && tool_results(&body) == 0 {
                // A write is not among a member's tools.
                return call_tools(&[
                    ("b1", "bookkeeping__financial_summary", "{}"),
                    (
                        "b2",
                        "bookkeeping__add_transaction",
                        r#"{"date": "2026-01-01", "amount": "5"}"#,
                    ),
                ]);
            }
            say("Position noted.")
        })
        .mount(&server)
        .await;
    let app = app_for(Db::Sqlite, &server).await.unwrap();
    let (u, t) = owner(&app, "board@acme.test").await;
    let (s, evs) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Can we hire?", "rounds": 1, "personas": ["ceo", "cfo"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let results = find(&evs, "tool_result");
    assert_eq!(results.len(), 2, "{evs:?}");
    assert_eq!(results[0]["persona"], "cfo");
    assert_eq!(results[0]["status"], "succeeded");
    assert_eq!(results[1]["status"], "refused");
    let (_, tasks) = app.as_(&u).tenant(&t).get("/api/v1/tasks").await;
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "only the read ran: {tasks:?}");
    assert_eq!(tasks[0]["created_by"], "agent:cfo");
    assert!(tasks[0]["meeting_id"].is_string());
    assert_eq!(find(&evs, "meeting_end").len(), 1);
}

/// Without a model, officers still look things up (by the question's words) and
/// propose work; the answer reports what the tools returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_officers_look_things_up_and_propose() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (u, t) = owner(&app, "offline-tools@acme.test").await;
    let (s, evs) = chat(
        &app,
        &u,
        &t,
        "cfo",
        json!({"message": "How long is our runway?"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let results = find_all(&evs, "tool_result");
    assert_eq!(results.len(), 1, "{evs:?}");
    assert_eq!(results[0]["capability"], "bookkeeping.financial_summary");
    assert_eq!(results[0]["status"], "succeeded");
    let text = text_of(&evs);
    assert!(text.contains("What I looked up:\n- "), "{text}");
    assert!(text.contains(" USD"), "{text}");
    assert!(!text.contains("_minor"), "{text}");
    let (_, evs) = chat(
        &app,
        &u,
        &t,
        "cmo",
        json!({"message": "Add a lead named Zed Corp, they emailed today."}),
    )
    .await;
    let results = find_all(&evs, "tool_result");
    assert_eq!(results[0]["status"], "awaiting_approval", "{evs:?}");
    assert!(text_of(&evs).contains("awaits your approval"));
}

/// An officer's tools are the basics plus its role's defaults until the company picks
/// its own; bad names are refused with the field named; reset restores the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_tools_are_editable_and_checked() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (u, t) = owner(&app, "officer-tools@acme.test").await;
    let tools_of = |v: &Value, slug: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .find(|p| p["slug"] == slug)
            .unwrap()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/c-suite").await;
    let cfo = tools_of(&v, "cfo");
    assert!(
        cfo.contains(&"knowledge.search".to_owned())
            && cfo.contains(&"bookkeeping.add_transaction".to_owned()),
        "{cfo:?}"
    );
    assert!(!cfo.contains(&"email.send".to_owned()));
    for bad in [
        json!(["nope"]),
        json!(["email.send", "x.y.z"]),
        json!("email.send"),
    ] {
        let (s, v) = app
            .as_(&u)
            .tenant(&t)
            .put(
                "/api/v1/c-suite/cfo/customization",
                json!({"capabilities": bad}),
            )
            .await;
        assert_eq!(s.as_u16() / 100, 4, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .put(
            "/api/v1/c-suite/cfo/customization",
            json!({"capabilities": ["email.send"], "temperature": 0.2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/c-suite").await;
    let cfo = tools_of(&v, "cfo");
    assert!(
        cfo.contains(&"email.send".to_owned())
            && !cfo.contains(&"bookkeeping.add_transaction".to_owned()),
        "{cfo:?}"
    );
    assert!(
        cfo.contains(&"bookkeeping.financial_summary".to_owned()),
        "the basics stay"
    );
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .delete("/api/v1/c-suite/cfo/customization")
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/c-suite").await;
    assert!(tools_of(&v, "cfo").contains(&"bookkeeping.add_transaction".to_owned()));
    // An agent's model can be set and cleared back to the server's default.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/agents",
            json!({"slug": "m-agent", "name": "M", "title": "T", "instructions": "I.", "model": "m1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["model"], "m1");
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .patch("/api/v1/agents/m-agent", json!({"model": ""}))
        .await;
    assert!(v["model"].is_null(), "{v}");
    // A disabled module's tools are not offered.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/modules/bookkeeping/disable", json!({}))
        .await;
    assert!(s.is_success(), "{v}");
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/c-suite").await;
    assert!(
        !tools_of(&v, "cfo")
            .iter()
            .any(|c| c.starts_with("bookkeeping."))
    );
}

/// A module disabled after the toolbox was built (mid-answer) is refused, not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_disabled_mid_answer_is_refused() {
    use ocsuite::agents::tools::{Caller, Toolbox, call};
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (u, t) = owner(&app, "midloop@acme.test").await;
    let tenant = ocsuite::ids::TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant_read(&tenant).await.unwrap();
    let toolbox = Toolbox::load(
        &app.state.registry,
        &mut tx,
        vec!["bookkeeping.financial_summary".into()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(toolbox.tools.len(), 1);
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/modules/bookkeeping/disable", json!({}))
        .await;
    assert!(s.is_success(), "{v}");
    let caller = Caller {
        tenant: &tenant,
        agent: "cfo",
        conversation: None,
        meeting: None,
    };
    let c = ocsuite::llm::ToolCall {
        id: "c1".into(),
        name: "bookkeeping__financial_summary".into(),
        arguments: "{}".into(),
    };
    let o = call(&app.state, &caller, &toolbox, &c).await;
    assert_eq!(o.status, "refused", "{o:?}");
    assert!(
        o.error.as_deref().unwrap_or_default().contains("disabled"),
        "{o:?}"
    );
    let (_, tasks) = app.as_(&u).tenant(&t).get("/api/v1/tasks").await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0));
}
