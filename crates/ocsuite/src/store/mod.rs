//! Storage: the only module that knows two database backends exist.
//!
//! Callers get a [`Tx`] in one of three scopes and run backend-neutral [`Sql`] on it:
//!
//! * [`Store::tenant`] / [`Store::tenant_read`] → [`TenantTx`]: every query on a tenant
//!   table goes through one. On PostgreSQL it starts with
//!   `set_config('app.tenant_id', $1, true)` — transaction-local, so a pooled connection
//!   never carries one tenant's setting into the next request — and row-level security
//!   is the second wall behind the `tenant_id = $1` every tenant query also carries.
//! * [`Store::user`] → [`UserTx`]: a signed-in user's own view across tenants (their
//!   memberships); sets `app.user_id`, which the membership and tenant policies accept.
//! * [`Store::platform`] / [`Store::platform_read`]: identity tables that belong to no
//!   tenant (users, sessions, key versions).
//!
//! On SQLite, write transactions begin `IMMEDIATE` so two writers queue on the busy
//! timeout instead of failing on a lock upgrade, and reads run without a transaction.

pub mod cross_tenant;
mod json_row;
mod migrate;
mod sql;
mod sqlite_write;
mod tx;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use json_row::JsonRow;
pub use migrate::{
    RoleCheck, VacuumCheck, check_runtime_role, check_vacuum, migrate, rls_violations,
};
pub use sql::{Arg, Sql, scoped, sql};
pub use tx::{Affected, InsertedId, Later, Row, TenantTx, Tx, UserTx};

use crate::ids::{TenantId, UserId};
use tx::Conn;

/// Which engine a [`Store`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Pools {
    /// Reads share `read`; every write transaction runs on the one connection of
    /// `write`. SQLite discards a connection's page cache whenever another connection
    /// changed the file, so writes spread over a pool re-read their pages from the OS at
    /// every transaction; on one connection the writer's cache stays warm.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

/// WAL length (in pages) past which [`Store::checkpoint`] makes the WAL start over:
/// 16 MiB with 4 KiB pages.
const WAL_RESTART_FRAMES: i64 = 4096;

/// The connection pool, cheap to clone.
#[derive(Clone)]
pub struct Store {
    pools: Pools,
    /// Named (cached, prepared once per connection) statements; false behind a
    /// transaction pooler. See [`Store::connect_runtime`].
    named_statements: bool,
    /// A direct connection for LISTEN and NOTIFY when the pool goes through a pooler
    /// (`OCSUITE_DATABASE_LISTEN_URL`); `None`: the pool itself.
    listen: Option<PgPool>,
    /// SQLite allows one writer at a time. Writers queue here, in order, instead of
    /// racing for the file lock: SQLite's own busy handler retries with sleeps of up to
    /// 100 ms, which under load turns microsecond transactions into long stalls.
    sqlite_writer: Arc<tokio::sync::Semaphore>,
}

