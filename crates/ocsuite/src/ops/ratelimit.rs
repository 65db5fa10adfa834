//! Rate limits: per client IP on the auth routes (slows credential stuffing and
//! sign-up abuse), per API key / tenant / user on the rest of the API (one noisy
//! caller cannot starve the others). GCRA via `governor`; over the limit → 429 with
//! `Retry-After`.
//!
//! Limits are per server process. Behind a load balancer with N nodes a caller gets up
//! to N times the limit; the per-account login lockout, which lives in the database,
//! is what bounds password guessing across nodes.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::error::{AppError, Result};

pub struct Limits {
    auth: DefaultKeyedRateLimiter<String>,
    api: DefaultKeyedRateLimiter<String>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(c: &Config) -> Arc<Self> {
        let auth = Quota::per_minute(nz(c.rate_limit_auth_per_minute))
            .allow_burst(nz(c.rate_limit_auth_per_minute));
        let api = Quota::per_second(nz(c.rate_limit_api_per_second))
            .allow_burst(nz(c.rate_limit_api_burst));
        Arc::new(Self {
            auth: RateLimiter::keyed(auth),
            api: RateLimiter::keyed(api),
        })
    }

    fn check(limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<()> {
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| AppError::TooManyRequests {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    pub fn check_api(&self, key: &str) -> Result<()> {
        Self::check(&self.api, key)
    }

    /// Sign-up and login attempts, keyed by client IP.
    pub fn check_auth(&self, ip: &str) -> Result<()> {
        Self::check(&self.auth, ip)
    }

    /// Drops state for keys that are back to full capacity (run periodically).
    pub fn shrink(&self) {
        self.auth.retain_recent();
        self.api.retain_recent();
    }
}
