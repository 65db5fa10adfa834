//! Test harness: the real server on 127.0.0.1:0 over a fresh SQLite file or a fresh
//! PostgreSQL database (owner `postgres`, runtime role `ocsuite_test_app`, which is
//! neither superuser nor BYPASSRLS and owns nothing).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use ocsuite::AppState;
use ocsuite::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct horse battery";
pub const RUNTIME_ROLE: &str = "ocsuite_test_app";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("OCSUITE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_db(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}/{db}")
}

fn with_user(url: &str, user: &str) -> String {
    // postgres://USER[:PW]@host… → postgres://<user>@host…
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
    format!("{scheme}://{user}@{host}")
}

/// A fresh PostgreSQL database; `None` (with a note) when PostgreSQL is unreachable,
/// unless CI=true, where that is a failure.
pub async fn pg_database() -> Option<(String, String)> {
    let admin = pg_admin_url();
    let mut conn = match PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL tests cannot run (CI=true): {admin}: {e}");
            }
            eprintln!(
                "SKIPPED: PostgreSQL unreachable at {admin} ({e}); set OCSUITE_TEST_POSTGRES_URL"
            );
            return None;
        }
    };
    let name = format!("ocs_test_{}", uuid::Uuid::new_v4().simple());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create test database");
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN CREATE ROLE {RUNTIME_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )))
    .await
    .expect("create runtime role");
    let owner = with_db(&admin, &name);
    let runtime = with_user(&owner, RUNTIME_ROLE);
    Some((owner, runtime))
}

