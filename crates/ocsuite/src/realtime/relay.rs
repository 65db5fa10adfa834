//! Carries this process's committed events and job wake-ups to every other process on
//! PostgreSQL, after commit, in batches.
//!
//! Why not `pg_notify` inside each transaction: PostgreSQL serialises the commits of all
//! transactions that notify (a database-wide lock taken before commit and held through
//! its WAL flush, so notifications are queued in commit order). With every task write
//! notifying, every commit in the cluster waited for the previous one's disk flush, one
//! at a time; that capped the whole task pipeline at the disk's flush rate divided by
//! three. Here the writing transactions notify nothing. The process that committed
//! delivers to its own subscribers at once ([`super::Bus::after_commit`]) and queues the
//! events here; one loop sends whatever has queued up as one statement
//! (`pg_notify` over `unnest`), so under load a single notifying commit carries hundreds
//! of events, and when idle an event leaves at once.
//!
//! The stored event is the truth, the notification only a hint: should this process die
//! between a commit and the send, other processes' subscribers see the event when they
//! resume or replay (per-topic sequence numbers show the gap), and workers elsewhere find
//! the job at their next poll.
//!
//! Each notification names its origin, so a process skips its own (it delivered them
//! already).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{EVENTS_CHANNEL, Event};
use crate::queue::JOBS_CHANNEL;

/// PostgreSQL's notification payload limit is 8000 bytes; stay below it.
const PAYLOAD_MAX: usize = 7500;
/// Most items one statement sends.
const BATCH_MAX: usize = 2048;
/// Most items waiting to be sent. Beyond it (PostgreSQL unreachable for a while under
/// load) new ones are dropped: they are hints, and the events are in the table.
const QUEUE_MAX: usize = 100_000;

enum Out {
    Event(Arc<Event>),
    Jobs,
}

/// A notification on [`EVENTS_CHANNEL`]: events inline, or by reference when one alone
/// would not fit (the listener reads those from the table).
#[derive(Serialize, Deserialize)]
pub(super) struct Batch {
    pub origin: String,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub refs: Vec<super::EventRef>,
}

pub struct Relay {
    /// Names this process in its notifications.
    node: String,
    /// Set once the sending loop runs; until then nothing is queued.
    tx: OnceLock<mpsc::Sender<Out>>,
    /// A full queue was reported and has not drained since.
    overflowing: AtomicBool,
}

impl Default for Relay {
    fn default() -> Self {
        Self::new()
    }
}

