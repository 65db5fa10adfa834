//! Realtime delivery over WebSocket and SSE: live events, resume, garbage and floods,
//! and tenant isolation of topics.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::{owner, start, wait_status};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(app: &TestApp, token: &str, tenant: &str) -> Ws {
    let url = app.url("/api/v1/ws").replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req.headers_mut()
        .insert("x-tenant-id", tenant.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message (skipping pings), or None when the socket closed.
pub async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("no message within 20 s")?;
        match m.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Collects events until one of `kind` arrives.
pub async fn events_until(ws: &mut Ws, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let m = next(ws).await.expect("socket closed early");
        if m["type"] == "event" {
            let done = m["kind"] == kind;
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

dual!(
    websocket_streams_progress_and_resumes,
    websocket_closes_garbage_and_floods_only,
    sse_streams_and_resumes_with_last_event_id,
    topics_of_another_tenant_are_never_delivered,
);

async fn websocket_streams_progress_and_resumes(app: TestApp) {
    let (u, t) = owner(&app, "ws@x.example").await;
    let mut ws = connect(&app, &u.token, &t).await;
    send(&mut ws, json!({"type": "subscribe", "topic": "tasks"})).await;
    let ack = next(&mut ws).await.unwrap();
    assert_eq!(ack["type"], "subscribed", "{ack}");

    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.sleep",
        json!({"seconds": 0.4, "steps": 4}),
    )
    .await;
    let topic = format!("task:{id}");
    let mut per_task = connect(&app, &u.token, &t).await;
    send(
        &mut per_task,
        json!({"type": "subscribe", "topic": topic, "since": 0}),
    )
    .await;
    let ack = next(&mut per_task).await.unwrap();
    assert_eq!(ack["type"], "subscribed");
    let evs = events_until(&mut per_task, "succeeded").await;
    let kinds: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert!(
        kinds.contains(&"started") && kinds.contains(&"progress"),
        "{kinds:?}"
    );
    let seqs: Vec<i64> = evs.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let progress: Vec<i64> = evs
        .iter()
        .filter(|e| e["kind"] == "progress")
        .map(|e| e["data"]["percent"].as_i64().unwrap())
        .collect();
    assert_eq!(progress.last(), Some(&100));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");

    // The aggregate topic saw the same task, live (no replay was asked for).
    let agg = events_until(&mut ws, "succeeded").await;
    assert!(
        agg.iter()
            .all(|e| e["topic"] == "tasks" && e["data"]["task_id"] == id.as_str())
    );

    // Reconnect and resume after seq 2: exactly the rest, in order.
    let mut again = connect(&app, &u.token, &t).await;
    send(
        &mut again,
        json!({"type": "subscribe", "topic": topic, "since": 2}),
    )
    .await;
    next(&mut again).await.unwrap();
    let rest = events_until(&mut again, "succeeded").await;
    let rest_seqs: Vec<i64> = rest.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(rest_seqs, seqs[2..].to_vec());

    // Ping/pong and unsubscribe.
    send(&mut again, json!({"type": "ping"})).await;
    assert_eq!(next(&mut again).await.unwrap()["type"], "pong");
    send(&mut again, json!({"type": "unsubscribe", "topic": topic})).await;
    assert_eq!(next(&mut again).await.unwrap()["type"], "unsubscribed");
}

async fn websocket_closes_garbage_and_floods_only(app: TestApp) {
    let (u, t) = owner(&app, "garbage@x.example").await;
    let mut good = connect(&app, &u.token, &t).await;
    send(&mut good, json!({"type": "subscribe", "topic": "tasks"})).await;
    next(&mut good).await.unwrap();

    let mut bad = connect(&app, &u.token, &t).await;
    bad.send(Message::Text("{this is not json".into()))
        .await
        .unwrap();
    let err = next(&mut bad).await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "invalid_message");
    assert!(
        next(&mut bad).await.is_none(),
        "garbage must close the socket"
    );

    let mut flood = connect(&app, &u.token, &t).await;
    for _ in 0..100 {
        if flood
            .send(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut closed_with = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), flood.next()).await {
        if let Message::Close(Some(f)) = m {
            closed_with = Some((u16::from(f.code), f.reason.to_string()));
            break;
        }
    }
    let (code, reason) = closed_with.expect("flood must be closed with a reason");
    assert_eq!(code, 1008);
    assert!(reason.contains("too many"), "{reason}");

    let mut bin = connect(&app, &u.token, &t).await;
    bin.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert!(next(&mut bin).await.is_none());

    // The well-behaved connection still gets events.
    start(&app, &u, &t, "diagnostics.echo", json!({})).await;
    let evs = events_until(&mut good, "succeeded").await;
    assert!(!evs.is_empty());

    // Bad topics are refused without closing.
    send(&mut good, json!({"type": "subscribe", "topic": "billing"})).await;
    let m = next(&mut good).await.unwrap();
    assert_eq!(m["code"], "invalid_topic", "{m}");

    // No credentials: no socket.
    let url = app.url("/api/v1/ws").replace("http://", "ws://");
    assert!(tokio_tungstenite::connect_async(url.clone()).await.is_err());

    // The session cookie opens a socket only from our own origin (no cross-site
    // WebSocket hijacking).
    let cookie_req = |origin: String| {
        let mut req = url.as_str().into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert(
            "cookie",
            format!("ocsuite_session={}", u.token).parse().unwrap(),
        );
        h.insert("x-tenant-id", t.parse().unwrap());
        h.insert("origin", origin.parse().unwrap());
        req
    };
    let evil = tokio_tungstenite::connect_async(cookie_req("http://evil.example".into())).await;
    match evil {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("cross-origin cookie socket was not refused: {other:?}"),
    }
    let ours = app.base.clone();
    assert!(
        tokio_tungstenite::connect_async(cookie_req(ours))
            .await
            .is_ok()
    );
}

/// Reads SSE `data:` payloads until one has `kind`.
pub async fn sse_until(res: reqwest::Response, kind: &str) -> Vec<(i64, Value)> {
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("no SSE data within 20 s")
            .expect("stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                let done = data["kind"] == kind;
                out.push((id, data));
                if done {
                    return out;
                }
            }
        }
    }
}

