//! Cedar, compiled: the schema and floors parsed once, company policy sets parsed and
//! validated when saved and cached by version, requests evaluated against both.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};

use super::texts::{ACTIONS, DEFAULT_POLICY, FLOOR_PROBES, FLOORS, SCHEMA};

/// Who asks.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Principal {
    /// `user`, `api_key` or `agent` (a support session is a user with
    /// `context.impersonated`).
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub role: String,
    #[serde(default)]
    pub email: String,
    /// The principal's company; the evaluating company when absent.
    #[serde(default)]
    pub company: Option<String>,
}

/// What is acted on. Unused attributes stay empty or zero.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Resource {
    pub kind: String,
    pub id: String,
    pub operation: String,
    pub capability: String,
    pub side_effect: String,
    pub amount: i64,
    pub recipients: i64,
    pub provider: String,
    pub target_role: String,
    /// The resource's company; the evaluating company when absent.
    pub company: Option<String>,
}

/// The circumstances.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Circumstances {
    pub mfa: bool,
    pub impersonated: bool,
    pub ip: String,
    pub hour: i64,
    pub weekday: i64,
}

/// One question for the policy: may `principal` do `action` to `resource` now?
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Question {
    pub action: String,
    pub principal: Principal,
    pub resource: Resource,
    #[serde(default)]
    pub context: Circumstances,
}

/// The answer, with the policies that decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Answer {
    pub allowed: bool,
    /// The determining policies (`@id`s), sorted: the permits that allowed, or the
    /// forbids that denied; empty when nothing permitted (denied by default).
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that errs counts as not applying); any error denies.
    pub errors: Vec<String>,
}

/// A problem in policy text, with where it is.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The policy it is in, where known.
    pub policy: Option<String>,
}

pub struct Engine {
    validator: Validator,
    floors: PolicySet,
    default: Arc<PolicySet>,
    /// Floors plus the default, for companies without their own policy.
    default_combined: Arc<Compiled>,
    /// The schema's entity types, parsed once (parsing a name per request was a good
    /// share of an evaluation's time).
    types: Types,
}

struct Types {
    company: EntityTypeName,
    user: EntityTypeName,
    api_key: EntityTypeName,
    agent: EntityTypeName,
    resource: EntityTypeName,
    action: EntityTypeName,
}

impl Types {
    fn new() -> Result<Self, String> {
        let t =
            |n: &str| EntityTypeName::from_str(&format!("Ocsuite::{n}")).map_err(|e| e.to_string());
        Ok(Self {
            company: t("Company")?,
            user: t("User")?,
            api_key: t("ApiKey")?,
            agent: t("Agent")?,
            resource: t("Resource")?,
            action: t("Action")?,
        })
    }
}

fn line_col(src: &str, byte: usize) -> (usize, usize) {
    let before = src.get(..byte.min(src.len())).unwrap_or(src);
    (
        before.matches('\n').count() + 1,
        before.rsplit('\n').next().unwrap_or("").chars().count() + 1,
    )
}

fn problem(d: &dyn Diagnostic, src: &str, policy: Option<String>) -> Problem {
    let pos = d
        .labels()
        .and_then(|mut it| it.next())
        .map(|l| line_col(src, l.offset()));
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message = format!("{message} ({help})");
    }
    Problem {
        message,
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
        policy,
    }
}

