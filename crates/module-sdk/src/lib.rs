//! The module contract between the ocsuite control plane and its modules.
//!
//! A module publishes a [`ModuleManifest`]: its name, version and [`CapabilitySpec`]s.
//! Each capability is named `module.capability`, carries its own semver version, a JSON
//! Schema for its input and its output, the [`SideEffect`] class that decides how careful
//! the control plane must be before running it, and how (if at all) it can be undone.
//!
//! The server runs a capability by handing the module a [`TaskExecutionRequest`]; the
//! module answers with a [`TaskExecutionResult`] or a [`TaskError`] that says whether a
//! retry could help. Both sides use the same validation helpers ([`Schema`],
//! [`ModuleManifest::validate`], [`resolve_version`]) so a module author can test a
//! manifest exactly as the server will judge it.
//!
//! Versioning rule: a capability's major version is its compatibility line. A request for
//! `1.2.0` may be served by `1.2.0` or any later `1.x`; never by `2.x`. Among the
//! compatible versions the router picks the highest. See `docs/module-contract.md`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use semver::Version;

/// The version of this contract. Bumped in major when a change would break modules.
pub const CONTRACT_VERSION: &str = "1.0.0";

/// What running a capability does to the world; decides the approval policy and the
/// risk hint a person sees before approving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SideEffect {
    /// Pure computation; nothing read or changed outside the call.
    None,
    /// Reads the tenant's data or a connected account; changes nothing.
    Read,
    /// Changes the tenant's own data (in ocsuite or a connected system).
    Write,
    /// Sends something outside the company (email, message, post); cannot be recalled.
    ExternalSend,
    /// Moves or commits money.
    Financial,
}

impl SideEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Write => "write",
            Self::ExternalSend => "external-send",
            Self::Financial => "financial",
        }
    }
}

/// How the effect of a capability can be reversed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Undo {
    /// It cannot be undone (an email, once sent, is sent).
    None,
    /// Running this other capability with the original output reverses it.
    Capability { capability: String },
    /// A person can reverse it by following these instructions.
    Instructions { text: String },
}

/// One thing a module can do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapabilitySpec {
    /// `module.capability`, lowercase letters, digits and `_`.
    pub name: String,
    pub version: Version,
    /// A short human title ("Send an email").
    pub title: String,
    pub description: String,
    /// JSON Schema (draft 2020-12 unless `$schema` says otherwise) for the input.
    pub input_schema: Value,
    /// JSON Schema for the output; the server refuses a result that does not match.
    pub output_schema: Value,
    pub side_effect: SideEffect,
    pub undo: Undo,
    /// Attempts before the task is dead-lettered (at least 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds one attempt may run before it is abandoned and retried.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u32,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_timeout_secs() -> u32 {
    60
}

impl CapabilitySpec {
    /// The module part of `module.capability`.
    pub fn module(&self) -> &str {
        self.name.split_once('.').map_or("", |(m, _)| m)
    }
}

/// What a module publishes about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleManifest {
    /// Lowercase letters, digits and `_`; the prefix of every capability name.
    pub name: String,
    pub version: Version,
    pub description: String,
    pub capabilities: Vec<CapabilitySpec>,
}

/// A manifest that breaks the contract.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// True when `name` has the form `module.capability`.
pub fn is_capability_name(name: &str) -> bool {
    name.split_once('.')
        .is_some_and(|(m, c)| is_ident(m) && is_ident(c))
}

