//! Action items: the JSON the model must return, how a near miss is repaired, and how
//! each item is stored — as a proposed task when it names a capability the tenant can
//! run with a valid input, otherwise as a manual follow-up (with the reason).

use chrono::{NaiveDate, Utc};
use ocsuite_module_sdk::Schema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ActionItem;
use super::prompts::Seat;
use crate::approvals::{self, Policy};
use crate::error::Result;
use crate::ids::{ActionItemId, MeetingId, TaskId};
use crate::modules::{self, Registry};
use crate::realtime::Event;
use crate::store::{TenantTx, scoped};
use crate::tasks::{NewTask, Status};

pub const MAX_ITEMS: usize = 8;

/// The schema sent as `response_format` and checked on the answer. Every field is
/// required (nullable where optional) and no others are allowed, as strict structured
/// output modes want; a capability's input travels as a JSON string so the schema stays
/// closed.
pub fn schema(owners: &[Seat]) -> Value {
    let owners: Vec<&str> = owners.iter().map(|s| s.slug.as_str()).collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "maxItems": MAX_ITEMS,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["title", "description", "owner", "capability", "input_json", "priority", "due_date", "expected_impact"],
                    "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": 200},
                        "description": {"type": "string", "maxLength": 2000},
                        "owner": {"type": "string", "enum": owners},
                        "capability": {"type": ["string", "null"], "maxLength": 200},
                        "input_json": {"type": ["string", "null"], "maxLength": 20000},
                        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                        "due_date": {"type": ["string", "null"], "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                        "expected_impact": {"type": "string", "maxLength": 1000}
                    }
                }
            }
        }
    })
}

/// One item as the model wrote it (after schema validation).
#[derive(Clone, Debug, Deserialize)]
pub struct RawItem {
    pub title: String,
    pub description: String,
    pub owner: String,
    pub capability: Option<String>,
    pub input_json: Option<String>,
    pub priority: String,
    pub due_date: Option<String>,
    pub expected_impact: String,
}

#[derive(Deserialize)]
struct Envelope {
    items: Vec<RawItem>,
}

/// The JSON object inside `text`: as is, or inside a ``` fence, or between the first
/// `{` and the last `}` (models that cannot be constrained wrap JSON in prose).
fn candidates(text: &str) -> Vec<&str> {
    let t = text.trim();
    let mut out = vec![t];
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        if let Some(end) = rest.rfind("```") {
            out.push(rest[..end].trim());
        }
    }
    if let (Some(a), Some(b)) = (t.find('{'), t.rfind('}'))
        && a < b
    {
        out.push(&t[a..=b]);
    }
    out
}

/// Parses and validates an answer. `Err` says what is wrong, for the re-ask.
pub fn parse(text: &str, schema: &Schema) -> std::result::Result<Vec<RawItem>, String> {
    let mut last = "the answer is not JSON".to_owned();
    for c in candidates(text) {
        let Ok(v) = serde_json::from_str::<Value>(c) else {
            continue;
        };
        if let Err(violations) = schema.validate(&v) {
            last = violations
                .iter()
                .take(5)
                .map(|v| format!("{}: {}", v.path, v.message))
                .collect::<Vec<_>>()
                .join("; ");
            continue;
        }
        return serde_json::from_value::<Envelope>(v)
            .map(|e| e.items)
            .map_err(|e| e.to_string());
    }
    Err(last)
}

/// What the offline provider's meeting yields: deterministic items built from the
/// agenda — one follow-up per member, and a record of the decision through
/// `diagnostics.echo` when that capability is available (so approving and running an
/// item works without a model).
pub fn offline(agenda: &str, members: &[Seat], can_echo: bool) -> Vec<RawItem> {
    let topic = crate::llm::offline::clip(agenda, 80);
    let due = (Utc::now().date_naive() + chrono::Duration::days(7))
        .format("%Y-%m-%d")
        .to_string();
    let mut items: Vec<RawItem> = members
        .iter()
        .take(MAX_ITEMS - 1)
        .map(|s| RawItem {
            title: format!("{}: assess \"{}\" from the {} seat", s.name, topic.trim(), s.name),
            description: format!(
                "(Offline mode: generated without a language model.) The {} works through the questions in their position above and reports back to the board.",
                s.title
            ),
            owner: s.slug.clone(),
            capability: None,
            input_json: None,
            priority: "medium".into(),
            due_date: Some(due.clone()),
            expected_impact: "A decision grounded in each officer's numbers.".into(),
        })
        .collect();
    if can_echo && let Some(chair) = members.first() {
        items.insert(
            0,
            RawItem {
                title: "Record the board's decision in the task history".into(),
                description: "(Offline mode.) Files the agenda and decision as a task, so the outcome shows in the meeting timeline.".into(),
                owner: chair.slug.clone(),
                capability: Some("diagnostics.echo".into()),
                input_json: Some(json!({"agenda": topic.trim(), "source": "board meeting"}).to_string()),
                priority: "low".into(),
                due_date: None,
                expected_impact: "A traceable record of the decision.".into(),
            },
        );
    }
    items
}

