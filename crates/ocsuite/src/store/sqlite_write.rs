//! SQLite write transactions that cost as few trips to the connection's thread as
//! possible.
//!
//! Why: SQLite has one writer at a time, so a write transaction's length is the
//! throughput limit of every write path (a task takes three). sqlx runs each SQLite
//! connection on its own thread, and every statement is a round trip to it: a channel
//! send, a thread wake-up, the answer's wake-up back. On a small, busy machine that trip
//! (tens of microseconds, mostly waiting to be scheduled) costs far more than the
//! statement, and the writer holds the lock through all of it.
//!
//! So a transaction here:
//!
//! - starts lazily: `BEGIN IMMEDIATE` rides with its first statement;
//! - holds statements whose outcome the caller does not need ([`WriteConn::defer`]) and
//!   sends them with the next statement that does, or with `COMMIT`;
//! - sends each such group as one multi-statement text. Every statement is written with
//!   its own `$1, $2 …`; they are renumbered into one argument list (SQLite binds `$N`
//!   by number, across all statements of a text).
//!
//! A transaction dropped without commit is rolled back before its connection and the
//! writer's turn are released.

use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteQueryResult, SqliteRow};
use sqlx::{Either, Executor, FromRow, Row, Sqlite};
use tokio::sync::OwnedSemaphorePermit;

use super::sql::{Arg, Sql, bind_all};
use super::{Affected, InsertedId};

pub(super) struct WriteConn {
    conn: Option<PoolConnection<Sqlite>>,
    /// The writer's turn (see `Store::sqlite_writer`), held until the transaction ends.
    permit: Option<OwnedSemaphorePermit>,
    /// `BEGIN IMMEDIATE` was sent (or is on its way).
    begun: bool,
    /// Ended by commit or rollback.
    done: bool,
    /// Deferred statements, each with the cell for what it reports, if wanted.
    pending: Vec<(Sql, Want)>,
}

/// What a deferred statement reports once sent.
enum Want {
    Nothing,
    /// The id its `RETURNING id` row carries.
    Id(InsertedId),
    /// How many rows it changed.
    Count(Affected),
}

/// The results of one group: per statement, its rows and what it changed.
struct Outcome {
    rows: Vec<SqliteRow>,
    last: Option<SqliteQueryResult>,
}

impl WriteConn {
    pub(super) fn new(conn: PoolConnection<Sqlite>, permit: OwnedSemaphorePermit) -> Self {
        Self {
            conn: Some(conn),
            permit: Some(permit),
            begun: false,
            done: false,
            pending: Vec::new(),
        }
    }

    /// Holds `q` until the next statement or the commit. Only for statements that
    /// return no rows; an error it causes is reported by the statement it travels with.
    pub(super) fn defer(&mut self, q: Sql) {
        self.pending.push((q, Want::Nothing));
    }

    /// Defers a statement whose count of changed rows the caller checks before commit.
    pub(super) fn defer_counted(&mut self, q: Sql) -> Affected {
        let n = Affected::default();
        self.pending.push((q, Want::Count(n.clone())));
        n
    }

