//! The published Cedar schema, the platform's floors and the default company policy.
//!
//! One resource type carries every attribute a privileged action has (unused ones are
//! `""` or `0`), so strict validation needs no `has` guards and every policy can read
//! every attribute.

/// The schema every policy is validated against (`GET /api/v1/policy/schema`).
pub const SCHEMA: &str = r#"namespace Ocsuite {
  type Ctx = {
    // The person signed in with a second factor.
    mfa: Bool,
    // A platform operator acting in the company's name (a support session).
    impersonated: Bool,
    // The caller's address, "" when unknown.
    ip: String,
    // UTC hour (0-23) and weekday (1 = Monday … 7 = Sunday).
    hour: Long,
    weekday: Long
  };
  entity Company;
  // role: owner, admin, member or viewer; company: the company's id.
  entity User in [Company] { role: String, company: String, email: String };
  entity ApiKey in [Company] { role: String, company: String };
  entity Agent in [Company] { role: String, company: String };
  entity Resource in [Company] {
    company: String,
    // task, capability, connector, api_key, member, mcp_server, trigger, webhook, export,
    // retention, erasure, support (an operator's support session)
    kind: String,
    // create, update or delete where an action has several.
    operation: String,
    // The capability (module.name) a task runs, and its declared side effect:
    // none, read, write, external_send, financial.
    capability: String,
    side_effect: String,
    // Money in minor units and outside recipients, where a task says.
    amount: Long,
    recipients: Long,
    // A connector's provider; the role a member is given; an API key's role.
    provider: String,
    target_role: String
  };
  action "task.approve", "task.reject", "capability.run", "connector.connect",
    "connector.disconnect", "api_key.create", "member.role_change", "mcp.register",
    "trigger.edit", "webhook.edit", "export.create", "retention.update", "erasure.request",
    "erasure.approve", "support.start"
    appliesTo { principal: [User, ApiKey, Agent], resource: [Resource], context: Ctx };
}
"#;

/// The privileged actions, in the schema's order.
pub const ACTIONS: &[&str] = &[
    "task.approve",
    "task.reject",
    "capability.run",
    "connector.connect",
    "connector.disconnect",
    "api_key.create",
    "member.role_change",
    "mcp.register",
    "trigger.edit",
    "webhook.edit",
    "export.create",
    "retention.update",
    "erasure.request",
    "erasure.approve",
    "support.start",
];

/// Platform floors: forbid policies no company can loosen (a forbid overrides every
/// permit, and a company policy that tries to permit what a floor forbids is refused).
pub const FLOORS: &str = r#"@id("floor.one-company")
forbid(principal, action, resource)
unless { principal.company == resource.company };

@id("floor.support-no-credentials")
forbid(principal, action == Ocsuite::Action::"api_key.create", resource)
when { context.impersonated };

@id("floor.support-no-webhook-secrets")
forbid(principal, action == Ocsuite::Action::"webhook.edit", resource)
when { context.impersonated && resource.operation == "create" };

@id("floor.support-no-deletion")
forbid(
  principal,
  action in [
    Ocsuite::Action::"erasure.request", Ocsuite::Action::"erasure.approve",
    Ocsuite::Action::"retention.update"
  ],
  resource
)
when { context.impersonated };

@id("floor.support-no-owners")
forbid(principal, action == Ocsuite::Action::"member.role_change", resource)
when { context.impersonated && resource.target_role == "owner" };
"#;

/// Requests each floor exists to forbid: a company policy that permits one of them is
/// refused with the floor's name. `(floor, action, principal role, impersonated,
/// operation, target role)`.
pub const FLOOR_PROBES: &[(&str, &str, &str, bool, &str, &str)] = &[
    (
        "floor.support-no-credentials",
        "api_key.create",
        "admin",
        true,
        "create",
        "member",
    ),
    (
        "floor.support-no-webhook-secrets",
        "webhook.edit",
        "admin",
        true,
        "create",
        "",
    ),
    (
        "floor.support-no-deletion",
        "retention.update",
        "admin",
        true,
        "update",
        "",
    ),
    (
        "floor.support-no-deletion",
        "erasure.request",
        "admin",
        true,
        "create",
        "",
    ),
    (
        "floor.support-no-deletion",
        "erasure.approve",
        "admin",
        true,
        "update",
        "",
    ),
    (
        "floor.support-no-owners",
        "member.role_change",
        "admin",
        true,
        "update",
        "owner",
    ),
];

/// Every company's policy until its admins save their own: today's role rules, so
/// behaviour is what it was before policies existed. The handlers still check roles by
/// type; approval roles per side effect stay in Settings.
pub const DEFAULT_POLICY: &str = r#"// Owners and admins manage the company's connections, keys, people, automations,
// exports, retention and erasures. A support session never mints credentials, makes
// owners, erases people or shortens what is kept.
@id("default.admins-manage")
permit(
  principal,
  action in [
    Ocsuite::Action::"connector.connect", Ocsuite::Action::"connector.disconnect",
    Ocsuite::Action::"api_key.create", Ocsuite::Action::"member.role_change",
    Ocsuite::Action::"mcp.register", Ocsuite::Action::"trigger.edit",
    Ocsuite::Action::"webhook.edit", Ocsuite::Action::"export.create",
    Ocsuite::Action::"retention.update", Ocsuite::Action::"erasure.request",
    Ocsuite::Action::"erasure.approve"
  ],
  resource
)
when { principal.role == "owner" || principal.role == "admin" }
unless {
  context.impersonated && (
    action == Ocsuite::Action::"api_key.create" ||
    (action == Ocsuite::Action::"webhook.edit" && resource.operation == "create") ||
    (action == Ocsuite::Action::"member.role_change" && resource.target_role == "owner") ||
    action == Ocsuite::Action::"erasure.request" || action == Ocsuite::Action::"erasure.approve" ||
    action == Ocsuite::Action::"retention.update"
  )
};

// A platform operator may open a support session ("view as", audited, the owners
// told). A company that wants none forbids it here.
@id("default.support-sessions")
permit(principal, action == Ocsuite::Action::"support.start", resource)
when { context.impersonated };

// Members and above run capabilities and decide proposals (the approval roles in
// Settings say which role each side effect needs).
@id("default.members-act")
permit(
  principal,
  action in [
    Ocsuite::Action::"capability.run", Ocsuite::Action::"task.approve",
    Ocsuite::Action::"task.reject"
  ],
  resource
)
when { principal.role != "viewer" };
"#;
