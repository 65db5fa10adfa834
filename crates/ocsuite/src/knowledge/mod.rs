//! Knowledge: the company's documents, split into passages, searched by keyword and by
//! meaning, and cited in every answer that uses them.
//!
//! A tenant's knowledge is a set of **sources** (an upload, a web page, Drive files or a
//! folder, Notion pages). Adding one stores it (an upload's bytes go into
//! `knowledge_files`, so every node and worker can read them) and queues an
//! `ingest-source` job ([`ingest`]); the job fetches, extracts ([`extract`]), splits
//! ([`chunk`]), embeds and replaces the source's chunks in one transaction. A failed
//! ingestion keeps the last good chunks and shows why on the source.
//!
//! Search ([`search`]) runs the keyword index (SQLite FTS5 / PostgreSQL full-text) and,
//! when an embedding model is configured, an exact scan of the tenant's vectors held in
//! memory ([`vectors`]), and fuses the two lists by reciprocal rank. HQ knowledge (the
//! operator's own sources) lives under the reserved [`hq_tenant`] and is searched beside
//! the tenant's, in its own scope: row-level security never has an exception.

pub mod chunk;
pub mod drive;
pub mod extract;
pub mod fetch;
pub mod grounding;
pub mod ingest;
mod intake;
pub mod jobs;
pub mod module;
pub mod notion;
pub mod routes;
pub mod search;
pub mod vectors;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::error::{AppError, Result};
use crate::ids::{KnowledgeSourceId, TenantId};
use crate::realtime::{self, Event};
use crate::store::{TenantTx, scoped};

pub use crate::tenancy::HQ_TENANT;

pub fn hq_tenant() -> TenantId {
    TenantId::parse(HQ_TENANT).expect("HQ_TENANT is a well-formed tenant id")
}

/// The realtime topic of source status changes.
pub use crate::realtime::KNOWLEDGE_TOPIC as TOPIC;

/// Longest title we keep.
pub const MAX_TITLE_CHARS: usize = 200;

/// What a source fetches, as stored in `knowledge_sources.origin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    Upload {
        filename: String,
    },
    Url {
        url: String,
    },
    GoogleDrive {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        file_ids: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        folder_id: Option<String>,
    },
    Notion {
        page_ids: Vec<String>,
    },
}

impl Origin {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Upload { .. } => "upload",
            Self::Url { .. } => "url",
            Self::GoogleDrive { .. } => "google_drive",
            Self::Notion { .. } => "notion",
        }
    }
}

/// A source as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SourceOut {
    #[schema(value_type = String)]
    pub id: KnowledgeSourceId,
    /// `upload`, `url`, `google_drive` or `notion`.
    pub kind: String,
    pub title: String,
    /// `queued`, `ingesting`, `ready`, `failed` (see `error`) or `stale`.
    pub status: String,
    /// Why the last ingestion failed; the last good passages stay searchable.
    pub error: Option<String>,
    /// Something worth knowing about a ready source (no text found, no semantic index).
    pub warning: Option<String>,
    /// `pdf`, `docx`, `markdown`, `text`, `html`, `csv`, or `mixed`.
    pub media_type: Option<String>,
    pub origin: Origin,
    pub size_bytes: i64,
    pub document_count: i64,
    pub chunk_count: i64,
    pub synced_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// True for HQ knowledge (the platform's own, shared by every tenant).
    pub hq: bool,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SourceRow {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub status: String,
    pub error: Option<String>,
    pub warning: Option<String>,
    pub media_type: Option<String>,
    pub origin: String,
    pub size_bytes: i64,
    pub document_count: i64,
    pub chunk_count: i64,
    pub synced_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SourceRow {
    pub(crate) fn origin(&self) -> Option<Origin> {
        serde_json::from_str(&self.origin).ok()
    }

    fn into_out(self, hq: bool) -> SourceOut {
        let origin = self.origin().unwrap_or(Origin::Upload {
            filename: String::new(),
        });
        SourceOut {
            id: KnowledgeSourceId::parse(&self.id).unwrap_or_default(),
            kind: self.kind,
            title: self.title,
            status: self.status,
            error: self.error,
            warning: self.warning,
            media_type: self.media_type,
            origin,
            size_bytes: self.size_bytes,
            document_count: self.document_count,
            chunk_count: self.chunk_count,
            synced_at: self.synced_at,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            hq,
        }
    }
}

fn is_hq(tx: &TenantTx) -> bool {
    tx.tenant_id().as_str() == HQ_TENANT
}

/// A new source: what to fetch, its title, who adds it and, for an upload, its bytes.
pub struct NewSource<'a> {
    pub origin: Origin,
    pub title: &'a str,
    pub created_by: &'a str,
    pub file: Option<&'a [u8]>,
    pub media_type: Option<&'a str>,
}

