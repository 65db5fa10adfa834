//! Several processes on one PostgreSQL: two `serve` nodes that run no jobs and two
//! `worker` processes (each its own pools, bus and LISTEN connection, as separate
//! processes have). A task submitted on node A is run by a worker and seen live on
//! node B's WebSocket and SSE streams, which also resume from where a client left off.

use std::collections::HashSet;

use serde_json::json;
use tokio::sync::oneshot;

use crate::helpers::{Db, TestApp};
use crate::realtime::{connect, events_until, next, send, sse_until};
use crate::tasks::{owner, start, wait_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_from_node_a_is_seen_live_on_node_b() {
    let Some(a) = TestApp::start_with(Db::Postgres, |c| c.workers = 0).await else {
        return;
    };
    let b = TestApp::start_config(a.config.clone()).await;
    let mut stops = Vec::new();
    for _ in 0..2 {
        let (stop, stopped) = oneshot::channel::<()>();
        let mut config = a.config.clone();
        config.workers = 2;
        tokio::spawn(ocsuite::work(config, async move {
            let _ = stopped.await;
        }));
        stops.push(stop);
    }
    let (u, t) = owner(&a, "nodes@x.example").await;

    // Node B's live streams, opened before the task exists.
    let mut ws = connect(&b, &u.token, &t).await;
    send(&mut ws, json!({"type": "subscribe", "topic": "tasks"})).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "subscribed");
    let sse = b
        .http
        .get(b.url("/api/v1/events?topics=tasks"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .send()
        .await
        .unwrap();

    let id = start(
        &a,
        &u,
        &t,
        "diagnostics.sleep",
        json!({"seconds": 0.2, "steps": 2}),
    )
    .await;
    let live = events_until(&mut ws, "succeeded").await;
    assert!(
        live.iter().all(|e| e["data"]["task_id"] == id.as_str()),
        "{live:?}"
    );
    let kinds: Vec<&str> = live.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert!(kinds.contains(&"started"), "{kinds:?}");
    let streamed = sse_until(sse, "succeeded").await;
    assert_eq!(
        streamed.len(),
        live.len(),
        "SSE and WebSocket saw the same events"
    );

    // Resume on node B after the second event: exactly the rest.
    let res = b
        .http
        .get(b.url(&format!("/api/v1/events?topics=task:{id}")))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .header("last-event-id", streamed[1].0.to_string())
        .send()
        .await
        .unwrap();
    let rest = sse_until(res, "succeeded").await;
    assert_eq!(rest.len(), streamed.len() - 2);

    // A burst from node A runs on the two workers and all of it reaches node B.
    let mut ids = HashSet::new();
    for _ in 0..20 {
        ids.insert(start(&a, &u, &t, "diagnostics.echo", json!({})).await);
    }
    let mut done = HashSet::new();
    while done.len() < ids.len() {
        let m = next(&mut ws).await.expect("node B's socket closed");
        if m["type"] == "event" && m["kind"] == "succeeded" {
            done.insert(m["data"]["task_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(done, ids);
    let last = ids.iter().next().unwrap();
    wait_status(&b, &u, &t, last, "succeeded").await;
    drop(stops);
}
