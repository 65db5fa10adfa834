//! Schema migrations and the PostgreSQL role checks.
//!
//! Migrations run as the owner (`OCSUITE_MIGRATION_DATABASE_URL`, or the runtime URL
//! when only one is given); afterwards the runtime role named in `OCSUITE_DATABASE_URL`
//! is granted DML — never ownership — on every table, so row-level security binds it.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use super::{Store, sql};
use crate::config::Config;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Applies pending migrations and grants the runtime role its privileges.
pub async fn migrate(config: &Config) -> Result<(), sqlx::Error> {
    let owner = Store::connect(config.owner_database_url(), 2).await?;
    if let Some(pool) = owner.sqlite_pool() {
        SQLITE.run(pool).await?;
    } else if let Some(pool) = owner.pg_pool() {
        POSTGRES.run(pool).await?;
        let runtime = PgConnectOptions::from_str(&config.database_url)?;
        let role = runtime.get_username();
        if !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(sqlx::Error::Configuration(
                format!("runtime role name {role:?} must be letters, digits and _ only").into(),
            ));
        }
        let mut tx = owner.platform().await?;
        let (current,): (String,) = tx.fetch_one(sql("SELECT current_user::text")).await?;
        if current != role {
            for stmt in [
                format!("GRANT USAGE ON SCHEMA public TO \"{role}\""),
                format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{role}\""
                ),
                format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO \"{role}\""),
            ] {
                if let super::Conn::PgTx(t) = &mut tx.conn {
                    sqlx::query(sqlx::AssertSqlSafe(stmt))
                        .execute(&mut **t)
                        .await?;
                }
            }
        }
        tx.commit().await?;
    }
    owner.close().await;
    Ok(())
}

/// What PostgreSQL says about the role the server runs queries as.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoleCheck {
    pub role: String,
    pub superuser: bool,
    pub bypass_rls: bool,
    pub owned_tables: i64,
}

impl RoleCheck {
    /// Why this role would defeat row-level security, if it would.
    pub fn problem(&self) -> Option<String> {
        if self.superuser {
            Some(format!("runtime role {} is a superuser", self.role))
        } else if self.bypass_rls {
            Some(format!("runtime role {} has BYPASSRLS", self.role))
        } else if self.owned_tables > 0 {
            Some(format!(
                "runtime role {} owns {} tables; use a separate owner for migrations",
                self.role, self.owned_tables
            ))
        } else {
            None
        }
    }
}

/// `None` on SQLite (no roles there).
pub async fn check_runtime_role(store: &Store) -> Result<Option<RoleCheck>, sqlx::Error> {
    if store.pg_pool().is_none() {
        return Ok(None);
    }
    let mut tx = store.platform_read().await?;
    tx.fetch_optional(sql(
        "SELECT r.rolname::text AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypass_rls, \
         (SELECT count(*) FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = r.rolname) AS owned_tables \
         FROM pg_roles r WHERE r.rolname = current_user",
    ))
    .await
}

#[derive(sqlx::FromRow)]
struct TableRls {
    table_name: String,
    enabled: bool,
    forced: bool,
    has_policy: bool,
}

/// The catalog check behind the isolation promise: every table holding tenant data
/// (a `tenant_id` column, plus `tenants` itself) must have row-level security enabled
/// AND forced, with a `tenant_isolation` policy on `app.tenant_id`. Returns the tables
/// checked and one line per violation. `None` on SQLite.
pub async fn rls_violations(
    store: &Store,
) -> Result<Option<(Vec<String>, Vec<String>)>, sqlx::Error> {
    if store.pg_pool().is_none() {
        return Ok(None);
    }
    let mut tx = store.platform_read().await?;
    let rows: Vec<TableRls> = tx
        .fetch_all(sql(
            "SELECT c.relname::text AS table_name, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced, \
             EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = c.relname \
                     AND p.policyname = 'tenant_isolation' AND p.qual LIKE '%app.tenant_id%' \
                     AND p.with_check LIKE '%app.tenant_id%') AS has_policy \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND (c.relname = 'tenants' OR EXISTS ( \
                 SELECT 1 FROM information_schema.columns col WHERE col.table_schema = 'public' \
                 AND col.table_name = c.relname AND col.column_name = 'tenant_id')) \
             ORDER BY c.relname",
        ))
        .await?;
    let mut problems = Vec::new();
    for r in &rows {
        if !r.enabled {
            problems.push(format!(
                "{}: row-level security is not enabled",
                r.table_name
            ));
        }
        if !r.forced {
            problems.push(format!(
                "{}: row-level security is not forced",
                r.table_name
            ));
        }
        if !r.has_policy {
            problems.push(format!(
                "{}: no tenant_isolation policy on app.tenant_id",
                r.table_name
            ));
        }
    }
    Ok(Some((
        rows.into_iter().map(|r| r.table_name).collect(),
        problems,
    )))
}

/// PostgreSQL's autovacuum settings, as the queue needs them.
#[derive(sqlx::FromRow)]
pub struct VacuumCheck {
    pub autovacuum: bool,
    /// `autovacuum_naptime`, in seconds.
    pub naptime_secs: i64,
}

/// Naptimes above this let a busy queue's dead index entries pile up between visits.
const MAX_NAPTIME_SECS: i64 = 10;

impl VacuumCheck {
    /// What to tell the operator, if anything. The jobs table churns (every job is
    /// inserted, updated and deleted); every claim steps over the dead entries at the
    /// front of the ready-jobs index until vacuum removes them, and autovacuum visits a
    /// database only once per naptime (measured in docs/operations.md).
    pub fn advice(&self) -> Option<String> {
        if !self.autovacuum {
            Some("autovacuum is off: the jobs table's dead rows are never removed and every job claim slows down as they pile up; turn it on, with autovacuum_naptime = 1s".into())
        } else if self.naptime_secs > MAX_NAPTIME_SECS {
            Some(format!(
                "autovacuum_naptime is {} s: between autovacuum's visits, finished jobs' dead index entries pile up and slow every job claim; set autovacuum_naptime = 1s for a busy queue (docs/operations.md)",
                self.naptime_secs
            ))
        } else {
            None
        }
    }
}

/// `None` on SQLite.
pub async fn check_vacuum(store: &Store) -> Result<Option<VacuumCheck>, sqlx::Error> {
    if store.pg_pool().is_none() {
        return Ok(None);
    }
    let mut tx = store.platform_read().await?;
    tx.fetch_optional(sql(
        "SELECT current_setting('autovacuum')::boolean AS autovacuum, \
         (SELECT setting::bigint FROM pg_settings WHERE name = 'autovacuum_naptime') AS naptime_secs",
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::VacuumCheck;

    #[test]
    fn vacuum_advice_names_what_to_change() {
        let check = |autovacuum, naptime_secs| VacuumCheck {
            autovacuum,
            naptime_secs,
        };
        assert!(check(true, 1).advice().is_none());
        assert!(check(true, 10).advice().is_none());
        let slow = check(true, 60).advice().unwrap_or_default();
        assert!(
            slow.contains("60 s") && slow.contains("autovacuum_naptime = 1s"),
            "{slow}"
        );
        let off = check(false, 1).advice().unwrap_or_default();
        assert!(off.starts_with("autovacuum is off"), "{off}");
    }
}