/// Stores a source (and an upload's bytes) and queues its ingestion. Returns the source
/// and the status event to publish after commit.
pub async fn create(tx: &mut TenantTx, new: NewSource<'_>) -> Result<(SourceOut, Vec<Event>)> {
    let id = KnowledgeSourceId::new();
    let now = Utc::now();
    let title: String = new.title.trim().chars().take(MAX_TITLE_CHARS).collect();
    let origin = serde_json::to_string(&new.origin)
        .map_err(|e| AppError::Internal(format!("origin: {e}")))?;
    let size = new.file.map_or(0, |f| f.len() as i64);
    tx.execute(
        scoped(
            "INSERT INTO knowledge_sources (tenant_id, id, kind, title, status, media_type, origin, size_bytes, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $9)",
        )
        .bind(&id)
        .bind(new.origin.kind())
        .bind(title.as_str())
        .bind(new.media_type)
        .bind(origin)
        .bind(size)
        .bind(new.created_by)
        .bind(now),
    )
    .await?;
    if let (Some(bytes), Origin::Upload { filename }) = (new.file, &new.origin) {
        tx.execute(
            scoped("INSERT INTO knowledge_files (tenant_id, source_id, filename, bytes, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(filename.as_str())
                .bind(bytes.to_vec())
                .bind(now),
        )
        .await?;
    }
    jobs::enqueue(tx, &id).await?;
    let source = get(tx, &id).await?;
    let ev = status_event(tx, &source).await?;
    Ok((source, vec![ev]))
}

pub(crate) async fn row(tx: &mut TenantTx, id: &KnowledgeSourceId) -> Result<Option<SourceRow>> {
    Ok(tx
        .fetch_optional(
            scoped(
                "SELECT id, kind, title, status, error, warning, media_type, origin, size_bytes, document_count, chunk_count, \
                 synced_at, created_by, created_at, updated_at \
                 FROM knowledge_sources WHERE tenant_id = $1 AND id = $2",
            )
            .bind(id),
        )
        .await?)
}

/// One source of the transaction's tenant.
pub async fn get(tx: &mut TenantTx, id: &KnowledgeSourceId) -> Result<SourceOut> {
    let hq = is_hq(tx);
    row(tx, id)
        .await?
        .map(|r| r.into_out(hq))
        .ok_or(AppError::NotFound("knowledge source"))
}

/// Every source of the transaction's tenant, newest first.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<SourceOut>> {
    let hq = is_hq(tx);
    let rows: Vec<SourceRow> = tx
        .fetch_all(scoped(
            "SELECT id, kind, title, status, error, warning, media_type, origin, size_bytes, document_count, chunk_count, \
             synced_at, created_by, created_at, updated_at \
             FROM knowledge_sources WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC",
        ))
        .await?;
    Ok(rows.into_iter().map(|r| r.into_out(hq)).collect())
}

/// Deletes a source with its file and every chunk (and so its vectors), in `tx`.
pub async fn delete(tx: &mut TenantTx, id: &KnowledgeSourceId) -> Result<(SourceOut, Vec<Event>)> {
    let source = get(tx, id).await?;
    tx.execute(
        scoped("DELETE FROM knowledge_chunks WHERE tenant_id = $1 AND source_id = $2").bind(id),
    )
    .await?;
    tx.execute(scoped("DELETE FROM knowledge_sources WHERE tenant_id = $1 AND id = $2").bind(id))
        .await?;
    bump_generation(tx).await?;
    let mut gone = source.clone();
    gone.status = "deleted".into();
    let ev = status_event(tx, &gone).await?;
    Ok((source, vec![ev]))
}

/// A passage to store.
pub struct NewChunk<'a> {
    pub source: &'a KnowledgeSourceId,
    pub position: i64,
    pub document: &'a str,
    pub location: &'a str,
    pub text: &'a str,
    /// SHA-256 of `text`, hex: the key for reusing its embedding.
    pub text_hash: &'a str,
    /// Unit-length vector and the model that made it.
    pub embedding: Option<(&'a [f32], &'a str)>,
}

/// Stores a passage and its keyword index row. Call [`bump_generation`] once the
/// transaction's passages are written.
pub async fn insert_chunk(tx: &mut TenantTx, c: &NewChunk<'_>) -> Result<()> {
    // A random key for the keyword index (63 bits; a clash fails the unique index).
    let key = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
    tx.defer(
        scoped(
            "INSERT INTO knowledge_chunks (tenant_id, id, source_id, fts_key, position, document, location, text, text_hash, embedding, embedding_model, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(crate::ids::ChunkId::new())
        .bind(c.source)
        .bind(key)
        .bind(c.position)
        .bind(c.document)
        .bind(c.location)
        .bind(c.text)
        .bind(c.text_hash)
        .bind(c.embedding.map(|(v, _)| vectors::to_bytes(v)))
        .bind(c.embedding.map(|(_, m)| m))
        .bind(Utc::now()),
    )
    .await?;
    let row = crate::store::cross_tenant::knowledge_fts_row(
        tx,
        key,
        c.source.as_str(),
        c.document,
        c.location,
        c.text,
    );
    if let Some(q) = row {
        tx.defer(q).await?;
    }
    Ok(())
}

/// Marks that the tenant's chunks changed, so every process reloads its vectors.
pub(crate) async fn bump_generation(tx: &mut TenantTx) -> Result<()> {
    tx.execute(scoped(
        "UPDATE tenants SET knowledge_generation = knowledge_generation + 1 WHERE id = $1",
    ))
    .await?;
    Ok(())
}

/// Records a `knowledge.source` event with the source's state on the tenant's
/// `knowledge` topic (the Knowledge page updates live from it).
pub(crate) async fn status_event(tx: &mut TenantTx, s: &SourceOut) -> Result<Event> {
    let (seq,): (i64,) = tx
        .fetch_one(scoped(
            "UPDATE tenants SET knowledge_seq = knowledge_seq + 1 WHERE id = $1 RETURNING knowledge_seq",
        ))
        .await?;
    realtime::record(
        tx,
        TOPIC,
        seq,
        "knowledge.source",
        json!({"source_id": s.id, "title": s.title, "status": s.status, "error": s.error,
               "warning": s.warning, "chunk_count": s.chunk_count, "document_count": s.document_count}),
    )
    .await
}
