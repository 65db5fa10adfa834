//! The proactive side of the C-suite: the alert inbox with the recent digests
//! (`/alerts`), and the automations that raise them (`/automations`: triggers and
//! webhook endpoints).
//!
//! Both pages are shells: the server renders what it already knows (who is looking and
//! what they may do, the officers, the capabilities and figures a trigger can name) and
//! `app.js` loads the alerts, triggers, runs, digests, webhooks and deliveries from the
//! JSON API, which does every check.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Redirected, Shell, Viewer, render};
use crate::state::AppState;
use crate::tenancy::Role;

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    shell: Shell,
    /// Members and up acknowledge, snooze, resolve and escalate; viewers read.
    can_act: bool,
    is_admin: bool,
}

pub async fn inbox(v: Viewer) -> Result<Response, Redirected> {
    Ok(render(&AlertsPage {
        shell: Shell::new(&v, "Alerts", "alerts"),
        can_act: v.role.at_least(Role::Member),
        is_admin: v.role.at_least(Role::Admin),
    }))
}

/// Someone who can speak in a meeting or write a brief: an officer or an enabled agent.
struct Speaker {
    slug: String,
    name: String,
}

/// A capability a trigger may propose (one that changes something; it always waits for
/// approval).
struct Proposable {
    name: String,
    title: String,
}

/// A figure a metric rule may name ([`crate::triggers::rules::KNOWN`]).
struct Figure {
    key: String,
    /// What it is ("runway in months").
    about: String,
    /// Whether the company reports it now (a snapshot holds it).
    reported: bool,
}

#[derive(Template)]
#[template(path = "automations.html")]
struct AutomationsPage {
    shell: Shell,
    is_admin: bool,
    speakers: Vec<Speaker>,
    capabilities: Vec<Proposable>,
    figures: Vec<Figure>,
    /// `{"speakers": {slug: name}, "capabilities": {name: title}, "figures": {key: label},
    /// "units": {key: unit}}` for the script, which describes each trigger in words.
    names: String,
}

impl AutomationsPage {
    /// The officers checked by default for a board meeting a trigger calls.
    fn default_member(&self, slug: &str) -> bool {
        matches!(slug, "ceo" | "cfo")
    }
}

pub async fn automations(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    let catalog = crate::modules::catalog(&state.registry, &mut tx).await?;
    let agents = crate::agents::list(&mut tx).await?;
    let snapshots = crate::metrics::latest(&mut tx).await?;
    tx.commit().await?;

    let mut speakers: Vec<Speaker> = crate::personas::builtins()
        .into_iter()
        .map(|p| Speaker {
            slug: p.slug,
            name: p.name,
        })
        .collect();
    speakers.extend(agents.into_iter().filter(|a| a.enabled).map(|a| Speaker {
        slug: a.slug,
        name: a.name,
    }));

    use ocsuite_module_sdk::SideEffect as S;
    let capabilities: Vec<Proposable> = catalog
        .iter()
        .filter(|m| m.enabled && m.name != "diagnostics")
        .flat_map(|m| m.capabilities.iter())
        .filter(|c| !matches!(c.side_effect, S::None | S::Read))
        .map(|c| Proposable {
            name: c.name.clone(),
            title: c.title.clone(),
        })
        .collect();

    // A figure's name in words: the company's own label when a snapshot holds it, else
    // what the rule engine says it is. Ratios get their unit ("6 months"), percentages "%".
    let reported: Vec<&ocsuite_module_sdk::Metric> =
        snapshots.iter().flat_map(|s| s.metrics.iter()).collect();
    let mut figure_labels = serde_json::Map::new();
    let mut units = serde_json::Map::new();
    let figures: Vec<Figure> = crate::triggers::rules::KNOWN
        .iter()
        .map(|(key, _module, about)| {
            let now = reported.iter().find(|m| m.key == *key);
            let label = now.map_or_else(|| (*about).to_owned(), |m| m.label.clone());
            figure_labels.insert((*key).to_owned(), label.into());
            let unit = if about.ends_with('%') {
                Some("%".to_owned())
            } else {
                now.filter(|m| matches!(m.value, ocsuite_module_sdk::MetricValue::Ratio { .. }))
                    .and_then(|m| m.unit.clone())
            };
            if let Some(u) = unit {
                units.insert((*key).to_owned(), u.into());
            }
            Figure {
                key: (*key).to_owned(),
                about: (*about).to_owned(),
                reported: now.is_some(),
            }
        })
        .collect();

    let speaker_names: serde_json::Map<String, serde_json::Value> = speakers
        .iter()
        .map(|s| (s.slug.clone(), s.name.clone().into()))
        .collect();
    let capability_titles: serde_json::Map<String, serde_json::Value> = catalog
        .iter()
        .flat_map(|m| m.capabilities.iter())
        .map(|c| (c.name.clone(), c.title.clone().into()))
        .collect();
    let names = serde_json::json!({
        "speakers": speaker_names,
        "capabilities": capability_titles,
        "figures": figure_labels,
        "units": units,
    })
    .to_string();

    Ok(render(&AutomationsPage {
        shell: Shell::new(&v, "Automations", "alerts"),
        is_admin: v.role.at_least(Role::Admin),
        speakers,
        capabilities,
        figures,
        names,
    }))
}
