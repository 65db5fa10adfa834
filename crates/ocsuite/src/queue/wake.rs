//! Wakes idle workers when a job may be ready.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::realtime::relay::Relay;

/// This process's workers are woken at once; on PostgreSQL the other processes' are
/// woken through the relay (after commit, batched: see `realtime::relay`), and every
/// worker also polls, so a lost wake-up only delays a job.
pub struct Wake {
    here: Notify,
    relay: Option<Arc<Relay>>,
}

impl Wake {
    pub fn new(relay: Option<Arc<Relay>>) -> Self {
        Self {
            here: Notify::new(),
            relay,
        }
    }

    /// A job may be ready: call after the transaction that queued it committed.
    pub fn notify_one(&self) {
        self.here.notify_one();
        if let Some(r) = &self.relay {
            r.jobs();
        }
    }

    /// Many jobs may be ready (a tenant's queue was resumed, several were queued).
    pub fn notify_waiters(&self) {
        self.here.notify_waiters();
        if let Some(r) = &self.relay {
            r.jobs();
        }
    }

    /// Wakes this process's idle workers only: another process said a job may be ready.
    pub fn wake_here(&self) {
        self.here.notify_waiters();
    }

    /// Resolves at the next wake-up; see [`Notify::notified`].
    pub fn notified(&self) -> Notified<'_> {
        self.here.notified()
    }
}
