//! The knowledge API: sources (upload, URL, Drive, Notion), their health, resync and
//! delete, and search; HQ sources for super-admins under `/admin/knowledge`.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{self, MediaType};
use super::intake::{SourceIn, fetched_origin, read_upload, require_connection, unsupported};
use super::search::SearchOut;
use super::{NewSource, Origin, SourceOut, hq_tenant};
use crate::audit;
use crate::auth::{CurrentUser, SuperAdmin};
use crate::error::{AppError, ErrorBody, Result};
use crate::ids::{KnowledgeSourceId, TenantId};
use crate::json::ApiJson;
use crate::state::AppState;
use crate::store::scoped;
use crate::tenancy::extract::Member;
use crate::tenancy::{Actor, Role, TenantCtx};

/// This domain's API routes (relative to `/api/v1`), each declared once.
pub fn router(largest_upload: u64) -> OpenApiRouter<AppState> {
    // Uploads get their own body limit (the largest plan's, plus form overhead); each
    // tenant's plan limit is checked while the file streams in.
    let limit = usize::try_from(largest_upload)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    let uploads = OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(admin_create, admin_list))
        .layer(axum::extract::DefaultBodyLimit::max(limit));
    OpenApiRouter::new()
        .merge(uploads)
        .routes(routes!(get, delete))
        .routes(routes!(resync))
        .routes(routes!(search))
        .routes(routes!(admin_get, admin_delete))
        .routes(routes!(admin_resync))
}

/// An upload (multipart form of `POST /knowledge/sources`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// PDF, DOCX, Markdown, plain text, HTML or CSV.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Optional title (default: the file name).
    title: Option<String>,
}

#[derive(serde::Serialize, ToSchema)]
pub struct SourceList {
    pub sources: Vec<SourceOut>,
    /// `hybrid` when an embedding model is configured, else `keyword`.
    pub search_mode: &'static str,
}

fn search_mode(state: &AppState) -> &'static str {
    if state.knowledge.embedding_model.is_some() {
        "hybrid"
    } else {
        "keyword"
    }
}

/// An id from the path, or 404 (a malformed id names nothing).
fn source_id(id: &str) -> Result<KnowledgeSourceId> {
    KnowledgeSourceId::parse(id).ok_or(AppError::NotFound("knowledge source"))
}

/// The caller as `created_by`.
fn by(actor: &Actor) -> String {
    format!("{}:{}", actor.kind(), actor.id())
}

/// Adds a source: a multipart upload (`file`, optional `title`) or JSON
/// `{kind: "url", url}` / `{kind: "google_drive", file_ids | folder_id}` /
/// `{kind: "notion", page_ids}`. Answers 202: ingestion runs as a job; watch `status`.
#[utoipa::path(post, path = "/knowledge/sources", tag = "knowledge",
    request_body(content((SourceIn = "application/json"), (UploadForm = "multipart/form-data"))),
    responses((status = 202, body = SourceOut), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Member,
    req: Request,
) -> Result<(StatusCode, Json<SourceOut>)> {
    let plan = {
        let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
        let (plan,): (String,) = tx
            .fetch_one(scoped("SELECT plan FROM tenants WHERE id = $1"))
            .await?;
        crate::usage::Plan::parse(&plan).unwrap_or(crate::usage::Plan::Free)
    };
    let limit = state.meter.limits(plan).knowledge_file_bytes;
    add(&state, &ctx, ctx.tenant_id.clone(), limit, req).await
}

