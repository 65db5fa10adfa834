//! The storage layer's write transactions: deferred statements (sent with the next
//! statement or the commit on SQLite), rollback of a transaction dropped midway, and the
//! open-task cap that `POST /tasks/execute` enforces from a cached count.

use chrono::Utc;
use ocsuite::ids::{AuditId, TenantId};
use ocsuite::store::{Store, sql};
use reqwest::StatusCode;
use serde_json::json;

use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::{execute, owner};

dual!(
    a_write_dropped_midway_leaves_nothing,
    a_failing_deferred_statement_fails_the_commit_and_keeps_nothing,
    deferred_inserts_learn_their_ids_by_the_commit,
    deferred_counts_arrive_with_the_next_trip_or_a_flush,
    pruning_drops_only_events_older_than_the_window,
    the_open_task_cap_answers_429,
);

async fn audit_rows(store: &Store, tenant: &TenantId, target: &str) -> i64 {
    let mut tx = store.tenant_read(tenant).await.unwrap();
    let (n,): (i64,) = tx
        .fetch_one(
            sql("SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND target_id = $2")
                .bind(tenant)
                .bind(target),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

fn audit_insert(tenant: &TenantId, id: &str, target: &str) -> ocsuite::store::Sql {
    sql("INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id, details, request_id, created_at) \
         VALUES ($1, $2, 'system', 'test', 'test.write', 'test', $3, '{}', NULL, $4)")
        .bind(tenant)
        .bind(id)
        .bind(target)
        .bind(Utc::now())
}

async fn tenant_of(app: &TestApp) -> TenantId {
    let (_, t) = owner(app, "store@example.com").await;
    TenantId::parse(&t).unwrap()
}

async fn a_write_dropped_midway_leaves_nothing(app: TestApp) {
    let store = &app.state.store;
    let t = tenant_of(&app).await;
    {
        let mut tx = store.tenant(&t).await.unwrap();
        tx.defer(audit_insert(&t, &AuditId::new().to_string(), "dropped"))
            .await
            .unwrap();
        // Sends BEGIN and the deferred insert.
        let (n,): (i64,) = tx
            .fetch_one(
                sql("SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND target_id = $2")
                    .bind(&t)
                    .bind("dropped"),
            )
            .await
            .unwrap();
        assert_eq!(n, 1, "the transaction sees its own deferred insert");
        // Dropped without commit.
    }
    // The next writer gets a clean connection and its turn.
    let mut tx = tokio::time::timeout(std::time::Duration::from_secs(5), store.tenant(&t))
        .await
        .expect("the writer's turn came back")
        .unwrap();
    tx.defer(audit_insert(&t, &AuditId::new().to_string(), "kept"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(audit_rows(store, &t, "dropped").await, 0);
    assert_eq!(audit_rows(store, &t, "kept").await, 1);
}

async fn a_failing_deferred_statement_fails_the_commit_and_keeps_nothing(app: TestApp) {
    let store = &app.state.store;
    let t = tenant_of(&app).await;
    let id = AuditId::new().to_string();
    let mut tx = store.tenant(&t).await.unwrap();
    tx.defer(audit_insert(&t, &id, "first")).await.unwrap();
    // Same primary key: fails when sent (on SQLite, with the commit).
    let second = tx.defer(audit_insert(&t, &id, "second")).await;
    let committed = match second {
        Ok(()) => tx.commit().await,
        Err(e) => Err(e),
    };
    let err = committed.expect_err("a duplicate key must fail the transaction");
    assert!(
        err.as_database_error()
            .is_some_and(|d| d.is_unique_violation()),
        "{err}"
    );
    assert_eq!(audit_rows(store, &t, "first").await, 0);
    // The writer is usable afterwards.
    let mut tx = store.tenant(&t).await.unwrap();
    tx.defer(audit_insert(&t, &AuditId::new().to_string(), "after"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(audit_rows(store, &t, "after").await, 1);
}

async fn deferred_inserts_learn_their_ids_by_the_commit(app: TestApp) {
    let store = &app.state.store;
    let t = tenant_of(&app).await;
    let insert = |seq: i64| {
        sql("INSERT INTO events (tenant_id, topic, seq, kind, data, created_at) VALUES ($1, $2, $3, 'test', '{}', $4) RETURNING id")
            .bind(&t)
            .bind("notifications-test")
            .bind(seq)
            .bind(Utc::now())
    };
    let mut tx = store.tenant(&t).await.unwrap();
    let a = tx.defer_insert(insert(1)).await.unwrap();
    let b = tx.defer_insert(insert(2)).await.unwrap();
    tx.commit().await.unwrap();
    let (a, b) = (a.get().expect("first id"), b.get().expect("second id"));
    assert!(b > a, "{a} then {b}");
    let mut tx = store.tenant_read(&t).await.unwrap();
    let rows: Vec<(i64, i64)> = tx
        .fetch_all(
            sql("SELECT id, seq FROM events WHERE tenant_id = $1 AND topic = $2 ORDER BY seq")
                .bind(&t)
                .bind("notifications-test"),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows, vec![(a, 1), (b, 2)]);
}

/// A counted deferral reports how many rows it changed once sent; a transaction dropped
/// after seeing a wrong count keeps nothing (what the queue does when a lease was lost).
async fn deferred_counts_arrive_with_the_next_trip_or_a_flush(app: TestApp) {
    let store = &app.state.store;
    let t = tenant_of(&app).await;
    let mut tx = store.tenant(&t).await.unwrap();
    tx.defer(audit_insert(&t, &AuditId::new().to_string(), "counted"))
        .await
        .unwrap();
    let hit = tx
        .defer_counted(
            sql("UPDATE audit_log SET action = 'test.counted' WHERE tenant_id = $1 AND target_id = $2")
                .bind(&t)
                .bind("counted"),
        )
        .await
        .unwrap();
    let miss = tx
        .defer_counted(
            sql(
                "UPDATE audit_log SET action = 'test.none' WHERE tenant_id = $1 AND target_id = $2",
            )
            .bind(&t)
            .bind("nobody"),
        )
        .await
        .unwrap();
    // Sent with the next statement (SQLite) or already run (PostgreSQL).
    tx.execute(sql("SELECT 1")).await.unwrap();
    assert_eq!((hit.get(), miss.get()), (Some(1), Some(0)));
    tx.commit().await.unwrap();
    assert_eq!(audit_rows(store, &t, "counted").await, 1);

    // A flush sends what is deferred without a statement of its own.
    let mut tx = store.tenant(&t).await.unwrap();
    tx.defer(audit_insert(&t, &AuditId::new().to_string(), "flushed"))
        .await
        .unwrap();
    let none = tx
        .defer_counted(
            sql("DELETE FROM audit_log WHERE tenant_id = $1 AND target_id = $2")
                .bind(&t)
                .bind("nobody"),
        )
        .await
        .unwrap();
    tx.flush().await.unwrap();
    assert_eq!(none.get(), Some(0));
    // The count says "do not commit": dropping keeps nothing of the transaction.
    drop(tx);
    let tx = tokio::time::timeout(std::time::Duration::from_secs(5), store.tenant(&t))
        .await
        .expect("the writer's turn came back")
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(audit_rows(store, &t, "flushed").await, 0);
}

/// Retention removes events by age; ids follow creation time, and pruning walks them in
/// id order (there is no index on `created_at`).
async fn pruning_drops_only_events_older_than_the_window(app: TestApp) {
    let store = &app.state.store;
    let t = tenant_of(&app).await;
    let insert = |seq: i64, days_ago: i64| {
        sql("INSERT INTO events (tenant_id, topic, seq, kind, data, created_at) VALUES ($1, 'notifications', $2, 'test', '{}', $3)")
            .bind(&t)
            .bind(seq)
            .bind(Utc::now() - chrono::Duration::days(days_ago))
    };
    let count = || async {
        let mut tx = store.tenant_read(&t).await.unwrap();
        let (n,): (i64,) = tx
            .fetch_one(
                sql("SELECT count(*) FROM events WHERE tenant_id = $1 AND kind = 'test'").bind(&t),
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        n
    };
    // Nothing old yet: nothing goes (the window's edge is past the newest event).
    let mut tx = store.tenant(&t).await.unwrap();
    tx.execute(insert(1, 40)).await.unwrap();
    tx.execute(insert(2, 35)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ocsuite::realtime::prune(store, 60).await.unwrap(), 0);
    assert_eq!(count().await, 2);
    // Every event is old: all go.
    assert_eq!(ocsuite::realtime::prune(store, 30).await.unwrap(), 2);
    assert_eq!(count().await, 0);
    // Old then recent: only the old ones go.
    let mut tx = store.tenant(&t).await.unwrap();
    tx.execute(insert(3, 40)).await.unwrap();
    tx.execute(insert(4, 31)).await.unwrap();
    tx.execute(insert(5, 1)).await.unwrap();
    tx.execute(insert(6, 0)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ocsuite::realtime::prune(store, 30).await.unwrap(), 2);
    assert_eq!(count().await, 2);
}

async fn the_open_task_cap_answers_429(app: TestApp) {
    let (u, t) = owner(&app, "cap@example.com").await;
    let tenant = TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    let q = if tx.is_postgres() {
        sql(
            "INSERT INTO tasks (tenant_id, id, capability, version, input, status, attempts, max_attempts, created_by, cancel_requested, event_seq, created_at, updated_at) \
             SELECT $1, 'task_' || lpad(to_hex(i), 32, '0'), 'diagnostics.echo', '1.0.0', '{}', 'queued', 0, 1, 'test', false, 1, $2, $2 \
             FROM generate_series(1, 10000) AS i",
        )
    } else {
        sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
             INSERT INTO tasks (tenant_id, id, capability, version, input, status, attempts, max_attempts, created_by, cancel_requested, event_seq, created_at, updated_at) \
             SELECT $1, 'task_' || printf('%032x', i), 'diagnostics.echo', '1.0.0', '{}', 'queued', 0, 1, 'test', 0, 1, $2, $2 FROM n",
        )
    };
    tx.execute(q.bind(&tenant).bind(Utc::now())).await.unwrap();
    tx.commit().await.unwrap();
    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "diagnostics.echo", "input": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "too_many_open_tasks", "{v}");
    // Nothing was queued for the refused request.
    let mut tx = app.state.store.tenant_read(&tenant).await.unwrap();
    let (n,): (i64,) = tx
        .fetch_one(sql("SELECT count(*) FROM tasks WHERE tenant_id = $1").bind(&tenant))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 10_000);
}
