//! The database side of `ocsuite backup` and `ocsuite restore` (see `crate::backup`):
//! a consistent snapshot, the row counts it holds, and loading one back. Every
//! statement here reads all tenants, which is why it lives with the cross-tenant SQL.
//!
//! - **SQLite**: `VACUUM INTO` writes a compacted copy that is one consistent read
//!   transaction of the live file; WAL readers never block the server's writer, so the
//!   server keeps running. The rows are counted in the copy itself.
//! - **PostgreSQL**: a `REPEATABLE READ` transaction exports its snapshot, the rows are
//!   counted in it, and `pg_dump --snapshot` dumps that same snapshot, so the counts and
//!   the dump agree to the row while the nodes keep writing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::error::{AppError, Result};

/// Rows per table, by table name.
pub type Counts = BTreeMap<String, i64>;

/// `SELECT count(*)` of table `name`, a name read from the database's own catalogue and
/// quoted as an identifier (so even a name with quotes in it stays one identifier).
fn count_sql(schema: &str, name: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}\"{}\"",
        name.replace('"', "\"\"")
    ))
}

/// Writes a consistent copy of the SQLite database at `url` to `dest` (which must not
/// exist) and returns the rows it holds.
pub async fn sqlite_snapshot(url: &str, dest: &Path) -> Result<Counts> {
    let mut live = SqliteConnection::connect(url).await?;
    sqlx::query("VACUUM INTO $1")
        .bind(dest.to_string_lossy().into_owned())
        .execute(&mut live)
        .await?;
    live.close().await?;
    sqlite_check(dest).await
}

/// Checks the SQLite file at `path` (`PRAGMA integrity_check`) and counts its rows.
pub async fn sqlite_check(path: &Path) -> Result<Counts> {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut conn = SqliteConnection::connect(&url).await?;
    let verdict: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await?;
    if verdict.len() != 1 || verdict[0].0 != "ok" {
        let problems: Vec<String> = verdict.into_iter().take(5).map(|r| r.0).collect();
        return Err(AppError::Internal(format!(
            "{} is damaged: {}",
            path.display(),
            problems.join("; ")
        )));
    }
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut counts = Counts::new();
    for (t,) in tables {
        let (n,): (i64,) = sqlx::query_as(count_sql("", &t))
            .fetch_one(&mut conn)
            .await?;
        counts.insert(t, n);
    }
    conn.close().await?;
    Ok(counts)
}

/// Counts every table of the SQLite database at `url`.
pub async fn sqlite_counts(url: &str) -> Result<Counts> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    sqlite_check(Path::new(path)).await
}

/// Tables in `public` whose row security is forced but that give the connected role
/// no way to read all their rows: a dump as this role would miss rows in them.
async fn pg_hidden_tables(conn: &mut PgConnection) -> Result<Vec<String>> {
    let (bypass,): (bool,) = sqlx::query_as(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    if bypass {
        return Ok(Vec::new());
    }
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relforcerowsecurity \
            AND NOT EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'public' \
                             AND p.tablename = c.relname AND p.policyname = 'owner_maintenance' \
                             AND (current_user::name = ANY (p.roles) OR 'public' = ANY (p.roles))) \
          ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

async fn pg_count_all(conn: &mut PgConnection) -> Result<Counts> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = Counts::new();
    for (t,) in tables {
        let (n,): (i64,) = sqlx::query_as(count_sql("public.", &t))
            .fetch_one(&mut *conn)
            .await?;
        counts.insert(t, n);
    }
    Ok(counts)
}

/// Counts every table of the PostgreSQL database at `owner_url` (as that role, which
/// must see every row).
pub async fn pg_counts(owner_url: &str) -> Result<Counts> {
    let mut conn = PgConnection::connect(owner_url).await?;
    let hidden = pg_hidden_tables(&mut conn).await?;
    if !hidden.is_empty() {
        return Err(hidden_error(&hidden));
    }
    let counts = pg_count_all(&mut conn).await?;
    conn.close().await?;
    Ok(counts)
}

fn hidden_error(hidden: &[String]) -> AppError {
    AppError::Internal(format!(
        "the database role cannot read every row of {} (row-level security): run `ocsuite migrate` \
         with this role as OCSUITE_MIGRATION_DATABASE_URL, or use a superuser",
        hidden.join(", ")
    ))
}

/// Dumps the PostgreSQL database at `owner_url` to `dest` with `pg_dump` (custom
/// format) from one snapshot, and returns the rows that snapshot holds.
pub async fn pg_snapshot(owner_url: &str, dest: &Path) -> Result<Counts> {
    let mut conn = PgConnection::connect(owner_url).await?;
    let hidden = pg_hidden_tables(&mut conn).await?;
    if !hidden.is_empty() {
        return Err(hidden_error(&hidden));
    }
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await?;
    let (snapshot,): (String,) = sqlx::query_as("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await?;
    let counts = pg_count_all(&mut conn).await?;
    let out = tokio::process::Command::new("pg_dump")
        .arg("--format=custom")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--enable-row-security")
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--file={}", dest.display()))
        .arg(format!("--dbname={owner_url}"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| AppError::Internal(format!("cannot run pg_dump (is it installed?): {e}")))?;
    // The snapshot had to stay open until pg_dump attached to it.
    sqlx::query("COMMIT").execute(&mut conn).await?;
    conn.close().await?;
    if !out.status.success() {
        return Err(AppError::Internal(format!(
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(counts)
}

/// Whether the PostgreSQL database at `owner_url` has no tables in `public` yet.
pub async fn pg_is_empty(owner_url: &str) -> Result<bool> {
    let mut conn = PgConnection::connect(owner_url).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(n == 0)
}

/// Loads a `pg_dump` custom-format file into the (empty) database at `owner_url`.
pub async fn pg_load(owner_url: &str, dump: &Path) -> Result<()> {
    let out = tokio::process::Command::new("pg_restore")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--exit-on-error")
        .arg("--single-transaction")
        .arg(format!("--dbname={owner_url}"))
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            AppError::Internal(format!("cannot run pg_restore (is it installed?): {e}"))
        })?;
    if !out.status.success() {
        return Err(AppError::Internal(format!(
            "pg_restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
