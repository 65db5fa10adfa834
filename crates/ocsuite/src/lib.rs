//! ocsuite: a self-hostable, multi-tenant online C-suite.
//!
//! The binary is thin; [`run`] starts the real server on any listener, so tests bind
//! `127.0.0.1:0` and talk HTTP to exactly what production runs.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agents;
pub mod alerts;
pub mod app;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod banner;
pub mod board;
pub mod bookkeeping;
pub mod chat;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod console;
pub mod crypto;
pub mod demo;
pub mod digests;
pub mod email;
pub mod erasures;
pub mod error;
pub mod eval;
pub mod exports;
pub mod flags;
pub mod ids;
pub mod impersonation;
pub mod imports;
pub mod json;
pub mod knowledge;
pub mod leadtracker;
pub mod llm;
pub mod metrics;
pub mod modules;
pub mod money;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod owner_invites;
pub mod personas;
pub mod plans;
pub mod policy;
pub mod queue;
pub mod realtime;
pub mod receipts;
pub mod retention;
pub mod security;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tenancy;
pub mod triggers;
pub mod usage;
pub mod web;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use tokio::net::TcpListener;

use config::{Config, Environment, decode_master_key};
use crypto::{Crypto, MasterKey};
pub use state::AppState;
use store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Other(String),
}

/// The master key from config, or — in development only — from `<data_dir>/master.key`,
/// generated on first run.
pub fn master_key(config: &Config) -> Result<MasterKey, StartError> {
    if let Some(k) = &config.master_key {
        return decode_master_key(k.expose())
            .map(MasterKey::from_bytes)
            .map_err(|m| StartError::Other(format!("OCSUITE_MASTER_KEY: {m}")));
    }
    if config.env == Environment::Production {
        return Err(StartError::Other(
            "OCSUITE_MASTER_KEY is required in production".into(),
        ));
    }
    let path = config.data_dir.join("master.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return decode_master_key(&text)
            .map(MasterKey::from_bytes)
            .map_err(|m| StartError::Other(format!("{}: {m}", path.display())));
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    write_private(
        &path,
        &base64::engine::general_purpose::STANDARD.encode(key),
    )
    .map_err(|e| StartError::Other(format!("cannot write {}: {e}", path.display())))?;
    tracing::warn!(
        path = %path.display(),
        "OCSUITE_MASTER_KEY is not set: generated a development master key. Back this file up: \
         without it every stored secret is unreadable. Set OCSUITE_MASTER_KEY in production."
    );
    Ok(MasterKey::from_bytes(key))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(contents.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, contents)
    }
}

/// Migrates, connects and checks the database; returns the state the server runs on.
pub async fn prepare(config: Config) -> Result<AppState, StartError> {
    let key = master_key(&config)?;
    if config.env == Environment::Production && config.metrics_token.is_none() {
        tracing::warn!(
            "GET /metrics is open: set OCSUITE_METRICS_TOKEN, or block the path at your proxy"
        );
    }
    // Install the metrics recorder before the first request is counted.
    telemetry::handle();
    store::migrate(&config).await?;
    let store = Store::connect_runtime(&config).await?;
    crypto::secrets::ensure_initial_version(&store)
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    if let Some(check) = store::check_runtime_role(&store).await?
        && let Some(problem) = check.problem()
    {
        if config.env == Environment::Production {
            return Err(StartError::Other(format!(
                "{problem}: row-level security would not bind it (see docs/operations.md)"
            )));
        }
        tracing::warn!(%problem, "PostgreSQL runtime role defeats row-level security; fine for a dev box, refused in production");
    }
    if let Some((_, problems)) = store::rls_violations(&store).await?
        && !problems.is_empty()
    {
        let problems = problems.join("; ");
        if config.env == Environment::Production {
            return Err(StartError::Other(format!(
                "row-level security check failed: {problems}"
            )));
        }
        tracing::warn!(%problems, "row-level security check failed");
    }
    // Advice only: a slow-vacuumed queue still works, just slower (docs/operations.md).
    if let Some(advice) = store::check_vacuum(&store).await?.and_then(|c| c.advice()) {
        tracing::warn!(%advice, "PostgreSQL autovacuum settings slow the job queue");
    }
    let registry = builtin_modules().map_err(StartError::Other)?;
    let state =
        AppState::new(config, store, Crypto::new(key), registry).map_err(StartError::Other)?;
    state
        .flags
        .reload(&state.store)
        .await
        .map_err(|e| StartError::Other(format!("loading feature flags: {e}")))?;
    state
        .banner
        .reload(&state.store)
        .await
        .map_err(|e| StartError::Other(format!("loading the system banner: {e}")))?;
    state
        .suspensions
        .reload(&state.store)
        .await
        .map_err(|e| StartError::Other(format!("loading suspended companies: {e}")))?;
    Ok(state)
}

