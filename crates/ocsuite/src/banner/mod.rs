//! The system banner: one message from the operators on every page (planned
//! maintenance, an incident), `info` or `warning`, optionally until a time.
//!
//! Pages read it from this process's copy (no database read per page), which is
//! replaced at once after a change made here and reloaded with the feature flags every
//! few seconds, so every node shows the same banner within seconds.

pub mod routes;

use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::{Store, Tx, sql};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Banner {
    pub level: Level,
    pub text: String,
    /// It stops showing at this time.
    pub ends_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Banner {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.ends_at.is_none_or(|e| e > now)
    }
}

/// This process's copy of the banner.
#[derive(Default)]
pub struct Banners {
    current: RwLock<Option<Banner>>,
}

impl Banners {
    /// The banner to show now, if any.
    pub fn current(&self, now: DateTime<Utc>) -> Option<Banner> {
        self.current
            .read()
            .ok()
            .and_then(|b| b.clone())
            .filter(|b| b.live(now))
    }

    pub async fn reload(&self, store: &Store) -> Result<()> {
        let mut tx = store.platform_read().await?;
        let b = get(&mut tx).await?;
        tx.commit().await?;
        if let Ok(mut c) = self.current.write() {
            *c = b;
        }
        Ok(())
    }
}

type Row = (String, String, Option<DateTime<Utc>>, DateTime<Utc>);

pub async fn get(tx: &mut Tx) -> Result<Option<Banner>> {
    let row: Option<Row> = tx
        .fetch_optional(sql(
            "SELECT level, text, ends_at, updated_at FROM system_banner WHERE id = 1",
        ))
        .await?;
    Ok(row.map(|(level, text, ends_at, updated_at)| Banner {
        level: if level == "warning" {
            Level::Warning
        } else {
            Level::Info
        },
        text,
        ends_at,
        updated_at,
    }))
}

pub async fn set(
    tx: &mut Tx,
    level: Level,
    text: &str,
    ends_at: Option<DateTime<Utc>>,
    by: &str,
) -> Result<()> {
    tx.execute(
        sql("INSERT INTO system_banner (id, level, text, ends_at, updated_by, updated_at) VALUES (1, $1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET level = excluded.level, text = excluded.text, ends_at = excluded.ends_at, \
             updated_by = excluded.updated_by, updated_at = excluded.updated_at")
            .bind(level.as_str())
            .bind(text)
            .bind(ends_at)
            .bind(by)
            .bind(Utc::now()),
    )
    .await?;
    Ok(())
}

/// Removes the banner; false when there was none.
pub async fn clear(tx: &mut Tx) -> Result<bool> {
    Ok(tx
        .execute(sql("DELETE FROM system_banner WHERE id = 1"))
        .await?
        > 0)
}
