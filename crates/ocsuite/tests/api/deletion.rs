//! Deleting a company under dual control: the asker cannot approve, a second
//! super-admin can (within 24 hours), and the purge job removes every row the company
//! had on both databases (on PostgreSQL checked through the owner's connection, which
//! row-level security does not filter) while leaving other companies whole.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::owner;

/// Tables with a `tenant_id` column, from the PostgreSQL migrations (and `tenants`,
/// which the callers count by its `id`).
fn tenant_tables() -> BTreeSet<String> {
    let mut t = crate::sql_scope::tenant_tables(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    t.remove("tenants");
    t
}

/// Rows of `tenant` per table, read as the database owner on PostgreSQL and directly on
/// SQLite (no filter in the way on either).
async fn rows_of(app: &TestApp, tenant: &str) -> Vec<(String, i64)> {
    let mut tables: Vec<String> = tenant_tables()
        .into_iter()
        .filter(|t| t != "_knowledge_fts")
        .collect();
    tables.push("tenants".into());
    let mut out = Vec::new();
    if let Some(owner_url) = app.config.migration_database_url.as_deref() {
        let mut c = PgConnection::connect(owner_url).await.unwrap();
        for t in &tables {
            let col = if t == "tenants" { "id" } else { "tenant_id" };
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {t} WHERE {col} = $1"
            )))
            .bind(tenant)
            .fetch_one(&mut c)
            .await
            .unwrap();
            out.push((t.clone(), n));
        }
    } else {
        let path = app
            .config
            .database_url
            .trim_start_matches("sqlite://")
            .to_owned();
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
        for t in &tables {
            let col = if t == "tenants" { "id" } else { "tenant_id" };
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {t} WHERE {col} = $1"
            )))
            .bind(tenant)
            .fetch_one(&mut c)
            .await
            .unwrap();
            out.push((t.clone(), n));
        }
        // The full-text index goes with the passages (tagged words, no tenant column).
        let tag = ocsuite::store::cross_tenant::knowledge_tag(
            &ocsuite::ids::TenantId::parse(tenant).unwrap(),
        );
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _knowledge_fts WHERE _knowledge_fts MATCH $1")
                .bind(format!("{tag}*"))
                .fetch_one(&mut c)
                .await
                .unwrap();
        out.push(("_knowledge_fts".into(), n));
    }
    out
}

