//! The one clock that trigger evaluation, alerts and digests read.
//!
//! Schedules, snoozes and "waiting longer than X" all compare against [`Clock::now`], so
//! tests can drive time (`set`, `advance`) instead of sleeping until something comes due.
//! In production nothing sets it and it is the system clock.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// The system clock, or a fixed instant a test set (which `advance` moves).
#[derive(Default)]
pub struct Clock {
    fixed: Mutex<Option<DateTime<Utc>>>,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self.fixed.lock() {
            Ok(f) => f.unwrap_or_else(Utc::now),
            Err(_) => Utc::now(),
        }
    }

    /// Stops the clock at `at` (tests).
    pub fn set(&self, at: DateTime<Utc>) {
        if let Ok(mut f) = self.fixed.lock() {
            *f = Some(at);
        }
    }

    /// Moves a stopped clock on by `by` (from the system time when it was not stopped).
    pub fn advance(&self, by: Duration) {
        if let Ok(mut f) = self.fixed.lock() {
            *f = Some(f.unwrap_or_else(Utc::now) + by);
        }
    }
}
