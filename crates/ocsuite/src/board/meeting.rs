//! Running one meeting: the members' rounds (concurrent, streamed side by side), the
//! chair's synthesis, the action items, and the record of it all.
//!
//! SSE events: `meeting_start`, `citations {items, mode, note}` (the passages every member
//! read, cited as `[n]`), then per turn `turn_start`, `delta {persona, text}`,
//! `turn_end {persona, round, usage, status}` (a failed turn also sends a non-final
//! `error {persona, round, code, message}` and the meeting goes on without it);
//! `synthesis_start`, `delta {persona: "chair"}`, `synthesis_end`; `action_items`;
//! `meeting_end`. A final `error` (no `persona`) ends a meeting that could not finish.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::response::sse;
use ocsuite_module_sdk::Schema;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::items::{self, RawItem};
use super::prompts::{self, CapabilityLine, Seat};
use crate::agents::Speaker;
use crate::agents::tools::Toolbox;
use crate::ids::{MeetingId, TenantId};
use crate::llm::{ChatMessage, ChatRequest, JsonSchema, Role, StreamEvent, ToolCall, Usage};
use crate::personas;
use crate::state::AppState;
use crate::store::TenantTx;
use crate::tenancy::tenants::Profile;

/// A member's answer is capped at this unless their settings say otherwise.
pub(super) const TURN_MAX_TOKENS: u32 = 700;
const SYNTHESIS_MAX_TOKENS: u32 = 900;
const EXTRACTION_MAX_TOKENS: u32 = 2500;

pub type Out = mpsc::Sender<std::result::Result<sse::Event, Infallible>>;

/// Everything a meeting needs, resolved and checked by the route before it starts.
pub struct Plan {
    pub state: AppState,
    pub tenant: TenantId,
    pub id: MeetingId,
    pub agenda: String,
    pub context: Option<String>,
    pub members: Vec<Speaker>,
    pub chair: Speaker,
    pub rounds: u32,
    pub company: String,
    pub profile: Profile,
    /// The modules' latest figures, for every member's prompt.
    pub figures: Option<String>,
    /// The passages retrieved for the agenda (every member reads the same ones).
    pub grounding: crate::knowledge::grounding::Grounding,
    /// `grounding`'s prompt block, built once.
    pub documents: Option<String>,
    /// `user:…` / `api_key:…`: who called the meeting.
    pub by: String,
    pub reservation: String,
    pub offline: bool,
    /// Capabilities the items may propose.
    pub capabilities: Vec<CapabilityLine>,
    /// Each member's read-only tools, in `members` order.
    pub toolboxes: Vec<Toolbox>,
    /// Whether `diagnostics.echo` is available (the offline meeting's runnable item).
    pub can_echo: bool,
    /// When the request arrived: overhead counts from here.
    pub received: Instant,
}

pub fn seat(s: &Speaker) -> Seat {
    Seat {
        slug: s.persona.slug.clone(),
        name: s.persona.name.clone(),
        title: s.persona.title.clone(),
    }
}

/// One finished turn.
pub(super) struct TurnOut {
    pub(super) seat: Seat,
    pub(super) round: i64,
    pub(super) text: String,
    pub(super) model: String,
    pub(super) usage: Usage,
    pub(super) error: Option<(String, String)>,
    pub(super) latency_ms: i64,
}

pub(super) struct Client {
    out: Out,
    alive: bool,
}

impl Client {
    /// Sends while the client listens; a meeting outlives its client (it is stored).
    pub(super) async fn send(&mut self, name: &str, data: Value) {
        if self.alive {
            let ev = sse::Event::default().event(name).data(data.to_string());
            self.alive = self.out.send(Ok(ev)).await.is_ok();
        }
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "estimated": u.estimated})
}

impl Plan {
    fn model_for(&self, s: &Speaker) -> String {
        if self.offline {
            "offline".into()
        } else {
            s.persona
                .model
                .clone()
                .unwrap_or_else(|| self.state.config.llm_model.clone())
        }
    }