impl Store {
    /// Opens the runtime pool. SQLite files (and their folder) are created on first use.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // Checkpoints run in the background (`checkpoint`), not inside whichever
                // commit crosses the WAL threshold: that commit used to take the
                // checkpoint's copy-and-sync, the tail of every write path's latency.
                .pragma("wal_autocheckpoint", "0")
                // A checkpointed WAL is cut back to this size.
                .pragma("journal_size_limit", "67108864")
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            if let Some(dir) = opts.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            // No ping before each use: a connection to a local file does not go stale,
            // and the ping is one more trip to the connection's thread per transaction
            // (inside the writer's turn, for writes).
            let file = opts.get_filename().display().to_string();
            // SQLite's own message ("unable to open database file") names neither the
            // file nor the likely cause.
            let opening = |e: sqlx::Error| {
                sqlx::Error::Configuration(
                    format!(
                        "cannot open the SQLite database {file}: {e}. Check that its folder exists, \
                         is writable by this user, and is not on a read-only or full disk"
                    )
                    .into(),
                )
            };
            let read = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .min_connections(1)
                .test_before_acquire(false)
                .connect_with(opts.clone())
                .await
                .map_err(opening)?;
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                .connect_with(opts)
                .await?;
            Ok(Self {
                pools: Pools::Sqlite { read, write },
                named_statements: true,
                listen: None,
                sqlite_writer: Arc::new(tokio::sync::Semaphore::new(1)),
            })
        } else {
            let opts = PgConnectOptions::from_str(url)?;
            // No ping before each use either: it is a round trip per transaction. sqlx
            // already checks a connection when it comes back to the pool, so one that
            // broke in use is not handed out again; one that dies while idle (the server
            // restarted) fails the one statement that finds it.
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Self {
                pools: Pools::Postgres(pool),
                named_statements: true,
                listen: None,
                sqlite_writer: Arc::new(tokio::sync::Semaphore::new(1)),
            })
        }
    }

    /// The server's and workers' pool, as configured: behind a transaction-pooling
    /// proxy (`OCSUITE_DATABASE_POOLED`) statements go unnamed, since a named one stays
    /// on whichever server connection the proxy lent for one transaction, and reads run
    /// in a transaction too (between sqlx's parse and execute the proxy could switch
    /// server connections otherwise). LISTEN and NOTIFY use
    /// `OCSUITE_DATABASE_LISTEN_URL`, a direct connection, when it is set.
    pub async fn connect_runtime(config: &crate::config::Config) -> Result<Self, sqlx::Error> {
        let mut store = Self::connect(&config.database_url, config.db_max_connections).await?;
        if store.backend() == Backend::Postgres {
            store.named_statements = !config.database_pooled;
            if let Some(url) = &config.database_listen_url {
                let opts = PgConnectOptions::from_str(url)?;
                store.listen = Some(
                    PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_lazy_with(opts),
                );
            }
        }
        Ok(store)
    }

    /// Where LISTEN and NOTIFY go on PostgreSQL: the direct listen connection when one
    /// is configured, else the pool; `None` on SQLite.
    pub(crate) fn notify_pool(&self) -> Option<&PgPool> {
        self.listen.as_ref().or(self.pg_pool())
    }

    /// Keeps the SQLite WAL short; the server calls it four times a second. A no-op on
    /// PostgreSQL.
    ///
    /// First a PASSIVE checkpoint from a reader copies what it can into the database
    /// file without blocking anyone. That alone never shortens the file: the WAL starts
    /// over only when a writer begins while no reader is inside it, which under steady
    /// load never happens, and a WAL that only grows makes every commit slower (the file
    /// grew to gigabytes in the task benchmark). So once the WAL passes
    /// [`WAL_RESTART_FRAMES`], a RESTART checkpoint runs on the writer connection, in the
    /// writers' queue: it waits a few milliseconds at most for the readers inside the WAL
    /// (their statements take microseconds) and the next write starts the file over.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        let Pools::Sqlite { read, write } = &self.pools else {
            return Ok(());
        };
        let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(read)
            .await?;
        if frames < WAL_RESTART_FRAMES {
            return Ok(());
        }
        let _turn = self
            .sqlite_writer
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // RESTART waits (in SQLite's busy handler, sleeping 1, 2, 5 … 100 ms) for every
        // reader to leave the WAL, holding the write lock all along: with the writer's
        // 10 s timeout, a busy moment stalled every write for hundreds of milliseconds.
        // Wait a few milliseconds at most instead (readers that began before the copy
        // are microseconds from done; later ones read the database file and do not
        // block); when readers are still inside, give up and try at the next tick. A
        // WAL four times past the mark waits up to 100 ms: it must not grow unbounded.
        let mut conn = write.acquire().await?;
        let wait = if frames < 4 * WAL_RESTART_FRAMES {
            "PRAGMA busy_timeout = 5"
        } else {
            "PRAGMA busy_timeout = 100"
        };
        sqlx::query(wait).execute(&mut *conn).await?;
        let restarted = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(&mut *conn)
            .await;
        // Back to the 10 s every writer waits (as set in `connect`).
        let restored = sqlx::query("PRAGMA busy_timeout = 10000")
            .execute(&mut *conn)
            .await;
        restarted?;
        restored?;
        Ok(())
    }

    /// Each pool's `(name, open connections, idle, most it opens)`, for `/metrics`.
    pub fn pool_stats(&self) -> Vec<(&'static str, u32, usize, u32)> {
        match &self.pools {
            Pools::Postgres(p) => vec![(
                "app",
                p.size(),
                p.num_idle(),
                p.options().get_max_connections(),
            )],
            Pools::Sqlite { read, write } => vec![
                (
                    "read",
                    read.size(),
                    read.num_idle(),
                    read.options().get_max_connections(),
                ),
                (
                    "write",
                    write.size(),
                    write.num_idle(),
                    write.options().get_max_connections(),
                ),
            ],
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        match &self.pools {
            Pools::Postgres(p) => Some(p),
            Pools::Sqlite { .. } => None,
        }
    }

    pub(crate) fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.pools {
            Pools::Sqlite { write, .. } => Some(write),
            Pools::Postgres(_) => None,
        }
    }

    async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.pools {
            Pools::Sqlite { write: p, .. } => {
                let permit = self
                    .sqlite_writer
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| sqlx::Error::PoolClosed)?;
                Tx {
                    conn: Conn::SqliteWrite(sqlite_write::WriteConn::new(
                        p.acquire().await?,
                        permit,
                    )),
                    tenant: None,
                    named_statements: true,
                }
            }
            Pools::Postgres(p) => Tx {
                conn: Conn::PgTx(p.begin().await?),
                tenant: None,
                named_statements: self.named_statements,
            },
        })
    }

    /// A write transaction on platform tables (no tenant).
    pub async fn platform(&self) -> Result<Tx, sqlx::Error> {
        self.begin_write().await
    }

    /// A plain connection for reads of platform tables (a transaction behind a
    /// pooler; see [`Store::connect_runtime`]).
    pub async fn platform_read(&self) -> Result<Tx, sqlx::Error> {
        let conn = match &self.pools {
            Pools::Sqlite { read: p, .. } => Conn::SqlitePooled(p.acquire().await?),
            Pools::Postgres(p) if !self.named_statements => Conn::PgTx(p.begin().await?),
            Pools::Postgres(p) => Conn::PgPooled(p.acquire().await?),
        };
        Ok(Tx {
            conn,
            tenant: None,
            named_statements: self.named_statements,
        })
    }

    /// A write transaction scoped to `tenant`.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<TenantTx, sqlx::Error> {
        let tx = match &self.pools {
            Pools::Sqlite { .. } => self.begin_write().await?,
            Pools::Postgres(p) => {
                begin_scoped(p, "app.tenant_id", tenant.as_str(), self.named_statements).await?
            }
        };
        Ok(tx.entered_tenant(tenant))
    }

    /// A read scoped to `tenant` (a transaction on PostgreSQL, where the setting needs one).
    pub async fn tenant_read(&self, tenant: &TenantId) -> Result<TenantTx, sqlx::Error> {
        let tx = match &self.pools {
            Pools::Sqlite { read: p, .. } => Tx {
                conn: Conn::SqlitePooled(p.acquire().await?),
                tenant: None,
                named_statements: true,
            },
            Pools::Postgres(p) => {
                begin_scoped(p, "app.tenant_id", tenant.as_str(), self.named_statements).await?
            }
        };
        Ok(tx.entered_tenant(tenant))
    }

    /// Continues after reads made on `read` (from [`Store::tenant_read`]) with writes.
    /// On PostgreSQL that is the same transaction. On SQLite the reads ran on a reader
    /// and the writes get the writer's turn now, so checks that only read never hold
    /// SQLite's one writer; what they read may have changed by then, so use it only for
    /// checks a unique index or a later conditional write backs up.
    pub async fn writable(&self, read: TenantTx) -> Result<TenantTx, sqlx::Error> {
        match &self.pools {
            Pools::Postgres(_) => Ok(read),
            Pools::Sqlite { .. } => {
                let tenant = read.tenant.clone();
                drop(read);
                self.tenant(&tenant).await
            }
        }
    }

    /// A transaction that may read `user`'s memberships in every tenant.
    pub async fn user(&self, user: &UserId) -> Result<UserTx, sqlx::Error> {
        let tx = match &self.pools {
            Pools::Sqlite { read: p, .. } => Tx {
                conn: Conn::SqlitePooled(p.acquire().await?),
                tenant: None,
                named_statements: true,
            },
            Pools::Postgres(p) => {
                begin_scoped(p, "app.user_id", user.as_str(), self.named_statements).await?
            }
        };
        Ok(UserTx {
            tx,
            user: user.clone(),
        })
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.platform_read().await?;
        tx.execute(sql("SELECT 1")).await.map(|_| ())
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }
}

/// `BEGIN` and the transaction-local setting in one round trip. The value is spliced
/// into the SQL text (the simple-query protocol takes no parameters), so it must be a
/// typed id: a prefix, `_` and 32 hex digits, which cannot break out of the literal.
async fn begin_scoped(
    p: &PgPool,
    key: &'static str,
    value: &str,
    named_statements: bool,
) -> Result<Tx, sqlx::Error> {
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(sqlx::Error::Protocol(format!(
            "refusing to scope a transaction to `{value}`"
        )));
    }
    let begin = format!("BEGIN; SELECT set_config('{key}', '{value}', true)");
    Ok(Tx {
        conn: Conn::PgTx(p.begin_with(sqlx::AssertSqlSafe(begin)).await?),
        tenant: None,
        named_statements,
    })
}