/// Stores the items of `meeting`: each with a capability the tenant can run and an
/// input its schema accepts becomes a task (proposed, or approved at once by an `auto`
/// policy); any other is a follow-up with the reason. Returns the items as stored and
/// the tasks' events.
pub async fn store(
    tx: &mut TenantTx,
    registry: &Registry,
    meeting: &MeetingId,
    raw: Vec<RawItem>,
    created_by: &str,
) -> Result<(Vec<ActionItem>, Vec<Event>)> {
    let policy: Policy = approvals::policy(tx).await?;
    let now = Utc::now();
    let mut out = Vec::new();
    let mut events = Vec::new();
    for (seq, r) in raw.into_iter().take(MAX_ITEMS).enumerate() {
        let id = ActionItemId::new();
        let due = r
            .due_date
            .filter(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
        let mut note = None;
        let mut task = None;
        let mut input: Option<Value> = None;
        if let Some(cap) = r.capability.as_deref().filter(|c| !c.is_empty()) {
            let parsed: Option<Value> = r
                .input_json
                .as_deref()
                .map(|j| serde_json::from_str(j).unwrap_or(Value::Null))
                .or(Some(json!({})));
            input = parsed.clone();
            match modules::resolve(registry, tx, cap, None).await {
                Err(e) => note = Some(format!("not run: {e}")),
                Ok(resolved) => match parsed.filter(Value::is_object) {
                    None => note = Some("not run: the proposed input is not a JSON object".into()),
                    Some(input) => match modules::validate(&resolved.input, &input, "input") {
                        Err(e) => {
                            note = Some(format!(
                                "not run: the proposed input does not fit {cap}: {e}"
                            ))
                        }
                        Ok(()) => {
                            let task_id = TaskId::new();
                            let version = resolved.spec.version.to_string();
                            let meeting_id = meeting.to_string();
                            let (status, evs) = approvals::propose(
                                tx,
                                &task_id,
                                &NewTask {
                                    capability: &resolved.spec.name,
                                    version: &version,
                                    input: &input,
                                    max_attempts: resolved.spec.max_attempts,
                                    idempotency_key: None,
                                    created_by,
                                    status: Status::Proposed,
                                    meeting_id: Some(&meeting_id),
                                    conversation_id: None,
                                    undo_of: None,
                                },
                                &resolved.spec,
                                &policy,
                            )
                            .await?;
                            events.extend(evs);
                            task = Some((task_id, status));
                        }
                    },
                },
            }
        }
        tx.execute(
            scoped("INSERT INTO action_items (tenant_id, id, meeting_id, seq, title, description, owner_persona, capability, input, \
                 priority, due_date, expected_impact, task_id, note, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)")
                .bind(&id)
                .bind(meeting)
                .bind(seq as i64)
                .bind(r.title.as_str())
                .bind(r.description.as_str())
                .bind(r.owner.as_str())
                .bind(r.capability.clone())
                .bind(input.as_ref().map(Value::to_string))
                .bind(r.priority.as_str())
                .bind(due.clone())
                .bind(r.expected_impact.as_str())
                .bind(task.as_ref().map(|(t, _)| t.to_string()))
                .bind(note.clone())
                .bind(now),
        )
        .await?;
        out.push(ActionItem {
            id: id.to_string(),
            title: r.title,
            description: r.description,
            owner_persona: r.owner,
            capability: r.capability,
            input,
            priority: r.priority,
            due_date: due,
            expected_impact: r.expected_impact,
            task_status: task.as_ref().map(|(_, s)| s.as_str().to_owned()),
            task_id: task.map(|(t, _)| t.to_string()),
            task_error: None,
            note,
        });
    }
    Ok((out, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats() -> Vec<Seat> {
        ["ceo", "cfo"]
            .iter()
            .map(|s| Seat {
                slug: s.to_string(),
                name: s.to_uppercase(),
                title: s.to_string(),
            })
            .collect()
    }

    fn item() -> Value {
        json!({"title": "Cut costs", "description": "d", "owner": "cfo", "capability": null, "input_json": null,
               "priority": "high", "due_date": "2026-12-01", "expected_impact": "more runway"})
    }

    #[test]
    fn parses_clean_fenced_and_wrapped_json_and_explains_the_rest() {
        let s = Schema::compile(&schema(&seats())).unwrap();
        let clean = json!({"items": [item()]}).to_string();
        assert_eq!(parse(&clean, &s).unwrap().len(), 1);
        assert_eq!(
            parse(&format!("```json\n{clean}\n```"), &s).unwrap().len(),
            1
        );
        assert_eq!(
            parse(&format!("Here you go: {clean} Hope it helps."), &s)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse("no json here", &s).unwrap_err(),
            "the answer is not JSON"
        );
        let mut bad = item();
        bad["owner"] = json!("janitor");
        let e = parse(&json!({"items": [bad]}).to_string(), &s).unwrap_err();
        assert!(e.contains("owner"), "{e}");
        let e = parse("{\"items\": [", &s).unwrap_err();
        assert_eq!(e, "the answer is not JSON");
    }

    #[test]
    fn offline_items_are_deterministic_and_valid() {
        let s = Schema::compile(&schema(&seats())).unwrap();
        let a = offline("Should we raise prices?", &seats(), true);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].capability.as_deref(), Some("diagnostics.echo"));
        let v = json!({"items": a.iter().map(|i| json!({"title": i.title, "description": i.description, "owner": i.owner,
            "capability": i.capability, "input_json": i.input_json, "priority": i.priority, "due_date": i.due_date,
            "expected_impact": i.expected_impact})).collect::<Vec<_>>()});
        assert!(s.validate(&v).is_ok());
        assert_eq!(offline("x", &seats(), false).len(), 2);
    }
}
