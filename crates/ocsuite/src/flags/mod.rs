//! Feature flags: a key, a stage, a kill switch, targeting by user, company and plan,
//! and a percentage rollout sticky by company.
//!
//! How a flag answers for a caller (first match wins):
//! 1. killed → off, for everyone;
//! 2. stage `off` → off; stage `ga` → on;
//! 3. the caller's user or company is targeted → on (alpha and beta);
//! 4. stage `beta`: the caller's plan is targeted → on; else on for `rollout_percent` of
//!    companies, chosen by a stable hash of the flag key and the company id (the same
//!    company stays in or out as the percentage grows);
//! 5. otherwise off.
//!
//! Evaluation is local and takes no lock on the hot path: each process holds an
//! immutable snapshot of every flag, swapped whole when it reloads (at once after a
//! change made here, and every [`REFRESH`] from the database, so other nodes follow
//! within seconds). Server code asks [`Flags::enabled`]; the web app reads
//! `GET /api/v1/features`.

pub mod routes;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};
use crate::store::{Store, Tx, sql};

/// How often each process reloads the flags from the database.
pub const REFRESH: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Off,
    Alpha,
    Beta,
    Ga,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Alpha => "alpha",
            Self::Beta => "beta",
            Self::Ga => "ga",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "alpha" => Self::Alpha,
            "beta" => Self::Beta,
            "ga" => Self::Ga,
            _ => Self::Off,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Flag {
    pub key: String,
    pub description: String,
    pub stage: Stage,
    pub killed: bool,
    pub rollout_percent: u32,
    pub users: Vec<String>,
    pub tenants: Vec<String>,
    pub plans: Vec<String>,
    pub updated_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who is asking.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub plan: Option<&'a str>,
}

/// Which rule decided, for the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Killed,
    Off,
    Ga,
    TargetedUser,
    TargetedTenant,
    TargetedPlan,
    Rollout,
    NotTargeted,
    Unknown,
}

/// The bucket (0-99) of a company for a flag: FNV-1a over `key:tenant`, stable across
/// processes, versions and machines (the standard library's hasher is seeded per
/// process, so it cannot be used).
pub fn bucket(key: &str, tenant: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([b':']).chain(tenant.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone are weak for short inputs.
    ((h ^ (h >> 32)) % 100) as u32
}

impl Flag {
    pub fn evaluate(&self, s: &Subject<'_>) -> (bool, Reason) {
        let has = |list: &[String], v: Option<&str>| v.is_some_and(|v| list.iter().any(|x| x == v));
        if self.killed {
            return (false, Reason::Killed);
        }
        match self.stage {
            Stage::Off => return (false, Reason::Off),
            Stage::Ga => return (true, Reason::Ga),
            Stage::Alpha | Stage::Beta => {}
        }
        if has(&self.users, s.user) {
            return (true, Reason::TargetedUser);
        }
        if has(&self.tenants, s.tenant) {
            return (true, Reason::TargetedTenant);
        }
        if self.stage == Stage::Beta {
            if has(&self.plans, s.plan) {
                return (true, Reason::TargetedPlan);
            }
            if let Some(t) = s.tenant
                && bucket(&self.key, t) < self.rollout_percent
            {
                return (true, Reason::Rollout);
            }
        }
        (false, Reason::NotTargeted)
    }
}

/// This process's copy of every flag.
#[derive(Default)]
pub struct Flags {
    snapshot: RwLock<Arc<HashMap<String, Flag>>>,
}

impl Flags {
    /// Whether `key` is on for `s`; an unknown flag is off.
    pub fn enabled(&self, key: &str, s: &Subject<'_>) -> bool {
        self.decide(key, s).0
    }

    /// The answer and the rule that gave it.
    pub fn decide(&self, key: &str, s: &Subject<'_>) -> (bool, Reason) {
        let snap = match self.snapshot.read() {
            Ok(g) => Arc::clone(&g),
            Err(_) => return (false, Reason::Unknown),
        };
        snap.get(key)
            .map_or((false, Reason::Unknown), |f| f.evaluate(s))
    }

    /// Every flag as this process sees it, by key.
    pub fn all(&self) -> Arc<HashMap<String, Flag>> {
        self.snapshot
            .read()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default()
    }

    /// Replaces the copy with the database's flags.
    pub async fn reload(&self, store: &Store) -> Result<()> {
        let mut tx = store.platform_read().await?;
        let flags = list(&mut tx).await?;
        tx.commit().await?;
        let map: HashMap<String, Flag> = flags.into_iter().map(|f| (f.key.clone(), f)).collect();
        if let Ok(mut g) = self.snapshot.write() {
            *g = Arc::new(map);
        }
        Ok(())
    }
}

type Row = (
    String,
    String,
    String,
    bool,
    i64,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

pub async fn list(tx: &mut Tx) -> Result<Vec<Flag>> {
    let rows: Vec<Row> = tx
        .fetch_all(sql(
            "SELECT key, description, stage, killed, rollout_percent, users, tenants, plans, updated_by, created_at, updated_at \
             FROM feature_flags ORDER BY key",
        ))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Flag {
            key: r.0,
            description: r.1,
            stage: Stage::parse(&r.2),
            killed: r.3,
            rollout_percent: u32::try_from(r.4.clamp(0, 100)).unwrap_or(0),
            users: serde_json::from_str(&r.5).unwrap_or_default(),
            tenants: serde_json::from_str(&r.6).unwrap_or_default(),
            plans: serde_json::from_str(&r.7).unwrap_or_default(),
            updated_by: r.8,
            created_at: r.9,
            updated_at: r.10,
        })
        .collect())
}

