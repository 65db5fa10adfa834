//! The agent builder: a tenant's own agents, and its customisations of the built-in
//! personas.
//!
//! A custom agent has a name, a role title, instructions (its brief), an optional model,
//! temperature and token limit, and the module capabilities it may call. Its brief is
//! tenant text, so the prompt places it in a data block under the fixed rules, like every
//! other tenant-supplied text. A built-in persona can be customised per tenant (prompt
//! additions, model, temperature, max tokens); removing the customisation restores the
//! default, which is never stored.

pub mod routes;
pub mod tools;

use chrono::{DateTime, Utc};
use ocsuite_module_sdk::is_capability_name;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};
use crate::personas::{self, Persona};
use crate::store::{TenantTx, scoped};

/// Settings shared by agents and persona customisations.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model id; absent: the server's `OCSUITE_LLM_MODEL`.
    #[serde(default)]
    pub model: Option<String>,
    /// 0-2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// 1-32000.
    #[serde(default)]
    pub max_tokens: Option<i64>,
}

impl ModelSettings {
    pub fn validated(mut self) -> Result<Self> {
        self.model = self
            .model
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty());
        if self
            .model
            .as_ref()
            .is_some_and(|m| m.len() > 200 || m.chars().any(char::is_control))
        {
            return Err(AppError::invalid(
                "model",
                "model must be a model id of at most 200 characters",
            ));
        }
        if self
            .temperature
            .is_some_and(|t| !(0.0..=2.0).contains(&t) || t.is_nan())
        {
            return Err(AppError::invalid(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        if self.max_tokens.is_some_and(|m| !(1..=32_000).contains(&m)) {
            return Err(AppError::invalid(
                "max_tokens",
                "max_tokens must be between 1 and 32000",
            ));
        }
        Ok(self)
    }
}

/// A tenant's custom agent.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub slug: String,
    pub name: String,
    pub title: String,
    pub instructions: String,
    #[serde(flatten)]
    pub settings: ModelSettings,
    /// `module.capability` names this agent may call.
    pub capabilities: Vec<String>,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    slug: String,
    name: String,
    title: String,
    instructions: String,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
    capabilities: String,
    enabled: bool,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl AgentRow {
    fn into_agent(self) -> Agent {
        Agent {
            slug: self.slug,
            name: self.name,
            title: self.title,
            instructions: self.instructions,
            settings: ModelSettings {
                model: self.model,
                temperature: self.temperature,
                max_tokens: self.max_tokens,
            },
            capabilities: serde_json::from_str(&self.capabilities).unwrap_or_default(),
            enabled: self.enabled,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Checks a slug: 2-32 of `a-z`, `0-9`, `-`, starting with a letter, not a built-in's.
pub fn check_slug(slug: &str) -> Result<()> {
    let ok = (2..=32).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(AppError::invalid(
            "slug",
            "slug must be 2-32 lowercase letters, digits or `-`, starting with a letter",
        ));
    }
    if personas::builtin(slug).is_some() {
        return Err(AppError::Conflict(format!(
            "`{slug}` is a built-in persona; customise it with PUT /api/v1/c-suite/{slug}/customization"
        )));
    }
    Ok(())
}

pub fn check_capabilities(caps: &[String]) -> Result<()> {
    if caps.len() > 100 {
        return Err(AppError::invalid(
            "capabilities",
            "at most 100 capabilities",
        ));
    }
    if let Some(bad) = caps.iter().find(|c| !is_capability_name(c)) {
        return Err(AppError::invalid(
            "capabilities",
            format!(
                "`{}` is not a capability name (module.capability)",
                bad.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// `SELECT <every agent column> FROM agents <tail>`.
macro_rules! select_agents {
    ($tail:literal) => {
        concat!(
            "SELECT slug, name, title, instructions, model, temperature, max_tokens, capabilities, enabled, created_by, created_at, updated_at FROM agents ",
            $tail
        )
    };
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Agent>> {
    let rows: Vec<AgentRow> = tx
        .fetch_all(scoped(select_agents!(
            "WHERE tenant_id = $1 ORDER BY name, slug"
        )))
        .await?;
    Ok(rows.into_iter().map(AgentRow::into_agent).collect())
}

pub async fn get(tx: &mut TenantTx, slug: &str) -> Result<Option<Agent>> {
    let row: Option<AgentRow> = tx
        .fetch_optional(scoped(select_agents!("WHERE tenant_id = $1 AND slug = $2")).bind(slug))
        .await?;
    Ok(row.map(AgentRow::into_agent))
}

/// Inserts or replaces an agent's definition (`created_*` kept on replace).
pub async fn save(tx: &mut TenantTx, a: &Agent) -> Result<()> {
    tx.execute(
        scoped("INSERT INTO agents (tenant_id, slug, name, title, instructions, model, temperature, max_tokens, capabilities, enabled, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (tenant_id, slug) DO UPDATE SET name = excluded.name, title = excluded.title, instructions = excluded.instructions, \
               model = excluded.model, temperature = excluded.temperature, max_tokens = excluded.max_tokens, \
               capabilities = excluded.capabilities, enabled = excluded.enabled, updated_at = excluded.updated_at")
            .bind(a.slug.as_str())
            .bind(a.name.as_str())
            .bind(a.title.as_str())
            .bind(a.instructions.as_str())
            .bind(a.settings.model.clone())
            .bind(a.settings.temperature)
            .bind(a.settings.max_tokens)
            .bind(serde_json::to_string(&a.capabilities).map_err(AppError::internal)?)
            .bind(a.enabled)
            .bind(a.created_by.as_str())
            .bind(a.created_at)
            .bind(a.updated_at),
    )
    .await?;
    Ok(())
}

/// A built-in persona's customisation for one tenant.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customization {
    /// Added to the persona's prompt as company instructions (at most 4000 characters).
    #[serde(default)]
    pub prompt_additions: Option<String>,
    #[serde(flatten)]
    pub settings: ModelSettings,
    /// The capabilities this officer may call beyond the basics (document search and
    /// module summaries); absent: its role's defaults.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
}

#[derive(sqlx::FromRow)]
struct CustomizationRow {
    capabilities: Option<String>,
    prompt_additions: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
}

pub async fn customization(tx: &mut TenantTx, slug: &str) -> Result<Option<Customization>> {
    let row: Option<CustomizationRow> = tx
        .fetch_optional(
            scoped("SELECT capabilities, prompt_additions, model, temperature, max_tokens FROM persona_overrides WHERE tenant_id = $1 AND slug = $2")
                .bind(slug),
        )
        .await?;
    Ok(row.map(|r| Customization {
        capabilities: r.capabilities.and_then(|c| serde_json::from_str(&c).ok()),
        prompt_additions: r.prompt_additions,
        settings: ModelSettings {
            model: r.model,
            temperature: r.temperature,
            max_tokens: r.max_tokens,
        },
    }))
}

pub async fn set_customization(tx: &mut TenantTx, slug: &str, c: &Customization) -> Result<()> {
    tx.execute(
        scoped("INSERT INTO persona_overrides (tenant_id, slug, prompt_additions, model, temperature, max_tokens, updated_at, capabilities) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, slug) DO UPDATE SET prompt_additions = excluded.prompt_additions, model = excluded.model, \
               temperature = excluded.temperature, max_tokens = excluded.max_tokens, updated_at = excluded.updated_at, \
               capabilities = excluded.capabilities")
            .bind(slug)
            .bind(c.prompt_additions.clone())
            .bind(c.settings.model.clone())
            .bind(c.settings.temperature)
            .bind(c.settings.max_tokens)
            .bind(Utc::now())
            .bind(
                c.capabilities
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(AppError::internal)?,
            ),
    )
    .await?;
    Ok(())
}

pub async fn reset_customization(tx: &mut TenantTx, slug: &str) -> Result<bool> {
    let n = tx
        .execute(
            scoped("DELETE FROM persona_overrides WHERE tenant_id = $1 AND slug = $2").bind(slug),
        )
        .await?;
    Ok(n > 0)
}

/// Whom a conversation talks to: the persona and the tenant text for its prompt.
#[derive(Clone)]
pub struct Speaker {
    pub persona: Persona,
    /// Tenant text for the prompt's instructions block (customisation or agent brief).
    pub additions: Option<String>,
    /// The capabilities it may call ([`tools::allowed`] adds the basics).
    pub capabilities: Vec<String>,
}

/// Resolves `slug` in the tenant: a built-in persona with its customisation, or an
/// enabled custom agent. `None`: no such persona here.
pub async fn speaker(tx: &mut TenantTx, slug: &str) -> Result<Option<Speaker>> {
    if let Some(mut p) = personas::builtin(slug) {
        let c = customization(tx, slug).await?;
        let additions = c.as_ref().and_then(|c| c.prompt_additions.clone());
        let extra = match c.as_ref().and_then(|c| c.capabilities.clone()) {
            Some(own) => own,
            None => tools::role_defaults(slug)
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        };
        if let Some(c) = c {
            apply(&mut p, &c.settings);
        }
        return Ok(Some(Speaker {
            persona: p,
            additions,
            capabilities: tools::allowed(&extra),
        }));
    }
    let Some(a) = get(tx, slug).await?.filter(|a| a.enabled) else {
        return Ok(None);
    };
    let mut p = Persona {
        slug: a.slug.clone(),
        name: a.name.clone(),
        title: a.title.clone(),
        tone: "clear and direct".into(),
        intro: a.title.clone(),
        guidance: String::new(),
        model: None,
        temperature: None,
        max_tokens: None,
    };
    apply(&mut p, &a.settings);
    Ok(Some(Speaker {
        persona: p,
        additions: Some(format!(
            "Your brief as {} ({}):\n{}",
            a.name, a.title, a.instructions
        )),
        capabilities: tools::allowed(&a.capabilities),
    }))
}

fn apply(p: &mut Persona, s: &ModelSettings) {
    if let Some(m) = &s.model {
        p.model = Some(m.clone());
    }
    if let Some(t) = s.temperature {
        p.temperature = Some(t as f32);
    }
    if let Some(m) = s.max_tokens {
        p.max_tokens = u32::try_from(m).ok();
    }
}
