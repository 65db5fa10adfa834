//! The onboarding wizard: company, business profile, meet the board, a first
//! connection, demo data. Each step saves through the API as it goes, and the wizard
//! starts at the first step not yet done, so leaving midway loses nothing.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Person, Redirected, render};
use crate::personas::Persona;
use crate::state::AppState;
use crate::tenancy::tenants::Profile;

pub const STEPS: [(&str, &str); 5] = [
    ("company", "Company"),
    ("profile", "Business profile"),
    ("board", "Meet the board"),
    ("connect", "Connect"),
    ("data", "Your data"),
];

#[derive(Template)]
#[template(path = "onboarding.html")]
struct Page {
    step: String,
    steps: Vec<(&'static str, &'static str)>,
    company: String,
    profile: Profile,
    personas: Vec<Persona>,
    providers: Vec<(String, String, String)>,
}

#[derive(Deserialize)]
pub struct StepQuery {
    step: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    person: Person,
    Query(q): Query<StepQuery>,
) -> Result<Response, Redirected> {
    let mut company = String::new();
    let mut profile = Profile::default();
    let mut providers = Vec::new();
    if let Some(t) = &person.active_tenant {
        let mut tx = state.store.tenant_read(t).await?;
        let c = crate::tenancy::tenants::get(&mut tx, crate::tenancy::Role::Owner).await?;
        company = c.name;
        profile = c.profile;
        for p in state.vault.providers().all() {
            let status = crate::connectors::by_provider(&mut tx, &p.name)
                .await?
                .map_or_else(|| "not_connected".to_owned(), |r| r.status);
            providers.push((p.name.clone(), p.display_name.clone(), status));
        }
        tx.commit().await?;
    }
    let first_open = if person.active_tenant.is_none() {
        "company"
    } else if profile.industry.is_none() && profile.goals.is_empty() {
        "profile"
    } else {
        "board"
    };
    let step = match q.step.as_deref() {
        // Nothing past the company step exists without a company.
        Some(s) if person.active_tenant.is_some() && STEPS.iter().any(|(k, _)| *k == s) => s,
        _ => first_open,
    };
    Ok(render(&Page {
        step: step.to_owned(),
        steps: STEPS.to_vec(),
        company,
        profile,
        personas: crate::personas::builtins()
            .into_iter()
            .filter(|p| ["ceo", "cfo", "cmo"].contains(&p.slug.as_str()))
            .collect(),
        providers,
    }))
}
