//! The realtime endpoints: a WebSocket (`GET /api/v1/ws`) and Server-Sent Events
//! (`GET /api/v1/events`), both authenticated like the rest of the API and bound to the
//! caller's tenant.
//!
//! WebSocket protocol (JSON text frames):
//! - client → `{"type":"subscribe","topic":"task:tsk_…","since":3}` (`since` optional:
//!   without it only new events arrive), `{"type":"unsubscribe","topic":…}`,
//!   `{"type":"ping"}`;
//! - server → `{"type":"subscribed","topic":…,"seq":N}`, `{"type":"event","topic":…,
//!   "seq":N,"id":…,"kind":…,"data":{…},"at":…}`, `{"type":"error","code":…,"message":…}`,
//!   `{"type":"pong"}`.
//!
//! A client that sends something that is not a valid message, a binary frame, or more
//! than [`MAX_MSGS_PER_SEC`] messages a second is closed with a reason (1003/1008); other
//! connections are unaffected.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;

use super::{Event, Topic, head, replay, replay_by_id};
use crate::error::{AppError, Result};
use crate::ids::TenantId;
use crate::json::ApiQuery;
use crate::state::AppState;
use crate::store::TenantTx;
use crate::tenancy::TenantCtx;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This domain's API routes (relative to `/api/v1`), each declared once: the route and
/// its OpenAPI operation both come from the handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ws))
        .routes(routes!(events))
}

pub const MAX_MSGS_PER_SEC: u32 = 20;
const MAX_SUBSCRIPTIONS: usize = 200;
const MAX_MESSAGE_BYTES: usize = 4096;
const READ_BUFFER_BYTES: usize = 4096;
const PING_EVERY: Duration = Duration::from_secs(30);

/// Opens the realtime WebSocket.
#[utoipa::path(get, path = "/ws", tag = "realtime",
    responses((status = 101, description = "switching to the WebSocket protocol")))]
pub async fn ws(
    State(state): State<AppState>,
    ctx: TenantCtx,
    upgrade: WebSocketUpgrade,
) -> Response {
    let tenant = ctx.tenant_id;
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        // The reader zero-fills this much before every read attempt, and a session
        // attempts one each time it wakes, so once per event per subscriber: the
        // default 128 KiB made that zeroing the largest cost of fanning an event out.
        // Client messages are small (at most MAX_MESSAGE_BYTES).
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| session(state, tenant, socket))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    Subscribe { topic: String, since: Option<i64> },
    Unsubscribe { topic: String },
    Ping,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMsg<'a> {
    Subscribed {
        topic: &'a str,
        seq: i64,
    },
    Unsubscribed {
        topic: &'a str,
    },
    Event {
        topic: &'a str,
        seq: i64,
        id: i64,
        kind: &'a str,
        data: &'a serde_json::Value,
        at: chrono::DateTime<chrono::Utc>,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
    Pong,
}

struct Sub {
    topic: Topic,
    /// Last position delivered (see `Topic::position`).
    last: i64,
}

