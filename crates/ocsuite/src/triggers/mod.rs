//! Triggers: the C-suite speaking up on its own.
//!
//! A trigger is a condition and an action. Conditions are a schedule (cron in an IANA
//! time zone, or every N hours), a rule over the modules' figures ([`rules`]), or a
//! platform event ([`events`]). Actions raise an alert, hold a board meeting, ask one
//! officer for a brief, propose a capability (never run unapproved) or send the digest.
//!
//! How firing stays exactly-once:
//! - Every firing is a row in `trigger_runs`, unique per trigger and *key* (the due time,
//!   the metric episode, the event's own key), inserted with its `run-trigger` job in one
//!   transaction. A second node, a restart or a replayed event finds the key taken.
//! - The scheduler ([`schedule::tick`]) claims a due trigger by moving `next_run_at` from
//!   the value it read to the next due time (compare-and-set), so of two nodes that read
//!   the same due trigger exactly one fires it. The next due time is computed from *now*,
//!   so a schedule missed while the server was down runs once, not once per missed slot.
//! - A metric condition fires when it *becomes* true (`firing` goes false → true, and
//!   `episode` counts), so a condition that stays true raises one alert.

pub mod events;
pub mod routes;
pub mod rules;
pub mod run;
mod runs;
pub mod schedule;

pub use runs::{Firing, Run, RunJob, get_run, runs, start_run};

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::alerts::{Evidence, Severity};
use crate::error::{AppError, Result};
use crate::ids::TriggerId;
use crate::store::{TenantTx, scoped};

/// How often a metric trigger is re-evaluated when no snapshot changed.
pub const METRIC_EVERY: Duration = Duration::minutes(15);
/// Attempts of one `run-trigger` job before it is dead-lettered.
pub const RUN_ATTEMPTS: u32 = 3;
const MAX_NAME_CHARS: usize = 120;
const MAX_TEMPLATE_CHARS: usize = 2000;

/// When a trigger fires.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A cron expression (five fields) in an IANA time zone, or every N hours.
    Schedule {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cron: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        every_hours: Option<u32>,
    },
    /// A rule over the modules' figures: `runway_months < 6`, or a figure that deviates
    /// more than `value` standard deviations from its trailing `window`-day mean.
    Metric {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        op: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<u32>,
    },
    /// A platform event ([`events::EVENTS`]).
    Event {
        event: String,
        /// `approval.waiting`: how long a proposal may wait.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minutes: Option<u32>,
        /// `usage.threshold`: 80 or 100 (% of the plan's monthly tokens).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<u32>,
    },
}

/// What a trigger does when it fires. Titles, agendas and prompts are templates:
/// `{{trigger}}`, `{{summary}}`, `{{metric}}`, `{{value}}`, `{{event}}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Alert {
        #[serde(default)]
        severity: Severity,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    BoardMeeting {
        agenda: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        personas: Option<Vec<String>>,
    },
    Brief {
        persona: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
    /// Proposes the capability for a person to approve; it never runs unapproved.
    Propose {
        capability: String,
        #[serde(default)]
        #[schema(value_type = Object)]
        input: Value,
    },
    Digest {},
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Schedule { .. } => "schedule",
            Self::Metric { .. } => "metric",
            Self::Event { .. } => "event",
        }
    }

    fn event_type(&self) -> Option<&str> {
        match self {
            Self::Event { event, .. } => Some(event),
            _ => None,
        }
    }

    /// Checks and normalises the condition: a metric `rule` is parsed into its parts
    /// (and written back in canonical form), a schedule gets its default time zone.
    pub fn normalise(&mut self) -> Result<()> {
        match self {
            Self::Schedule {
                cron,
                timezone,
                every_hours,
            } => match (cron.as_deref(), *every_hours) {
                (Some(expr), None) => {
                    let tz = timezone.get_or_insert_with(|| "UTC".into());
                    parse_tz(tz)?;
                    parse_cron(expr)?;
                    *cron = Some(expr.trim().to_owned());
                    Ok(())
                }
                (None, Some(h)) if (1..=720).contains(&h) => {
                    *timezone = None;
                    Ok(())
                }
                (None, Some(_)) => Err(AppError::unprocessable(
                    "invalid_schedule",
                    "condition.every_hours",
                    "condition.every_hours must be between 1 and 720",
                )),
                _ => Err(AppError::unprocessable(
                    "invalid_schedule",
                    "condition",
                    "a schedule needs either `cron` (with an optional `timezone`) or `every_hours`, not both",
                )),
            },
            Self::Metric {
                rule,
                metric,
                op,
                value,
                window,
            } => {
                let parsed = rules::Rule::from_parts(
                    rule.as_deref(),
                    metric.as_deref(),
                    op.as_deref(),
                    *value,
                    *window,
                )?;
                *rule = Some(parsed.to_string());
                *metric = Some(parsed.metric.clone());
                *op = Some(parsed.op.as_str().to_owned());
                *value = Some(parsed.value);
                *window = parsed.window;
                Ok(())
            }
            Self::Event {
                event,
                minutes,
                percent,
            } => events::check(event, minutes, percent),
        }
    }

    /// The rule of a (normalised) metric condition.
    pub fn rule(&self) -> Option<rules::Rule> {
        match self {
            Self::Metric {
                metric: Some(m),
                op: Some(op),
                value: Some(v),
                window,
                ..
            } => rules::Rule::new(m, op, *v, *window).ok(),
            _ => None,
        }
    }

    /// When the scheduler should next look at a trigger with this condition, strictly
    /// after `after`; `None` for event triggers (events fire them).
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        match self {
            Self::Schedule {
                cron: Some(expr),
                timezone,
                ..
            } => {
                let tz = parse_tz(timezone.as_deref().unwrap_or("UTC"))?;
                let cron = parse_cron(expr)?;
                let next = cron
                    .find_next_occurrence(&after.with_timezone(&tz), false)
                    .map_err(|e| {
                        AppError::unprocessable(
                            "invalid_cron",
                            "condition.cron",
                            format!("`{expr}` never comes due: {e}"),
                        )
                    })?;
                Ok(Some(next.with_timezone(&Utc)))
            }
            Self::Schedule {
                every_hours: Some(h),
                ..
            } => Ok(Some(after + Duration::hours(i64::from(*h)))),
            Self::Schedule { .. } => Ok(None),
            Self::Metric { .. } => Ok(Some(after + METRIC_EVERY)),
            Self::Event { .. } => Ok(None),
        }
    }
}

