//! Bulk enqueue: many jobs in one statement per thousand keep every promise one
//! `enqueue` makes (order, payload, `run_at`, priority, the kill switch, the tenant's
//! scope), and a campaign to a long list queues its recipients and deliveries that way.

use std::time::Duration;

use chrono::Utc;
use ocsuite::ids::{JobId, TenantId};
use ocsuite::queue::{self, DELIVER_WEBHOOK, NewJob};
use ocsuite::store::scoped;
use reqwest::StatusCode;
use serde_json::json;

use crate::email::{campaign, send, smtp_app, wait_campaign};
use crate::helpers::{Db, TestApp};
use crate::tasks::{owner, wait_status};

/// More than one statement's worth, so chunking is exercised.
const MANY: usize = 1203;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_keeps_order_times_scope_and_kill_switch_sqlite() {
    bulk_enqueue(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_keeps_order_times_scope_and_kill_switch_postgres() {
    bulk_enqueue(Db::Postgres).await;
}

async fn claim(tx: &mut ocsuite::store::Tx, limit: usize) -> Vec<queue::Claimed> {
    queue::claim_many(tx, DELIVER_WEBHOOK, "bulk", Duration::from_secs(30), limit)
        .await
        .unwrap()
}

fn job(n: usize, run_at: chrono::DateTime<Utc>, priority: i32) -> NewJob<'static> {
    NewJob {
        queue: DELIVER_WEBHOOK,
        payload: json!({"n": n, "text": "Grüße, 世界 — \"quoted\" \\ back"}),
        priority,
        run_at,
        max_attempts: 3,
        id: None,
    }
}

async fn bulk_enqueue(db: Db) {
    let Some(app) = TestApp::start_with(db, |c| c.workers = 0).await else {
        return;
    };
    let (_, a) = owner(&app, "bulk-a@queue.example").await;
    let (pb, b) = owner(&app, "bulk-b@queue.example").await;
    let (ta, tb) = (TenantId::parse(&a).unwrap(), TenantId::parse(&b).unwrap());
    let store = &app.state.store;
    let now = Utc::now();

    // A: MANY jobs due a second ago, the last one at a higher priority, and one due in
    // an hour; ids given for the first, fresh for the rest.
    let given = JobId::new();
    let mut jobs: Vec<NewJob> = (0..MANY)
        .map(|n| job(n, now - chrono::Duration::seconds(1), 0))
        .collect();
    jobs[0].id = Some(&given);
    jobs[MANY - 1].priority = 5;
    jobs.push(job(MANY, now + chrono::Duration::hours(1), 9));
    let mut tx = store.tenant(&ta).await.unwrap();
    let ids = queue::enqueue_many(&mut tx, jobs).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), MANY + 1);
    assert_eq!(ids[0], given, "a given id is kept");
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), MANY + 1, "every job has its own id");

    // Every row is A's, ready, with its payload; B's scope sees none of them.
    let mut tx = store.tenant(&ta).await.unwrap();
    let (ready,): (i64,) = tx
        .fetch_one(scoped(
            "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND queue = 'deliver-webhook' AND status = 'ready' AND attempts = 0 AND max_attempts = 3",
        ))
        .await
        .unwrap();
    assert_eq!(ready as usize, MANY + 1);
    tx.commit().await.unwrap();
    let mut tx = store.tenant(&tb).await.unwrap();
    let (theirs,): (i64,) = tx
        .fetch_one(scoped("SELECT COUNT(*) FROM jobs WHERE tenant_id = $1"))
        .await
        .unwrap();
    assert_eq!(theirs, 0);
    tx.commit().await.unwrap();
    // Claims honour priority and run_at: the priority-5 job first, the one due in an
    // hour never; payloads come back as given, hostile text included.
    let mut tx = store.platform().await.unwrap();
    let first = claim(&mut tx, 1).await;
    tx.commit().await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, ids[MANY - 1]);
    assert_eq!(first[0].payload["n"], MANY - 1);
    assert_eq!(first[0].payload["text"], "Grüße, 世界 — \"quoted\" \\ back");
    let mut claimed = 1;
    loop {
        let mut tx = store.platform().await.unwrap();
        let got = claim(&mut tx, 64).await;
        tx.commit().await.unwrap();
        let mut a = store.tenant(&ta).await.unwrap();
        let refs: Vec<_> = got.iter().collect();
        queue::complete_many(&mut a, &refs).await.unwrap();
        a.commit().await.unwrap();
        if got.is_empty() {
            break;
        }
        assert!(got.iter().all(|j| j.id != ids[MANY]), "a future job ran");
        claimed += got.len();
    }
    assert_eq!(claimed, MANY, "every due job was claimed once");

    // B's kill switch is on: B's bulk jobs wait as `paused`, and run once it is off.
    let (s, v) = app
        .as_(&pb)
        .tenant(&b)
        .post("/api/v1/queues/pause", json!({}))
        .await;
    assert!(s.is_success(), "{v}");
    let mut tx = store.tenant(&tb).await.unwrap();
    queue::enqueue_many(&mut tx, (0..3).map(|n| job(n, now, 0)).collect())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.platform().await.unwrap();
    let none = claim(&mut tx, 10).await;
    tx.commit().await.unwrap();
    assert!(none.is_empty(), "a paused tenant's bulk jobs wait");
    let (s, _) = app
        .as_(&pb)
        .tenant(&b)
        .post("/api/v1/queues/resume", json!({}))
        .await;
    assert!(s.is_success());
    let mut tx = store.platform().await.unwrap();
    let resumed = claim(&mut tx, 10).await;
    tx.commit().await.unwrap();
    assert_eq!(resumed.len(), 3);
    assert!(resumed.iter().all(|j| j.tenant_id == tb));

    // An empty batch writes nothing and is not an error.
    let mut tx = store.tenant(&ta).await.unwrap();
    assert!(
        queue::enqueue_many(&mut tx, Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_campaign_is_queued_in_bulk_sqlite() {
    long_campaign(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_campaign_is_queued_in_bulk_postgres() {
    long_campaign(Db::Postgres).await;
}

/// A list of MANY + 1 people (one suppressed) at one message a minute:
/// every recipient is stored, every valid one has a delivery job spaced a minute after
/// the last, and only the first is sent now.
async fn long_campaign(db: Db) {
    let Some((app, inbox)) = smtp_app(db).await else {
        return;
    };
    let (u, t) = owner(&app, "long@campaign.example").await;
    let (other, ot) = owner(&app, "other@campaign.example").await;
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/email/suppressions",
            json!({"email": "gone@list.test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut list: Vec<_> = (0..MANY)
        .map(|n| json!({"email": format!("p{n:04}@list.test"), "name": format!("Person {n}"), "vars": {"n": n.to_string()}}))
        .collect();
    list.push(json!({"email": "gone@list.test"}));
    let id = campaign(
        &app,
        &u,
        &t,
        json!({"name": "Everyone", "subject": "Hi {{ first_name | there }}", "body": "Number {{ n }}. {{ unsubscribe_url }}",
               "audience": {"recipients": list}, "rate_per_minute": 1}),
    )
    .await;
    let task = send(&app, &u, &t, &id).await;
    let d = wait_status(&app, &u, &t, &task, "succeeded").await;
    assert_eq!(
        (
            d["task"]["result"]["recipients"].as_i64(),
            d["task"]["result"]["queued"].as_i64(),
            d["task"]["result"]["skipped"].as_i64()
        ),
        (Some(MANY as i64 + 1), Some(MANY as i64), Some(1)),
        "{d}"
    );
    let v = wait_campaign(&app, &u, &t, &id, "sending").await;
    assert_eq!(v["stats"]["recipients"], MANY + 1, "{v}");
    assert_eq!(v["stats"]["skipped"], 1, "{v}");

    // One delivery job per valid recipient, a minute apart, ids tied to recipients.
    let tenant = TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    let times: Vec<(String, chrono::DateTime<Utc>)> = tx
        .fetch_all(scoped(
            "SELECT j.id, j.run_at FROM jobs j JOIN email_recipients r ON r.tenant_id = j.tenant_id AND r.id = 'rcp_' || substr(j.id, 5) \
             WHERE j.tenant_id = $1 AND j.queue = 'deliver-email' ORDER BY j.run_at",
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The first one may already be sent (and its job gone).
    assert!(
        times.len() == MANY || times.len() == MANY - 1,
        "{} jobs",
        times.len()
    );
    for w in times.windows(2) {
        let gap = (w[1].1 - w[0].1).num_milliseconds();
        assert_eq!(gap, 60_000, "deliveries are spaced by the rate");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while inbox.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing was sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the first is due");
    assert_eq!(got[0].0, vec!["<p0000@list.test>".to_owned()]);
    assert!(got[0].1.contains("Number 0."), "{}", got[0].1);

    // Another company sees neither the campaign nor its recipients.
    let (s, _) = app
        .as_(&other)
        .tenant(&ot)
        .get(&format!("/api/v1/email/campaigns/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&other)
        .tenant(&ot)
        .get(&format!("/api/v1/email/campaigns/{id}/recipients"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