struct Conn {
    state: AppState,
    tenant: TenantId,
    socket: WebSocket,
    subs: HashMap<String, Sub>,
    /// Ids sent during replays, so the live copy of the same event is not sent twice.
    replayed: HashSet<i64>,
    /// Counts the connection (and the events it missed) in `/metrics`.
    live: crate::telemetry::Connection,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

/// One client's session. The rare paths that reach the database (subscribing, catching
/// up after falling behind) are boxed: their futures are kilobytes, and inline they made
/// every event's delivery copy them.
async fn session(state: AppState, tenant: TenantId, socket: WebSocket) {
    let mut rx = state.bus.subscribe(&tenant);
    let mut c = Conn {
        state,
        tenant,
        socket,
        subs: HashMap::new(),
        replayed: HashSet::new(),
        live: crate::telemetry::Connection::open("websocket"),
    };
    let mut window = (Instant::now(), 0u32);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let flow = loop {
        tokio::select! {
            msg = c.socket.recv() => {
                let Some(Ok(msg)) = msg else { break Flow::Continue };
                if window.0.elapsed() >= Duration::from_secs(1) {
                    window = (Instant::now(), 0);
                }
                window.1 += 1;
                if window.1 > MAX_MSGS_PER_SEC {
                    break Flow::Close(close_code::POLICY, "too many messages: at most 20 per second");
                }
                match msg {
                    Message::Text(t) => match Box::pin(c.on_text(&t)).await {
                        Ok(Flow::Continue) => {}
                        Ok(close) => break close,
                        Err(_) => break Flow::Continue,
                    },
                    Message::Binary(_) => break Flow::Close(close_code::UNSUPPORTED, "binary messages are not supported; send JSON text"),
                    Message::Close(_) => break Flow::Continue,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => if c.on_events(ev, &mut rx).await.is_err() { break Flow::Continue },
                Err(RecvError::Lagged(n)) => {
                    c.live.dropped(n);
                    if Box::pin(c.catch_up()).await.is_err() { break Flow::Continue }
                }
                Err(RecvError::Closed) => break Flow::Close(close_code::AWAY, "server shutting down"),
            },
            _ = ping.tick() => {
                if c.socket.send(Message::Ping(Default::default())).await.is_err() { break Flow::Continue }
            }
        }
    };
    if let Flow::Close(code, reason) = flow {
        let sent = c
            .socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await;
        // The closing handshake: read and discard until the client's Close (or 2 s).
        // Closing the connection while the client's messages are still arriving turns
        // into a reset, which can destroy our Close and its reason before the client
        // reads them; a flooding client is exactly the one still sending.
        if sent.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(m)) = c.socket.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

impl Conn {
    async fn send(&mut self, msg: &ServerMsg<'_>) -> std::result::Result<(), axum::Error> {
        let text = serde_json::to_string(msg).unwrap_or_default();
        self.socket.send(Message::Text(text.into())).await
    }

    async fn error(&mut self, code: &str, message: &str) -> std::result::Result<(), axum::Error> {
        self.send(&ServerMsg::Error { code, message }).await
    }

    async fn on_text(&mut self, text: &str) -> std::result::Result<Flow, axum::Error> {
        let msg: ClientMsg = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                let m = format!("invalid message: {e}");
                self.error("invalid_message", &m).await?;
                return Ok(Flow::Close(close_code::UNSUPPORTED, "invalid message"));
            }
        };
        match msg {
            ClientMsg::Ping => self.send(&ServerMsg::Pong).await?,
            ClientMsg::Unsubscribe { topic } => {
                self.subs.remove(&topic);
                self.send(&ServerMsg::Unsubscribed { topic: &topic })
                    .await?;
            }
            ClientMsg::Subscribe { topic, since } => {
                if self.subs.len() >= MAX_SUBSCRIPTIONS && !self.subs.contains_key(&topic) {
                    self.error(
                        "too_many_subscriptions",
                        "at most 200 topics per connection",
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                match self.subscribe(&topic, since).await {
                    Ok(events) => {
                        let last = self.subs.get(&topic).map_or(0, |s| s.last);
                        self.send(&ServerMsg::Subscribed {
                            topic: &topic,
                            seq: last,
                        })
                        .await?;
                        for ev in events {
                            self.forward(&topic, &ev, true).await?;
                        }
                        self.socket.flush().await?;
                    }
                    Err(e) => {
                        let code = if matches!(e, AppError::NotFound(_)) {
                            "not_found"
                        } else {
                            "invalid_topic"
                        };
                        let m = e.to_string();
                        self.error(code, &m).await?;
                    }
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Registers the subscription and returns the stored events it should replay.
    async fn subscribe(&mut self, name: &str, since: Option<i64>) -> Result<Vec<Event>> {
        let topic = Topic::parse(name)?;
        let mut tx = self.state.store.tenant_read(&self.tenant).await?;
        check_visible(&topic, &mut tx).await?;
        let events = match since {
            Some(s) => replay(&mut tx, &topic, s.max(0)).await?,
            None => Vec::new(),
        };
        let current = head(&mut tx, &topic).await?;
        tx.commit().await?;
        let last = since.map_or(current, |s| s.max(0));
        self.subs.insert(name.to_owned(), Sub { topic, last });
        Ok(events)
    }

    /// Sends `ev` on subscription `name` unless already sent; see [`forward`].
    async fn forward(
        &mut self,
        name: &str,
        ev: &Event,
        replaying: bool,
    ) -> std::result::Result<(), axum::Error> {
        let Some(sub) = self.subs.get_mut(name) else {
            return Ok(());
        };
        forward(
            &mut self.socket,
            &mut self.replayed,
            name,
            sub,
            ev,
            replaying,
        )
        .await
    }

    /// Sends `first` and whatever else is already waiting on the channel, then flushes
    /// once: a task's events come in bursts, and one write per burst instead of one per
    /// event is what keeps a thousand subscribers fast.
    async fn on_events(
        &mut self,
        first: Arc<Event>,
        rx: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) -> std::result::Result<(), axum::Error> {
        self.on_event(&first).await?;
        for _ in 0..64 {
            match rx.try_recv() {
                Ok(ev) => self.on_event(&ev).await?,
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    self.live.dropped(n);
                    self.socket.flush().await?;
                    // Boxed: the replay's database futures are large, and inline they
                    // would be copied into every event's delivery (see `session`).
                    return Box::pin(self.catch_up()).await;
                }
                Err(_) => break,
            }
        }
        self.socket.flush().await
    }

    async fn on_event(&mut self, ev: &Arc<Event>) -> std::result::Result<(), axum::Error> {
        for (name, sub) in &mut self.subs {
            if sub.topic.matches(&ev.topic) {
                forward(&mut self.socket, &mut self.replayed, name, sub, ev, false).await?;
            }
        }
        Ok(())
    }

    /// After falling behind the channel: replay every subscription from the table.
    async fn catch_up(&mut self) -> std::result::Result<(), axum::Error> {
        let subs: Vec<(String, Topic, i64)> = self
            .subs
            .iter()
            .map(|(n, s)| (n.clone(), s.topic.clone(), s.last))
            .collect();
        for (name, topic, last) in subs {
            let events = match self.state.store.tenant_read(&self.tenant).await {
                Ok(mut tx) => replay(&mut tx, &topic, last).await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            for ev in events {
                self.forward(&name, &ev, true).await?;
            }
        }
        self.socket.flush().await
    }
}

/// Sends `ev` on subscription `name` (`sub`) unless already sent. `replaying`: it comes
/// from the table, and its live copy may still arrive (so remember its id). Takes the
/// session's parts rather than the session, so each delivery walks the subscriptions in
/// place instead of copying their names first.
async fn forward(
    socket: &mut WebSocket,
    replayed: &mut HashSet<i64>,
    name: &str,
    sub: &mut Sub,
    ev: &Event,
    replaying: bool,
) -> std::result::Result<(), axum::Error> {
    let pos = sub.topic.position(ev);
    let fresh = match sub.topic {
        Topic::Tasks => !replayed.contains(&ev.id),
        _ => pos > sub.last,
    };
    if !fresh {
        return Ok(());
    }
    sub.last = sub.last.max(pos);
    if replaying && replayed.len() < 100_000 {
        replayed.insert(ev.id);
    }
    let frame = ev.wire.get_or_build(name, || {
        serde_json::to_string(&ServerMsg::Event {
            topic: name,
            seq: pos,
            id: ev.id,
            kind: &ev.kind,
            data: &ev.data,
            at: ev.at,
        })
        .unwrap_or_default()
    });
    // Queued, not flushed: `on_events` flushes once per burst.
    socket.feed(Message::Text(frame)).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma-separated topics: `task:<id>`, `tasks`, `notifications`.
    pub topics: String,
    /// Resume after this event id (the `Last-Event-ID` header wins when both are sent).
    pub last_event_id: Option<i64>,
}

/// The same stream as the WebSocket, as Server-Sent Events. Each event's `id` is its log
/// id; reconnecting with `Last-Event-ID` resumes after it.
#[utoipa::path(get, path = "/events", params(EventsQuery), tag = "realtime",
    responses((status = 200, description = "text/event-stream")))]
pub async fn events(
    State(state): State<AppState>,
    ctx: TenantCtx,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<impl IntoResponse> {
    let names: Vec<&str> = q
        .topics
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if names.is_empty() || names.len() > 50 {
        return Err(AppError::invalid(
            "topics",
            "give 1-50 comma-separated topics",
        ));
    }
    let topics = names
        .iter()
        .map(|n| Topic::parse(n))
        .collect::<Result<Vec<_>>>()?;
    let after = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
            AppError::invalid(
                "Last-Event-ID",
                "Last-Event-ID must be an event id from this stream",
            )
        })?),
        None => q.last_event_id,
    };
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    for t in &topics {
        check_visible(t, &mut tx).await?;
    }
    tx.commit().await?;

    let (out, rx) = tokio::sync::mpsc::channel::<std::result::Result<sse::Event, Infallible>>(256);
    let mut live = state.bus.subscribe(&ctx.tenant_id);
    let tenant = ctx.tenant_id.clone();
    tokio::spawn(async move {
        let counted = crate::telemetry::Connection::open("sse");
        let mut last = after.unwrap_or(i64::MAX);
        let mut sent: HashSet<i64> = HashSet::new();
        let send = |ev: &Event| {
            let data = serde_json::json!({
                "topic": ev.topic, "seq": ev.seq, "id": ev.id, "kind": ev.kind, "data": ev.data, "at": ev.at
            });
            sse::Event::default()
                .id(ev.id.to_string())
                .data(data.to_string())
        };
        if let Some(after) = after {
            let replayed = match state.store.tenant_read(&tenant).await {
                Ok(mut tx) => replay_by_id(&mut tx, &topics, after)
                    .await
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            for ev in &replayed {
                sent.insert(ev.id);
                last = ev.id;
                if out.send(Ok(send(ev))).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let ev = match live.recv().await {
                Ok(ev) => vec![(*ev).clone()],
                Err(RecvError::Lagged(n)) => {
                    counted.dropped(n);
                    match state.store.tenant_read(&tenant).await {
                        Ok(mut tx) => replay_by_id(&mut tx, &topics, last.min(i64::MAX - 1))
                            .await
                            .unwrap_or_default(),
                        Err(_) => Vec::new(),
                    }
                }
                Err(RecvError::Closed) => return,
            };
            for ev in ev {
                if !topics.iter().any(|t| t.matches(&ev.topic)) || sent.contains(&ev.id) {
                    continue;
                }
                if sent.len() < 100_000 {
                    sent.insert(ev.id);
                }
                last = ev.id;
                if out.send(Ok(send(&ev))).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// Checks the topic names something of the caller's tenant (`tx` is scoped to it).
async fn check_visible(topic: &Topic, tx: &mut TenantTx) -> Result<()> {
    if let Topic::Task(id) = topic {
        crate::tasks::get(tx, id).await.map_err(|e| match e {
            AppError::NotFound(_) => AppError::NotFound("topic"),
            e => e,
        })?;
    }
    Ok(())
}
