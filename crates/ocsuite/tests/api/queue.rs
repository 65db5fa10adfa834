//! The queue under failure: a worker that dies holding a lease, a worker in a second
//! process on PostgreSQL, and tenant isolation of tasks and jobs (HTTP and raw SQL).

use std::sync::Arc;
use std::time::Duration;

use ocsuite::ids::TenantId;
use ocsuite::queue::{self, EXECUTE_TASK, worker};
use ocsuite::store::sql;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::dual;
use crate::helpers::{Db, RUNTIME_ROLE, TestApp};
use crate::tasks::{execute, owner, start, wait_status};

dual!(
    tasks_and_jobs_of_another_tenant_are_404,
    kill_switch_pauses_a_tenant,
    one_tenant_cannot_starve_another,
);

async fn tasks_and_jobs_of_another_tenant_are_404(app: TestApp) {
    let (a, ta) = owner(&app, "a@q.example").await;
    let (b, tb) = owner(&app, "b@q.example").await;
    let done = start(&app, &a, &ta, "diagnostics.echo", json!({"a": 1})).await;
    wait_status(&app, &a, &ta, &done, "succeeded").await;
    let dead = start(&app, &a, &ta, "diagnostics.fail", json!({})).await;
    wait_status(&app, &a, &ta, &dead, "dead").await;
    let (_, d) = app.as_(&a).tenant(&ta).get("/api/v1/queues/dead").await;
    let job = d["jobs"][0]["id"].as_str().unwrap().to_owned();
    let (_, key) = app.api_key(&b, &tb, "admin").await;

    for token in [b.token.as_str(), key.as_str()] {
        for (m, path) in [
            (Method::GET, format!("/api/v1/tasks/{done}")),
            (Method::POST, format!("/api/v1/tasks/{dead}/cancel")),
            (Method::POST, format!("/api/v1/queues/dead/{job}/retry")),
            (Method::POST, format!("/api/v1/queues/dead/{job}/discard")),
        ] {
            let (s, v) = app
                .call(m, &path, Some(token), Some(&tb), Some(json!({})))
                .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        }
        let (s, _) = app.as_(token).tenant(&ta).get("/api/v1/tasks").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (_, list) = app.as_(token).tenant(&tb).get("/api/v1/tasks").await;
        let listed = list["tasks"].to_string();
        assert!(
            !listed.contains(&done) && !listed.contains(&dead),
            "{listed}"
        );
        let (_, dj) = app.as_(token).tenant(&tb).get("/api/v1/queues/dead").await;
        assert_eq!(dj["jobs"], json!([]));
        // Same idempotency key in another tenant is another task.
        let (s, v) = execute(
            &app,
            &b,
            &tb,
            json!({"capability": "diagnostics.echo", "idempotency_key": "shared"}),
        )
        .await;
        assert!(s.is_success(), "{v}");
    }
    let (s, v) = execute(
        &app,
        &a,
        &ta,
        json!({"capability": "diagnostics.echo", "idempotency_key": "shared"}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // Nothing of A's changed.
    let (_, d) = app
        .as_(&a)
        .tenant(&ta)
        .get(&format!("/api/v1/tasks/{dead}"))
        .await;
    assert_eq!(d["task"]["status"], "dead");
    let (_, dj) = app.as_(&a).tenant(&ta).get("/api/v1/queues/dead").await;
    assert_eq!(dj["jobs"].as_array().unwrap().len(), 1);
}

fn worker_config(lease_ms: u64) -> worker::WorkerConfig {
    worker::WorkerConfig {
        concurrency: 2,
        lease: Duration::from_millis(lease_ms),
        poll: Duration::from_millis(50),
        retry_base_ms: 20,
        name: "test-worker".into(),
    }
}

/// Workers settle a job and claim the next in one transaction; stopping them must not
/// leave a claimed job behind (it would wait out its lease): every job is either done or
/// still ready for the next process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stopping_leave_no_job_claimed_sqlite() {
    workers_stopping(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stopping_leave_no_job_claimed_postgres() {
    workers_stopping(Db::Postgres).await;
}

async fn workers_stopping(db: Db) {
    // No workers of the app's own: only the ones this test starts and stops.
    let Some(app) = TestApp::start_with(db, |c| c.workers = 0).await else {
        return;
    };
    let (u, t) = owner(&app, "stop@q.example").await;
    let tenant = TenantId::parse(&t).unwrap();
    let store = &app.state.store;
    for i in 0..40 {
        start(&app, &u, &t, "diagnostics.echo", json!({"i": i})).await;
    }
    let handler: Arc<dyn worker::Handler> =
        Arc::new(ocsuite::tasks::handler::ExecuteTask::new(app.state.clone()));
    let workers = queue::pool::Workers::start(
        store.clone(),
        app.state.bus.clone(),
        app.state.jobs_wake.clone(),
        vec![handler],
        worker_config(30_000),
    );
    // Stop while the backlog is being worked off.
    let count = |status: &'static str| {
        let tenant = tenant.clone();
        async move {
            let mut tx = store.tenant_read(&tenant).await.unwrap();
            let (n,): (i64,) = tx
                .fetch_one(
                    sql("SELECT count(*) FROM jobs WHERE tenant_id = $1 AND status = $2")
                        .bind(&tenant)
                        .bind(status),
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
            n
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count("ready").await > 30 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    workers.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        count("running").await,
        0,
        "a stopped worker left a job claimed"
    );
    let mut tx = store.tenant_read(&tenant).await.unwrap();
    let (running_tasks,): (i64,) = tx
        .fetch_one(
            sql("SELECT count(*) FROM tasks WHERE tenant_id = $1 AND status = 'running'")
                .bind(&tenant),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(running_tasks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_recovers_a_dead_workers_job_sqlite() {
    lease_expiry(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_recovers_a_dead_workers_job_postgres() {
    lease_expiry(Db::Postgres).await;
}

/// A worker claims a job and dies (never renews, never finishes). After its lease the job
/// runs again on a live worker and the task ends once; the dead worker's late attempt to
/// record an outcome is refused.
async fn lease_expiry(db: Db) {
    let Some(app) = TestApp::start_with(db, |c| c.workers = 0).await else {
        return;
    };
    let (u, t) = owner(&app, "lease@q.example").await;
    let id = start(&app, &u, &t, "diagnostics.echo", json!({"n": 7})).await;
    let store = &app.state.store;
    let (job, tx) = queue::claim(store, EXECUTE_TASK, "doomed", Duration::from_millis(600))
        .await
        .unwrap()
        .expect("the job is claimable");
    tx.commit().await.unwrap();
    assert_eq!(job.tenant_id, TenantId::parse(&t).unwrap());
    assert_eq!(job.attempts, 1);

    let handler: Arc<dyn worker::Handler> =
        Arc::new(ocsuite::tasks::handler::ExecuteTask::new(app.state.clone()));
    let live = queue::pool::Workers::start(
        store.clone(),
        app.state.bus.clone(),
        app.state.jobs_wake.clone(),
        vec![handler],
        worker_config(3000),
    );
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["attempts"], 2);
    let retry = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "retrying")
        .expect("the lost attempt is on the timeline");
    assert!(
        retry["data"]["error"]
            .as_str()
            .unwrap()
            .contains("lease expired")
    );
    assert_eq!(
        d["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "succeeded")
            .count(),
        1
    );

    // The dead worker wakes up: its lease token no longer matches anything.
    let mut tx = store.tenant(&job.tenant_id).await.unwrap();
    let done = queue::complete(&mut tx, &job).await.unwrap();
    assert!(!queue::held(&mut tx, &done).await.unwrap());
    let retried = queue::retry_at(&mut tx, &job, "late", chrono::Utc::now())
        .await
        .unwrap();
    assert!(!queue::held(&mut tx, &retried).await.unwrap());
    tx.commit().await.unwrap();
    live.shutdown(Duration::from_secs(5)).await;
    let (_, d) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{id}"))
        .await;
    assert_eq!(d["task"]["status"], "succeeded");
}

/// `ocsuite worker` in a separate process runs the jobs a `serve` with no workers of its
/// own queues, and its events reach the server's WebSocket subscribers via NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_a_second_process_runs_jobs_postgres() {
    let Some(app) = TestApp::start_with(Db::Postgres, |c| c.workers = 0).await else {
        return;
    };
    let (u, t) = owner(&app, "proc@q.example").await;
    let mut ws = crate::realtime::connect(&app, &u.token, &t).await;
    crate::realtime::send(&mut ws, json!({"type": "subscribe", "topic": "tasks"})).await;
    crate::realtime::next(&mut ws).await.unwrap();

    let c = &app.config;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ocsuite"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OCSUITE_DATABASE_URL", &c.database_url)
        .env(
            "OCSUITE_MIGRATION_DATABASE_URL",
            c.migration_database_url.as_deref().unwrap(),
        )
        .env(
            "OCSUITE_MASTER_KEY",
            c.master_key.as_ref().unwrap().expose(),
        )
        .env("OCSUITE_DATA_DIR", &c.data_dir)
        .env("OCSUITE_WORKERS", "2")
        .env("OCSUITE_QUEUE_POLL_MS", "30000")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.sleep",
        json!({"seconds": 0.2, "steps": 2}),
    )
    .await;
    // The poll interval is 30 s, so finishing well before proves LISTEN/NOTIFY woke the
    // worker (the child's own start-up is included in the time).
    let started = std::time::Instant::now();
    let mut kinds = Vec::new();
    loop {
        let m = crate::realtime::next(&mut ws).await.unwrap();
        if m["type"] == "event" && m["data"]["task_id"] == id.as_str() {
            kinds.push(m["kind"].as_str().unwrap().to_owned());
            if m["kind"] == "succeeded" {
                break;
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        kinds.contains(&"started".to_string()) && kinds.contains(&"progress".to_string()),
        "{kinds:?}"
    );
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["result"], json!({"slept_ms": 200}));
    child.kill().await.unwrap();
}

/// Raw SQL as the runtime role sees no task, job or event without the tenant set, and
/// none of A's with B's set.
#[tokio::test]
async fn row_level_security_covers_tasks_jobs_events_and_chat_postgres() {
    let Some(app) = TestApp::start_with(Db::Postgres, |c| c.workers = 0).await else {
        return;
    };
    let (a, ta) = owner(&app, "a@rls.example").await;
    let (_, tb) = owner(&app, "b@rls.example").await;
    start(&app, &a, &ta, "diagnostics.echo", json!({})).await;
    app.as_(&a)
        .tenant(&ta)
        .post("/api/v1/modules/diagnostics/disable", json!({}))
        .await;
    let chat = app
        .http
        .post(app.url("/api/v1/c-suite/cfo/chat"))
        .bearer_auth(&a.token)
        .header("x-tenant-id", &ta)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(chat.text().await.unwrap().contains("message_end"));

    let mut conn = PgConnection::connect(&app.config.database_url)
        .await
        .unwrap();
    let (role,): (String,) = sqlx::query_as("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(role, RUNTIME_ROLE);
    for table in [
        "tasks",
        "jobs",
        "events",
        "tenant_modules",
        "mcp_servers",
        "conversations",
        "messages",
        "usage_ledger",
    ] {
        let q = format!("SELECT count(*) FROM {table}");
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(q.clone()))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} visible without a tenant");
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&tb)
            .execute(&mut *tx)
            .await
            .unwrap();
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(q.clone()))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}: B sees A's rows");
        tx.rollback().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&ta)
            .execute(&mut *tx)
            .await
            .unwrap();
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        if table != "mcp_servers" {
            assert!(n > 0, "{table}: A cannot see its own rows");
        }
        tx.rollback().await.unwrap();
    }
    // B cannot write a job into A's tenant either.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(&tb)
        .execute(&mut *tx)
        .await
        .unwrap();
    let r = sqlx::query("INSERT INTO jobs (tenant_id, id, queue, payload, priority, run_at, status, attempts, max_attempts, created_at, updated_at) VALUES ($1, 'job_x', 'execute-task', '{}', 0, now(), 'ready', 0, 1, now(), now())")
        .bind(&ta)
        .execute(&mut *tx)
        .await;
    assert!(r.is_err(), "RLS must refuse a cross-tenant insert");
    tx.rollback().await.unwrap();

    // The claim function is the only cross-tenant door, and it still answers.
    let store = &app.state.store;
    let mut tx = store.platform_read().await.unwrap();
    let rows: Vec<(String, String, i64)> = tx
        .fetch_all(sql(
            "SELECT queue, status, jobs FROM ocsuite_queue_depths()",
        ))
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|(q, s, n)| q == "execute-task" && s == "ready" && *n == 1),
        "{rows:?}"
    );
}

