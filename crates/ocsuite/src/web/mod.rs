//! The web app: server-rendered pages (askama) with a small hand-written script and
//! stylesheet embedded in the binary.
//!
//! Pages read through the same domain functions as the API, in the signed-in person's
//! active tenant. Every change a page makes goes through the JSON API from `app.js`
//! with the session cookie, so the API's checks (roles, validation, the same-origin rule
//! that stops cross-site writes) are the only ones there are. HTML responses carry a
//! strict Content-Security-Policy: no inline script or style, nothing from elsewhere.
//! Templates escape every value (askama's HTML escaping), and the script only ever sets
//! `textContent`, so neither tenant data nor model output can inject markup.

pub mod agents;
pub mod alerts;
pub mod board;
pub mod console;
pub mod dashboard;
pub mod knowledge;
pub mod modules;
pub mod onboarding;
pub mod pages;
pub mod trust;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::auth::{AuthUser, Principal};
use crate::ids::TenantId;
use crate::state::AppState;
use crate::tenancy::Role;

const CSS: &str = include_str!("../../static/app.css");
const JS: &str = include_str!("../../static/app.js");

/// Every page and the static assets.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login))
        .route("/signup", get(pages::signup))
        .route("/onboarding", get(onboarding::page))
        .route("/dashboard", get(dashboard::page))
        .route("/approvals", get(pages::approvals))
        .route("/tasks", get(pages::tasks))
        .route("/tasks/{id}", get(pages::task))
        .route("/board", get(board::room))
        .route("/board/{id}", get(board::meeting))
        .route("/chat", get(board::chat))
        .route("/connectors", get(pages::connectors))
        .route("/knowledge", get(knowledge::page))
        .route("/agents", get(agents::page))
        .route("/alerts", get(alerts::inbox))
        .route("/automations", get(alerts::automations))
        .route("/leads", get(modules::leads))
        .route("/books", get(modules::books))
        .route("/campaigns", get(modules::campaigns))
        .route("/campaigns/{id}", get(modules::campaign))
        .route("/settings", get(pages::settings))
        .route("/trust", get(trust::page))
        .route("/invite/{token}", get(pages::invite))
        .route("/owner-invite/{token}", get(console::owner_invite))
        .route("/admin", get(console::tenants))
        .route("/admin/tenants/{id}", get(console::tenant))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::extract::authenticate,
        ))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Strict headers on every page: scripts and styles only from this server, no framing.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// Renders a template, or a plain error page if rendering fails.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// Where a page sends someone who cannot see it.
pub struct Redirected(Response);

impl IntoResponse for Redirected {
    fn into_response(self) -> Response {
        self.0
    }
}

/// A page-sized error: the status and a sentence, never internals.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

impl From<crate::error::AppError> for Redirected {
    fn from(e: crate::error::AppError) -> Self {
        let status = e.status();
        let message = if status.is_server_error() {
            tracing::error!(error = %e, "page failed");
            "Something went wrong on our side. Try again in a moment.".to_owned()
        } else {
            e.to_string()
        };
        let mut res = render(&ErrorPage {
            status: status.as_u16(),
            message,
        });
        *res.status_mut() = status;
        Self(res)
    }
}

impl From<sqlx::Error> for Redirected {
    fn from(e: sqlx::Error) -> Self {
        crate::error::AppError::from(e).into()
    }
}

/// The signed-in person looking at a page (no tenant needed yet).
pub struct Person {
    pub user: AuthUser,
    pub active_tenant: Option<TenantId>,
    /// A super-admin's open support session.
    pub impersonating: Option<crate::auth::Impersonating>,
}

/// A fresh session has no active company: pick the person's first one and remember it
/// on the session, so the pages and the API calls they make both work in it.
async fn first_company(
    state: &AppState,
    user: &AuthUser,
    session: Option<&crate::ids::SessionId>,
) -> Result<Option<TenantId>, Redirected> {
    let mut tx = state.store.user(&user.id).await?;
    let first = crate::tenancy::tenants::list_for_user(&mut tx)
        .await?
        .into_iter()
        .next();
    tx.commit().await?;
    let Some(t) = first else { return Ok(None) };
    if let Some(s) = session {
        let mut tx = state.store.platform().await?;
        crate::auth::sessions::set_active_tenant(&mut tx, s, &t.id).await?;
        tx.commit().await?;
    }
    Ok(Some(t.id))
}