/// The modules compiled into the server. Registered here, at start, so the registry
/// itself names none of them.
pub fn builtin_modules() -> Result<modules::Registry, String> {
    use std::sync::Arc;
    modules::Registry::new(vec![
        Arc::new(modules::diagnostics::Diagnostics::new()),
        Arc::new(connectors::module::Connectors::new()),
        Arc::new(leadtracker::module::LeadTracker::new()),
        Arc::new(bookkeeping::module::Bookkeeping::new()),
        Arc::new(email::module::EmailModule::new()),
        Arc::new(knowledge::module::KnowledgeModule::new()),
    ])
}

/// Checks the settings that only a service can judge (the SMTP URL, the connector
/// provider list), so `main` stops with the same exit code as for any other invalid
/// setting instead of failing later at start.
pub fn check_services(config: &Config) -> Result<(), config::ConfigError> {
    notifications::email::Mailer::from_config(config).map_err(config::ConfigError)?;
    connectors::Providers::from_config(config)
        .map_err(|m| config::ConfigError(format!("OCSUITE_CONNECTOR_PROVIDERS: {m}")))?;
    Ok(())
}

/// Drops the archives of exports whose download window has passed, and the addresses
/// of erasure requests nobody approved in time.
async fn expire_exports(store: &Store) -> error::Result<u64> {
    let mut tx = store.platform().await?;
    let n = exports::expire(&mut tx).await?
        + store::cross_tenant::expire_erasures(&mut tx, chrono::Utc::now()).await?;
    tx.commit().await?;
    Ok(n)
}