async fn wait_purged(app: &TestApp, root: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (s, v) = app
            .as_(root)
            .get(&format!("/api/v1/admin/deletions/{id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["status"] == "purged" {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the purge did not run: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

dual!(
    the_manifest_counts_every_tenant_table,
    a_deletion_needs_a_second_super_admin_and_removes_every_row,
    bad_deletion_requests_are_refused,
);

async fn the_manifest_counts_every_tenant_table(_app: TestApp) {
    let mut want = tenant_tables();
    want.remove("_knowledge_fts");
    want.insert("tenants".into());
    let have: BTreeSet<String> = ocsuite::console::deletion::manifest_table_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        have, want,
        "the purge manifest must count every tenant table"
    );
}

async fn a_deletion_needs_a_second_super_admin_and_removes_every_row(app: TestApp) {
    let ann = app.super_admin("ann@ops.example").await;
    let bob = app.super_admin("bob@ops.example").await;
    let (alice, a) = owner(&app, "alice@gone.example").await;
    let (carol, c) = owner(&app, "carol@stays.example").await;
    // Give both companies rows in many tables: demo data and a document.
    for (u, t) in [(&alice, &a), (&carol, &c)] {
        let (s, v) = app
            .as_(u)
            .tenant(t)
            .post("/api/v1/demo-data", json!({}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = crate::knowledge::upload(
            &app,
            &u.token,
            Some(t),
            "/api/v1/knowledge/sources",
            "pricing.md",
            b"# Pricing\n\nThe Gold plan costs 49 USD a month.\n".to_vec(),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let src = v["id"].as_str().unwrap();
        let done = crate::knowledge::settled(
            &app,
            &u.token,
            Some(t),
            &format!("/api/v1/knowledge/sources/{src}"),
        )
        .await;
        assert_eq!(done["status"], "ready", "{done}");
    }
    let others_before = rows_of(&app, &c).await;

    // Ann asks; she cannot approve her own request.
    let (s, d) = app
        .as_(&ann)
        .post(
            &format!("/api/v1/admin/tenants/{a}/deletion"),
            json!({"reason": "Customer closed the account in writing"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["status"], "requested");
    let id = d["id"].as_str().unwrap().to_owned();
    let (s, v) = app
        .as_(&ann)
        .post(&format!("/api/v1/admin/deletions/{id}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "same_admin");
    // A second request for the same company waits on the first.
    let (s, _) = app
        .as_(&bob)
        .post(
            &format!("/api/v1/admin/tenants/{a}/deletion"),
            json!({"reason": "Asking twice for the same company"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The company still works meanwhile.
    let (s, _) = app.as_(&alice).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK);

    let before = rows_of(&app, &a).await;
    let filled = before.iter().filter(|(_, n)| *n > 0).count();
    assert!(
        filled >= 10,
        "the company has rows in few tables: {before:?}"
    );
    assert!(
        before
            .iter()
            .any(|(t, n)| t == "knowledge_chunks" && *n > 0),
        "{before:?}"
    );
    // SQLite's full-text index is a table of its own (PostgreSQL's is a column).
    if app.config.migration_database_url.is_none() {
        assert!(
            before.iter().any(|(t, n)| t == "_knowledge_fts" && *n > 0),
            "{before:?}"
        );
    }

    // Bob approves; the purge runs as a job.
    let (s, v) = app
        .as_(&bob)
        .post(&format!("/api/v1/admin/deletions/{id}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "approved");
    let done = wait_purged(&app, &ann, &id).await;
    let manifest = done["manifest"].as_object().unwrap();
    assert_eq!(manifest["tenants"], 1, "{done}");
    // It closes with a receipt in the platform's own log: the manifest and the company
    // log's last signed checkpoint.
    let mut sealed = done.clone();
    for _ in 0..100 {
        if sealed["receipt_id"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        sealed = app
            .as_(&ann)
            .get(&format!("/api/v1/admin/deletions/{id}"))
            .await
            .1;
    }
    let receipt = sealed["receipt_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{sealed}"));
    let hq = ocsuite::ids::TenantId::parse(ocsuite::tenancy::HQ_TENANT).unwrap();
    let mut tx = app.state.store.tenant_read(&hq).await.unwrap();
    let (action, fields): (String, String) = tx
        .fetch_one(
            ocsuite::store::scoped(
                "SELECT action, fields FROM receipts WHERE tenant_id = $1 AND id = $2",
            )
            .bind(receipt),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(action, "tenant.purged");
    let fields: Value = serde_json::from_str(&fields).unwrap();
    let details: Value =
        serde_json::from_str(fields["details"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(details["removed"]["tenants"], 1, "{details}");
    assert!(
        details["last_checkpoint"]["note"]
            .as_str()
            .is_some_and(|n| n.contains(&a)),
        "{details}"
    );
    for (table, n) in before
        .iter()
        .filter(|(t, n)| *n > 0 && t != "_knowledge_fts")
    {
        assert_eq!(
            manifest.get(table).and_then(Value::as_i64),
            Some(*n),
            "{table} in the manifest"
        );
    }
    // Every row is gone; the other company is untouched.
    for (table, n) in rows_of(&app, &a).await {
        assert_eq!(n, 0, "{table} still holds rows of the deleted company");
    }
    assert_eq!(rows_of(&app, &c).await, others_before);
    let (s, _) = app.as_(&carol).tenant(&c).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK);
    // The deleted company is gone for its people and for the console.
    let (s, _) = app.as_(&alice).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&ann)
        .get(&format!("/api/v1/admin/tenants/{a}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Approving again changes nothing.
    let (s, _) = app
        .as_(&bob)
        .post(&format!("/api/v1/admin/deletions/{id}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The platform audit tells the story, with the manifest.
    let mut tx = app.state.store.platform_read().await.unwrap();
    let rows: Vec<(String, String)> = tx
        .fetch_all(
            ocsuite::store::sql(
                "SELECT action, details FROM platform_audit WHERE target = $1 ORDER BY created_at, id",
            )
            .bind(format!("tenant:{a}")),
        )
        .await
        .unwrap();
    let actions: Vec<&str> = rows.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "tenant.delete_request",
            "tenant.delete_approve",
            "tenant.purge"
        ]
    );
    let details: Value = serde_json::from_str(&rows[2].1).unwrap();
    assert_eq!(details["manifest"], done["manifest"]);
}

async fn bad_deletion_requests_are_refused(app: TestApp) {
    let ann = app.super_admin("ann@bad.example").await;
    let bob = app.super_admin("bob@bad.example").await;
    let (alice, a) = owner(&app, "alice@bad.example").await;
    let path = format!("/api/v1/admin/tenants/{a}/deletion");
    // Only super-admins find the routes.
    let (s, _) = app
        .as_(&alice)
        .post(&path, json!({"reason": "I want to delete myself"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.as_(&alice).get("/api/v1/admin/deletions").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Reasons, bodies and ids.
    let (s, v) = app.as_(&ann).post(&path, json!({"reason": "short"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "reason");
    let (s, _) = app.as_(&ann).post(&path, json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    for t in [
        "ten_0123456789abcdef0123456789abcdef",
        "ten_00000000000000000000000000000000",
        "nope",
    ] {
        let (s, _) = app
            .as_(&ann)
            .post(
                &format!("/api/v1/admin/tenants/{t}/deletion"),
                json!({"reason": "A company that is not there"}),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{t}");
    }
    for id in ["del_0123456789abcdef0123456789abcdef", "nope"] {
        let (s, _) = app
            .as_(&bob)
            .post(&format!("/api/v1/admin/deletions/{id}/approve"), json!({}))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}");
    }

    // Withdrawn requests cannot be approved; a new one can be made.
    let (s, d) = app
        .as_(&ann)
        .post(
            &path,
            json!({"reason": "Duplicate company made by mistake"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let (s, v) = app
        .as_(&bob)
        .delete(&format!("/api/v1/admin/deletions/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    let (s, _) = app
        .as_(&bob)
        .post(&format!("/api/v1/admin/deletions/{id}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // A request older than 24 hours has lapsed: 410, and a fresh one may be made.
    let (s, d) = app
        .as_(&ann)
        .post(
            &path,
            json!({"reason": "Duplicate company made by mistake"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let mut tx = app.state.store.platform().await.unwrap();
    tx.execute(
        ocsuite::store::sql("UPDATE tenant_deletions SET expires_at = $1 WHERE id = $2")
            .bind(chrono::Utc::now() - chrono::Duration::minutes(1))
            .bind(id.as_str()),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, v) = app
        .as_(&bob)
        .post(&format!("/api/v1/admin/deletions/{id}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::GONE, "{v}");
    let (s, v) = app
        .as_(&bob)
        .get(&format!("/api/v1/admin/deletions/{id}"))
        .await;
    assert_eq!(v["status"], "expired", "{s} {v}");
    let (s, d) = app
        .as_(&ann)
        .post(
            &path,
            json!({"reason": "Duplicate company made by mistake"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let (s, _) = app.as_(&alice).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK, "nothing was deleted");
}