/// Reads the request (upload or JSON), checks it, stores the source and queues it.
async fn add(
    state: &AppState,
    ctx: &TenantCtx,
    tenant: TenantId,
    limit: u64,
    req: Request,
) -> Result<(StatusCode, Json<SourceOut>)> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let by = by(&ctx.actor);
    let (origin, title, file, media) = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(req, state).await.map_err(|e| {
            AppError::bad_request("invalid_multipart", format!("the form cannot be read: {e}"))
        })?;
        let upload = read_upload(form, limit).await?;
        let media = extract::detect(
            &upload.filename,
            upload.content_type.as_deref(),
            &upload.bytes,
        )
        .map_err(|what| unsupported(&upload.filename, &what))?;
        let title = upload
            .title
            .clone()
            .unwrap_or_else(|| upload.filename.clone());
        (
            Origin::Upload {
                filename: upload.filename,
            },
            title,
            Some(upload.bytes),
            Some(media),
        )
    } else if content_type.starts_with("application/json") || content_type.is_empty() {
        let ApiJson(input) = ApiJson::<SourceIn>::from_request(req, state).await?;
        let (origin, title) = fetched_origin(state, input).await?;
        (origin, title, None, None)
    } else {
        return Err(AppError::Rejected {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: format!(
                "send the file as multipart/form-data (field `file`) or a source as application/json, not {}",
                content_type.chars().take(80).collect::<String>()
            ),
        });
    };
    let mut tx = state.store.tenant(&tenant).await?;
    // HQ knowledge is the platform's own, on no plan.
    if !crate::tenancy::is_reserved(&tenant) {
        let size = file.as_ref().map_or(0, |f| f.len() as u64);
        state
            .plans
            .ensure_room(&mut tx, crate::plans::Limit::KnowledgeBytes, size)
            .await?;
    }
    require_connection(state, &mut tx, &origin).await?;
    let (source, events) = super::create(
        &mut tx,
        NewSource {
            origin,
            title: &title,
            created_by: &by,
            file: file.as_deref(),
            media_type: media.map(MediaType::as_str),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        ctx,
        "knowledge.source_add",
        "knowledge_source",
        source.id.as_str(),
        json!({"kind": source.kind, "title": source.title, "size_bytes": source.size_bytes, "hq": source.hq}),
    )
    .await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    state.jobs_wake.notify_waiters();
    Ok((StatusCode::ACCEPTED, Json(source)))
}

/// The tenant's sources with their health (status, error, warning, counts).
#[utoipa::path(get, path = "/knowledge/sources", tag = "knowledge", responses((status = 200, body = SourceList)))]
pub async fn list(State(state): State<AppState>, ctx: TenantCtx) -> Result<Json<SourceList>> {
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let sources = super::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(SourceList {
        sources,
        search_mode: search_mode(&state),
    }))
}

#[utoipa::path(get, path = "/knowledge/sources/{id}", tag = "knowledge",
    responses((status = 200, body = SourceOut), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> Result<Json<SourceOut>> {
    let id = source_id(&id)?;
    let mut tx = state.store.tenant_read(&ctx.tenant_id).await?;
    let s = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(s))
}

/// Deletes a source with every passage and vector, at once. Admins, or the member who
/// added it.
#[utoipa::path(delete, path = "/knowledge/sources/{id}", tag = "knowledge",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = source_id(&id)?;
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    let current = super::get(&mut tx, &id).await?;
    if !ctx.role.at_least(Role::Admin) && current.created_by != by(&ctx.actor) {
        return Err(AppError::Forbidden(
            "only an admin or the member who added this source can delete it".into(),
        ));
    }
    remove(&state, &ctx, tx, &id).await
}

async fn remove(
    state: &AppState,
    ctx: &TenantCtx,
    mut tx: crate::store::TenantTx,
    id: &KnowledgeSourceId,
) -> Result<StatusCode> {
    let (source, events) = super::delete(&mut tx, id).await?;
    audit::record(
        &mut tx,
        ctx,
        "knowledge.source_delete",
        "knowledge_source",
        id.as_str(),
        json!({"title": source.title, "chunks": source.chunk_count, "hq": source.hq}),
    )
    .await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    Ok(StatusCode::NO_CONTENT)
}

/// Fetches and indexes the source again now (a pending ingestion is not doubled).
#[utoipa::path(post, path = "/knowledge/sources/{id}/resync", tag = "knowledge",
    responses((status = 202, body = SourceOut), (status = 404, body = ErrorBody)))]
pub async fn resync(
    State(state): State<AppState>,
    ctx: Member,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SourceOut>)> {
    let id = source_id(&id)?;
    requeue(&state, &ctx, &id).await
}