impl Relay {
    pub fn new() -> Self {
        Self {
            node: uuid::Uuid::new_v4().simple().to_string(),
            tx: OnceLock::new(),
            overflowing: AtomicBool::new(false),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Queues a committed event for the other processes.
    pub fn event(&self, ev: &Arc<Event>) {
        self.queue(Out::Event(ev.clone()));
    }

    /// Tells the other processes' workers that a job may be ready.
    pub fn jobs(&self) {
        self.queue(Out::Jobs);
    }

    fn queue(&self, item: Out) {
        let Some(tx) = self.tx.get() else {
            return;
        };
        match tx.try_send(item) {
            Ok(()) => {
                if self.overflowing.load(Ordering::Relaxed) {
                    self.overflowing.store(false, Ordering::Relaxed);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the relay to other processes is {QUEUE_MAX} items behind; dropping until it catches up (the events stay in the table for subscribers that resume)"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Starts the sending loop on `pool` (once; later calls return `None`).
    pub fn start(&self, pool: sqlx::PgPool) -> Option<tokio::task::JoinHandle<()>> {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        self.tx.set(tx).ok()?;
        Some(tokio::spawn(send_loop(self.node.clone(), rx, pool)))
    }
}

async fn send_loop(node: String, mut rx: mpsc::Receiver<Out>, pool: sqlx::PgPool) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let (channels, payloads) = encode(&node, &batch);
        batch.clear();
        for attempt in 1..=3u64 {
            let sent = sqlx::query(
                "SELECT pg_notify(n.c, n.p)::text FROM unnest($1::text[], $2::text[]) AS n(c, p)",
            )
            .bind(&channels)
            .bind(&payloads)
            .execute(&pool)
            .await;
            match sent {
                Ok(_) => break,
                Err(e) => {
                    // The events are stored; other processes' subscribers catch up when
                    // they resume, and workers poll.
                    tracing::warn!(error = %e, attempt, "relaying events to other processes failed");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
    }
}

/// The notifications for `items`: events packed into as few payloads as fit, and at
/// most one job wake-up.
fn encode(node: &str, items: &[Out]) -> (Vec<String>, Vec<String>) {
    let mut channels = Vec::new();
    let mut payloads = Vec::new();
    let mut jobs = false;
    let mut current = Batch {
        origin: node.to_owned(),
        events: Vec::new(),
        refs: Vec::new(),
    };
    let mut size = 0;
    let mut flush = |b: &mut Batch, size: &mut usize| {
        if b.events.is_empty() && b.refs.is_empty() {
            return;
        }
        if let Ok(p) = serde_json::to_string(b) {
            channels.push(EVENTS_CHANNEL.to_owned());
            payloads.push(p);
        }
        b.events.clear();
        b.refs.clear();
        *size = 0;
    };
    for item in items {
        match item {
            Out::Jobs => jobs = true,
            Out::Event(ev) => {
                let len = serde_json::to_string(ev.as_ref()).map_or(usize::MAX, |s| s.len());
                if len > PAYLOAD_MAX - 200 {
                    if size + 100 > PAYLOAD_MAX {
                        flush(&mut current, &mut size);
                    }
                    current.refs.push(super::EventRef {
                        tenant_id: ev.tenant_id.clone(),
                        id: ev.id,
                    });
                    size += 100;
                    continue;
                }
                if size + len + 1 > PAYLOAD_MAX - 200 {
                    flush(&mut current, &mut size);
                }
                current.events.push(ev.as_ref().clone());
                size += len + 1;
            }
        }
    }
    flush(&mut current, &mut size);
    if jobs {
        channels.push(JOBS_CHANNEL.to_owned());
        payloads.push(node.to_owned());
    }
    (channels, payloads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;
    use serde_json::json;

    fn event(data_len: usize, id: i64) -> Arc<Event> {
        Arc::new(Event {
            tenant_id: TenantId::new(),
            id,
            topic: "tasks".into(),
            seq: id,
            kind: "progress".into(),
            data: json!({"message": "x".repeat(data_len)}),
            at: chrono::Utc::now(),
            wire: Default::default(),
            inserted: None,
        })
    }

    #[test]
    fn packs_events_below_the_payload_limit_and_sends_big_ones_by_reference() {
        let mut items: Vec<Out> = (0..100).map(|i| Out::Event(event(300, i))).collect();
        items.push(Out::Event(event(9000, 1000)));
        items.push(Out::Jobs);
        items.push(Out::Jobs);
        let (channels, payloads) = encode("me", &items);
        assert_eq!(channels.len(), payloads.len());
        assert!(
            payloads.iter().all(|p| p.len() <= PAYLOAD_MAX),
            "{:?}",
            payloads.iter().map(String::len).collect::<Vec<_>>()
        );
        // One wake-up for any number of jobs, sent last.
        assert_eq!(channels.iter().filter(|c| *c == JOBS_CHANNEL).count(), 1);
        assert_eq!(channels.last().map(String::as_str), Some(JOBS_CHANNEL));
        let mut inline = Vec::new();
        let mut refs = Vec::new();
        for p in payloads.iter().filter(|p| p.starts_with('{')) {
            let b: Batch = serde_json::from_str(p).unwrap();
            assert_eq!(b.origin, "me");
            inline.extend(b.events.into_iter().map(|e| e.id));
            refs.extend(b.refs.into_iter().map(|r| r.id));
        }
        assert_eq!(inline, (0..100).collect::<Vec<_>>());
        assert_eq!(refs, vec![1000]);
        assert!(
            channels.len() > 3,
            "100 events of ~350 bytes need several payloads"
        );
    }
}