impl ModuleManifest {
    /// Checks names, schemas, limits and that no capability version appears twice.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !is_ident(&self.name) {
            return Err(ManifestError(format!(
                "module name `{}` must be 1-64 lowercase letters, digits or `_`, starting with a letter",
                self.name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.capabilities {
            if !is_capability_name(&c.name) || c.module() != self.name {
                return Err(ManifestError(format!(
                    "capability `{}` must be named `{}.<capability>`",
                    c.name, self.name
                )));
            }
            if !seen.insert((c.name.clone(), c.version.clone())) {
                return Err(ManifestError(format!(
                    "capability `{}` version {} is declared twice",
                    c.name, c.version
                )));
            }
            if c.max_attempts == 0 || c.max_attempts > 25 {
                return Err(ManifestError(format!(
                    "capability `{}`: max_attempts must be 1-25",
                    c.name
                )));
            }
            if c.timeout_secs == 0 || c.timeout_secs > 3600 {
                return Err(ManifestError(format!(
                    "capability `{}`: timeout_secs must be 1-3600",
                    c.name
                )));
            }
            Schema::compile(&c.input_schema)
                .map_err(|e| ManifestError(format!("capability `{}` input schema: {e}", c.name)))?;
            Schema::compile(&c.output_schema).map_err(|e| {
                ManifestError(format!("capability `{}` output schema: {e}", c.name))
            })?;
            if let Undo::Capability { capability } = &c.undo
                && !is_capability_name(capability)
            {
                return Err(ManifestError(format!(
                    "capability `{}`: undo capability `{capability}` is not a capability name",
                    c.name
                )));
            }
        }
        Ok(())
    }
}

/// One place where a JSON value breaks its schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON Pointer into the value (`""` is the value itself, `/to/0` the first recipient).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A compiled JSON Schema. Remote `$ref`s are never fetched.
pub struct Schema(jsonschema::Validator);

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schema")
    }
}

/// At most this many violations are reported for one value.
pub const MAX_VIOLATIONS: usize = 50;

impl Schema {
    pub fn compile(schema: &Value) -> Result<Self, String> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err("a schema must be a JSON object or boolean".into());
        }
        jsonschema::validator_for(schema)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Every violation (up to [`MAX_VIOLATIONS`]), or `Ok` when `value` matches.
    pub fn validate(&self, value: &Value) -> Result<(), Vec<Violation>> {
        let v: Vec<Violation> = self
            .0
            .iter_errors(value)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                path: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            })
            .collect();
        if v.is_empty() { Ok(()) } else { Err(v) }
    }
}

/// Picks the version that serves a request: the highest of `available` with the same
/// major as `requested` and not lower than it; with no request, the highest overall.
pub fn resolve_version<'a>(
    available: impl IntoIterator<Item = &'a Version>,
    requested: Option<&Version>,
) -> Option<&'a Version> {
    available
        .into_iter()
        .filter(|v| match requested {
            None => true,
            Some(r) => v.major == r.major && *v >= r,
        })
        .max()
}

/// Parses a requested version leniently: `1`, `1.2` and `1.2.3` all work.
pub fn parse_requested_version(s: &str) -> Result<Version, String> {
    let s = s.trim().trim_start_matches(['^', '=', 'v']);
    let parts = s.split('.').count();
    let full = match parts {
        1 => format!("{s}.0.0"),
        2 => format!("{s}.0"),
        _ => s.to_owned(),
    };
    Version::parse(&full).map_err(|e| format!("`{s}` is not a version: {e}"))
}

/// What the server hands a module to run one attempt of a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskExecutionRequest {
    pub task_id: String,
    pub tenant_id: String,
    pub capability: String,
    pub version: Version,
    /// Already validated against the capability's input schema.
    pub input: Value,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Stable across attempts of one task: pass it to upstreams that deduplicate.
    pub idempotency_key: String,
}

/// A successful attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskExecutionResult {
    /// Must match the capability's output schema.
    pub output: Value,
    /// One human sentence about what happened, shown in the task timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl TaskExecutionResult {
    pub fn new(output: Value) -> Self {
        Self {
            output,
            summary: None,
        }
    }
}

/// A failed attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum TaskError {
    /// Might succeed later (an upstream timed out, a rate limit): retried with backoff.
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way every time (bad credentials, a refused request): no retry.
    #[error("{0}")]
    Permanent(String),
}

impl TaskError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// Progress a module reports while it runs (percent 0-100 and a short message).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub percent: u8,
    pub message: String,
}

