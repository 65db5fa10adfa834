//! How many open (queued or running) tasks each tenant has, for the cap that
//! `POST /tasks/execute` enforces, without counting them on every request.
//!
//! Why: counting is a walk over the tenant's open tasks, so with a backlog of thousands
//! every enqueue paid for the whole backlog, and on SQLite it did so holding the one
//! writer's lock. The count is taken at most once a second per tenant; enqueues by this
//! process add to it in between, and finished tasks are only seen at the next count, so
//! the figure errs high (the cap bites early, never late) except for enqueues by other
//! processes within that second: the cap may be passed by at most what they queue in it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ids::TenantId;

/// How long a count stands before it is taken again.
const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct OpenTasks {
    counts: Mutex<HashMap<TenantId, (Instant, i64)>>,
}

impl OpenTasks {
    /// The tenant's count if taken within the last second.
    pub fn fresh(&self, tenant: &TenantId) -> Option<i64> {
        let map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        map.get(tenant)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, n)| *n)
    }

    /// Stores a count just taken.
    pub fn set(&self, tenant: &TenantId, n: i64) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
        }
        map.insert(tenant.clone(), (Instant::now(), n));
    }

    /// Counts one task this process just queued.
    pub fn add(&self, tenant: &TenantId) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = map.get_mut(tenant) {
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_local_enqueues_until_the_next_count() {
        let g = OpenTasks::default();
        let t = TenantId::new();
        assert_eq!(g.fresh(&t), None);
        g.add(&t);
        assert_eq!(g.fresh(&t), None, "no count yet: nothing to add to");
        g.set(&t, 5);
        g.add(&t);
        assert_eq!(g.fresh(&t), Some(6));
    }
}
