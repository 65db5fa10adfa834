//! The state every handler shares: configuration and the server's services, each built
//! once at start (`crate::prepare`). A leaf of the module graph: it names the services'
//! types, and nothing it names reaches back for it, except built-in modules, which run
//! in-process with the server's services (`modules::ExecContext`).

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::oidc::OidcVerifier;
use crate::config::Config;
use crate::crypto::Crypto;
use crate::modules::Registry;
use crate::ops::ratelimit::Limits;
use crate::realtime::Bus;
use crate::store::{Backend, Store};

pub struct AppInner {
    pub config: Config,
    pub store: Store,
    pub crypto: Crypto,
    pub oidc: OidcVerifier,
    pub limits: Arc<Limits>,
    /// Built-in modules.
    pub registry: Arc<Registry>,
    /// Realtime fan-out to this process's subscribers.
    pub bus: Arc<Bus>,
    /// Wakes idle workers of this process when a job may be ready.
    pub jobs_wake: Arc<crate::queue::Wake>,
    /// The model gateway (offline when no API key is configured).
    pub llm: Arc<dyn crate::llm::Provider>,
    /// Plans, prices and chat rate limits.
    pub meter: crate::usage::Meter,
    /// Connector providers and the token vault.
    pub vault: Arc<crate::connectors::vault::Vault>,
    /// SMTP delivery for the outbox (unconfigured: messages are held).
    pub mailer: Arc<crate::notifications::email::Mailer>,
    /// Each tenant's open tasks, for the cap on queued work.
    pub open_tasks: crate::tasks::gauge::OpenTasks,
    /// Knowledge search: keyword index, embeddings and the in-memory vectors.
    pub knowledge: Arc<crate::knowledge::search::Knowledge>,
    /// The time triggers, alerts and digests read (tests drive it).
    pub clock: crate::clock::Clock,
    /// Feature flags, evaluated locally from this process's copy.
    pub flags: crate::flags::Flags,
    /// The system banner, from this process's copy.
    pub banner: crate::banner::Banners,
    /// Suspended companies, from this process's copy.
    pub suspensions: crate::console::Suspensions,
    /// What each plan allows beyond tokens.
    pub plans: crate::plans::Plans,
    /// Model calls as this process saw them (the health page).
    pub llm_stats: Arc<crate::llm::measured::LlmStats>,
    /// The key that signs the receipt logs' checkpoints.
    pub log_signer: Arc<crate::receipts::keys::LogSigner>,
    /// Cedar: the floors, the schema and each company's policy.
    pub policies: Arc<crate::policy::Policies>,
}

/// Shared state handed to every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl AppState {
    /// Builds every service from the configuration. A connector provider list or SMTP
    /// URL that cannot be used is a configuration error (`crate::check_services` reports
    /// the same at load, before anything starts).
    pub fn new(
        config: Config,
        store: Store,
        crypto: Crypto,
        mut registry: Registry,
    ) -> Result<Self, String> {
        let plans = crate::plans::Plans::new(&config.plans);
        registry.set_plan_modules(plans.module_lists());
        let oidc = OidcVerifier::new(config.oidc());
        let limits = Limits::new(&config);
        let relay = (store.backend() == Backend::Postgres)
            .then(|| Arc::new(crate::realtime::relay::Relay::new()));
        let bus = Arc::new(Bus::new(relay.clone()));
        let llm_stats = Arc::new(crate::llm::measured::LlmStats::default());
        let llm: Arc<dyn crate::llm::Provider> = Arc::new(crate::llm::measured::Measured::new(
            crate::llm::from_config(&config),
            llm_stats.clone(),
        ));
        let meter = crate::usage::Meter::new(&config);
        let providers = crate::connectors::Providers::from_config(&config)
            .map_err(|m| format!("OCSUITE_CONNECTOR_PROVIDERS: {m}"))?;
        let vault = Arc::new(crate::connectors::vault::Vault::new(
            providers,
            store.clone(),
            crypto.clone(),
        ));
        let mailer = Arc::new(crate::notifications::email::Mailer::from_config(&config)?);
        let knowledge = Arc::new(crate::knowledge::search::Knowledge {
            store: store.clone(),
            llm: llm.clone(),
            embedding_model: config.embedding_model(),
            vectors: Default::default(),
            term_docs: Default::default(),
            rank_whole: crate::knowledge::search::RANK_WHOLE,
        });
        let log_signer = Arc::new(crate::receipts::keys::LogSigner::new(
            config.public_url.as_deref(),
        ));
        Ok(Self(Arc::new(AppInner {
            config,
            store,
            crypto,
            oidc,
            limits,
            registry: Arc::new(registry),
            bus,
            jobs_wake: Arc::new(crate::queue::Wake::new(relay)),
            llm,
            meter,
            vault,
            mailer,
            open_tasks: Default::default(),
            knowledge,
            clock: Default::default(),
            flags: Default::default(),
            banner: Default::default(),
            suspensions: Default::default(),
            plans,
            llm_stats,
            log_signer,
            policies: Arc::new(crate::policy::Policies::new()?),
        })))
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