/// The background work every process runs besides HTTP: the PostgreSQL listener, the
/// job workers (when `workers > 0`) and periodic housekeeping.
pub struct Background {
    workers: queue::pool::Workers,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    pub fn start(state: &AppState) -> Self {
        let mut tasks = vec![tokio::spawn(realtime::listen(
            state.store.clone(),
            state.bus.clone(),
            state.jobs_wake.clone(),
        ))];
        if let (Some(relay), Some(pool)) = (state.bus.relay(), state.store.notify_pool()) {
            tasks.extend(relay.start(pool.clone()));
        }
        if state.store.backend() == store::Backend::Sqlite {
            let store = state.store.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    if let Err(e) = store.checkpoint().await {
                        tracing::warn!(error = %e, "SQLite checkpoint failed");
                    }
                }
            }));
        }
        let (limits, bus, store) = (state.limits.clone(), state.bus.clone(), state.store.clone());
        let meter_state = state.clone();
        let retention = state.config.events_retention_days;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                limits.shrink();
                bus.shrink();
                meter_state.meter.shrink();
                if n.is_multiple_of(60)
                    && let Err(e) = realtime::prune(&store, retention).await
                {
                    tracing::warn!(error = %e, "pruning old events failed");
                }
                if n.is_multiple_of(10)
                    && let Err(e) = connectors::sync::prune_states(&store).await
                {
                    tracing::warn!(error = %e, "pruning expired OAuth states failed");
                }
                if n.is_multiple_of(60)
                    && let Err(e) = retention::apply_all(&meter_state).await
                {
                    tracing::warn!(error = %e, "applying retention failed");
                }
                if n.is_multiple_of(10)
                    && let Err(e) = expire_exports(&store).await
                {
                    tracing::warn!(error = %e, "dropping expired exports failed");
                }
                if n.is_multiple_of(10)
                    && let Err(e) = board::fail_stale(&store).await
                {
                    tracing::warn!(error = %e, "closing interrupted meetings failed");
                }
                if n.is_multiple_of(5)
                    && let Err(e) = knowledge::jobs::schedule(
                        &store,
                        &meter_state.jobs_wake,
                        meter_state.config.knowledge_sync_interval_secs,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "scheduling knowledge re-syncs failed");
                }
                if let Err(e) = connectors::sync::schedule(
                    &store,
                    &meter_state.jobs_wake,
                    meter_state.config.connector_sync_interval_secs,
                )
                .await
                {
                    tracing::warn!(error = %e, "scheduling connector syncs failed");
                }
                n += 1;
            }
        }));
        // Feature flags and the banner changed on another node reach this one within
        // seconds.
        let flagged = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(flags::REFRESH);
            loop {
                tick.tick().await;
                if let Err(e) = flagged.flags.reload(&flagged.store).await {
                    tracing::warn!(error = %e, "reloading feature flags failed");
                }
                if let Err(e) = flagged.banner.reload(&flagged.store).await {
                    tracing::warn!(error = %e, "reloading the system banner failed");
                }
                if let Err(e) = flagged.suspensions.reload(&flagged.store).await {
                    tracing::warn!(error = %e, "reloading suspended companies failed");
                }
                if let Err(e) = flagged
                    .log_signer
                    .refresh(&flagged.store, &flagged.crypto)
                    .await
                {
                    tracing::warn!(error = %e, "checking the receipt-log key failed");
                }
            }
        }));
        // Receipts get their positions and a signed checkpoint within seconds.
        let logs = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(receipts::log::INTEGRATE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) =
                    receipts::log::integrate_pending(&logs.store, &logs.crypto, &logs.log_signer)
                        .await
                {
                    tracing::warn!(error = %e, "integrating receipts failed");
                }
            }
        }));
        // The trigger scheduler: cheap when nothing is due (one indexed read).
        let sched = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = triggers::schedule::tick(&sched).await {
                    tracing::warn!(error = %e, "the trigger scheduler failed");
                }
            }
        }));
        let handlers: Vec<std::sync::Arc<dyn queue::worker::Handler>> = vec![
            std::sync::Arc::new(tasks::handler::ExecuteTask::new(state.clone())),
            std::sync::Arc::new(connectors::sync::SyncConnector::new(state.vault.clone())),
            std::sync::Arc::new(email::deliver::Deliver::new(state)),
            std::sync::Arc::new(notifications::email::SendEmail::new(state.mailer.clone())),
            std::sync::Arc::new(triggers::run::RunTrigger::new(state)),
            std::sync::Arc::new(console::deletion::PurgeTenant::new(state)),
            std::sync::Arc::new(exports::BuildExport::new(state)),
            std::sync::Arc::new(erasures::job::ErasePerson::new(state)),
            std::sync::Arc::new(webhooks::deliver::DeliverWebhook::new(
                state.crypto.clone(),
                state.config.mcp_private_allowed(),
            )),
            std::sync::Arc::new(knowledge::ingest::Ingest::new(
                state.store.clone(),
                state.bus.clone(),
                state.llm.clone(),
                state.vault.clone(),
                knowledge::ingest::IngestSettings {
                    embedding_model: state.knowledge.embedding_model.clone(),
                    allow_private: state.config.mcp_private_allowed(),
                    max_file_bytes: usize::try_from(state.meter.largest_knowledge_file())
                        .unwrap_or(usize::MAX),
                },
            )),
        ];
        let workers = queue::pool::Workers::start(
            state.store.clone(),
            state.bus.clone(),
            state.jobs_wake.clone(),
            handlers,
            queue::worker::WorkerConfig::from_config(&state.config),
        );
        Self { workers, tasks }
    }

    /// Stops the workers (letting running jobs finish for up to `grace`) and the rest.
    pub async fn stop(self, grace: Duration) {
        self.workers.shutdown(grace).await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Runs only the job workers (no HTTP) until `shutdown` resolves: `ocsuite worker`.
pub async fn work(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let mut config = config;
    if config.workers == 0 {
        config.workers = 8;
    }
    let state = prepare(config).await?;
    let bg = Background::start(&state);
    shutdown.await;
    bg.stop(Duration::from_secs(20)).await;
    state.store.close().await;
    Ok(())
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bg = Background::start(&state);
    let store = state.store.clone();
    let backups = tokio::spawn(backup::scheduled(state.config.clone()));
    let bus = state.bus.clone();
    let shutdown = async move {
        shutdown.await;
        bus.close();
    };
    let app = app::router(state);
    // Streams (SSE chat answers, events) write many small frames; without TCP_NODELAY
    // Nagle's algorithm holds each one until the previous is acknowledged, and a
    // delayed ACK turns that into ~40 ms per token.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    backups.abort();
    bg.stop(Duration::from_secs(20)).await;
    store.close().await;
    result
}

/// [`prepare`] then [`serve`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = prepare(config).await?;
    serve(state, listener, shutdown)
        .await
        .map_err(|e| StartError::Other(e.to_string()))
}
