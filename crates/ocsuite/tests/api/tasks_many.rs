//! `POST /tasks/execute-many`: up to 100 tasks in one request and one transaction, all
//! or nothing, each error naming its item, idempotency per item, and isolation.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::{owner, wait_status};

const PATH: &str = "/api/v1/tasks/execute-many";

async fn count(app: &TestApp, u: &crate::helpers::User, t: &str) -> usize {
    let (s, v) = app.as_(u).tenant(t).get("/api/v1/tasks?limit=200").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["tasks"].as_array().map_or(0, Vec::len)
}

dual!(
    queues_a_batch_in_one_go,
    a_bad_item_stores_nothing_and_is_named,
    resending_a_batch_replays_it
);

async fn queues_a_batch_in_one_go(app: TestApp) {
    let (u, t) = owner(&app, "many@x.example").await;
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"capability": "diagnostics.echo", "input": {"n": i}}))
        .collect();
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(PATH, json!({"tasks": items}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 5);
    for (i, task) in tasks.iter().enumerate() {
        assert_eq!(task["replayed"], false);
        let id = task["task"]["id"].as_str().unwrap();
        let d = wait_status(&app, &u, &t, id, "succeeded").await;
        // In the order given.
        assert_eq!(d["task"]["result"]["echo"]["n"], i, "{d}");
    }

    // Another company sees none of them.
    let (b, tb) = owner(&app, "other@x.example").await;
    let id = tasks[0]["task"]["id"].as_str().unwrap();
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .get(&format!("/api/v1/tasks/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(count(&app, &b, &tb).await, 0);
}

async fn a_bad_item_stores_nothing_and_is_named(app: TestApp) {
    let (u, t) = owner(&app, "bad-many@x.example").await;
    let ok = json!({"capability": "diagnostics.echo", "input": {}});
    let cases = [
        (
            json!({"tasks": [ok, {"capability": "nope.nothing", "input": {}}]}),
            StatusCode::NOT_FOUND,
            "tasks[1]",
        ),
        (
            json!({"tasks": [ok, ok, {"capability": "diagnostics.echo", "version": "one"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tasks[2].version",
        ),
        (
            json!({"tasks": [{"capability": "diagnostics.echo", "priority": 99}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tasks[0].priority",
        ),
        (
            json!({"tasks": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1-100 items",
        ),
        (
            json!({"tasks": vec![ok.clone(); 101]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1-100 items",
        ),
        (
            json!({"tasks": [
                {"capability": "diagnostics.echo", "idempotency_key": "k"},
                {"capability": "diagnostics.echo", "idempotency_key": "k"}
            ]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "share the idempotency_key",
        ),
    ];
    for (body, status, names) in cases {
        let (s, v) = app.as_(&u).tenant(&t).post(PATH, body).await;
        assert_eq!(s, status, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{names}: {v}");
    }
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(PATH, json!({"tasks": [ok, {"capability": "nope.nothing"}]}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["details"]["index"], 1, "{v}");
    assert_eq!(v["error"]["code"], "capability_not_found", "{v}");
    // Wrong types and unknown fields are refused before anything is looked at.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(PATH, json!({"tasks": "echo"}))
        .await;
    assert!(s.is_client_error(), "{v}");
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(PATH, json!({"tasks": [ok], "extra": 1}))
        .await;
    assert!(s.is_client_error(), "{v}");
    // None of the refused batches stored anything, not even their valid items.
    assert_eq!(count(&app, &u, &t).await, 0);
}

async fn resending_a_batch_replays_it(app: TestApp) {
    let (u, t) = owner(&app, "again-many@x.example").await;
    let batch = json!({"tasks": [
        {"capability": "diagnostics.echo", "input": {"a": 1}, "idempotency_key": "one"},
        {"capability": "diagnostics.echo", "input": {"a": 2}, "idempotency_key": "two"},
    ]});
    let (s, first) = app.as_(&u).tenant(&t).post(PATH, batch.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let (s, again) = app.as_(&u).tenant(&t).post(PATH, batch).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    for i in 0..2 {
        assert_eq!(again["tasks"][i]["replayed"], true, "{again}");
        assert_eq!(
            again["tasks"][i]["task"]["id"],
            first["tasks"][i]["task"]["id"]
        );
    }
    // A key reused for a different task is a conflict, and nothing new is stored.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            PATH,
            json!({"tasks": [
                {"capability": "diagnostics.echo", "input": {"a": 3}},
                {"capability": "diagnostics.echo", "input": {"a": 9}, "idempotency_key": "two"},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tasks[1]"),
        "{v}"
    );
    assert_eq!(count(&app, &u, &t).await, 2);
}
