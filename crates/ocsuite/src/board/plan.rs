//! Planning a meeting: the checks and reads that come before its first model call,
//! shared by the API (a person calls it) and by triggers and alerts (the company's
//! automations call it).

use serde::Deserialize;
use serde_json::json;

use super::meeting::Plan;
use super::prompts::CapabilityLine;
use super::{MAX_AGENDA_CHARS, MAX_CONTEXT_CHARS, MAX_MEMBERS};
use crate::agents::{self, Speaker};
use crate::error::{AppError, Result};
use crate::ids::{MeetingId, TenantId};
use crate::llm::{ChatMessage, Role as LlmRole};
use crate::modules;
use crate::state::AppState;
use crate::store::{TenantTx, scoped};
use crate::tenancy::{Role, tenants};
use crate::usage;

/// Capabilities offered to the model for action items (the prompt stays bounded).
const MAX_PROMPT_CAPABILITIES: usize = 40;

#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeetingIn {
    /// What the board should decide.
    pub agenda: String,
    /// Members by slug (built-in personas or custom agents); default CEO, CFO, CMO.
    #[serde(default)]
    pub personas: Option<Vec<String>>,
    /// 1 (positions) or 2 (positions, then answers to each other); default 1.
    #[serde(default)]
    pub rounds: Option<u32>,
    /// Background for this meeting (figures, constraints).
    #[serde(default)]
    pub context: Option<String>,
    /// Who closes the meeting; default the CEO.
    #[serde(default)]
    pub chair: Option<String>,
}

fn bad(code: &'static str, message: impl Into<String>) -> AppError {
    AppError::bad_request(code, message)
}

