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

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{FromRow, PgPool, Postgres, Sqlite, SqlitePool, Transaction};

pub use json_row::JsonRow;
pub use migrate::{
    RoleCheck, VacuumCheck, check_runtime_role, check_vacuum, migrate, rls_violations,
};
pub use sql::{Arg, Sql, scoped, sql};

use crate::ids::{TenantId, UserId};
use sql::bind_all;

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
    /// SQLite allows one writer at a time. Writers queue here, in order, instead of
    /// racing for the file lock: SQLite's own busy handler retries with sleeps of up to
    /// 100 ms, which under load turns microsecond transactions into long stalls.
    sqlite_writer: Arc<tokio::sync::Semaphore>,
}

/// What a deferred statement reports, once it ran: SQLite sends deferred statements with
/// the transaction's next trip or its commit, so their results arrive only then.
#[derive(Clone, Debug)]
pub struct Later<T>(Arc<std::sync::OnceLock<T>>);

impl<T> Default for Later<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Copy> Later<T> {
    pub fn get(&self) -> Option<T> {
        self.0.get().copied()
    }
    fn set(&self, v: T) {
        let _ = self.0.set(v);
    }
}

/// The id an insert returned ([`Tx::defer_insert`]).
pub type InsertedId = Later<i64>;
/// How many rows a statement changed ([`Tx::defer_counted`]).
pub type Affected = Later<u64>;

/// A row type decodable from both backends.
pub trait Row: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}
impl<T> Row for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{}

enum Conn {
    SqliteWrite(sqlite_write::WriteConn),
    SqlitePooled(PoolConnection<Sqlite>),
    PgTx(Transaction<'static, Postgres>),
    PgPooled(PoolConnection<Postgres>),
}

/// A connection or transaction in some scope; see the module docs.
pub struct Tx {
    conn: Conn,
    /// Set in a tenant transaction: the `$1` of every [`scoped`] query.
    tenant: Option<TenantId>,
}

macro_rules! run {
    ($self:ident, $q:ident, |$query:ident, $exec:ident| $body:expr) => {
        match &mut $self.conn {
            // Each caller of `run!` hands SQLite writes to `sqlite_write` first.
            Conn::SqliteWrite(_) => Err(sqlx::Error::Protocol(
                "a SQLite write reached the generic path".into(),
            )),
            Conn::SqlitePooled(c) => {
                let $exec = &mut **c;
                let $query = $q;
                $body
            }
            Conn::PgTx(t) => {
                let $exec = &mut **t;
                let $query = $q;
                $body
            }
            Conn::PgPooled(c) => {
                let $exec = &mut **c;
                let $query = $q;
                $body
            }
        }
    };
}

impl Tx {
    /// Binds the transaction's tenant as `$1` of a [`scoped`] query.
    fn scope(&self, mut q: Sql) -> Result<Sql, sqlx::Error> {
        if q.scoped {
            let Some(tenant) = &self.tenant else {
                return Err(sqlx::Error::Protocol(format!(
                    "a tenant-scoped query ran outside a tenant transaction: {}",
                    q.text
                )));
            };
            q.args.insert(0, Arg::Text(tenant.as_str().to_owned()));
            q.scoped = false;
        }
        Ok(q)
    }

    /// Runs a statement; returns the number of rows it affected.
    pub async fn execute(&mut self, q: Sql) -> Result<u64, sqlx::Error> {
        let q = self.scope(q)?;
        if let Conn::SqliteWrite(w) = &mut self.conn {
            return w.execute(q).await;
        }
        run!(self, q, |q, exec| {
            Ok(bind_all!(sqlx::query(q.text), q.args)
                .execute(exec)
                .await?
                .rows_affected())
        })
    }

    /// Runs a statement that returns no rows and whose effect the caller does not check,
    /// at the latest when the transaction commits. SQLite sends it with the next statement
    /// or the commit (one trip instead of two; see `sqlite_write`); PostgreSQL runs it now.
    /// An error it causes is reported by the call that sends it.
    pub async fn defer(&mut self, q: Sql) -> Result<(), sqlx::Error> {
        let q = self.scope(q)?;
        if let Conn::SqliteWrite(w) = &mut self.conn {
            w.defer(q);
            return Ok(());
        }
        self.execute(q).await.map(|_| ())
    }

    /// [`Tx::defer`] for an insert ending in `RETURNING id`: the id is in the returned
    /// cell once the insert ran (on PostgreSQL at once, on SQLite by the commit).
    pub async fn defer_insert(&mut self, q: Sql) -> Result<InsertedId, sqlx::Error> {
        let q = self.scope(q)?;
        if let Conn::SqliteWrite(w) = &mut self.conn {
            return Ok(w.defer_insert(q));
        }
        let (id,): (i64,) = self.fetch_one(q).await?;
        let cell = InsertedId::default();
        cell.set(id);
        Ok(cell)
    }

    /// [`Tx::defer`] for a statement whose count of changed rows decides whether the
    /// transaction may commit: the count is in the returned cell once the statement ran
    /// (on PostgreSQL at once, on SQLite with the next trip; [`Tx::flush`] forces one).
    /// The caller checks it before committing, and drops the transaction to undo
    /// whatever ran after it when the count is wrong.
    pub async fn defer_counted(&mut self, q: Sql) -> Result<Affected, sqlx::Error> {
        let q = self.scope(q)?;
        if let Conn::SqliteWrite(w) = &mut self.conn {
            return Ok(w.defer_counted(q));
        }
        let n = self.execute(q).await?;
        let cell = Affected::default();
        cell.set(n);
        Ok(cell)
    }