/// Parses a policy text, giving each policy its `@id` (required, unique, not a floor's).
pub fn parse(src: &str) -> Result<PolicySet, Vec<Problem>> {
    let raw = PolicySet::from_str(src).map_err(|errs| {
        errs.iter()
            .map(|e| problem(e, src, None))
            .collect::<Vec<_>>()
    })?;
    if raw.templates().next().is_some() {
        return Err(vec![Problem {
            message: "templates (?principal, ?resource) are not supported".into(),
            line: None,
            column: None,
            policy: None,
        }]);
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for p in raw.policies() {
        let Some(id) = p.annotation("id").filter(|id| !id.trim().is_empty()) else {
            problems.push(Problem {
                message: "every policy needs an @id(\"…\") annotation naming it".into(),
                line: None,
                column: None,
                policy: Some(p.id().to_string()),
            });
            continue;
        };
        if !seen.insert(id.to_owned()) {
            problems.push(Problem {
                message: format!("two policies are named {id:?}; @id must be unique"),
                line: None,
                column: None,
                policy: Some(id.to_owned()),
            });
            continue;
        }
        out.push(p.new_id(PolicyId::new(id)));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    PolicySet::from_policies(out).map_err(|e| {
        vec![Problem {
            message: e.to_string(),
            line: None,
            column: None,
            policy: None,
        }]
    })
}

/// Policies to evaluate for one action.
pub trait ForAction {
    fn for_action(&self, action: &str) -> &PolicySet;
}

impl ForAction for PolicySet {
    fn for_action(&self, _action: &str) -> &PolicySet {
        self
    }
}

/// A policy set split by action: a request evaluates only the policies whose scope
/// can match its action (Cedar evaluates every policy it is given, and most name one
/// or a few actions). The answer is the same: a policy out of scope is neither
/// satisfied nor in error.
pub struct Compiled {
    pub all: PolicySet,
    by_action: HashMap<&'static str, PolicySet>,
}

impl Compiled {
    pub fn new(all: PolicySet) -> Self {
        let mut by_action = HashMap::new();
        for a in ACTIONS {
            let mut part = PolicySet::new();
            for p in all.policies() {
                let names = |u: &EntityUid| {
                    let id: &str = u.id().as_ref();
                    id == *a
                };
                let applies = match p.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(u) => names(&u),
                    ActionConstraint::In(list) => list.iter().any(names),
                };
                if applies {
                    // Ids are unique in `all`, so none clashes here.
                    let _ = part.add(p.clone());
                }
            }
            by_action.insert(*a, part);
        }
        Self { all, by_action }
    }
}

impl ForAction for Compiled {
    fn for_action(&self, action: &str) -> &PolicySet {
        self.by_action.get(action).unwrap_or(&self.all)
    }
}

fn merge(a: &PolicySet, b: &PolicySet) -> PolicySet {
    let mut out = a.clone();
    for p in b.policies() {
        // Ids are checked unique across both by `check_company` before this is called.
        let _ = out.add(p.clone());
    }
    out
}

impl Engine {
    /// Parses the schema, floors and default policy; a failure is a bug in this file's
    /// texts (a unit test parses them).
    pub fn new() -> Result<Self, String> {
        let schema = Schema::from_str(SCHEMA).map_err(|e| format!("policy schema: {e}"))?;
        let validator = Validator::new(schema);
        let floors = parse(FLOORS).map_err(|p| format!("floors: {:?}", p))?;
        let default = parse(DEFAULT_POLICY).map_err(|p| format!("default policy: {:?}", p))?;
        for set in [&floors, &default] {
            let r = validator.validate(set, ValidationMode::Strict);
            if !r.validation_passed() {
                let msgs: Vec<String> = r.validation_errors().map(|e| e.to_string()).collect();
                return Err(format!("built-in policies do not validate: {msgs:?}"));
            }
        }
        let default_combined = Arc::new(Compiled::new(merge(&floors, &default)));
        Ok(Self {
            validator,
            floors,
            default: Arc::new(default),
            default_combined,
            types: Types::new()?,
        })
    }

    pub fn default_set(&self) -> Arc<PolicySet> {
        self.default.clone()
    }

    pub fn default_combined(&self) -> Arc<Compiled> {
        self.default_combined.clone()
    }

    /// Checks a company's policy text: it parses, names every policy, validates against
    /// the schema, reuses no floor's name and permits nothing a floor exists to
    /// forbid. Returns the set with the floors, ready to evaluate.
    pub fn check_company(&self, src: &str) -> Result<PolicySet, CheckError> {
        let set = parse(src).map_err(CheckError::Invalid)?;
        let r = self.validator.validate(&set, ValidationMode::Strict);
        if !r.validation_passed() {
            return Err(CheckError::Invalid(
                r.validation_errors()
                    .map(|e| problem(e, src, Some(e.policy_id().to_string())))
                    .collect(),
            ));
        }
        for p in set.policies() {
            if p.id().to_string().starts_with("floor.") {
                return Err(CheckError::Floor {
                    floor: p.id().to_string(),
                    message: format!(
                        "policy {} takes a name reserved for the platform's floors",
                        p.id()
                    ),
                });
            }
        }
        for (floor, action, role, impersonated, operation, target_role) in FLOOR_PROBES {
            let q = Question {
                action: (*action).to_owned(),
                principal: Principal {
                    kind: "user".into(),
                    id: "usr_probe".into(),
                    role: (*role).to_owned(),
                    email: String::new(),
                    company: None,
                },
                resource: Resource {
                    kind: "probe".into(),
                    id: "probe".into(),
                    operation: (*operation).to_owned(),
                    target_role: (*target_role).to_owned(),
                    ..Default::default()
                },
                context: Circumstances {
                    impersonated: *impersonated,
                    ..Default::default()
                },
            };
            let a = self.evaluate(&set, "ten_probe", &q);
            if a.allowed {
                return Err(CheckError::Floor {
                    floor: (*floor).to_owned(),
                    message: format!(
                        "policy {} would permit {action} that the platform floor {floor} forbids; floors cannot be loosened",
                        a.policies.join(", ")
                    ),
                });
            }
        }
        Ok(merge(&self.floors, &set))
    }

    /// A saved company text with the floors, for evaluation. It passed
    /// [`Engine::check_company`] when saved; if it no longer parses (a schema change),
    /// the floors alone stand, so nothing is permitted until an admin saves it again.
    pub fn compile_saved(&self, src: &str) -> Compiled {
        Compiled::new(match parse(src) {
            Ok(set) => merge(&self.floors, &set),
            Err(problems) => {
                tracing::error!(
                    ?problems,
                    "a saved company policy no longer parses; denying until it is saved again"
                );
                self.floors.clone()
            }
        })
    }

    /// Evaluates `q` in company `company` against `set` (floors included by the
    /// caller). Anything malformed, and any evaluation error, denies.
    pub fn evaluate(&self, set: &impl ForAction, company: &str, q: &Question) -> Answer {
        match self.try_evaluate(set, company, q) {
            Ok(a) => a,
            Err(e) => Answer {
                allowed: false,
                policies: Vec::new(),
                errors: vec![e],
            },
        }
    }

    fn try_evaluate(
        &self,
        set: &impl ForAction,
        company: &str,
        q: &Question,
    ) -> Result<Answer, String> {
        if !ACTIONS.contains(&q.action.as_str()) {
            return Err(format!("unknown action {:?}", q.action));
        }
        let t = &self.types;
        let uid = |ty: &EntityTypeName, id: &str| {
            Ok::<_, String>(EntityUid::from_type_name_and_id(
                ty.clone(),
                EntityId::new(id),
            ))
        };
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let company_uid = uid(&t.company, company)?;
        let principal_ty = match q.principal.kind.as_str() {
            "user" | "support_admin" => &t.user,
            "api_key" => &t.api_key,
            "agent" => &t.agent,
            other => return Err(format!("unknown principal type {other:?}")),
        };
        let principal_uid = uid(principal_ty, &q.principal.id)?;
        let principal_company = q.principal.company.as_deref().unwrap_or(company);
        let mut attrs = HashMap::from([
            ("role".to_owned(), s(&q.principal.role)),
            ("company".to_owned(), s(principal_company)),
        ]);
        if principal_ty == &t.user {
            attrs.insert("email".into(), s(&q.principal.email));
        }
        let principal = Entity::new(
            principal_uid.clone(),
            attrs,
            HashSet::from([company_uid.clone()]),
        )
        .map_err(|e| e.to_string())?;
        let r = &q.resource;
        let resource_uid = uid(&t.resource, if r.id.is_empty() { "-" } else { &r.id })?;
        let resource_company = r.company.as_deref().unwrap_or(company);
        let resource = Entity::new(
            resource_uid.clone(),
            HashMap::from([
                ("company".to_owned(), s(resource_company)),
                ("kind".to_owned(), s(&r.kind)),
                ("operation".to_owned(), s(&r.operation)),
                ("capability".to_owned(), s(&r.capability)),
                ("side_effect".to_owned(), s(&r.side_effect)),
                (
                    "amount".to_owned(),
                    RestrictedExpression::new_long(r.amount),
                ),
                (
                    "recipients".to_owned(),
                    RestrictedExpression::new_long(r.recipients),
                ),
                ("provider".to_owned(), s(&r.provider)),
                ("target_role".to_owned(), s(&r.target_role)),
            ]),
            HashSet::from([company_uid.clone()]),
        )
        .map_err(|e| e.to_string())?;
        // Built here to the schema's shape (the unit tests and the strict validation of
        // every saved policy hold it), so the per-request schema checks, most of an
        // evaluation's time, are skipped.
        let entities = Entities::from_entities(
            [
                principal,
                resource,
                Entity::new_no_attrs(company_uid, HashSet::new()),
            ],
            None,
        )
        .map_err(|e| e.to_string())?;
        let action = uid(&t.action, &q.action)?;
        let c = &q.context;
        let context = Context::from_pairs([
            ("mfa".to_owned(), RestrictedExpression::new_bool(c.mfa)),
            (
                "impersonated".to_owned(),
                RestrictedExpression::new_bool(c.impersonated),
            ),
            ("ip".to_owned(), s(&c.ip)),
            ("hour".to_owned(), RestrictedExpression::new_long(c.hour)),
            (
                "weekday".to_owned(),
                RestrictedExpression::new_long(c.weekday),
            ),
        ])
        .map_err(|e| e.to_string())?;
        let request = Request::new(principal_uid, action, resource_uid, context, None)
            .map_err(|e| e.to_string())?;
        let response =
            Authorizer::new().is_authorized(&request, set.for_action(&q.action), &entities);
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        policies.sort();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        Ok(Answer {
            allowed: response.decision() == Decision::Allow && errors.is_empty(),
            policies,
            errors,
        })
    }
}

/// Why a company policy was refused.
#[derive(Debug)]
pub enum CheckError {
    Invalid(Vec<Problem>),
    Floor { floor: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(action: &str, role: &str, impersonated: bool) -> Question {
        Question {
            action: action.into(),
            principal: Principal {
                kind: "user".into(),
                id: "usr_1".into(),
                role: role.into(),
                email: "a@b.example".into(),
                company: None,
            },
            resource: Resource {
                kind: "api_key".into(),
                operation: "create".into(),
                target_role: "member".into(),
                ..Default::default()
            },
            context: Circumstances {
                impersonated,
                ..Default::default()
            },
        }
    }

    #[test]
    fn built_ins_parse_and_mirror_roles() {
        let e = Engine::new().expect("built-in texts");
        let set = e.default_combined();
        let a = e.evaluate(&*set, "ten_1", &q("api_key.create", "admin", false));
        assert!(a.allowed, "{a:?}");
        assert_eq!(a.policies, ["default.admins-manage"]);
        assert!(
            !e.evaluate(&*set, "ten_1", &q("api_key.create", "member", false))
                .allowed
        );
        let a = e.evaluate(&*set, "ten_1", &q("api_key.create", "admin", true));
        assert!(!a.allowed);
        assert_eq!(a.policies, ["floor.support-no-credentials"]);
        assert!(
            e.evaluate(&*set, "ten_1", &q("capability.run", "member", false))
                .allowed
        );
        assert!(
            !e.evaluate(&*set, "ten_1", &q("capability.run", "viewer", false))
                .allowed
        );
        assert!(
            !e.evaluate(&*set, "ten_1", &q("no.such", "owner", false))
                .allowed
        );
    }

    #[test]
    fn company_policies_are_checked() {
        let e = Engine::new().expect("built-in texts");
        assert!(e.check_company(DEFAULT_POLICY).is_ok());
        let Err(CheckError::Invalid(p)) = e.check_company("permit(principal, action, resource)")
        else {
            panic!("a missing semicolon parses")
        };
        assert_eq!(p[0].line, Some(1), "{p:?}");
        let Err(CheckError::Invalid(p)) = e.check_company(
            "@id(\"x\")\npermit(principal, action, resource) when { resource.nope == 1 };",
        ) else {
            panic!("an unknown attribute validates")
        };
        assert_eq!(p[0].line, Some(2), "{p:?}");
        let loosen = "@id(\"support-keys\")\npermit(principal, action == Ocsuite::Action::\"api_key.create\", resource) when { context.impersonated };";
        let Err(CheckError::Floor { floor, .. }) = e.check_company(loosen) else {
            panic!("a loosening policy is accepted")
        };
        assert_eq!(floor, "floor.support-no-credentials");
    }
}