fn parse_tz(tz: &str) -> Result<chrono_tz::Tz> {
    chrono_tz::Tz::from_str(tz.trim()).map_err(|_| {
        AppError::unprocessable(
            "invalid_timezone",
            "condition.timezone",
            format!(
                "`{}` is not an IANA time zone; use a name such as `Europe/Berlin`, `America/New_York` or `UTC`",
                tz.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// Five cron fields (minute hour day-of-month month day-of-week) or an alias such as
/// `@daily`; seconds are refused so no schedule fires more than once a minute.
fn parse_cron(expr: &str) -> Result<croner::Cron> {
    let expr = expr.trim();
    let shown: String = expr.chars().take(80).collect();
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && fields != 5 {
        return Err(AppError::unprocessable(
            "invalid_cron",
            "condition.cron",
            format!(
                "`{shown}` has {fields} fields; a cron expression has five: minute hour day-of-month month day-of-week (e.g. `0 9 * * MON`)"
            ),
        ));
    }
    croner::Cron::from_str(expr).map_err(|e| {
        let names = ["minute", "hour", "day-of-month", "month", "day-of-week"];
        // Name the first field that does not parse on its own.
        let part = expr
            .split_whitespace()
            .zip(names)
            .find(|(f, name)| {
                let mut probe = ["*"; 5];
                if let Some(i) = names.iter().position(|n| n == name) {
                    probe[i] = f;
                }
                croner::Cron::from_str(&probe.join(" ")).is_err()
            })
            .map(|(f, name)| format!(" (the {name} field `{f}`)"))
            .unwrap_or_default();
        AppError::unprocessable(
            "invalid_cron",
            "condition.cron",
            format!("`{shown}` is not a valid cron expression{part}: {e}"),
        )
    })
}

/// A trigger as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Trigger {
    pub id: TriggerId,
    pub name: String,
    pub condition: Condition,
    pub action: Action,
    pub paused: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_status: Option<String>,
    /// A metric condition that is true now (it fired and has not cleared).
    pub firing: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type Row = (
    TriggerId,
    String,
    String,
    String,
    bool,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    bool,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);
macro_rules! columns {
    () => {
        "id, name, condition, action, paused, next_run_at, last_run_at, last_status, firing, created_by, created_at, updated_at"
    };
}

fn from_row(r: Row) -> Result<Trigger> {
    Ok(Trigger {
        id: r.0,
        name: r.1,
        condition: serde_json::from_str(&r.2).map_err(AppError::internal)?,
        action: serde_json::from_str(&r.3).map_err(AppError::internal)?,
        paused: r.4,
        next_run_at: r.5,
        last_run_at: r.6,
        last_status: r.7,
        firing: r.8,
        created_by: r.9,
        created_at: r.10,
        updated_at: r.11,
    })
}

pub fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::invalid(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// Checks the action's own fields (the tenant-dependent parts, personas and
/// capabilities, are checked by the routes against the company's catalog).
pub fn check_action(action: &Action) -> Result<()> {
    let long = |field: &'static str, v: &str| {
        if v.chars().count() > MAX_TEMPLATE_CHARS {
            Err(AppError::unprocessable(
                "too_long",
                field,
                format!("{field} is longer than {MAX_TEMPLATE_CHARS} characters"),
            ))
        } else {
            Ok(())
        }
    };
    match action {
        Action::Alert { title, body, .. } => {
            long("action.title", title.as_deref().unwrap_or(""))?;
            long("action.body", body.as_deref().unwrap_or(""))
        }
        Action::BoardMeeting { agenda, .. } if agenda.trim().is_empty() => Err(
            AppError::unprocessable("empty_agenda", "action.agenda", "action.agenda is empty"),
        ),
        Action::BoardMeeting { agenda, .. } => long("action.agenda", agenda),
        Action::Brief { prompt, .. } => long("action.prompt", prompt.as_deref().unwrap_or("")),
        Action::Propose { input, .. } if !input.is_object() => Err(AppError::unprocessable(
            "invalid_input",
            "action.input",
            "action.input must be a JSON object (the capability's input)",
        )),
        Action::Propose { .. } | Action::Digest {} => Ok(()),
    }
}

pub struct NewTrigger {
    pub name: String,
    pub condition: Condition,
    pub action: Action,
    pub paused: bool,
    pub created_by: String,
}

pub async fn insert(tx: &mut TenantTx, t: NewTrigger, now: DateTime<Utc>) -> Result<Trigger> {
    let id = TriggerId::new();
    let next = t.condition.next_after(now)?;
    tx.execute(
        scoped("INSERT INTO triggers (tenant_id, id, name, kind, event_type, condition, action, paused, next_run_at, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)")
            .bind(&id)
            .bind(t.name.as_str())
            .bind(t.condition.kind())
            .bind(t.condition.event_type())
            .bind(serde_json::to_string(&t.condition).map_err(AppError::internal)?)
            .bind(serde_json::to_string(&t.action).map_err(AppError::internal)?)
            .bind(t.paused)
            .bind(next)
            .bind(t.created_by.as_str())
            .bind(now),
    )
    .await?;
    get(tx, &id).await
}

pub async fn get(tx: &mut TenantTx, id: &TriggerId) -> Result<Trigger> {
    let row: Option<Row> = tx
        .fetch_optional(
            scoped(concat!(
                "SELECT ",
                columns!(),
                " FROM triggers WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(id),
        )
        .await?;
    from_row(row.ok_or(AppError::NotFound("trigger"))?)
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Trigger>> {
    let rows: Vec<Row> = tx
        .fetch_all(scoped(concat!(
            "SELECT ",
            columns!(),
            " FROM triggers WHERE tenant_id = $1 ORDER BY created_at, id"
        )))
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// Writes a changed trigger back. A new condition or an unpause reschedules it from
/// `now`, and a new condition forgets whether the old one was firing.
pub async fn save(
    tx: &mut TenantTx,
    t: &Trigger,
    reschedule: bool,
    now: DateTime<Utc>,
) -> Result<Trigger> {
    let next = if reschedule {
        t.condition.next_after(now)?
    } else {
        t.next_run_at
    };
    tx.execute(
        scoped("UPDATE triggers SET name = $3, kind = $4, event_type = $5, condition = $6, action = $7, paused = $8, \
             next_run_at = $9, firing = CASE WHEN $10 THEN FALSE ELSE firing END, updated_at = $11 WHERE tenant_id = $1 AND id = $2")
            .bind(&t.id)
            .bind(t.name.as_str())
            .bind(t.condition.kind())
            .bind(t.condition.event_type())
            .bind(serde_json::to_string(&t.condition).map_err(AppError::internal)?)
            .bind(serde_json::to_string(&t.action).map_err(AppError::internal)?)
            .bind(t.paused)
            .bind(next)
            .bind(reschedule)
            .bind(now),
    )
    .await?;
    get(tx, &t.id).await
}

pub async fn delete(tx: &mut TenantTx, id: &TriggerId) -> Result<()> {
    let n = tx
        .execute(scoped("DELETE FROM triggers WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?;
    if n == 0 {
        return Err(AppError::NotFound("trigger"));
    }
    Ok(())
}

/// Fills a template's `{{placeholders}}` from the trigger and its evidence.
pub fn fill(template: &str, trigger: &str, evidence: &Evidence) -> String {
    let first = evidence.figures.first();
    template
        .replace("{{trigger}}", trigger)
        .replace("{{summary}}", &evidence.summary)
        .replace(
            "{{metric}}",
            first.map(|f| f.label.as_str()).unwrap_or_default(),
        )
        .replace(
            "{{value}}",
            first.map(|f| f.display.as_str()).unwrap_or_default(),
        )
        .replace(
            "{{event}}",
            evidence
                .event
                .as_ref()
                .and_then(|e| e["type"].as_str())
                .unwrap_or_default(),
        )
}

/// The evidence of a manual run: what the condition would see now.
pub fn manual_evidence(t: &Trigger) -> Evidence {
    Evidence {
        summary: format!("\"{}\" was run by hand.", t.name),
        event: Some(json!({"type": "manual"})),
        ..Evidence::default()
    }
}
