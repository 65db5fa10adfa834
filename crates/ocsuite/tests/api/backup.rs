//! `ocsuite backup` and `ocsuite restore` through the library the CLI calls, on both
//! databases: a backup taken while the server runs restores into a fresh database with
//! every row, the secrets decrypt, and people sign in again; the wrong key, a damaged
//! copy and an occupied database are refused with a message that says what to do.

use ocsuite::backup;
use ocsuite::crypto::secrets;
use ocsuite::ids::TenantId;
use ocsuite::store::Backend;
use reqwest::StatusCode;

use crate::dual;
use crate::helpers::{Db, PASSWORD, TestApp, temp_dir, test_config};

dual!(a_backup_taken_while_serving_restores_whole);

fn db_of(app: &TestApp) -> Db {
    match app.state.store.backend() {
        Backend::Sqlite => Db::Sqlite,
        Backend::Postgres => Db::Postgres,
    }
}

async fn a_backup_taken_while_serving_restores_whole(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let a = app.create_tenant(&ann, "Before Ltd").await;
    let tenant = TenantId::parse(&a).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    secrets::put(
        &mut tx,
        &app.state.crypto,
        1,
        "oauth",
        "google",
        b"refresh-token",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let out = temp_dir();
    let taken = backup::take(&app.config, &out, false).await.unwrap();
    let m = &taken.manifest;
    assert_eq!(m.format, backup::FORMAT);
    assert_eq!(m.tables["tenant_secrets"], 1);
    assert_eq!(m.tables["users"], 1);
    assert!(m.tables["tenants"] >= 1, "{:?}", m.tables);
    assert!(taken.dir.join(&m.file).exists());
    assert!(
        !taken.dir.join("master.key").exists(),
        "the key stays out unless asked"
    );
    // Written after the snapshot: not in the backup.
    app.create_tenant(&ann, "After Ltd").await;

    // The wrong master key is refused before anything is written.
    let mut wrong = test_config(db_of(&app)).await.unwrap();
    let err = backup::restore(&wrong, &taken.dir, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("different master key"), "{err}");
    // Nothing was restored into it.
    wrong.master_key = app.config.master_key.clone();

    // A damaged copy is refused.
    let damaged = out.join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    for f in ["manifest.json", m.file.as_str()] {
        std::fs::copy(taken.dir.join(f), damaged.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(damaged.join(&m.file)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(damaged.join(&m.file), bytes).unwrap();
    let err = backup::restore(&wrong, &damaged, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("damaged"), "{err}");

    // The real restore, into the fresh database.
    let restored = backup::restore(&wrong, &taken.dir, false).await.unwrap();
    assert_eq!(restored.rows, m.tables.values().sum::<i64>());
    // Every tenant secret and receipt-log signing key was opened (nobody set up
    // two-factor sign-in here).
    assert_eq!(
        restored.secrets as i64,
        m.tables["tenant_secrets"] + m.tables["log_keys"],
        "{restored:?}"
    );
    // Restoring again over it is refused: it holds data now.
    let err = backup::restore(&wrong, &taken.dir, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already"), "{err}");

    let again = TestApp::start_config(wrong).await;
    let (status, body) = again.login("ann@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, list) = again.as_(token.as_str()).get("/api/v1/tenants").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"Before Ltd"), "{names:?}");
    assert!(!names.contains(&"After Ltd"), "{names:?}");
    let mut tx = again.state.store.tenant_read(&tenant).await.unwrap();
    let secret = secrets::get(&mut tx, &again.state.crypto, "oauth", "google")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret.0, b"refresh-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_can_travel_with_the_backup_and_old_backups_are_pruned() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    app.signup("bo@example.com").await;
    let out = temp_dir();
    let taken = backup::take(&app.config, &out, true).await.unwrap();
    let key_file = taken.dir.join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A new machine with no key configured: the restore takes the backup's key and
    // leaves it where the server looks for it.
    let mut fresh = test_config(Db::Sqlite).await.unwrap();
    fresh.master_key = None;
    backup::restore(&fresh, &taken.dir, false).await.unwrap();
    assert_eq!(
        std::fs::read(fresh.data_dir.join("master.key")).unwrap(),
        std::fs::read(&key_file).unwrap()
    );
    let again = TestApp::start_config(fresh).await;
    assert_eq!(
        again.login("bo@example.com", PASSWORD).await.0,
        StatusCode::OK
    );

    // --force replaces a database in use, keeping the old file beside it.
    let mut over = app.config.clone();
    over.data_dir = temp_dir();
    let target = app.config.data_dir.join("ocsuite.db");
    let err = backup::restore(&over, &taken.dir, false).await.unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    drop(app);

    // Backups made on the schedule appear, and only the newest are kept.
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        backup::take(&over, &out, false).await.unwrap();
    }
    std::fs::create_dir_all(out.join("not-a-backup")).unwrap();
    assert_eq!(backup::prune(&out, 2).unwrap(), 1);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.iter().filter(|n| n.starts_with("ocsuite-")).count(), 2);
    assert!(left.contains(&"not-a-backup".to_owned()), "{left:?}");
    assert!(target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_backups_on_its_schedule() {
    let out = temp_dir();
    let dir = out.clone();
    let app = TestApp::start_with(Db::Sqlite, |c| {
        c.backup_dir = Some(dir);
        c.backup_every_minutes = 60;
    })
    .await
    .unwrap();
    // The first one is taken at start.
    let mut found = None;
    for _ in 0..100 {
        found = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("ocsuite-"));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let found = found.expect("a scheduled backup within 10 s");
    let m = backup::inspect(&found.path()).unwrap();
    assert!(m.tables.contains_key("tenants"));
    drop(app);
}

/// On PostgreSQL the migration owner can read every row of every table whose row
/// security is forced, which a complete dump needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_reads_every_forced_table() {
    let Some(app) = TestApp::start(Db::Postgres).await else {
        return;
    };
    let owner = app.config.migration_database_url.clone().unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&owner)
        .await
        .unwrap();
    let missing: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relforcerowsecurity \
            AND NOT EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'public' \
                             AND p.tablename = c.relname AND p.policyname = 'owner_maintenance')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        missing.is_empty(),
        "no owner_maintenance policy on {missing:?}"
    );
}