    /// Sends the deferred statements now (a no-op where nothing is deferred).
    pub async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if let Conn::SqliteWrite(w) = &mut self.conn {
            return w.flush().await;
        }
        Ok(())
    }

    pub async fn fetch_optional<T: Row>(&mut self, q: Sql) -> Result<Option<T>, sqlx::Error> {
        let q = self.scope(q)?;
        if let Conn::SqliteWrite(w) = &mut self.conn {
            return Ok(w.fetch_all(q).await?.into_iter().next());
        }
        run!(self, q, |q, exec| {
            bind_all!(sqlx::query_as::<_, T>(q.text), q.args)
                .fetch_optional(exec)
                .await
        })
    }

    pub async fn fetch_one<T: Row>(&mut self, q: Sql) -> Result<T, sqlx::Error> {
        self.fetch_optional(q)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    pub async fn fetch_all<T: Row>(&mut self, q: Sql) -> Result<Vec<T>, sqlx::Error> {
        let q = self.scope(q)?;
        if let Conn::SqliteWrite(w) = &mut self.conn {
            return w.fetch_all(q).await;
        }
        run!(self, q, |q, exec| {
            bind_all!(sqlx::query_as::<_, T>(q.text), q.args)
                .fetch_all(exec)
                .await
        })
    }

    /// Commits a transaction; a plain read connection just returns to the pool.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.conn {
            Conn::SqliteWrite(w) => w.commit().await,
            Conn::PgTx(t) => t.commit().await,
            Conn::SqlitePooled(_) | Conn::PgPooled(_) => Ok(()),
        }
    }
}

impl Tx {
    /// Continues this transaction as `tenant`'s, for a platform operation that learns its
    /// tenant from its own result and has already set `app.tenant_id` in this transaction
    /// (the queue's claim function does, in the same statement).
    pub fn entered_tenant(mut self, tenant: &TenantId) -> TenantTx {
        self.tenant = Some(tenant.clone());
        TenantTx {
            tx: self,
            tenant: tenant.clone(),
        }
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, Conn::PgTx(_) | Conn::PgPooled(_))
    }
}

/// A transaction bound to one tenant. Tenant store functions take this, and bind
/// [`TenantTx::tenant_id`] into every query.
pub struct TenantTx {
    tx: Tx,
    tenant: TenantId,
}

impl TenantTx {
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }
    /// Continues this transaction unscoped, for the queue's claim of another job right
    /// after settling one (its claim function sets the next tenant itself). Until then
    /// PostgreSQL still holds this tenant's setting.
    pub fn into_platform(self) -> Tx {
        let mut tx = self.tx;
        tx.tenant = None;
        tx
    }
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for TenantTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.tx
    }
}
impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

/// A transaction that sees one user's memberships across tenants.
pub struct UserTx {
    tx: Tx,
    user: UserId,
}

impl UserTx {
    pub fn user_id(&self) -> &UserId {
        &self.user
    }
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for UserTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.tx
    }
}
impl DerefMut for UserTx {
    fn deref_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
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
                sqlite_writer: Arc::new(tokio::sync::Semaphore::new(1)),
            })
        }
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
    /// writers' queue: it waits for the readers inside the WAL (their statements take
    /// microseconds) and the next write starts the file over.
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
        sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(write)
            .await?;
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
                }
            }
            Pools::Postgres(p) => Tx {
                conn: Conn::PgTx(p.begin().await?),
                tenant: None,
            },
        })
    }

    /// A write transaction on platform tables (no tenant).
    pub async fn platform(&self) -> Result<Tx, sqlx::Error> {
        self.begin_write().await
    }

    /// A plain connection for reads of platform tables.
    pub async fn platform_read(&self) -> Result<Tx, sqlx::Error> {
        let conn = match &self.pools {
            Pools::Sqlite { read: p, .. } => Conn::SqlitePooled(p.acquire().await?),
            Pools::Postgres(p) => Conn::PgPooled(p.acquire().await?),
        };
        Ok(Tx { conn, tenant: None })
    }

    /// A write transaction scoped to `tenant`.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<TenantTx, sqlx::Error> {
        let tx = match &self.pools {
            Pools::Sqlite { .. } => self.begin_write().await?,
            Pools::Postgres(p) => begin_scoped(p, "app.tenant_id", tenant.as_str()).await?,
        };
        Ok(tx.entered_tenant(tenant))
    }

    /// A read scoped to `tenant` (a transaction on PostgreSQL, where the setting needs one).
    pub async fn tenant_read(&self, tenant: &TenantId) -> Result<TenantTx, sqlx::Error> {
        let tx = match &self.pools {
            Pools::Sqlite { read: p, .. } => Tx {
                conn: Conn::SqlitePooled(p.acquire().await?),
                tenant: None,
            },
            Pools::Postgres(p) => begin_scoped(p, "app.tenant_id", tenant.as_str()).await?,
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
            },
            Pools::Postgres(p) => begin_scoped(p, "app.user_id", user.as_str()).await?,
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
async fn begin_scoped(p: &PgPool, key: &'static str, value: &str) -> Result<Tx, sqlx::Error> {
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
    })
}