    /// Sends the deferred statements without a statement of its own.
    pub(super) async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.run(None, false).await.map(|_| ())
    }

    /// Defers an insert that ends with `RETURNING id`; the id is in the returned cell
    /// once the insert has been sent (at the latest by the commit).
    pub(super) fn defer_insert(&mut self, q: Sql) -> InsertedId {
        let id = InsertedId::default();
        self.pending.push((q, Want::Id(id.clone())));
        id
    }

    pub(super) async fn execute(&mut self, q: Sql) -> Result<u64, sqlx::Error> {
        let out = self.run(Some(q), false).await?;
        Ok(out.last.map_or(0, |r| r.rows_affected()))
    }

    pub(super) async fn fetch_all<T>(&mut self, q: Sql) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> FromRow<'r, SqliteRow>,
    {
        let out = self.run(Some(q), false).await?;
        out.rows.iter().map(T::from_row).collect()
    }

    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        if !self.begun && self.pending.is_empty() {
            // Nothing was written: nothing to commit.
            self.done = true;
            return Ok(());
        }
        match self.run(None, true).await {
            Ok(_) => {
                self.done = true;
                Ok(())
            }
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    async fn rollback(&mut self) {
        if let Some(conn) = self.conn.as_mut()
            && self.begun
            && !self.done
        {
            let _ = conn.execute("ROLLBACK").await;
        }
        self.done = true;
    }

    /// Sends the pending statements, then `q` (or `COMMIT`), as one text; returns the
    /// rows and result of `q`, and hands each deferred insert its id.
    async fn run(&mut self, q: Option<Sql>, commit: bool) -> Result<Outcome, sqlx::Error> {
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        let begin = !self.begun;
        self.begun = true;
        let mut parts = std::mem::take(&mut self.pending);
        let wants_answer = q.is_some();
        parts.extend(q.map(|q| (q, Want::Nothing)));
        // Which statement of the text each part is (BEGIN comes first).
        let first = usize::from(begin);
        let answer = wants_answer.then(|| first + parts.len() - 1);
        let (text, args) = if !begin && !commit && parts.len() == 1 {
            // The common case, one statement inside a begun transaction: sent as it is.
            (None, std::mem::take(&mut parts[0].0.args))
        } else {
            let (t, a) = join(begin, &mut parts, commit);
            (Some(t), a)
        };
        let query = match text {
            Some(t) => sqlx::query(sqlx::AssertSqlSafe(t)),
            None => sqlx::query(parts[0].0.text),
        };
        let mut index = 0;
        let mut out = Outcome {
            rows: Vec::new(),
            last: None,
        };
        let mut stream = (&mut **conn).fetch_many(bind_all!(query, args));
        while let Some(item) = stream.try_next().await? {
            match item {
                Either::Left(r) => {
                    if Some(index) == answer {
                        out.last = Some(r);
                    } else if let Some((_, Want::Count(n))) =
                        index.checked_sub(first).and_then(|i| parts.get(i))
                    {
                        n.set(r.rows_affected());
                    }
                    index += 1;
                }
                Either::Right(row) => {
                    if Some(index) == answer {
                        out.rows.push(row);
                    } else if let Some((_, Want::Id(id))) =
                        index.checked_sub(first).and_then(|i| parts.get(i))
                    {
                        id.set(row.try_get::<i64, _>(0)?);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Drop for WriteConn {
    fn drop(&mut self) {
        if self.done || !self.begun {
            return;
        }
        let (Some(mut conn), permit) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            // Roll back before the next writer gets the connection and the turn.
            Ok(rt) => {
                rt.spawn(async move {
                    match conn.execute("ROLLBACK").await {
                        Ok(_) => {}
                        // Dropped before its BEGIN reached the connection: nothing to undo.
                        Err(e) if e.to_string().contains("no transaction is active") => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "rolling back an abandoned write failed");
                            // Do not hand a connection in an unknown state to the next
                            // writer.
                            drop(conn.detach());
                        }
                    }
                    drop(permit);
                });
            }
            // No runtime: closing the connection rolls the transaction back.
            Err(_) => drop(conn.detach()),
        }
    }
}

/// One text for `parts` (optionally between `BEGIN IMMEDIATE` and `COMMIT`) and their
/// arguments as one list.
/// The arguments are moved out of `parts`.
fn join(begin: bool, parts: &mut [(Sql, Want)], commit: bool) -> (String, Vec<Arg>) {
    let mut text =
        String::with_capacity(parts.iter().map(|(p, _)| p.text.len() + 8).sum::<usize>() + 32);
    let mut args = Vec::with_capacity(parts.iter().map(|(p, _)| p.args.len()).sum());
    if begin {
        text.push_str("BEGIN IMMEDIATE;\n");
    }
    for (p, _) in parts {
        renumber(p.text, args.len(), &mut text);
        text.push_str(";\n");
        args.append(&mut p.args);
    }
    if commit {
        text.push_str("COMMIT;");
    }
    (text, args)
}

/// Appends `sql` with each `$N` outside quotes shifted to `$(N + offset)`.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    if offset == 0 {
        out.push_str(sql);
        return;
    }
    let bytes = sql.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                if end > start
                    && let Ok(n) = sql[start..end].parse::<usize>()
                {
                    out.push_str(&sql[copied..i]);
                    out.push('$');
                    out.push_str(&(n + offset).to_string());
                    copied = end;
                    i = end;
                    continue;
                }
            }
            None => {}
        }
        i += 1;
    }
    out.push_str(&sql[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql;

    #[test]
    fn renumbers_outside_quotes_only() {
        let mut out = String::new();
        renumber("SELECT $1, '$2', \"$3\", $10 WHERE a = $2", 5, &mut out);
        assert_eq!(out, "SELECT $6, '$2', \"$3\", $15 WHERE a = $7");
    }

    #[test]
    fn joins_statements_into_one_argument_list() {
        let a = sql("INSERT INTO t VALUES ($1, $2)").bind(1_i64).bind("x");
        let b = sql("UPDATE u SET v = $1 WHERE id = $2")
            .bind(2_i64)
            .bind("y");
        let (text, args) = join(true, &mut [(a, Want::Nothing), (b, Want::Nothing)], true);
        assert_eq!(
            text,
            "BEGIN IMMEDIATE;\nINSERT INTO t VALUES ($1, $2);\nUPDATE u SET v = $3 WHERE id = $4;\nCOMMIT;"
        );
        assert_eq!(args.len(), 4);
    }
}