async fn requeue(
    state: &AppState,
    ctx: &TenantCtx,
    id: &KnowledgeSourceId,
) -> Result<(StatusCode, Json<SourceOut>)> {
    let mut tx = state.store.tenant(&ctx.tenant_id).await?;
    super::get(&mut tx, id).await?;
    let mut events = Vec::new();
    if super::jobs::enqueue(&mut tx, id).await? {
        let s = super::get(&mut tx, id).await?;
        events.push(super::status_event(&mut tx, &s).await?);
    }
    let source = super::get(&mut tx, id).await?;
    tx.commit().await?;
    state.bus.after_commit(events);
    state.jobs_wake.notify_waiters();
    Ok((StatusCode::ACCEPTED, Json(source)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchIn {
    /// What to look for, in any language.
    pub query: String,
    /// Passages to return (1–50, default 8).
    pub k: Option<usize>,
    /// Only these sources of the tenant (HQ knowledge is then left out).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub source_ids: Vec<String>,
}

/// Hybrid search over the company's knowledge and HQ knowledge: ranked passages with
/// their source, location, snippet and both scores.
#[utoipa::path(post, path = "/knowledge/search", tag = "knowledge", request_body = SearchIn,
    responses((status = 200, body = SearchOut), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(input): ApiJson<SearchIn>,
) -> Result<Json<SearchOut>> {
    let query = input.query.trim();
    if query.is_empty() {
        return Err(AppError::invalid(
            "query",
            "the query is empty: say what to look for",
        ));
    }
    if query.chars().count() > 2000 {
        return Err(AppError::invalid(
            "query",
            "the query is longer than 2000 characters",
        ));
    }
    let k = input.k.unwrap_or(8);
    if !(1..=super::search::MAX_K).contains(&k) {
        return Err(AppError::invalid("k", "k must be between 1 and 50"));
    }
    let mut sources = Vec::new();
    for s in &input.source_ids {
        sources.push(KnowledgeSourceId::parse(s).ok_or_else(|| {
            AppError::invalid(
                "source_ids",
                format!(
                    "{:?} is not a knowledge source id",
                    s.chars().take(60).collect::<String>()
                ),
            )
        })?);
    }
    let out = state
        .knowledge
        .search(&ctx.tenant_id, query, k, &sources)
        .await?;
    Ok(Json(out))
}

// ---- HQ knowledge (super-admins) -----------------------------------------------------

/// The super-admin acting on HQ knowledge, as a context in the HQ tenant (audited there).
fn hq_ctx(me: &CurrentUser, meta: crate::auth::ClientMeta) -> TenantCtx {
    TenantCtx {
        tenant_id: hq_tenant(),
        role: Role::Owner,
        actor: Actor::SupportAdmin(me.user.id.clone()),
        meta,
    }
}

/// Adds an HQ source (every tenant's personas may cite it; tenants cannot list it).
#[utoipa::path(post, path = "/admin/knowledge/sources", tag = "knowledge",
    request_body(content((SourceIn = "application/json"), (UploadForm = "multipart/form-data"))),
    responses((status = 202, body = SourceOut), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn admin_create(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    meta: crate::auth::ClientMeta,
    req: Request,
) -> Result<(StatusCode, Json<SourceOut>)> {
    let ctx = hq_ctx(&me, meta);
    let limit = state.meter.largest_knowledge_file();
    add(&state, &ctx, hq_tenant(), limit, req).await
}

#[utoipa::path(get, path = "/admin/knowledge/sources", tag = "knowledge",
    responses((status = 200, body = SourceList), (status = 403, body = ErrorBody)))]
pub async fn admin_list(
    State(state): State<AppState>,
    SuperAdmin(_me): SuperAdmin,
) -> Result<Json<SourceList>> {
    let mut tx = state.store.tenant_read(&hq_tenant()).await?;
    let sources = super::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(SourceList {
        sources,
        search_mode: search_mode(&state),
    }))
}

#[utoipa::path(get, path = "/admin/knowledge/sources/{id}", tag = "knowledge",
    responses((status = 200, body = SourceOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn admin_get(
    State(state): State<AppState>,
    SuperAdmin(_me): SuperAdmin,
    Path(id): Path<String>,
) -> Result<Json<SourceOut>> {
    let id = source_id(&id)?;
    let mut tx = state.store.tenant_read(&hq_tenant()).await?;
    let s = super::get(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Json(s))
}

#[utoipa::path(delete, path = "/admin/knowledge/sources/{id}", tag = "knowledge",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn admin_delete(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    meta: crate::auth::ClientMeta,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = source_id(&id)?;
    let ctx = hq_ctx(&me, meta);
    let tx = state.store.tenant(&hq_tenant()).await?;
    remove(&state, &ctx, tx, &id).await
}

#[utoipa::path(post, path = "/admin/knowledge/sources/{id}/resync", tag = "knowledge",
    responses((status = 202, body = SourceOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn admin_resync(
    State(state): State<AppState>,
    SuperAdmin(me): SuperAdmin,
    meta: crate::auth::ClientMeta,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SourceOut>)> {
    let id = source_id(&id)?;
    let ctx = hq_ctx(&me, meta);
    requeue(&state, &ctx, &id).await
}
