//! The agent builder: each built-in officer's settings and tools (customise, reset), the
//! company's own agents (create, edit, disable), and a "Test" box that runs one turn and
//! shows the tool calls it made.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Redirected, Shell, Viewer, render};
use crate::agents::tools::{self, BASICS};
use crate::state::AppState;
use crate::tenancy::Role;

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    shell: Shell,
    officers: Vec<Officer>,
    agents: Vec<Own>,
    /// Every capability the company can run, for the tool pickers.
    catalog: Vec<Capability>,
    is_admin: bool,
    offline: bool,
    default_model: String,
}

/// A capability as a picker shows it.
struct Capability {
    name: String,
    title: String,
    side_effect: &'static str,
    /// Always on (document search and summaries): shown checked and locked.
    basic: bool,
}

struct Officer {
    slug: String,
    name: String,
    title: String,
    customized: bool,
    prompt_additions: String,
    model: String,
    temperature: String,
    max_tokens: String,
    /// The capabilities it may call now.
    tools: Vec<String>,
}

struct Own {
    agent: crate::agents::Agent,
    tools: Vec<String>,
}

impl AgentsPage {
    fn has(&self, tools: &[String], name: &str) -> bool {
        tools.iter().any(|t| t == name)
    }

    fn text(&self, v: &Option<String>) -> String {
        v.clone().unwrap_or_default()
    }

    fn num(&self, v: &Option<f64>) -> String {
        opt(*v)
    }

    fn int(&self, v: &Option<i64>) -> String {
        opt(*v)
    }
}

fn side_effect(se: ocsuite_module_sdk::SideEffect) -> &'static str {
    use ocsuite_module_sdk::SideEffect as S;
    match se {
        S::None | S::Read => "reads",
        S::Write => "changes data · needs approval",
        S::ExternalSend => "sends outside · needs approval",
        S::Financial => "moves money · needs approval",
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

pub async fn page(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let catalog = crate::modules::catalog(&state.registry, &mut tx).await?;
    let mut officers = Vec::new();
    for p in crate::personas::builtins() {
        let c = crate::agents::customization(&mut tx, &p.slug).await?;
        let speaker = crate::agents::speaker(&mut tx, &p.slug).await?;
        let allowed = speaker.map(|s| s.capabilities).unwrap_or_default();
        let settings = c.as_ref().map(|c| c.settings.clone()).unwrap_or_default();
        officers.push(Officer {
            customized: c.is_some(),
            prompt_additions: c
                .as_ref()
                .and_then(|c| c.prompt_additions.clone())
                .unwrap_or_default(),
            model: settings.model.unwrap_or_default(),
            temperature: opt(settings.temperature),
            max_tokens: opt(settings.max_tokens),
            tools: tools::Toolbox::from_catalog(&catalog, allowed)
                .tools
                .into_iter()
                .map(|t| t.spec.name.clone())
                .collect(),
            slug: p.slug,
            name: p.name,
            title: p.title,
        });
    }
    let agents = crate::agents::list(&mut tx)
        .await?
        .into_iter()
        .map(|a| Own {
            tools: tools::allowed(&a.capabilities),
            agent: a,
        })
        .collect();
    tx.commit().await?;
    let catalog = catalog
        .iter()
        .filter(|m| m.enabled && m.name != "diagnostics")
        .flat_map(|m| m.capabilities.iter())
        .map(|c| Capability {
            basic: BASICS.contains(&c.name.as_str()),
            name: c.name.clone(),
            title: c.title.clone(),
            side_effect: side_effect(c.side_effect),
        })
        .collect();
    Ok(render(&AgentsPage {
        shell: Shell::new(&v, "Agents", "agents"),
        officers,
        agents,
        catalog,
        is_admin: v.role.at_least(Role::Admin),
        offline: state.llm.name() == "offline",
        default_model: state.config.llm_model.clone(),
    }))
}
