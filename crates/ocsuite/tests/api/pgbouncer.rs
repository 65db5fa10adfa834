//! Behind PgBouncer in transaction pooling (Debian's package): the server and a worker
//! reach PostgreSQL through a pool of fewer server connections than they hold, so
//! consecutive transactions land on different server connections. Tasks run, events
//! arrive live (LISTEN goes over the direct `OCSUITE_DATABASE_LISTEN_URL`), tenant scope
//! never outlives its transaction, and each tenant sees only its own rows.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::helpers::{Db, TestApp, temp_dir, test_config};
use crate::realtime::{connect, events_until, send};
use crate::tasks::{owner, start, wait_status};

/// Where Debian puts the binary; `None` (a note, or a failure with CI=true) without it.
fn pgbouncer_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("PgBouncer tests cannot run (CI=true): install Debian's pgbouncer package");
        }
        eprintln!("SKIPPED: pgbouncer not installed (apt-get install pgbouncer)");
    }
    found
}

/// A running PgBouncer in front of 127.0.0.1:5432, killed on drop.
struct Bouncer {
    child: std::process::Child,
    port: u16,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts PgBouncer on a free port in transaction mode with `pool_size` server
/// connections per database and user, trusting `users` (as the local PostgreSQL does).
fn start_bouncer(bin: &Path, dir: &Path, users: &[&str], pool_size: u32) -> Bouncer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let auth = dir.join("users.txt");
    let lines: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
    std::fs::write(&auth, lines).unwrap();
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
             default_pool_size = {pool_size}\nmax_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits,options\n",
            auth.display()
        ),
    )
    .unwrap();
    // PgBouncer refuses to run as root; -u drops to the postgres user.
    let mut cmd = std::process::Command::new(bin);
    cmd.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null());
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        cmd.args(["-u", "postgres"]);
    }
    let child = cmd.spawn().expect("start pgbouncer");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Bouncer { child, port }
}

/// `postgres://user@127.0.0.1:5432/db` → the same through PgBouncer's port.
fn via(url: &str, port: u16) -> String {
    url.replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_events_and_tenant_scope_work_through_pgbouncer_postgres() {
    let Some(bin) = pgbouncer_binary() else {
        return;
    };
    let Some(direct) = test_config(Db::Postgres).await else {
        return;
    };
    // Dir and files readable by the postgres user PgBouncer runs as.
    let dir = temp_dir();
    let user = crate::helpers::RUNTIME_ROLE;
    // Two server connections for a pool of 8 and a worker's pool of 8: transactions
    // keep changing server connections.
    let bouncer = start_bouncer(&bin, &dir, &[user, "postgres"], 2);
    let mut config = direct.clone();
    config.database_url = via(&direct.database_url, bouncer.port);
    config.database_pooled = true;
    config.database_listen_url = Some(direct.database_url.clone());
    config.workers = 0;
    let app = TestApp::start_config(config.clone()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut worker = config.clone();
    worker.workers = 3;
    tokio::spawn(ocsuite::work(worker, async move {
        let _ = stopped.await;
    }));

    let (a, ta) = owner(&app, "a@bouncer.example").await;
    let (b, tb) = owner(&app, "b@bouncer.example").await;
    let mut ws = connect(&app, &a.token, &ta).await;
    send(&mut ws, json!({"type": "subscribe", "topic": "tasks"})).await;

    // Many tasks from two tenants at once, through two server connections.
    let mut ids = Vec::new();
    for i in 0..12 {
        let (u, t) = if i % 2 == 0 { (&a, &ta) } else { (&b, &tb) };
        ids.push((
            u.clone(),
            t.clone(),
            start(&app, u, t, "diagnostics.echo", json!({"i": i})).await,
        ));
    }
    for (u, t, id) in &ids {
        let d = wait_status(&app, u, t, id, "succeeded").await;
        assert!(d["task"]["result"]["echo"]["i"].is_i64(), "{d}");
    }
    // The worker's events reached the server's WebSocket through the direct listener.
    let live = events_until(&mut ws, "succeeded").await;
    assert!(!live.is_empty());

    // Each tenant lists only its own tasks.
    for (u, t) in [(&a, &ta), (&b, &tb)] {
        let (s, list) = app.as_(u).tenant(t).get("/api/v1/tasks").await;
        assert_eq!(s, 200, "{list}");
        let items = list["tasks"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 6, "{list}");
    }
    // Another tenant's task is a 404 through the pooler too.
    let (_, _, a_task) = &ids[0];
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .get(&format!("/api/v1/tasks/{a_task}"))
        .await;
    assert_eq!(s, 404);

    // Raw SQL as the runtime role through PgBouncer: a tenant's setting lives only as
    // long as its transaction, so the next transaction on whatever server connection
    // sees nothing (row-level security), and RLS blocks the other tenant's rows.
    let mut raw = PgConnection::connect(&config.database_url).await.unwrap();
    for _ in 0..5 {
        raw.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT set_config('app.tenant_id', '{ta}', true)"
        ))))
        .await
        .unwrap();
        let own: i64 = raw
            .fetch_one(sqlx::raw_sql("SELECT count(*) FROM tasks"))
            .await
            .unwrap()
            .get(0);
        let seen: i64 = raw
            .fetch_one(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM tasks WHERE tenant_id = '{tb}'"
            ))))
            .await
            .unwrap()
            .get(0);
        raw.execute("COMMIT").await.unwrap();
        assert_eq!(own, 6, "tenant A's scope sees A's tasks");
        assert_eq!(seen, 0, "tenant A's scope sees none of B's tasks");
        let after: i64 = raw
            .fetch_one(sqlx::raw_sql("SELECT count(*) FROM tasks"))
            .await
            .unwrap()
            .get(0);
        assert_eq!(after, 0, "no scope outlives its transaction");
    }
    let _ = stop.send(());
    drop(bouncer);
}