async fn kill_switch_pauses_a_tenant(app: TestApp) {
    let (u, t) = owner(&app, "kill@x.example").await;
    let (other, ot) = owner(&app, "other@x.example").await;
    let (s, q) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/queues/pause", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(q["paused_at"].is_string());
    let id = start(&app, &u, &t, "diagnostics.echo", json!({"x": 1})).await;
    // Another tenant's work still runs while this one is paused.
    let oid = start(&app, &other, &ot, "diagnostics.echo", json!({})).await;
    wait_status(&app, &other, &ot, &oid, "succeeded").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, d) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{id}"))
        .await;
    assert_eq!(d["task"]["status"], "queued");
    let (s, q) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/queues/resume", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(q["paused_at"].is_null());
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["result"], json!({"echo": {"x": 1}}));

    let member = app.signup("kmember@x.example").await;
    app.add_member(&u, &t, &member, "member").await;
    let (s, _) = app
        .as_(&member)
        .tenant(&t)
        .post("/api/v1/queues/pause", json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn one_tenant_cannot_starve_another(app: TestApp) {
    let (a, ta) = owner(&app, "busy@x.example").await;
    let (b, tb) = owner(&app, "quiet@x.example").await;
    let (s, v) = app
        .as_(&a)
        .tenant(&ta)
        .patch("/api/v1/queues", json!({"concurrency": 1}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["concurrency"], 1);
    let mut busy = Vec::new();
    for _ in 0..6 {
        busy.push(start(&app, &a, &ta, "diagnostics.sleep", json!({"seconds": 0.4})).await);
    }
    let quiet = start(&app, &b, &tb, "diagnostics.echo", json!({})).await;
    wait_status(&app, &b, &tb, &quiet, "succeeded").await;
    // B finished while most of A's backlog still waits: A never ran more than one at once.
    let (_, list) = app
        .as_(&a)
        .tenant(&ta)
        .get("/api/v1/tasks?status=queued")
        .await;
    assert!(list["tasks"].as_array().unwrap().len() >= 4, "{list}");
    for id in &busy {
        wait_status(&app, &a, &ta, id, "succeeded").await;
    }
    // At most one ran at a time (on PostgreSQL too: claims near the limit serialise).
    let mut edges = Vec::new();
    for id in &busy {
        let (_, d) = app
            .as_(&a)
            .tenant(&ta)
            .get(&format!("/api/v1/tasks/{id}"))
            .await;
        let at =
            |k: &str| chrono::DateTime::parse_from_rfc3339(d["task"][k].as_str().unwrap()).unwrap();
        edges.push((at("started_at"), 1));
        edges.push((at("finished_at"), -1));
    }
    edges.sort();
    let (mut running, mut peak) = (0, 0);
    for (_, step) in &edges {
        running += step;
        peak = peak.max(running);
    }
    assert!(peak <= 1, "{peak} ran at once: {edges:?}");
    let (s, _) = app
        .as_(&a)
        .tenant(&ta)
        .patch("/api/v1/queues", json!({"concurrency": 0}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}
