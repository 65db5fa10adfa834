//! The OpenAPI 3.1 description of the whole API, served at `/api/v1/openapi.json`.
//!
//! [`ApiDoc`] holds only what belongs to the whole API (title, security scheme); every
//! path comes from the domain routers that the router assembly merges.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use std::sync::Arc;

use axum::Extension;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ocsuite API", description = "Multi-tenant online C-suite. Authenticate with `Authorization: Bearer <session token | API key | OIDC JWT>`; tenant-scoped endpoints take `X-Tenant-Id`."),
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

/// The finished description, serialized once when the router is built.
#[derive(Clone)]
pub struct Spec(Arc<Vec<u8>>);

impl Spec {
    pub fn new(doc: utoipa::openapi::OpenApi) -> Self {
        // Serializing a tree of strings and maps cannot fail.
        Self(Arc::new(serde_json::to_vec(&doc).unwrap_or_default()))
    }
}

/// `GET /api/v1/openapi.json`, unauthenticated.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(spec))
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
pub async fn spec(Extension(spec): Extension<Spec>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        spec.0.as_ref().clone(),
    )
}
