//! The tenant-scoped realtime event bus.
//!
//! Every event is written to the `events` table in the same transaction as the change it
//! reports, so an event exists if and only if its change committed. Delivery is then:
//!
//! - the committing code hands the events to [`Bus::after_commit`], which fans them out
//!   to this process's subscribers;
//! - on PostgreSQL (any number of processes) it also queues them on the [`relay::Relay`],
//!   which sends them in batches with `pg_notify` to every other process's listener
//!   ([`listen`]), which fans them out there. Why after commit and batched, not inside
//!   each transaction: see [`relay`].
//!
//! Topics live inside a tenant: `task:{id}` (one task), `tasks` (every task of the tenant,
//! an aggregate over `task:*`) and `notifications`. Each stored event carries `seq`, its
//! number within its topic (1, 2, 3… for a task), and `id`, a number increasing across
//! the whole log. A subscriber to `task:{id}` resumes by `seq`; a subscriber to `tasks`
//! (and SSE's `Last-Event-ID`) resumes by `id`. A subscriber that falls behind the
//! in-memory channel replays what it missed from the table instead of losing it.
//!
//! Caveat: on PostgreSQL, `id`s are assigned at insert and commit order can differ by a
//! few milliseconds between concurrent transactions, so resuming the `tasks` aggregate by
//! `id` can miss an event that committed just after the one the client last saw. Per-task
//! topics are exact (a task's events are written one transaction at a time). Clients
//! refresh the task list on reconnect (the web app does).

pub mod relay;
pub mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::{AppError, Result};
use crate::ids::{TaskId, TenantId};
use crate::store::cross_tenant;
use crate::store::{InsertedId, Store, TenantTx, scoped};

/// One published event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub tenant_id: TenantId,
    pub id: i64,
    pub topic: String,
    pub seq: i64,
    pub kind: String,
    pub data: Value,
    pub at: DateTime<Utc>,
    /// The WebSocket frame for this event, per subscription topic, built once and shared
    /// by every subscriber of the process (a thousand subscribers, one serialisation).
    #[serde(skip)]
    pub wire: WireCache,
    /// On SQLite the insert is sent with the transaction's next trip (see
    /// `Tx::defer_insert`), so `id` is 0 until [`Bus::after_commit`] copies it from here.
    #[serde(skip)]
    pub inserted: Option<InsertedId>,
}

#[derive(Clone, Debug, Default)]
pub struct WireCache(Arc<Mutex<Vec<(String, axum::extract::ws::Utf8Bytes)>>>);

impl WireCache {
    pub fn get_or_build(
        &self,
        topic: &str,
        build: impl FnOnce() -> String,
    ) -> axum::extract::ws::Utf8Bytes {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, w)) = v.iter().find(|(t, _)| t == topic) {
            return w.clone();
        }
        let w = axum::extract::ws::Utf8Bytes::from(build());
        v.push((topic.to_owned(), w.clone()));
        w
    }
}

/// The topic of knowledge source status changes.
pub const KNOWLEDGE_TOPIC: &str = "knowledge";

/// A topic a client may subscribe to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Task(TaskId),
    Tasks,
    Notifications,
    /// Knowledge source status changes (`knowledge.source`).
    Knowledge,
}

impl Topic {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "tasks" => Ok(Self::Tasks),
            "notifications" => Ok(Self::Notifications),
            "knowledge" => Ok(Self::Knowledge),
            _ => match s.strip_prefix("task:").map(TaskId::parse) {
                Some(Some(id)) => Ok(Self::Task(id)),
                _ => Err(AppError::bad_request(
                    "invalid_topic",
                    format!(
                        "unknown topic `{}`: use task:<task id>, tasks, notifications or knowledge",
                        s.chars().take(80).collect::<String>()
                    ),
                )),
            },
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Task(id) => format!("task:{id}"),
            Self::Tasks => "tasks".into(),
            Self::Notifications => "notifications".into(),
            Self::Knowledge => KNOWLEDGE_TOPIC.into(),
        }
    }

    /// Whether a stored event belongs to this subscription.
    pub fn matches(&self, event_topic: &str) -> bool {
        match self {
            Self::Task(id) => event_topic.strip_prefix("task:") == Some(id.as_str()),
            Self::Tasks => event_topic.starts_with("task:"),
            Self::Notifications => event_topic == "notifications",
            Self::Knowledge => event_topic == KNOWLEDGE_TOPIC,
        }
    }

    /// The position of `ev` in this subscription's numbering (see the module docs).
    pub fn position(&self, ev: &Event) -> i64 {
        match self {
            Self::Task(_) | Self::Notifications | Self::Knowledge => ev.seq,
            Self::Tasks => ev.id,
        }
    }
}

impl Event {
    /// An event already inserted (its id known), for statements that insert several.
    pub fn stored(
        tenant_id: TenantId,
        id: i64,
        topic: &str,
        seq: i64,
        kind: &str,
        data: Value,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            tenant_id,
            id,
            topic: topic.to_owned(),
            seq,
            kind: kind.to_owned(),
            data,
            at,
            wire: WireCache::default(),
            inserted: None,
        }
    }
}

