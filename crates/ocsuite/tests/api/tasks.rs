//! Tasks through the real queue and workers: execution, schema and version errors,
//! idempotency, retries and the dead-letter queue, cancellation, the kill switch and
//! per-tenant fairness.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User};

/// Signs up a user with a fresh tenant.
pub async fn owner(app: &TestApp, email: &str) -> (User, String) {
    let u = app.signup(email).await;
    let t = app.create_tenant(&u, "Co").await;
    (u, t)
}

pub async fn execute(app: &TestApp, u: &User, t: &str, body: Value) -> (StatusCode, Value) {
    app.as_(u)
        .tenant(t)
        .post("/api/v1/tasks/execute", body)
        .await
}

/// Queues a capability and returns the task id.
pub async fn start(app: &TestApp, u: &User, t: &str, capability: &str, input: Value) -> String {
    let (s, v) = execute(app, u, t, json!({"capability": capability, "input": input})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["task"]["status"], "queued");
    v["task"]["id"].as_str().unwrap().to_owned()
}

/// Polls the task until `done` holds (or fails after `secs`); returns the detail.
pub async fn wait_for(
    app: &TestApp,
    u: &User,
    t: &str,
    id: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, v) = app
            .as_(u)
            .tenant(t)
            .get(&format!("/api/v1/tasks/{id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task never got there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_status(app: &TestApp, u: &User, t: &str, id: &str, status: &str) -> Value {
    wait_for(app, u, t, id, 20, |v| v["task"]["status"] == status).await
}

fn kinds(detail: &Value) -> Vec<String> {
    detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

dual!(
    runs_a_capability_and_records_its_timeline,
    rejects_unknown_capabilities_versions_and_bad_input,
    idempotency_key_runs_once,
    retries_then_dead_letters_and_admin_retries,
    permanent_failures_panics_and_bad_output,
    cancels_queued_and_running_tasks,
    modules_can_be_disabled,
);

async fn runs_a_capability_and_records_its_timeline(app: TestApp) {
    let (u, t) = owner(&app, "run@x.example").await;
    let (s, v) = app.as_(&u).tenant(&t).get("/api/v1/modules").await;
    assert_eq!(s, StatusCode::OK);
    let diag = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "diagnostics")
        .unwrap();
    assert_eq!(diag["source"]["kind"], "builtin");
    let sleep = diag["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "diagnostics.sleep")
        .unwrap();
    assert_eq!(sleep["version"], "1.0.0");
    assert_eq!(sleep["side_effect"], "none");
    assert_eq!(sleep["input_schema"]["required"], json!(["seconds"]));

    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.sleep",
        json!({"seconds": 0.3, "steps": 3}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["result"], json!({"slept_ms": 300}));
    assert_eq!(d["task"]["attempts"], 1);
    assert_eq!(d["task"]["version"], "1.0.0");
    assert!(d["task"]["started_at"].is_string() && d["task"]["finished_at"].is_string());
    let k = kinds(&d);
    assert_eq!(k.first().map(String::as_str), Some("queued"));
    assert_eq!(k.get(1).map(String::as_str), Some("started"));
    assert_eq!(k.last().map(String::as_str), Some("succeeded"));
    assert!(k.iter().any(|k| k == "progress"), "{k:?}");
    let seqs: Vec<i64> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let last_progress = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["kind"] == "progress")
        .unwrap();
    assert_eq!(last_progress["data"]["percent"], 100);

    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/tasks").await;
    assert_eq!(list["tasks"][0]["id"], id.as_str());
    let (_, list) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/tasks?status=failed")
        .await;
    assert_eq!(list["tasks"], json!([]));
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/tasks?status=bogus")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, audit) = app.as_(&u).tenant(&t).get("/api/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .or(audit.as_array())
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(actions.contains(&"task.queued"), "{audit}");
    assert!(actions.contains(&"task.succeeded"), "{audit}");
}

async fn rejects_unknown_capabilities_versions_and_bad_input(app: TestApp) {
    let (u, t) = owner(&app, "bad@x.example").await;
    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "nope.nothing", "input": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "capability_not_found");
    assert_eq!(v["error"]["details"]["available_versions"], json!([]));

    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.echo", "version": "2", "input": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        v["error"]["details"]["available_versions"],
        json!(["1.0.0"])
    );
    let (s, _) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.echo", "version": "1", "input": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.echo", "version": "one", "input": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "version");

    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.sleep", "input": {"seconds": "soon", "extra": 1}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "schema_violation");
    let violations = v["error"]["details"]["violations"].as_array().unwrap();
    assert!(violations.iter().any(|x| x["path"] == "/seconds"), "{v}");
    assert!(violations.len() >= 2, "{v}");

    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.echo", "priority": 99}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = execute(&app, &u, &t, json!({"capability": 5})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.echo", "surprise": true}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let res = app
        .http
        .post(app.url("/api/v1/tasks/execute"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // Unknown and foreign-shaped task ids are 404, never 500.
    for path in [
        "/api/v1/tasks/tsk_nope",
        "/api/v1/tasks/' OR 1=1 --",
        "/api/v1/tasks/ten_00",
    ] {
        let (s, _) = app.as_(&u).tenant(&t).get(path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }

    // A viewer may read tasks but not run them.
    let viewer = app.signup("viewer@x.example").await;
    app.add_member(&u, &t, &viewer, "viewer").await;
    let (s, v) = execute(&app, &viewer, &t, json!({"capability": "diagnostics.echo"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = app.as_(&viewer).tenant(&t).get("/api/v1/tasks").await;
    assert_eq!(s, StatusCode::OK);
    // Nothing was stored by the refused requests: only the one good task exists.
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list}");
}

async fn idempotency_key_runs_once(app: TestApp) {
    let (u, t) = owner(&app, "idem@x.example").await;
    let body =
        json!({"capability": "diagnostics.echo", "input": {"n": 1}, "idempotency_key": "order-42"});
    let (s1, v1) = execute(&app, &u, &t, body.clone()).await;
    assert_eq!(s1, StatusCode::ACCEPTED, "{v1}");
    let (s2, v2) = execute(&app, &u, &t, body.clone()).await;
    assert_eq!(s2, StatusCode::OK, "{v2}");
    assert_eq!(v2["replayed"], true);
    assert_eq!(v1["task"]["id"], v2["task"]["id"]);
    let id = v1["task"]["id"].as_str().unwrap();
    wait_status(&app, &u, &t, id, "succeeded").await;
    let (s3, v3) = execute(&app, &u, &t, body.clone()).await;
    assert_eq!(s3, StatusCode::OK);
    assert_eq!(v3["task"]["status"], "succeeded");
    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.echo", "input": {"n": 2}, "idempotency_key": "order-42"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Concurrent duplicates still make one task.
    let body = json!({"capability": "diagnostics.echo", "input": {}, "idempotency_key": "burst"});
    let results =
        futures_util::future::join_all((0..8).map(|_| execute(&app, &u, &t, body.clone()))).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(s, v)| {
            assert!(s.is_success(), "{v}");
            v["task"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/tasks?limit=200").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
}

async fn retries_then_dead_letters_and_admin_retries(app: TestApp) {
    let (u, t) = owner(&app, "dlq@x.example").await;
    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.fail",
        json!({"message": "upstream down"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "dead").await;
    assert_eq!(d["task"]["attempts"], 3);
    assert_eq!(d["task"]["error"], "upstream down");
    let k = kinds(&d);
    assert_eq!(k.iter().filter(|k| *k == "retrying").count(), 2, "{k:?}");
    assert_eq!(k.last().map(String::as_str), Some("dead"));

    let (s, q) = app.as_(&u).tenant(&t).get("/api/v1/queues").await;
    assert_eq!(s, StatusCode::OK);
    let dlq = q["depths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["queue"] == "execute-task-dlq")
        .unwrap();
    assert_eq!(dlq["dead"], 1, "{q}");
    let (_, dead) = app.as_(&u).tenant(&t).get("/api/v1/queues/dead").await;
    let job = &dead["jobs"][0];
    assert_eq!(job["payload"]["task_id"], id.as_str());
    assert_eq!(job["last_error"], "upstream down");
    assert_eq!(job["queue"], "execute-task-dlq");
    let job_id = job["id"].as_str().unwrap().to_owned();

    // Retry from the admin API: the task runs its attempts again.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/queues/dead/{job_id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let d = wait_for(&app, &u, &t, &id, 20, |v| {
        v["task"]["status"] == "dead" && kinds(v).iter().any(|k| k == "requeued")
    })
    .await;
    assert_eq!(kinds(&d).iter().filter(|k| *k == "dead").count(), 2);

    // A member is not an admin; discard is; a second discard is 404.
    let member = app.signup("m@x.example").await;
    app.add_member(&u, &t, &member, "member").await;
    let (s, _) = app.as_(&member).tenant(&t).get("/api/v1/queues/dead").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/queues/dead/{job_id}/discard"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/queues/dead/{job_id}/discard"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, dead) = app.as_(&u).tenant(&t).get("/api/v1/queues/dead").await;
    assert_eq!(dead["jobs"], json!([]));

    // Fails twice, then succeeds: retried, not dead.
    let id = start(&app, &u, &t, "diagnostics.fail", json!({"attempts": 2})).await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["result"], json!({"attempt": 3}));
    assert!(d["task"]["error"].is_null());
}

async fn permanent_failures_panics_and_bad_output(app: TestApp) {
    let (u, t) = owner(&app, "perm@x.example").await;
    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.fail",
        json!({"mode": "permanent", "message": "bad credentials"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "failed").await;
    assert_eq!(d["task"]["attempts"], 1);
    assert_eq!(d["task"]["error"], "bad credentials");

    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.fail",
        json!({"mode": "panic", "attempts": 1}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["attempts"], 2);
    let retry = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "retrying")
        .unwrap();
    assert_eq!(retry["data"]["error"], "the module panicked");

    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.fail",
        json!({"mode": "bad_output"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "failed").await;
    let err = d["task"]["error"].as_str().unwrap();
    assert!(err.contains("output") && err.contains("/attempt"), "{err}");
    // Nothing is left in any queue.
    let (_, q) = app.as_(&u).tenant(&t).get("/api/v1/queues").await;
    for depth in q["depths"].as_array().unwrap() {
        assert_eq!(depth["ready"], 0, "{q}");
        assert_eq!(depth["dead"], 0, "{q}");
    }
}

async fn cancels_queued_and_running_tasks(app: TestApp) {
    let (u, t) = owner(&app, "cancel@x.example").await;
    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.sleep",
        json!({"seconds": 30, "steps": 30}),
    )
    .await;
    wait_status(&app, &u, &t, &id, "running").await;
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["cancel_requested"], true);
    // The run stops at the next lease renewal (lease/3 = 10 s in tests at most).
    let d = wait_for(&app, &u, &t, &id, 25, |v| {
        v["task"]["status"] == "cancelled"
    })
    .await;
    assert!(kinds(&d).contains(&"cancel_requested".to_string()));
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Queued behind the kill switch: cancelled at once and never runs.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/queues/pause", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let id = start(&app, &u, &t, "diagnostics.echo", json!({})).await;
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    app.as_(&u)
        .tenant(&t)
        .post("/api/v1/queues/resume", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, d) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{id}"))
        .await;
    assert_eq!(d["task"]["status"], "cancelled");
    assert!(!kinds(&d).contains(&"started".to_string()));
}

async fn modules_can_be_disabled(app: TestApp) {
    let (u, t) = owner(&app, "mods@x.example").await;
    let (s, m) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/modules/diagnostics/disable", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["enabled"], false);
    let (s, v) = execute(&app, &u, &t, json!({"capability": "diagnostics.echo"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Other tenants are unaffected.
    let (o, ot) = owner(&app, "mods2@x.example").await;
    let (s, _) = execute(&app, &o, &ot, json!({"capability": "diagnostics.echo"})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/modules/diagnostics/enable", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = execute(&app, &u, &t, json!({"capability": "diagnostics.echo"})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/modules/nope/disable", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