    pub(super) fn request(&self, s: &Speaker, user: String, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            model: self.model_for(s),
            messages: vec![
                ChatMessage::new(
                    Role::System,
                    personas::system_prompt(
                        &s.persona,
                        &self.company,
                        &self.profile,
                        s.additions.as_deref(),
                        self.figures.as_deref(),
                        self.documents.as_deref(),
                    ),
                ),
                ChatMessage::new(Role::User, user),
            ],
            temperature: s.persona.temperature,
            max_tokens: Some(s.persona.max_tokens.unwrap_or(max_tokens).min(max_tokens)),
            json_schema: None,
            tools: Vec::new(),
        }
    }

    /// Runs turns at once, relaying their deltas as they come; returns them in the
    /// given order, and how long the phase waited on the model.
    async fn phase(
        &self,
        client: &mut Client,
        turns: Vec<(Seat, i64, ChatRequest)>,
        label: Option<&str>,
    ) -> (Vec<TurnOut>, Duration) {
        let started = Instant::now();
        let mut streams = tokio_stream::StreamMap::new();
        let mut outs = Vec::with_capacity(turns.len());
        // Per turn: its request (grows with tool steps), the step's calls and text start.
        let mut live: Vec<(ChatRequest, Vec<ToolCall>, usize, u32)> = Vec::new();
        for (i, (seat, round, req)) in turns.into_iter().enumerate() {
            if label.is_none() {
                client
                    .send("turn_start", json!({"persona": seat.slug, "round": round}))
                    .await;
            }
            let prompt_estimate = crate::llm::estimate_prompt_tokens(&req.messages);
            streams.insert(i, ReceiverStream::new(self.state.llm.stream(req.clone())));
            live.push((req.clone(), Vec::new(), 0, 0));
            outs.push((
                TurnOut {
                    seat,
                    round,
                    text: String::new(),
                    model: req.model,
                    usage: Usage {
                        prompt_tokens: prompt_estimate,
                        completion_tokens: 0,
                        estimated: true,
                    },
                    error: Some((
                        "upstream_cut".into(),
                        "the model stream ended without finishing".into(),
                    )),
                    latency_ms: 0,
                },
                false,
            ));
        }
        while let Some((i, ev)) = streams.next().await {
            let (t, reported) = &mut outs[i];
            let who = label.unwrap_or(&t.seat.slug).to_owned();
            match ev {
                StreamEvent::Delta(d) => {
                    t.text.push_str(&d);
                    client
                        .send("delta", json!({"persona": who, "text": d}))
                        .await;
                }
                StreamEvent::Usage(u) => {
                    if *reported {
                        t.usage.prompt_tokens += u.prompt_tokens;
                        t.usage.completion_tokens += u.completion_tokens;
                        t.usage.estimated |= u.estimated;
                    } else {
                        t.usage = u;
                    }
                    *reported = true;
                }
                StreamEvent::ToolCall(c) => live[i].1.push(c),
                StreamEvent::Done { .. }
                    if !live[i].1.is_empty() && !live[i].0.tools.is_empty() =>
                {
                    // A member looked something up: run it and continue the turn.
                    let (req, calls, from, step) = &mut live[i];
                    let calls = std::mem::take(calls);
                    let said = t.text.get(*from..).unwrap_or_default().to_owned();
                    *from = t.text.len();
                    *step += 1;
                    let slug = t.seat.slug.clone();
                    let step = *step;
                    let mut next = std::mem::take(req);
                    self.use_tools(client, &slug, &mut next, said, calls, step)
                        .await;
                    streams.insert(i, ReceiverStream::new(self.state.llm.stream(next.clone())));
                    live[i].0 = next;
                }
                StreamEvent::Done { .. } => {
                    t.error = None;
                    t.latency_ms = started.elapsed().as_millis() as i64;
                }
                StreamEvent::Error(e) => {
                    t.error = Some((e.code.to_owned(), e.message));
                    t.latency_ms = started.elapsed().as_millis() as i64;
                }
            }
        }
        let waited = started.elapsed();
        let mut done = Vec::with_capacity(outs.len());
        for (mut t, reported) in outs {
            if !reported {
                t.usage.completion_tokens = crate::llm::estimate_tokens(&t.text);
            }
            if label.is_none() {
                if let Some((code, message)) = &t.error {
                    client
                        .send(
                            "error",
                            json!({"persona": t.seat.slug, "round": t.round, "code": code, "message": message}),
                        )
                        .await;
                }
                client
                    .send(
                        "turn_end",
                        json!({"persona": t.seat.slug, "round": t.round, "usage": usage_json(&t.usage),
                               "status": if t.error.is_some() { "failed" } else { "complete" }}),
                    )
                    .await;
            }
            done.push(t);
        }
        (done, waited)
    }

    /// Asks for the action items as JSON; re-asks once with what was wrong. `Err` when
    /// no valid answer came (nothing half-parsed is ever kept).
    async fn extract(
        &self,
        synthesis: &str,
        owners: &[Seat],
        used: &mut Vec<(String, String, Usage)>,
    ) -> std::result::Result<Vec<RawItem>, String> {
        if self.offline {
            let seats: Vec<Seat> = self.members.iter().map(seat).collect();
            return Ok(items::offline(&self.agenda, &seats, self.can_echo));
        }
        let schema_value = items::schema(owners);
        let schema = Schema::compile(&schema_value)?;
        let mut messages = vec![
            ChatMessage::new(Role::System, prompts::EXTRACTION_SYSTEM),
            ChatMessage::new(
                Role::User,
                prompts::extraction(&self.agenda, synthesis, owners, &self.capabilities),
            ),
        ];
        let mut last = String::new();
        for attempt in 0..2 {
            let req = ChatRequest {
                model: self.model_for(&self.chair),
                messages: messages.clone(),
                temperature: Some(0.1),
                max_tokens: Some(EXTRACTION_MAX_TOKENS),
                json_schema: Some(JsonSchema {
                    name: "action_items",
                    schema: schema_value.clone(),
                }),
                tools: Vec::new(),
            };
            let (text, usage, error) =
                crate::llm::collect(self.state.llm.stream(req.clone())).await;
            used.push((self.chair.persona.slug.clone(), req.model.clone(), usage));
            if let Some(e) = error {
                return Err(format!("the model call failed: {e}"));
            }
            match items::parse(&text, &schema) {
                Ok(items) => return Ok(items),
                Err(why) if attempt == 0 => {
                    messages.push(ChatMessage::new(Role::Assistant, text));
                    messages.push(ChatMessage::new(
                        Role::User,
                        format!("That answer is not valid: {why}. Reply again with only the corrected JSON object, matching the schema."),
                    ));
                    last = why;
                }
                Err(why) => last = why,
            }
        }
        Err(format!(
            "the model did not return valid action items after a retry ({last})"
        ))
    }
}