/// Everything the servers of this test binary log (ocsuite at TRACE, HTTP clients at
/// DEBUG), for tests that assert what never appears in logs.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info,ocsuite=trace,oauth2=trace,reqwest=debug,hyper_util=debug")
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ocsuite-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub async fn test_config(db: Db) -> Option<Config> {
    let dir = temp_dir();
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    let mut c = Config {
        data_dir: dir.clone(),
        master_key: Some(ocsuite::config::Secret::new(
            base64::engine::general_purpose::STANDARD.encode(key),
        )),
        rate_limit_auth_per_minute: 100_000,
        rate_limit_api_per_second: 100_000,
        rate_limit_api_burst: 100_000,
        db_max_connections: 8,
        workers: 4,
        queue_poll_ms: 100,
        queue_retry_base_ms: 20,
        ..Config::default()
    };
    match db {
        Db::Sqlite => c.database_url = format!("sqlite://{}/ocsuite.db", dir.display()),
        Db::Postgres => {
            let (owner, runtime) = pg_database().await?;
            c.database_url = runtime;
            c.migration_database_url = Some(owner);
        }
    }
    Some(c)
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A signed-up user and their session token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

impl TestApp {
    pub async fn start(db: Db) -> Option<Self> {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let mut config = test_config(db).await?;
        tweak(&mut config);
        Some(Self::start_config(config).await)
    }

    pub async fn start_config(config: Config) -> Self {
        captured_logs();
        let state = ocsuite::prepare(config.clone()).await.expect("prepare app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(ocsuite::serve(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            state,
            config,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a JSON request; returns status and parsed body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        tenant: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(t) = tenant {
            rb = rb.header("x-tenant-id", t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_server_error() {
            panic!("{path} answered {status}: {value}");
        }
        (status, value)
    }

    /// Requests as the holder of `who` (a `User`, a session token or an API key):
    /// `app.as_(&user).tenant(&t).post(path, body)`.
    pub fn as_(&self, who: impl Bearer) -> As<'_> {
        As {
            app: self,
            token: Some(who.bearer().to_owned()),
            tenant: None,
        }
    }

    /// Requests without credentials.
    pub fn anon(&self) -> As<'_> {
        As {
            app: self,
            token: None,
            tenant: None,
        }
    }

    pub async fn signup(&self, email: &str) -> User {
        let (s, v) = self
            .anon()
            .post(
                "/api/v1/auth/signup",
                json!({"email": email, "password": PASSWORD, "name": "Test User"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        User {
            id: v["user"]["id"].as_str().expect("id").to_owned(),
            email: v["user"]["email"].as_str().expect("email").to_owned(),
            token: v["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Makes `email` a platform super-admin (as `ocsuite admin create-super-admin` does)
    /// and returns their session token.
    pub async fn super_admin(&self, email: &str) -> String {
        ocsuite::auth::admin::create_super_admin(self.config.clone(), email, None, PASSWORD.into())
            .await
            .expect("create super-admin");
        let (s, v) = self.login(email, PASSWORD).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().expect("token").to_owned()
    }

    /// A web page as the holder of `token` (its session cookie) sees it.
    pub async fn page(&self, token: &str, path: &str) -> (StatusCode, String) {
        let res = self
            .http
            .get(self.url(path))
            .header("cookie", format!("ocsuite_session={token}"))
            .send()
            .await
            .expect("page");
        let status = res.status();
        (status, res.text().await.expect("page body"))
    }

    pub async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.anon()
            .post(
                "/api/v1/auth/login",
                json!({"email": email, "password": password}),
            )
            .await
    }

    pub async fn create_tenant(&self, user: &User, name: &str) -> String {
        let (s, v) = self
            .as_(user)
            .post(
                "/api/v1/tenants",
                json!({"name": name, "profile": {"industry": "retail"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().expect("tenant id").to_owned()
    }

    /// Invites `email` as `role` into `tenant` and has `invitee` accept.
    pub async fn add_member(&self, owner: &User, tenant: &str, invitee: &User, role: &str) {
        let (s, v) = self
            .as_(owner)
            .tenant(tenant)
            .post(
                "/api/v1/invites",
                json!({"email": invitee.email, "role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let token = v["token"].as_str().expect("invite token");
        let (s, v) = self
            .as_(invitee)
            .post(&format!("/api/v1/invites/{token}/accept"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    pub async fn api_key(&self, user: &User, tenant: &str, role: &str) -> (String, String) {
        let (s, v) = self
            .as_(user)
            .tenant(tenant)
            .post(
                "/api/v1/api-keys",
                json!({"name": "test key", "role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["id"].as_str().expect("id").to_owned(),
            v["key"].as_str().expect("key").to_owned(),
        )
    }
}

/// Generates `<name>::sqlite` and `<name>::postgres` tests that run the async fn
/// `<name>(TestApp)` against each backend.
#[macro_export]
macro_rules! dual {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::start($crate::helpers::Db::Sqlite).await.expect("sqlite app");
                super::$name(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) = $crate::helpers::TestApp::start($crate::helpers::Db::Postgres).await else { return };
                super::$name(app).await;
            }
        }
    )*};
}

/// Messages a test SMTP server received: each one's recipients and data.
pub type Inbox = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// A minimal SMTP server speaking enough of RFC 5321 for lettre. It keeps each
/// message's recipients and data, refuses `bounce@…` recipients for good (550) and
/// `busy@…` ones for now (451), so tests see permanent and temporary failures.
pub async fn smtp_sink() -> (u16, Inbox) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Inbox = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let up = line.to_ascii_uppercase();
                    let reply: &[u8] = if up.starts_with("EHLO") || up.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if up.starts_with("RCPT TO") {
                        let addr = line[8..].trim().to_owned();
                        if addr.contains("bounce@") {
                            b"550 5.1.1 no such user\r\n"
                        } else if addr.contains("busy@") {
                            b"451 4.3.0 try again later\r\n"
                        } else {
                            rcpt.push(addr);
                            b"250 OK\r\n"
                        }
                    } else if up.starts_with("DATA") {
                        let _ = w.write_all(b"354 go ahead\r\n").await;
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        store
                            .lock()
                            .unwrap()
                            .push((std::mem::take(&mut rcpt), data));
                        b"250 queued\r\n"
                    } else if up.starts_with("RSET") {
                        rcpt.clear();
                        b"250 OK\r\n"
                    } else if up.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (port, got)
}

/// Something that authenticates a request.
pub trait Bearer {
    fn bearer(&self) -> &str;
}

impl Bearer for User {
    fn bearer(&self) -> &str {
        &self.token
    }
}

impl Bearer for str {
    fn bearer(&self) -> &str {
        self
    }
}

impl Bearer for String {
    fn bearer(&self) -> &str {
        self
    }
}

impl<T: Bearer + ?Sized> Bearer for &T {
    fn bearer(&self) -> &str {
        (**self).bearer()
    }
}

/// A request being built: who sends it and in which tenant.
pub struct As<'a> {
    app: &'a TestApp,
    token: Option<String>,
    tenant: Option<String>,
}

impl As<'_> {
    /// Acts in `tenant` (`X-Tenant-Id`).
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_owned());
        self
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.app
            .call(
                method,
                path,
                self.token.as_deref(),
                self.tenant.as_deref(),
                body,
            )
            .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None).await
    }
}

/// Every `.rs` file under `dir`, for the tests that check rules over the source.
pub fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}