async fn sse_streams_and_resumes_with_last_event_id(app: TestApp) {
    let (u, t) = owner(&app, "sse@x.example").await;
    let id = start(
        &app,
        &u,
        &t,
        "diagnostics.sleep",
        json!({"seconds": 0.2, "steps": 2}),
    )
    .await;
    wait_status(&app, &u, &t, &id, "succeeded").await;
    let open = |last: Option<i64>| {
        let mut rb = app
            .http
            .get(app.url(&format!("/api/v1/events?topics=task:{id}")))
            .bearer_auth(&u.token)
            .header("x-tenant-id", &t);
        if let Some(l) = last {
            rb = rb.header("last-event-id", l.to_string());
        }
        rb.send()
    };
    let res = open(Some(0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let all = sse_until(res, "succeeded").await;
    assert_eq!(all[0].1["kind"], "queued");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    let res = open(Some(all[1].0)).await.unwrap();
    let rest = sse_until(res, "succeeded").await;
    assert_eq!(rest.len(), all.len() - 2);
    assert_eq!(rest[0].0, all[2].0);

    // Live: a new task's events arrive on an open `tasks` stream.
    let res = app
        .http
        .get(app.url("/api/v1/events?topics=tasks"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .send()
        .await
        .unwrap();
    let id2 = start(&app, &u, &t, "diagnostics.echo", json!({})).await;
    let live = sse_until(res, "succeeded").await;
    assert!(
        live.iter()
            .all(|(_, e)| e["data"]["task_id"] == id2.as_str()),
        "{live:?}"
    );

    let (s, v) = app.as_(&u).tenant(&t).get("/api/v1/events?topics=").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/events?topics=task:nope")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

async fn topics_of_another_tenant_are_never_delivered(app: TestApp) {
    let (a, ta) = owner(&app, "a@iso.example").await;
    let (b, tb) = owner(&app, "b@iso.example").await;
    let id = start(
        &app,
        &a,
        &ta,
        "diagnostics.echo",
        json!({"secret": "a-only"}),
    )
    .await;
    wait_status(&app, &a, &ta, &id, "succeeded").await;

    let mut ws = connect(&app, &b.token, &tb).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "topic": format!("task:{id}"), "since": 0}),
    )
    .await;
    let m = next(&mut ws).await.unwrap();
    assert_eq!(m["type"], "error");
    assert_eq!(m["code"], "not_found");
    send(
        &mut ws,
        json!({"type": "subscribe", "topic": "tasks", "since": 0}),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "subscribed");
    // B's own task arrives; nothing of A's ever does.
    start(&app, &a, &ta, "diagnostics.echo", json!({})).await;
    let own = start(&app, &b, &tb, "diagnostics.echo", json!({})).await;
    let evs = events_until(&mut ws, "succeeded").await;
    assert!(
        evs.iter().all(|e| e["data"]["task_id"] == own.as_str()),
        "{evs:?}"
    );

    // B's header naming A's tenant is 404; A's task topic over SSE is 404.
    let url = app.url("/api/v1/ws").replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", b.token).parse().unwrap(),
    );
    req.headers_mut().insert("x-tenant-id", ta.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .get(&format!("/api/v1/events?topics=task:{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A server told to stop ends its live streams: a graceful shutdown waits for every
/// response, and an open SSE stream or WebSocket would otherwise hold it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_live_streams() {
    let app = TestApp::start(crate::helpers::Db::Sqlite).await.unwrap();
    let (u, t) = owner(&app, "bye@x.example").await;
    let mut ws = connect(&app, &u.token, &t).await;
    send(&mut ws, json!({"type": "subscribe", "topic": "tasks"})).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "subscribed");
    let res = app
        .http
        .get(app.url("/api/v1/events?topics=tasks"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(app);
    let mut stream = res.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream outlived the shutdown");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the WebSocket outlived the shutdown");
    assert_eq!(closed.as_deref(), Some("server shutting down"));
}
