//! The OpenAPI 3.1 description of the whole API, served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{
    agents, approvals, audit, auth, board, bookkeeping, chat, connectors, demo, email, leadtracker,
    metrics, modules, notifications, queue, realtime, tasks, tenancy, usage,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "ocsuite API", description = "Multi-tenant online C-suite. Authenticate with `Authorization: Bearer <session token | API key | OIDC JWT>`; tenant-scoped endpoints take `X-Tenant-Id`."),
    paths(
        auth::routes::signup, auth::routes::login, auth::routes::logout, auth::routes::me,
        auth::routes::set_active_tenant, auth::routes::list_sessions, auth::routes::revoke_session,
        auth::routes::revoke_other_sessions, auth::routes::totp_setup, auth::routes::totp_enable,
        auth::routes::totp_disable,
        tenancy::routes::create_tenant, tenancy::routes::list_tenants, tenancy::routes::get_tenant,
        tenancy::routes::update_tenant, tenancy::routes::list_members, tenancy::routes::change_role,
        tenancy::routes::remove_member, tenancy::routes::create_invite, tenancy::routes::list_invites,
        tenancy::routes::revoke_invite, tenancy::routes::accept_invite, tenancy::routes::create_api_key,
        tenancy::routes::list_api_keys, tenancy::routes::revoke_api_key,
        audit::routes::list,
        modules::routes::list, modules::routes::enable, modules::routes::disable,
        modules::routes::list_servers, modules::routes::register, modules::routes::refresh,
        modules::routes::remove,
        tasks::routes::execute, tasks::routes::list, tasks::routes::get, tasks::routes::cancel,
        queue::admin::show, queue::admin::settings, queue::admin::pause, queue::admin::resume,
        queue::admin::dead, queue::admin::retry_dead, queue::admin::discard_dead,
        queue::admin::platform,
        realtime::routes::ws, realtime::routes::events,
        chat::routes::personas, chat::routes::chat, chat::routes::list, chat::routes::get,
        chat::routes::rename, chat::routes::delete, chat::routes::rate,
        usage::routes::show, usage::routes::set_plan,
        connectors::routes::list, connectors::routes::authorize, connectors::routes::callback,
        connectors::routes::sync, connectors::routes::disconnect,
        board::routes::hold, board::routes::list, board::routes::get, board::routes::rate,
        approvals::routes::list, approvals::routes::approve, approvals::routes::reject,
        approvals::routes::undo, approvals::routes::get_policy, approvals::routes::put_policy,
        notifications::routes::list, notifications::routes::mark_read, notifications::routes::mailbox,
        agents::routes::list, agents::routes::create, agents::routes::update,
        agents::routes::customize, agents::routes::reset,
        leadtracker::routes::list, leadtracker::routes::create, leadtracker::routes::get,
        leadtracker::routes::update, leadtracker::routes::delete, leadtracker::routes::move_stage,
        leadtracker::routes::get_stages, leadtracker::routes::put_stages,
        leadtracker::routes::import, leadtracker::routes::summary,
        bookkeeping::routes::list_accounts, bookkeeping::routes::create_account,
        bookkeeping::routes::list_transactions, bookkeeping::routes::create_transaction,
        bookkeeping::routes::get_transaction, bookkeeping::routes::update_transaction,
        bookkeeping::routes::delete_transaction, bookkeeping::routes::get_categories,
        bookkeeping::routes::put_categories, bookkeeping::routes::list_rules,
        bookkeeping::routes::create_rule, bookkeeping::routes::delete_rule,
        bookkeeping::routes::categorize, bookkeeping::routes::import, bookkeeping::routes::summary,
        email::routes::list, email::routes::create, email::routes::get, email::routes::update,
        email::routes::delete, email::routes::send, email::routes::cancel,
        email::routes::recipients, email::routes::list_suppressions, email::routes::suppress,
        email::routes::unsuppress,
        metrics::routes::list, demo::load, demo::remove,
    ),
    modifiers(&Security),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
