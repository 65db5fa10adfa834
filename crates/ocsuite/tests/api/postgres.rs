//! PostgreSQL's second wall: the RLS catalog check, raw SQL under the runtime role,
//! transaction-local tenant settings, and schema parity between the two backends.

use std::collections::BTreeSet;

use ocsuite::store::{Store, rls_violations, sql};
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::helpers::{Db, TestApp};

async fn pg_app() -> Option<TestApp> {
    TestApp::start(Db::Postgres).await
}

#[tokio::test]
async fn catalog_check_passes_and_fails_when_a_policy_is_dropped() {
    let Some(app) = pg_app().await else { return };
    let (tables, problems) = rls_violations(&app.state.store).await.unwrap().unwrap();
    for t in [
        "tenants",
        "memberships",
        "invites",
        "api_keys",
        "audit_log",
        "tenant_secrets",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} not covered: {tables:?}");
    }
    assert!(problems.is_empty(), "{problems:?}");

    let mut owner = PgConnection::connect(app.config.migration_database_url.as_deref().unwrap())
        .await
        .unwrap();
    owner
        .execute("DROP POLICY tenant_isolation ON api_keys")
        .await
        .unwrap();
    let (_, problems) = rls_violations(&app.state.store).await.unwrap().unwrap();
    assert_eq!(
        problems,
        ["api_keys: no tenant_isolation policy on app.tenant_id"]
    );
    owner
        .execute("ALTER TABLE invites NO FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let (_, problems) = rls_violations(&app.state.store).await.unwrap().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p == "invites: row-level security is not forced"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn runtime_role_is_bound_by_row_level_security() {
    let Some(app) = pg_app().await else { return };
    let check = ocsuite::store::check_runtime_role(&app.state.store)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(check.role, crate::helpers::RUNTIME_ROLE);
    assert!(
        !check.superuser && !check.bypass_rls && check.owned_tables == 0,
        "{check:?}"
    );
    assert!(check.problem().is_none());

    let ann = app.signup("ann@a.example").await;
    let a = app.create_tenant(&ann, "A").await;
    app.api_key(&ann, &a, "member").await;
    let bob = app.signup("bob@b.example").await;
    let b = app.create_tenant(&bob, "B").await;

    let mut conn = PgConnection::connect(&app.config.database_url)
        .await
        .unwrap();
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(who, crate::helpers::RUNTIME_ROLE);
    // No tenant set: no tenant rows at all, although they exist.
    for table in ["tenants", "memberships", "api_keys", "audit_log", "invites"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} visible without a tenant");
    }
    // Tenant B set: none of A's rows, even when asked for by id.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(&b)
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships WHERE tenant_id = $1")
        .bind(&a)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(n > 0, "B sees its own audit rows");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE tenant_id <> $1")
        .bind(&b)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let updated = sqlx::query("UPDATE tenants SET name = 'pwned' WHERE id = $1")
        .bind(&a)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    // Writing a row for A while set to B is refused by WITH CHECK.
    let err = sqlx::query("INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id, details, created_at) VALUES ($1, 'aud_x', 'user', 'u', 'x', 't', 't', '{}', now())")
        .bind(&a)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // The setting is transaction-local: the next transaction on the same connection has none.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(&a)
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(setting.as_deref().unwrap_or("").is_empty(), "{setting:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // The same through the app's own pool with a single connection.
    let store = Store::connect(&app.config.database_url, 1).await.unwrap();
    let ta = ocsuite::ids::TenantId::parse(&a).unwrap();
    let tx = store.tenant(&ta).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.platform_read().await.unwrap();
    let (s,): (Option<String>,) = tx
        .fetch_one(sql("SELECT current_setting('app.tenant_id', true)"))
        .await
        .unwrap();
    assert!(s.unwrap_or_default().is_empty());
}

async fn columns_sqlite(store: &Store) -> BTreeSet<(String, String)> {
    let mut tx = store.platform_read().await.unwrap();
    let tables: Vec<(String,)> = tx
        .fetch_all(sql("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'"))
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for (t,) in tables {
        let cols: Vec<(String,)> = tx
            .fetch_all(sql("SELECT name FROM pragma_table_info($1)").bind(t.as_str()))
            .await
            .unwrap();
        for (c,) in cols {
            out.insert((t.clone(), c));
        }
    }
    out
}

#[tokio::test]
async fn both_backends_have_the_same_tables_and_columns() {
    let Some(pg) = pg_app().await else { return };
    let lite = TestApp::start(Db::Sqlite).await.unwrap();
    let lite_cols = columns_sqlite(&lite.state.store).await;
    let mut owner = PgConnection::connect(pg.config.migration_database_url.as_deref().unwrap())
        .await
        .unwrap();
    let rows = sqlx::query("SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE '\\_%'")
        .fetch_all(&mut owner)
        .await
        .unwrap();
    let pg_cols: BTreeSet<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(lite_cols.len() > 40, "{lite_cols:?}");
    assert_eq!(lite_cols, pg_cols);
}