impl FromRequestParts<AppState> for Person {
    type Rejection = Redirected;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Redirected> {
        match parts.extensions.get::<Principal>().cloned() {
            Some(Principal::User {
                user,
                active_tenant: Some(t),
                impersonating,
                ..
            }) => Ok(Self {
                user,
                active_tenant: Some(t),
                impersonating,
            }),
            Some(Principal::User {
                user,
                active_tenant: None,
                session,
                impersonating,
                ..
            }) => Ok(Self {
                active_tenant: first_company(state, &user, session.as_ref()).await?,
                user,
                impersonating,
            }),
            _ => {
                let next = parts.uri.path();
                // Only our own paths, so the login page cannot be made to send people away.
                let next: String = next
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
                    .collect();
                Err(Redirected(
                    Redirect::to(&format!("/login?next={next}")).into_response(),
                ))
            }
        }
    }
}

/// A signed-in person inside their active company.
pub struct Viewer {
    pub user: AuthUser,
    pub tenant: TenantId,
    pub role: Role,
    pub company: String,
    /// The operators' system banner, when one shows now.
    pub banner: Option<crate::banner::Banner>,
    /// Why the company is suspended, while it is.
    pub suspended: Option<String>,
    /// When the super-admin's support session in this company ends, while in one.
    pub support_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Redirected;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Redirected> {
        let person = Person::from_request_parts(parts, state).await?;
        let Some(tenant) = person.active_tenant.clone() else {
            // An operator with no company of their own starts at the console.
            let to = if person.user.is_super_admin {
                "/admin"
            } else {
                "/onboarding"
            };
            return Err(Redirected(Redirect::to(to).into_response()));
        };
        let mut tx = state.store.user(&person.user.id).await?;
        let rows = crate::tenancy::tenants::list_for_user(&mut tx).await?;
        tx.commit().await?;
        let now = chrono::Utc::now();
        let (role, company, support_until) = match rows.into_iter().find(|t| t.id == tenant) {
            Some(t) => (t.role, t.name, None),
            // A super-admin in a support session sees the company as its admin.
            None => match person.impersonating.as_ref().filter(|i| i.tenant == tenant) {
                Some(imp) => {
                    let mut tx = state.store.tenant_read(&tenant).await?;
                    let facts = crate::console::facts(&mut tx).await?;
                    tx.commit().await?;
                    let Some(f) = facts else {
                        return Err(Redirected(Redirect::to("/admin").into_response()));
                    };
                    (Role::Admin, f.name, Some(imp.until))
                }
                None if person.user.is_super_admin => {
                    return Err(Redirected(Redirect::to("/admin").into_response()));
                }
                None => return Err(Redirected(Redirect::to("/onboarding").into_response())),
            },
        };
        Ok(Self {
            suspended: state.suspensions.reason(&tenant),
            user: person.user,
            tenant,
            role,
            company,
            banner: state.banner.current(now),
            support_until,
        })
    }
}

/// What every page's layout needs.
pub struct Shell {
    pub title: String,
    pub nav: &'static str,
    pub email: String,
    pub company: String,
    /// The system banner's level (`info`, `warning`) and text, when one shows.
    pub banner: Option<(&'static str, String)>,
    /// Why the company is suspended, while it is.
    pub suspended: Option<String>,
    /// "Until HH:MM UTC", while a super-admin views the company in a support session.
    pub support: Option<String>,
    /// The person is a super-admin (the nav links the console).
    pub operator: bool,
}

impl Shell {
    pub fn new(v: &Viewer, title: &str, nav: &'static str) -> Self {
        Self {
            title: title.to_owned(),
            nav,
            email: v.user.email.clone(),
            company: v.company.clone(),
            banner: v
                .banner
                .as_ref()
                .map(|b| (b.level.as_str(), b.text.clone())),
            suspended: v.suspended.clone(),
            support: v
                .support_until
                .map(|u| format!("until {} UTC", u.format("%H:%M"))),
            operator: v.user.is_super_admin,
        }
    }

    /// The layout of an operator's console page (no company).
    pub fn console(user: &AuthUser, title: &str, banner: Option<crate::banner::Banner>) -> Self {
        Self {
            title: title.to_owned(),
            nav: "admin",
            email: user.email.clone(),
            company: "ocsuite console".into(),
            banner: banner.map(|b| (b.level.as_str(), b.text)),
            suspended: None,
            support: None,
            operator: true,
        }
    }
}

/// Money for display: `12,345.00 USD`.
pub fn money(minor: i64, currency: &str) -> String {
    let plain = crate::money::format(minor, currency);
    let (sign, rest) = plain
        .strip_prefix('-')
        .map_or(("", plain.as_str()), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f} {currency}"),
        None => format!("{sign}{grouped} {currency}"),
    }
}

/// A serde enum's wire name (`not_connected`), for badges.
pub fn label(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
