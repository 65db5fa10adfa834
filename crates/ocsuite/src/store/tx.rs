//! Transactions: [`Tx`] and its scoped forms [`TenantTx`] and [`UserTx`], and what a
//! deferred statement reports. [`super::Store`] opens them; see the store's module docs.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Postgres, Sqlite, Transaction};

use super::sql::{Arg, Sql, bind_all};
use super::sqlite_write;
use crate::ids::{TenantId, UserId};

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
    pub(super) fn set(&self, v: T) {
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

pub(super) enum Conn {
    SqliteWrite(sqlite_write::WriteConn),
    SqlitePooled(PoolConnection<Sqlite>),
    PgTx(Transaction<'static, Postgres>),
    PgPooled(PoolConnection<Postgres>),
}

/// A connection or transaction in some scope; see the module docs.
pub struct Tx {
    pub(super) conn: Conn,
    /// Set in a tenant transaction: the `$1` of every [`scoped`] query.
    pub(super) tenant: Option<TenantId>,
    /// False behind a transaction-pooling proxy (PgBouncer): statements are sent
    /// unnamed, since a named one would be left on whichever server connection the
    /// proxy lent for that transaction. See `Store::connect`.
    pub(super) named_statements: bool,
}

macro_rules! run {
    ($self:ident, $q:ident, |$query:ident, $exec:ident, $named:ident| $body:expr) => {{
        let $named = $self.named_statements;
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
    }};
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
        run!(self, q, |q, exec, named| {
            Ok(bind_all!(sqlx::query(q.text), q.args)
                .persistent(named)
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
        run!(self, q, |q, exec, named| {
            bind_all!(sqlx::query_as::<_, T>(q.text), q.args)
                .persistent(named)
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
        run!(self, q, |q, exec, named| {
            bind_all!(sqlx::query_as::<_, T>(q.text), q.args)
                .persistent(named)
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
    /// Continues this transaction as `tenant`'s, when `app.tenant_id` is already set to it
    /// in this transaction (by the `BEGIN` that opened it; see [`Tx::enter_tenant`]
    /// otherwise).
    pub fn entered_tenant(mut self, tenant: &TenantId) -> TenantTx {
        self.tenant = Some(tenant.clone());
        TenantTx {
            tx: self,
            tenant: tenant.clone(),
        }
    }

    /// Continues this transaction as `tenant`'s, setting its scope first (PostgreSQL's
    /// transaction-local `app.tenant_id`; SQLite has no setting). For the queue, which
    /// settles and starts the jobs of several tenants in one transaction, one tenant
    /// after the other.
    pub async fn enter_tenant(mut self, tenant: &TenantId) -> Result<TenantTx, sqlx::Error> {
        if self.is_postgres() {
            self.execute(
                super::sql::sql("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.as_str()),
            )
            .await?;
        }
        Ok(self.entered_tenant(tenant))
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, Conn::PgTx(_) | Conn::PgPooled(_))
    }
}

/// A transaction bound to one tenant. Tenant store functions take this, and bind
/// [`TenantTx::tenant_id`] into every query.
pub struct TenantTx {
    pub(super) tx: Tx,
    pub(super) tenant: TenantId,
}

impl TenantTx {
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }
    /// Continues this transaction unscoped, for the queue, which moves on to another
    /// tenant's jobs with [`Tx::enter_tenant`]. Until then PostgreSQL still holds this
    /// tenant's setting.
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
    pub(super) tx: Tx,
    pub(super) user: UserId,
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