/// Checks `input` and resolves everything the meeting needs; the meeting row and its
/// token hold are written in the returned transaction, which [`super::meeting::run`]
/// commits beside the first model calls. `by` is who called it (`user:…`,
/// `trigger:…`), `received` when the request arrived (overhead counts from there).
pub async fn prepare(
    state: &AppState,
    tenant: &TenantId,
    role: Role,
    by: String,
    input: MeetingIn,
    received: std::time::Instant,
) -> Result<(Plan, TenantTx)> {
    let agenda = input.agenda.trim().to_owned();
    if agenda.is_empty() {
        return Err(bad(
            "empty_agenda",
            "agenda is empty: say what the board should decide",
        ));
    }
    if agenda.chars().count() > MAX_AGENDA_CHARS {
        return Err(bad(
            "agenda_too_long",
            format!("agenda is longer than {MAX_AGENDA_CHARS} characters"),
        ));
    }
    let context = input
        .context
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if context
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CONTEXT_CHARS)
    {
        return Err(bad(
            "context_too_long",
            format!("context is longer than {MAX_CONTEXT_CHARS} characters"),
        ));
    }
    let rounds = input.rounds.unwrap_or(1);
    if !(1..=2).contains(&rounds) {
        return Err(bad("invalid_rounds", "rounds must be 1 or 2"));
    }
    let slugs = input
        .personas
        .unwrap_or_else(|| vec!["ceo".into(), "cfo".into(), "cmo".into()]);
    if slugs.is_empty() {
        return Err(bad("no_members", "name at least one persona to sit"));
    }
    if slugs.len() > MAX_MEMBERS {
        return Err(bad(
            "too_many_members",
            format!("at most {MAX_MEMBERS} members can sit at one meeting"),
        ));
    }

    // Retrieval first: it may wait on the embedding model, and holds no transaction.
    let question = match &context {
        Some(c) => format!("{agenda}\n{c}"),
        None => agenda.clone(),
    };
    let grounding =
        crate::knowledge::grounding::Grounding::retrieve(&state.knowledge, tenant, &question).await;
    let mut tx = state.store.tenant(tenant).await?;
    let mut members: Vec<Speaker> = Vec::new();
    for slug in &slugs {
        if members.iter().any(|m| &m.persona.slug == slug) {
            return Err(bad("duplicate_member", format!("{slug} is listed twice")));
        }
        let s = agents::speaker(&mut tx, slug).await?.ok_or_else(|| {
            bad(
                "unknown_persona",
                format!(
                    "no persona or enabled agent `{}` in this company (see GET /api/v1/c-suite and /api/v1/agents)",
                    slug.chars().take(64).collect::<String>()
                ),
            )
        })?;
        members.push(s);
    }
    let chair_slug = input.chair.unwrap_or_else(|| "ceo".into());
    let seated = members
        .iter()
        .find(|m| m.persona.slug == chair_slug)
        .cloned();
    let chair = match seated {
        Some(s) => Some(s),
        None => agents::speaker(&mut tx, &chair_slug).await?,
    };
    let chair = chair.ok_or_else(|| {
        bad(
            "unknown_persona",
            format!(
                "no persona `{}` to chair",
                chair_slug.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let company = tenants::get(&mut tx, role).await?;
    let figures = crate::metrics::prompt_figures(&mut tx).await?;
    let catalog = modules::catalog(&state.registry, &mut tx).await?;
    let can_echo = catalog
        .iter()
        .any(|m| m.enabled && m.capabilities.iter().any(|c| c.name == "diagnostics.echo"));
    // Members may look things up in their turns (read-only tools); they propose work
    // through the meeting's action items, not mid-turn.
    let toolboxes: Vec<agents::tools::Toolbox> = members
        .iter()
        .map(|m| agents::tools::Toolbox::from_catalog(&catalog, m.capabilities.clone()).read_only())
        .collect();
    let capabilities: Vec<CapabilityLine> = catalog
        .iter()
        .filter(|m| m.enabled && m.name != "diagnostics")
        .flat_map(|m| m.capabilities.iter())
        .take(MAX_PROMPT_CAPABILITIES)
        .map(|c| CapabilityLine {
            name: c.name.clone(),
            side_effect: c.side_effect.as_str().to_owned(),
            description: c.description.clone(),
            input_schema: c.input_schema.to_string(),
        })
        .collect();

    // Reserve what the whole meeting may use: every turn, the synthesis and two
    // extraction calls, each at its prompt estimate plus its answer limit.
    let probe = vec![
        ChatMessage::new(
            LlmRole::System,
            crate::personas::system_prompt(
                &chair.persona,
                &company.name,
                &company.profile,
                chair.additions.as_deref(),
                figures.as_deref(),
                grounding.prompt_block().as_deref(),
            ),
        ),
        ChatMessage::new(
            LlmRole::User,
            format!("{agenda}{}", context.clone().unwrap_or_default()),
        ),
    ];
    let per_call = crate::llm::estimate_prompt_tokens(&probe) + 1500;
    let calls = members.len() as u32 * rounds + 3;
    let reserve = per_call.saturating_mul(calls);
    usage::check(&mut tx, &state.meter, reserve).await?;
    let reservation = usage::hold(&mut tx, reserve).await?;

    let id = MeetingId::new();
    let offline = state.llm.name() == "offline";
    tx.execute(
        scoped("INSERT INTO meetings (tenant_id, id, agenda, context, personas, rounds, chair, status, offline, prompt_tokens, \
             completion_tokens, created_by, created_at, citations) VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, 0, 0, $9, $10, $11)")
            .bind(&id)
            .bind(agenda.as_str())
            .bind(context.clone())
            .bind(json!(slugs).to_string())
            .bind(i64::from(rounds))
            .bind(chair.persona.slug.as_str())
            .bind(offline)
            .bind(by.as_str())
            .bind(chrono::Utc::now())
            .bind(grounding.stored()),
    )
    .await?;

    let plan = Plan {
        state: state.clone(),
        tenant: tenant.clone(),
        id,
        agenda,
        context,
        members,
        chair,
        rounds,
        company: company.name,
        profile: company.profile,
        figures,
        documents: grounding.prompt_block(),
        grounding,
        by,
        reservation,
        offline,
        capabilities,
        toolboxes,
        can_echo,
        received,
    };
    Ok((plan, tx))
}

/// Runs a planned meeting that nobody watches live (an automation called it, or an
/// alert was escalated); resolves when the meeting has ended and its record is stored.
pub async fn run_unwatched(plan: Plan, tx: TenantTx) {
    let (out, mut rx) = tokio::sync::mpsc::channel(256);
    let run = tokio::spawn(super::meeting::run(plan, tx, out));
    while rx.recv().await.is_some() {}
    if let Err(e) = run.await {
        tracing::warn!(error = %e, "an unwatched meeting stopped abnormally");
    }
}
