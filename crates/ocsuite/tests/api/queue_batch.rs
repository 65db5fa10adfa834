//! The batched queue: one claim takes many jobs without breaking any tenant's limit or
//! kill switch, one statement completes many jobs but only those still under their
//! lease and only in the transaction's tenant, and a busy queue's batches spanning
//! tenants record every task once, in order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ocsuite::queue::{self, Claimed, EXECUTE_TASK};
use ocsuite::store::scoped;
use reqwest::StatusCode;
use serde_json::json;

use crate::dual;
use crate::helpers::{Db, TestApp};
use crate::tasks::{owner, start, wait_status};

dual!(batches_spanning_tenants_record_every_task_once_in_order);

const LEASE: Duration = Duration::from_secs(30);

async fn claim(app: &TestApp, limit: usize) -> Vec<Claimed> {
    let mut tx = app.state.store.platform().await.unwrap();
    let jobs = queue::claim_many(&mut tx, EXECUTE_TASK, "batch-test", LEASE, limit)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    jobs
}

fn per_tenant(jobs: &[Claimed]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for j in jobs {
        *n.entry(j.tenant_id.to_string()).or_insert(0) += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_claim_keeps_limits_kill_switch_and_leases_sqlite() {
    batched_claim(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_claim_keeps_limits_kill_switch_and_leases_postgres() {
    batched_claim(Db::Postgres).await;
}

async fn batched_claim(db: Db) {
    let Some(app) = TestApp::start_with(db, |c| c.workers = 0).await else {
        return;
    };
    let (a, ta) = owner(&app, "limited@batch.example").await;
    let (b, tb) = owner(&app, "open@batch.example").await;
    let (c, tc) = owner(&app, "paused@batch.example").await;
    let (s, v) = app
        .as_(&a)
        .tenant(&ta)
        .patch("/api/v1/queues", json!({"concurrency": 2}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .as_(&c)
        .tenant(&tc)
        .post("/api/v1/queues/pause", json!({}))
        .await;
    assert!(s.is_success(), "{v}");
    for _ in 0..5 {
        start(&app, &a, &ta, "diagnostics.echo", json!({})).await;
    }
    for _ in 0..3 {
        start(&app, &b, &tb, "diagnostics.echo", json!({})).await;
    }
    for _ in 0..2 {
        start(&app, &c, &tc, "diagnostics.echo", json!({})).await;
    }

    // One claim for ten: A's limit leaves it two, B has three, C is paused.
    let jobs = claim(&app, 10).await;
    let n = per_tenant(&jobs);
    assert_eq!(n.get(&ta), Some(&2), "{n:?}");
    assert_eq!(n.get(&tb), Some(&3), "{n:?}");
    assert_eq!(n.get(&tc), None, "{n:?}");
    let tokens: HashSet<&str> = jobs.iter().map(|j| j.token.as_str()).collect();
    assert_eq!(tokens.len(), 5, "every job has its own lease token");
    assert!(jobs.iter().all(|j| j.attempts == 1));
    // Nothing more is claimable: A is at its limit, B is empty, C is still paused.
    assert!(claim(&app, 10).await.is_empty());

    // A limit of one claim caps the batch.
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .patch("/api/v1/queues", json!({"concurrency": 10}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .as_(&c)
        .tenant(&tc)
        .post("/api/v1/queues/resume", json!({}))
        .await;
    assert!(s.is_success());
    let one = claim(&app, 1).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].tenant_id.to_string(), tc);

    let store = &app.state.store;
    let mine: Vec<&Claimed> = jobs
        .iter()
        .filter(|j| j.tenant_id.to_string() == ta)
        .collect();
    let theirs: Vec<&Claimed> = jobs
        .iter()
        .filter(|j| j.tenant_id.to_string() == tb)
        .collect();
    // Completing B's jobs inside A's transaction touches nothing.
    let mut tx = store.tenant(&mine[0].tenant_id).await.unwrap();
    assert!(
        queue::complete_many(&mut tx, &theirs)
            .await
            .unwrap()
            .is_empty()
    );
    // One of A's jobs was taken over by another worker: only the other one completes.
    tx.execute(
        scoped("UPDATE jobs SET lease_token = 'someone-else' WHERE tenant_id = $1 AND id = $2")
            .bind(&mine[1].id),
    )
    .await
    .unwrap();
    let done = queue::complete_many(&mut tx, &mine).await.unwrap();
    assert_eq!(done, vec![mine[0].token.clone()]);
    tx.commit().await.unwrap();
    // B's jobs are untouched and still B's.
    let mut tx = store.tenant(&theirs[0].tenant_id).await.unwrap();
    let done = queue::complete_many(&mut tx, &theirs).await.unwrap();
    assert_eq!(done.len(), 3);
    tx.commit().await.unwrap();

    // A freed one slot (the other job still runs elsewhere): one more of A's, no more.
    let next = claim(&app, 10).await;
    let n = per_tenant(&next);
    assert_eq!(n.get(&ta), Some(&1), "{n:?}");
    assert_eq!(n.get(&tc), Some(&1), "{n:?}");
    assert_eq!(next.len(), 2, "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batched_claims_never_exceed_a_limit_sqlite() {
    concurrent_claims(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batched_claims_never_exceed_a_limit_postgres() {
    concurrent_claims(Db::Postgres).await;
}

/// Two claims in flight at once (two processes' dispatchers): together they take no more
/// than the tenant's limit.
async fn concurrent_claims(db: Db) {
    let Some(app) = TestApp::start_with(db, |c| c.workers = 0).await else {
        return;
    };
    let (a, ta) = owner(&app, "race@batch.example").await;
    let (s, _) = app
        .as_(&a)
        .tenant(&ta)
        .patch("/api/v1/queues", json!({"concurrency": 3}))
        .await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..10 {
        start(&app, &a, &ta, "diagnostics.echo", json!({})).await;
    }
    let store = app.state.store.clone();
    let mut first = store.platform().await.unwrap();
    let got = queue::claim_many(&mut first, EXECUTE_TASK, "one", LEASE, 10)
        .await
        .unwrap();
    let second = tokio::spawn(async move {
        let mut tx = store.platform().await.unwrap();
        let jobs = queue::claim_many(&mut tx, EXECUTE_TASK, "two", LEASE, 10)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        jobs
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.commit().await.unwrap();
    let more = second.await.unwrap();
    assert_eq!(got.len() + more.len(), 3, "{} + {}", got.len(), more.len());
}

/// Two tenants' tasks through the batched workers: every task succeeds once, its
/// timeline reads queued → started → succeeded with rising sequence numbers, and each
/// tenant sees only its own tasks.
async fn batches_spanning_tenants_record_every_task_once_in_order(app: TestApp) {
    let (a, ta) = owner(&app, "first@spans.example").await;
    let (b, tb) = owner(&app, "second@spans.example").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push((
            &a,
            &ta,
            start(&app, &a, &ta, "diagnostics.echo", json!({"i": i})).await,
        ));
        ids.push((
            &b,
            &tb,
            start(&app, &b, &tb, "diagnostics.echo", json!({"i": i})).await,
        ));
    }
    for (u, t, id) in &ids {
        let d = wait_status(&app, u, t, id, "succeeded").await;
        assert_eq!(d["task"]["attempts"], 1);
        let kinds: Vec<&str> = d["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["queued", "started", "succeeded"], "{d}");
        let seqs: Vec<i64> = d["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let other = if *t == &ta { &tb } else { &ta };
        let (s, _) = app
            .as_(*u)
            .tenant(other)
            .get(&format!("/api/v1/tasks/{id}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