/// Runs the meeting to its end, streaming to `out` while the client listens. `setup`
/// holds the meeting row and the token hold: it commits while the first turns stream,
/// and the meeting's record waits for it.
pub async fn run(plan: Plan, setup_tx: TenantTx, out: Out) {
    let started = plan.received;
    let setup = started.elapsed();
    let committed = tokio::spawn(setup_tx.commit());
    let mut client = Client { out, alive: true };
    let seats: Vec<Seat> = plan.members.iter().map(seat).collect();
    client
        .send(
            "meeting_start",
            json!({
                "meeting_id": plan.id,
                "personas": plan.members.iter().map(|m| json!({"slug": m.persona.slug, "name": m.persona.name, "title": m.persona.title})).collect::<Vec<_>>(),
                "chair": plan.chair.persona.slug,
                "rounds": plan.rounds,
                "offline": plan.offline,
            }),
        )
        .await;
    client.send("citations", plan.grounding.event()).await;
    let mut waited = Duration::ZERO;
    let mut all: Vec<TurnOut> = Vec::new();

    // Round 1: positions.
    let turns = plan
        .members
        .iter()
        .zip(&seats)
        .map(|(m, s)| {
            let user = prompts::position(&plan.agenda, plan.context.as_deref(), &seats, s);
            (s.clone(), 1, plan.member_request(m, user))
        })
        .collect();
    let (round1, w) = plan.phase(&mut client, turns, None).await;
    waited += w;
    // Round 2: answers to the others.
    if plan.rounds >= 2 {
        let turns = plan
            .members
            .iter()
            .zip(&seats)
            .map(|(m, s)| {
                let others: Vec<(Seat, String)> = round1
                    .iter()
                    .filter(|t| t.seat.slug != s.slug && t.error.is_none())
                    .map(|t| (t.seat.clone(), t.text.clone()))
                    .collect();
                let user = prompts::response(&plan.agenda, s, &others);
                (s.clone(), 2, plan.member_request(m, user))
            })
            .collect();
        let (round2, w) = plan.phase(&mut client, turns, None).await;
        waited += w;
        all.extend(round1);
        all.extend(round2);
    } else {
        all.extend(round1);
    }

    // The chair's synthesis.
    let minutes: Vec<(Seat, i64, String)> = all
        .iter()
        .filter(|t| t.error.is_none())
        .map(|t| (t.seat.clone(), t.round, t.text.clone()))
        .collect();
    let absent: Vec<Seat> = seats
        .iter()
        .filter(|s| !minutes.iter().any(|(m, _, _)| m.slug == s.slug))
        .cloned()
        .collect();
    let chair_seat = seat(&plan.chair);
    client
        .send("synthesis_start", json!({"persona": chair_seat.slug}))
        .await;
    let user = prompts::synthesis(&plan.agenda, plan.context.as_deref(), &minutes, &absent);
    let req = plan.request(&plan.chair, user, SYNTHESIS_MAX_TOKENS);
    let (mut synth, w) = plan
        .phase(
            &mut client,
            vec![(chair_seat.clone(), 0, req)],
            Some("chair"),
        )
        .await;
    waited += w;
    let synthesis = synth.pop();
    if let Some(s) = &synthesis {
        client
            .send(
                "synthesis_end",
                json!({"persona": chair_seat.slug, "usage": usage_json(&s.usage),
                       "status": if s.error.is_some() { "failed" } else { "complete" }}),
            )
            .await;
    }
    let synthesis_ok = synthesis
        .as_ref()
        .filter(|s| s.error.is_none() && !s.text.trim().is_empty())
        .map(|s| s.text.clone());

    // Action items.
    let owners: Vec<Seat> = {
        let mut o = seats.clone();
        if !o.iter().any(|s| s.slug == chair_seat.slug) {
            o.push(chair_seat.clone());
        }
        o
    };
    let mut extra_usage = Vec::new();
    let extraction_started = Instant::now();
    let extracted = match &synthesis_ok {
        Some(text) => Some(plan.extract(text, &owners, &mut extra_usage).await),
        None => None,
    };
    if !plan.offline {
        waited += extraction_started.elapsed();
    }
    if let Some(s) = synthesis {
        all.push(s);
    }

    let total_ms = started.elapsed().as_millis() as i64;
    let overhead = started.elapsed().saturating_sub(waited);
    let overhead_ms = overhead.as_millis() as i64;
    let storing = Instant::now();
    if !matches!(committed.await, Ok(Ok(()))) {
        tracing::error!(meeting = %plan.id, "storing a meeting's start failed");
        client
            .send(
                "error",
                json!({"code": "not_stored", "message": "the meeting could not be saved; try again", "meeting_id": plan.id}),
            )
            .await;
        return;
    }
    let stored = super::record::record(
        &plan,
        &all,
        synthesis_ok.as_deref(),
        extracted.clone(),
        &extra_usage,
        total_ms,
        overhead_ms,
    )
    .await;
    let stored_in = storing.elapsed();
    let mut by_persona: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for t in &all {
        let e = by_persona.entry(t.seat.slug.clone()).or_default();
        e.0 += t.usage.prompt_tokens;
        e.1 += t.usage.completion_tokens;
    }
    for (p, _, u) in &extra_usage {
        let e = by_persona.entry(p.clone()).or_default();
        e.0 += u.prompt_tokens;
        e.1 += u.completion_tokens;
    }
    let (prompt, completion) = by_persona
        .values()
        .fold((0u32, 0u32), |a, b| (a.0 + b.0, a.1 + b.1));
    match stored {
        Err(e) => {
            tracing::error!(error = %e, meeting = %plan.id, "storing a meeting failed");
            super::record::mark_failed(&plan, "the meeting's record could not be stored").await;
            client
                .send(
                    "error",
                    json!({"code": "not_stored", "message": "the meeting could not be saved; try again", "meeting_id": plan.id}),
                )
                .await;
        }
        Ok(_) if synthesis_ok.is_none() => {
            let why = all
                .last()
                .and_then(|t| t.error.as_ref())
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| "the chair's synthesis was empty".into());
            client
                .send(
                    "error",
                    json!({"code": "synthesis_failed", "message": format!("the chair could not close the meeting: {why}"), "meeting_id": plan.id}),
                )
                .await;
        }
        Ok((items, extraction_error)) => {
            client
                .send(
                    "action_items",
                    json!({"items": items, "error": extraction_error}),
                )
                .await;
            client
                .send(
                    "meeting_end",
                    json!({
                        "meeting_id": plan.id,
                        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                  "by_persona": by_persona.iter().map(|(k, v)| (k.clone(), json!({"prompt_tokens": v.0, "completion_tokens": v.1}))).collect::<serde_json::Map<_, _>>()},
                        "duration_ms": total_ms,
                        // Everything but waiting for the model, up to storing the
                        // result (the final write included), in fractional ms.
                        "overhead_ms": (overhead + stored_in).as_secs_f64() * 1000.0,
                        // Its two largest parts: checks and setup before the first
                        // model call, and the final transaction.
                        "setup_ms": setup.as_secs_f64() * 1000.0,
                        "store_ms": stored_in.as_secs_f64() * 1000.0,
                        "offline": plan.offline,
                    }),
                )
                .await;
        }
    }
}