/// Numbers a module reports for the dashboard and the board (pipeline, burn, runway…).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSnapshot {
    pub module: String,
    /// RFC 3339 time the numbers were computed.
    pub taken_at: String,
    pub metrics: Vec<Metric>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Stable machine key (`pipeline_value`, `runway_months`).
    pub key: String,
    pub label: String,
    pub value: MetricValue,
    /// Unit for display (`USD`, `months`, `%`, `leads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A metric's value. Money is minor units plus currency, never a float.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetricValue {
    Count { value: i64 },
    Money { minor_units: i64, currency: String },
    Ratio { value: f64 },
    Text { value: String },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cap(name: &str, version: &str) -> CapabilitySpec {
        CapabilitySpec {
            name: name.into(),
            version: Version::parse(version).unwrap(),
            title: "t".into(),
            description: "d".into(),
            input_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            side_effect: SideEffect::None,
            undo: Undo::None,
            max_attempts: 3,
            timeout_secs: 10,
        }
    }

    #[test]
    fn version_resolution_stays_within_major() {
        let vs: Vec<Version> = ["1.0.0", "1.4.2", "2.0.0", "1.10.0"]
            .iter()
            .map(|v| Version::parse(v).unwrap())
            .collect();
        let pick = |r: Option<&str>| {
            resolve_version(&vs, r.map(|r| parse_requested_version(r).unwrap()).as_ref())
                .map(ToString::to_string)
        };
        assert_eq!(pick(None).as_deref(), Some("2.0.0"));
        assert_eq!(pick(Some("1")).as_deref(), Some("1.10.0"));
        assert_eq!(pick(Some("1.5")).as_deref(), Some("1.10.0"));
        assert_eq!(pick(Some("1.11")), None);
        assert_eq!(pick(Some("3")), None);
        assert_eq!(pick(Some("^2.0.0")).as_deref(), Some("2.0.0"));
        assert!(parse_requested_version("one").is_err());
    }

    #[test]
    fn schema_reports_each_violation_with_its_path() {
        let s = Schema::compile(&json!({
            "type": "object",
            "required": ["to", "subject"],
            "properties": {"to": {"type": "array", "items": {"type": "string", "format": "email"}},
                           "subject": {"type": "string", "maxLength": 5}},
            "additionalProperties": false
        }))
        .unwrap();
        assert!(s.validate(&json!({"to": [], "subject": "hi"})).is_ok());
        let v = s
            .validate(&json!({"to": [3], "subject": "too long", "x": 1}))
            .unwrap_err();
        let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"/to/0"), "{v:?}");
        assert!(paths.contains(&"/subject"), "{v:?}");
        assert!(v.len() >= 3, "{v:?}");
        assert!(Schema::compile(&json!({"type": 7})).is_err());
        assert!(Schema::compile(&json!("string")).is_err());
    }

    #[test]
    fn manifest_validation_names_the_problem() {
        let mut m = ModuleManifest {
            name: "crm".into(),
            version: Version::new(1, 0, 0),
            description: "d".into(),
            capabilities: vec![cap("crm.add_lead", "1.0.0"), cap("crm.add_lead", "1.1.0")],
        };
        assert_eq!(m.validate(), Ok(()));
        m.capabilities.push(cap("crm.add_lead", "1.1.0"));
        assert!(m.validate().unwrap_err().0.contains("declared twice"));
        m.capabilities.pop();
        m.capabilities.push(cap("mail.send", "1.0.0"));
        assert!(m.validate().unwrap_err().0.contains("crm.<capability>"));
        m.capabilities.pop();
        let mut bad = cap("crm.x", "1.0.0");
        bad.input_schema = json!({"type": "nope"});
        m.capabilities.push(bad);
        assert!(m.validate().unwrap_err().0.contains("input schema"));
        assert!(!is_capability_name("Crm.x"));
        assert!(!is_capability_name("crm"));
        assert!(is_capability_name("crm.add_lead2"));
    }

    #[test]
    fn wire_format_is_stable() {
        assert_eq!(
            serde_json::to_value(SideEffect::ExternalSend).unwrap(),
            json!("external-send")
        );
        assert_eq!(
            serde_json::to_value(Undo::Capability {
                capability: "crm.delete_lead".into()
            })
            .unwrap(),
            json!({"kind": "capability", "capability": "crm.delete_lead"})
        );
        assert_eq!(
            serde_json::to_value(TaskError::Retryable("slow".into())).unwrap(),
            json!({"kind": "retryable", "message": "slow"})
        );
    }
}
