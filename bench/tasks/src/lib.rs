//! What both benchmarks share: settings from the environment, percentiles, and a real
//! server in this process with one signed-up user and tenant.

use base64::Engine;
use ocsuite::config::{Config, Secret};
use serde_json::{Value, json};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`th percentile of an ascending slice (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `postgres` with `BENCH_DATABASE_URL`, else `sqlite`.
pub fn backend() -> &'static str {
    if std::env::var("BENCH_DATABASE_URL").is_ok() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// The server on 127.0.0.1:0 and the user and tenant that drive it.
pub struct Server {
    pub state: ocsuite::AppState,
    pub base: String,
    pub token: String,
    pub tenant: String,
    dir: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Starts on SQLite in a temp dir, or on `BENCH_DATABASE_URL` (runtime role) with
    /// `BENCH_MIGRATION_DATABASE_URL` (owner); rate limits out of the way; `tweak` last.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Res<Self> {
        let dir =
            std::env::temp_dir().join(format!("ocsuite-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        let mut c = Config {
            data_dir: dir.clone(),
            master_key: Some(Secret::new(
                base64::engine::general_purpose::STANDARD.encode(key),
            )),
            rate_limit_auth_per_minute: 1_000_000,
            rate_limit_api_per_second: 1_000_000,
            rate_limit_api_burst: 1_000_000,
            db_max_connections: 32,
            ..Config::default()
        };
        // The benches measure the queue, search and triggers, not the plans: the free
        // plan is unlimited here.
        c.plans.free = ocsuite::config::EntitlementsConfig {
            seats: Some(-1),
            api_keys: Some(-1),
            triggers: Some(-1),
            mcp_servers: Some(-1),
            tasks_per_day: Some(-1),
            knowledge_mb: Some(-1),
            modules: None,
        };
        match std::env::var("BENCH_DATABASE_URL") {
            Ok(url) => {
                c.database_url = url;
                c.migration_database_url = std::env::var("BENCH_MIGRATION_DATABASE_URL").ok();
            }
            Err(_) => c.database_url = format!("sqlite://{}/ocsuite.db", dir.display()),
        }
        tweak(&mut c);
        let state = ocsuite::prepare(c).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(ocsuite::serve(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::new();
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
        let v: Value = http
            .post(format!("{base}/api/v1/auth/signup"))
            .json(&json!({"email": email, "password": "bench password 123", "name": "Bench"}))
            .send()
            .await?
            .json()
            .await?;
        let token = v["token"].as_str().ok_or("signup failed")?.to_owned();
        let v: Value = http
            .post(format!("{base}/api/v1/tenants"))
            .bearer_auth(&token)
            .json(&json!({"name": "Bench Co"}))
            .send()
            .await?
            .json()
            .await?;
        let tenant = v["id"].as_str().ok_or("tenant creation failed")?.to_owned();
        Ok(Self {
            state,
            base,
            token,
            tenant,
            dir,
            stop,
            handle,
        })
    }

    /// Shuts the server down and removes its temp dir.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