pub(crate) const EVENTS_CHANNEL: &str = "ocsuite_events";

/// Appends an event to `topic` at position `seq` inside `tx` and returns it; hand the
/// returned events to [`Bus::after_commit`] once `tx` commits.
pub async fn record(
    tx: &mut TenantTx,
    topic: &str,
    seq: i64,
    kind: &str,
    data: Value,
) -> Result<Event> {
    let tenant = tx.tenant_id().clone();
    let at = Utc::now();
    let text = data.to_string();
    let q = scoped("INSERT INTO events (tenant_id, topic, seq, kind, data, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id")
        .bind(topic)
        .bind(seq)
        .bind(kind)
        .bind(text)
        .bind(at);
    // On SQLite the insert travels with the transaction's next trip and its id is known
    // at commit; on PostgreSQL it runs now.
    let inserted = tx.defer_insert(q).await?;
    let id = inserted.get().unwrap_or(0);
    let inserted = (id == 0).then_some(inserted);
    Ok(Event {
        tenant_id: tenant,
        id,
        topic: topic.to_owned(),
        seq,
        kind: kind.to_owned(),
        data,
        at,
        wire: WireCache::default(),
        inserted,
    })
}

/// One event for [`record_many`]: its topic, position, kind and data.
pub struct NewEvent {
    pub topic: String,
    pub seq: i64,
    pub kind: &'static str,
    pub data: Value,
}

/// [`record`] for many events in one statement (the queue starts and settles jobs in
/// batches); returns them in the order given.
pub async fn record_many(tx: &mut TenantTx, events: Vec<NewEvent>) -> Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let tenant = tx.tenant_id().clone();
    let at = Utc::now();
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({"topic": e.topic, "seq": e.seq, "kind": e.kind, "data": e.data.to_string()})
        })
        .collect();
    let q = cross_tenant::insert_events(tx)
        .bind(Value::from(rows).to_string())
        .bind(at);
    let ids: Vec<(i64, String, i64)> = tx.fetch_all(q).await?;
    let id_of: HashMap<(&str, i64), i64> = ids
        .iter()
        .map(|(id, topic, seq)| ((topic.as_str(), *seq), *id))
        .collect();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let Some(&id) = id_of.get(&(e.topic.as_str(), e.seq)) else {
            return Err(AppError::Internal(format!(
                "event {}#{} was not inserted",
                e.topic, e.seq
            )));
        };
        out.push(Event::stored(
            tenant.clone(),
            id,
            &e.topic,
            e.seq,
            e.kind,
            e.data,
            at,
        ));
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    topic: String,
    seq: i64,
    kind: String,
    data: String,
    created_at: DateTime<Utc>,
}

impl EventRow {
    fn into_event(self, tenant: &TenantId) -> Event {
        Event {
            tenant_id: tenant.clone(),
            id: self.id,
            topic: self.topic,
            seq: self.seq,
            kind: self.kind,
            data: serde_json::from_str(&self.data).unwrap_or(Value::Null),
            at: self.created_at,
            wire: WireCache::default(),
            inserted: None,
        }
    }
}

/// Most events one replay returns; a client further behind replays again from the last.
pub const REPLAY_LIMIT: i64 = 1000;