/// A flag's settings, checked by the route.
pub struct FlagIn {
    pub description: String,
    pub stage: Stage,
    pub killed: bool,
    pub rollout_percent: u32,
    pub users: Vec<String>,
    pub tenants: Vec<String>,
    pub plans: Vec<String>,
}

/// Creates or replaces `key`; returns whether it existed.
pub async fn put(tx: &mut Tx, key: &str, f: &FlagIn, by: &str) -> Result<bool> {
    let now = Utc::now();
    let existed: Option<(String,)> = tx
        .fetch_optional(sql("SELECT key FROM feature_flags WHERE key = $1").bind(key))
        .await?;
    let json = |v: &Vec<String>| serde_json::to_string(v).map_err(AppError::internal);
    tx.execute(
        sql("INSERT INTO feature_flags (key, description, stage, killed, rollout_percent, users, tenants, plans, updated_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (key) DO UPDATE SET description = excluded.description, stage = excluded.stage, killed = excluded.killed, \
             rollout_percent = excluded.rollout_percent, users = excluded.users, tenants = excluded.tenants, plans = excluded.plans, \
             updated_by = excluded.updated_by, updated_at = excluded.updated_at")
            .bind(key)
            .bind(f.description.as_str())
            .bind(f.stage.as_str())
            .bind(f.killed)
            .bind(i64::from(f.rollout_percent))
            .bind(json(&f.users)?)
            .bind(json(&f.tenants)?)
            .bind(json(&f.plans)?)
            .bind(by)
            .bind(now),
    )
    .await?;
    Ok(existed.is_some())
}

pub async fn delete(tx: &mut Tx, key: &str) -> Result<()> {
    let n = tx
        .execute(sql("DELETE FROM feature_flags WHERE key = $1").bind(key))
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("flag"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(stage: Stage, percent: u32) -> Flag {
        Flag {
            key: "new-dashboard".into(),
            description: String::new(),
            stage,
            killed: false,
            rollout_percent: percent,
            users: vec!["usr_a".into()],
            tenants: vec!["ten_a".into()],
            plans: vec!["enterprise".into()],
            updated_by: String::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn stages_targeting_and_the_kill_switch() {
        let s = |u, t, p| Subject {
            user: Some(u),
            tenant: Some(t),
            plan: Some(p),
        };
        let nobody = s("usr_z", "ten_z", "free");
        assert!(
            !flag(Stage::Off, 100)
                .evaluate(&s("usr_a", "ten_a", "enterprise"))
                .0
        );
        assert_eq!(flag(Stage::Ga, 0).evaluate(&nobody), (true, Reason::Ga));
        assert_eq!(
            flag(Stage::Alpha, 100).evaluate(&s("usr_a", "ten_z", "free")),
            (true, Reason::TargetedUser)
        );
        assert_eq!(
            flag(Stage::Alpha, 100).evaluate(&s("usr_z", "ten_a", "free")),
            (true, Reason::TargetedTenant)
        );
        // Alpha ignores plans and percentages.
        assert!(
            !flag(Stage::Alpha, 100)
                .evaluate(&s("usr_z", "ten_z", "enterprise"))
                .0
        );
        assert_eq!(
            flag(Stage::Beta, 0).evaluate(&s("usr_z", "ten_z", "enterprise")),
            (true, Reason::TargetedPlan)
        );
        assert_eq!(
            flag(Stage::Beta, 100).evaluate(&nobody),
            (true, Reason::Rollout)
        );
        let mut killed = flag(Stage::Ga, 100);
        killed.killed = true;
        assert_eq!(
            killed.evaluate(&s("usr_a", "ten_a", "enterprise")),
            (false, Reason::Killed)
        );
    }

    #[test]
    fn rollout_is_sticky_and_close_to_its_percentage_over_ten_thousand_companies() {
        let tenants: Vec<String> = (0..10_000)
            .map(|_| crate::ids::TenantId::new().to_string())
            .collect();
        let mut before = 0;
        for percent in [1, 10, 25, 50, 90] {
            let f = flag(Stage::Beta, percent);
            let on: Vec<bool> = tenants
                .iter()
                .map(|t| {
                    f.evaluate(&Subject {
                        user: None,
                        tenant: Some(t),
                        plan: None,
                    })
                    .0
                })
                .collect();
            let n = on.iter().filter(|x| **x).count();
            let expected = percent as usize * 100;
            assert!(n.abs_diff(expected) <= 250, "{percent}%: {n} of 10000");
            // Growing the percentage only adds companies.
            assert!(n >= before);
            before = n;
            // The same answer every time.
            assert!(tenants.iter().zip(&on).all(|(t, o)| {
                f.evaluate(&Subject {
                    user: None,
                    tenant: Some(t),
                    plan: None,
                })
                .0 == *o
            }));
        }
        // The bucket is a pure function of key and company.
        assert_eq!(bucket("a", "ten_1"), bucket("a", "ten_1"));
    }
}