/// Stored events of `topic` after position `after` (see [`Topic::position`]), oldest first.
pub async fn replay(tx: &mut TenantTx, topic: &Topic, after: i64) -> Result<Vec<Event>> {
    let tenant = tx.tenant_id().clone();
    let q = match topic {
        Topic::Task(_) | Topic::Notifications | Topic::Knowledge => scoped(
            "SELECT id, topic, seq, kind, data, created_at FROM events \
             WHERE tenant_id = $1 AND topic = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(topic.name()),
        Topic::Tasks => scoped(
            "SELECT id, topic, seq, kind, data, created_at FROM events \
             WHERE tenant_id = $1 AND topic LIKE $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind("task:%"),
    };
    let rows: Vec<EventRow> = tx.fetch_all(q.bind(after).bind(REPLAY_LIMIT)).await?;
    Ok(rows.into_iter().map(|r| r.into_event(&tenant)).collect())
}

/// Stored events of any of `topics` with a log id above `after`, oldest first (SSE resume).
pub async fn replay_by_id(tx: &mut TenantTx, topics: &[Topic], after: i64) -> Result<Vec<Event>> {
    let tenant = tx.tenant_id().clone();
    let rows: Vec<EventRow> = tx
        .fetch_all(
            scoped(
                "SELECT id, topic, seq, kind, data, created_at FROM events \
                 WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(after)
            .bind(REPLAY_LIMIT * 10),
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter(|r| topics.iter().any(|t| t.matches(&r.topic)))
        .map(|r| r.into_event(&tenant))
        .collect())
}

/// The current last position of `topic` (0 when empty).
pub async fn head(tx: &mut TenantTx, topic: &Topic) -> Result<i64> {
    let q = match topic {
        Topic::Task(_) | Topic::Notifications | Topic::Knowledge => {
            scoped("SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant_id = $1 AND topic = $2")
                .bind(topic.name())
        }
        Topic::Tasks => {
            scoped("SELECT COALESCE(MAX(id), 0) FROM events WHERE tenant_id = $1 AND topic LIKE $2")
                .bind("task:%")
        }
    };
    let (n,): (i64,) = tx.fetch_one(q).await?;
    Ok(n)
}

/// How many events a subscriber may fall behind before it replays from the table.
const CHANNEL_CAPACITY: usize = 1024;

/// In-process fan-out of committed events, one channel per tenant with subscribers.
pub struct Bus {
    /// On PostgreSQL: carries committed events to the other processes.
    relay: Option<Arc<relay::Relay>>,
    tenants: Mutex<HashMap<TenantId, broadcast::Sender<Arc<Event>>>>,
    /// Set by [`Bus::close`]: the server is shutting down.
    closed: std::sync::atomic::AtomicBool,
}

impl Bus {
    /// `relay`: where events also go for other processes (PostgreSQL); `None` when this
    /// process is the only one (SQLite).
    pub fn new(relay: Option<Arc<relay::Relay>>) -> Self {
        Self {
            relay,
            tenants: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn relay(&self) -> Option<&Arc<relay::Relay>> {
        self.relay.as_ref()
    }

    pub fn subscribe(&self, tenant: &TenantId) -> broadcast::Receiver<Arc<Event>> {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            // Shutting down: a receiver whose channel is already closed.
            return broadcast::channel(1).1;
        }
        map.entry(tenant.clone())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Hands an event to this process's subscribers of its tenant.
    pub fn deliver(&self, ev: Arc<Event>) {
        let map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&ev.tenant_id) {
            // No receiver is not an error: nobody is watching.
            let _ = tx.send(ev);
        }
    }

    /// Call after the transaction that recorded `events` committed: delivers them here
    /// and relays them to the other processes.
    pub fn after_commit(&self, events: Vec<Event>) {
        for mut ev in events {
            if let Some(id) = ev.inserted.as_ref().and_then(InsertedId::get) {
                ev.id = id;
            }
            let ev = Arc::new(ev);
            if let Some(r) = &self.relay {
                r.event(&ev);
            }
            self.deliver(ev);
        }
    }

    /// Ends every live subscription (WebSocket sessions close with "server shutting
    /// down", SSE streams end) and refuses new ones. Called when the server starts to
    /// shut down: a graceful shutdown waits for every response to finish, and a live
    /// stream never would, so one open browser tab held a restart until the
    /// orchestrator's kill.
    pub fn close(&self) {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        map.clear();
    }

    /// Drops channels nobody listens to any more.
    pub fn shrink(&self) {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
    }
}

/// Listens for other processes' events and job wake-ups on PostgreSQL until the process
/// stops; events go to `bus`, wake-ups to `jobs`. Reconnects after a dropped connection.
pub async fn listen(store: Store, bus: Arc<Bus>, jobs: Arc<crate::queue::Wake>) {
    let (Some(pool), Some(relay)) = (store.notify_pool().cloned(), bus.relay().cloned()) else {
        return;
    };
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut l) => {
                if let Err(e) = l
                    .listen_all([EVENTS_CHANNEL, crate::queue::JOBS_CHANNEL])
                    .await
                {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                } else {
                    // Anything published while we were away is in the table; wake the
                    // workers in case a job arrived.
                    jobs.wake_here();
                    loop {
                        match l.recv().await {
                            Ok(n) if n.channel() == EVENTS_CHANNEL => {
                                on_notification(&store, &bus, relay.node(), n.payload()).await;
                            }
                            // Our own wake-ups woke our workers already.
                            Ok(n) if n.payload() == relay.node() => {}
                            Ok(_) => jobs.wake_here(),
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open LISTEN connection; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct EventRef {
    pub tenant_id: TenantId,
    pub id: i64,
}

async fn on_notification(store: &Store, bus: &Bus, node: &str, payload: &str) {
    let batch = match serde_json::from_str::<relay::Batch>(payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "malformed event notification");
            return;
        }
    };
    if batch.origin == node {
        // Delivered here at commit.
        return;
    }
    for ev in batch.events {
        bus.deliver(Arc::new(ev));
    }
    for r in batch.refs {
        match fetch(store, &r).await {
            Ok(Some(ev)) => bus.deliver(Arc::new(ev)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot load a large event"),
        }
    }
}

async fn fetch(store: &Store, r: &EventRef) -> Result<Option<Event>> {
    let mut tx = store.tenant_read(&r.tenant_id).await?;
    let row: Option<EventRow> = tx
        .fetch_optional(
            scoped("SELECT id, topic, seq, kind, data, created_at FROM events WHERE tenant_id = $1 AND id = $2")
                .bind(r.id),
        )
        .await?;
    tx.commit().await?;
    Ok(row.map(|row| row.into_event(&r.tenant_id)))
}

/// Deletes events older than `days` days, across tenants.
pub async fn prune(store: &Store, days: u32) -> Result<u64> {
    let before = Utc::now() - chrono::Duration::days(days.into());
    let mut tx = store.platform().await?;
    let n = cross_tenant::prune_events(&mut tx, before).await?;
    tx.commit().await?;
    Ok(n)
}
