//! `ingest-source` jobs: fetch a source, extract its text, split it, embed the passages
//! and replace the source's chunks in one transaction.
//!
//! One job per source at most (`knowledge_sources.ingest_job_id`, set by a conditional
//! update). Queued when a source is added, on demand (resync) and by the scheduler for
//! fetched sources. The work happens outside any transaction; the final write checks
//! that the source still exists, so a source deleted mid-ingestion leaves nothing behind
//! (and the lease renewal notices the deletion and stops the attempt early). A failure
//! keeps the last good chunks and leaves its reason on the source; passing faults (a
//! site that is down) retry with backoff and end in `ingest-source-dlq`.
//!
//! Embeddings already computed for an identical passage of the same source are reused,
//! so a re-sync of a large folder only pays for what changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use sha2::Digest;

use super::extract;
use super::jobs::IngestJob;
use super::{Origin, chunk, fetch, vectors};
use crate::connectors::vault::Vault;
use crate::error::Result;
use crate::ids::{KnowledgeSourceId, TenantId};
use crate::llm::Provider;
use crate::queue::worker::{Handler, Outcome, Resolution, Start};
use crate::queue::{Claimed, INGEST_SOURCE};
use crate::realtime::{Bus, Event};
use crate::store::{Store, TenantTx, scoped};

/// Passages per embeddings request.
const EMBED_BATCH: usize = 32;
/// Characters of a passage sent to the embedding model (the heading rides along).
const EMBED_CHARS: usize = 4000;
/// Most passages one source may hold.
const MAX_CHUNKS: usize = 50_000;

fn source_of(job: &Claimed) -> Option<KnowledgeSourceId> {
    job.payload_as::<IngestJob>().map(|j| j.source_id)
}

/// What `start` read from the source row.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    source_id: KnowledgeSourceId,
    origin: Origin,
    title: String,
}

/// The `ingest-source` queue handler.
pub struct Ingest {
    store: Store,
    bus: Arc<Bus>,
    llm: Arc<dyn Provider>,
    vault: Arc<Vault>,
    /// For the connectors' APIs (Drive, Notion); web pages get their own, pinned client.
    http: reqwest::Client,
    settings: IngestSettings,
}

/// What the handler needs from the configuration.
pub struct IngestSettings {
    pub embedding_model: Option<String>,
    /// May web-page sources point at private addresses (development)?
    pub allow_private: bool,
    /// Largest file read from Drive.
    pub max_file_bytes: usize,
}

impl Ingest {
    pub fn new(
        store: Store,
        bus: Arc<Bus>,
        llm: Arc<dyn Provider>,
        vault: Arc<Vault>,
        settings: IngestSettings,
    ) -> Self {
        Self {
            store,
            bus,
            llm,
            vault,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            settings,
        }
    }
}

type Document = fetch::Fetched;

/// A passage ready to store.
struct NewChunk {
    document: String,
    location: String,
    text: String,
    hash: String,
    embedding: Option<Vec<f32>>,
}

/// The result of reading every document of a source.
struct Read {
    chunks: Vec<NewChunk>,
    media_type: Option<String>,
    title: Option<String>,
    warnings: Vec<String>,
    documents: i64,
    size: i64,
}

fn failed(error: impl Into<String>, retryable: bool) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        retryable,
    }
}

impl Ingest {
    /// The source's documents, and what could not be read of a multi-document source.
    async fn documents(
        &self,
        tenant: &TenantId,
        p: &Prepared,
    ) -> std::result::Result<(Vec<Document>, Vec<String>), Outcome> {
        match &p.origin {
            Origin::Upload { filename } => {
                let mut tx = self
                    .store
                    .tenant_read(tenant)
                    .await
                    .map_err(|e| failed(e.to_string(), true))?;
                let bytes: Option<(Vec<u8>,)> = tx
                    .fetch_optional(
                        scoped("SELECT bytes FROM knowledge_files WHERE tenant_id = $1 AND source_id = $2")
                            .bind(&p.source_id),
                    )
                    .await
                    .map_err(|e| failed(e.to_string(), true))?;
                let Some((bytes,)) = bytes else {
                    return Err(Outcome::Cancelled);
                };
                Ok((
                    vec![Document {
                        name: filename.clone(),
                        bytes,
                        content_type: None,
                    }],
                    vec![],
                ))
            }
            Origin::Url { url } => {
                let f = fetch::web_page(url, self.settings.allow_private)
                    .await
                    .map_err(|e| failed(e.message, e.retryable))?;
                Ok((vec![f], vec![]))
            }
            Origin::GoogleDrive {
                file_ids,
                folder_id,
            } => {
                let (provider, token) = self.connection(tenant, "google").await?;
                let read = super::drive::read(
                    &self.http,
                    &provider,
                    token.secret(),
                    file_ids,
                    folder_id.as_deref(),
                    self.settings.max_file_bytes,
                )
                .await
                .map_err(|e| failed(e.message, e.retryable))?;
                Ok((read.documents, read.warnings))
            }
            Origin::Notion { page_ids } => {
                let (provider, token) = self.connection(tenant, "notion").await?;
                let read = super::notion::read(&self.http, &provider, token.secret(), page_ids)
                    .await
                    .map_err(|e| failed(e.message, e.retryable))?;
                Ok((read.documents, read.warnings))
            }
        }
    }

    /// The provider and a valid token of the tenant's connection to it.
    async fn connection(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> std::result::Result<
        (
            Arc<crate::connectors::Provider>,
            crate::connectors::vault::AccessToken,
        ),
        Outcome,
    > {
        let p = self
            .vault
            .providers()
            .get(provider)
            .cloned()
            .ok_or_else(|| {
                failed(
                    format!("this server has no `{provider}` connector configured"),
                    false,
                )
            })?;
        let token = self
            .vault
            .access_token(tenant, provider)
            .await
            .map_err(|e| failed(e.to_string(), e.is_retryable()))?;
        Ok((p, token))
    }

    /// Extracts and splits every document; a document that cannot be read fails the
    /// source when it is the only one, and is named in a warning otherwise.
    async fn read(
        &self,
        docs: Vec<Document>,
        several: bool,
        warnings: Vec<String>,
    ) -> std::result::Result<Read, Outcome> {
        let several = several || docs.len() > 1;
        let mut read = Read {
            chunks: Vec::new(),
            media_type: None,
            title: None,
            warnings,
            documents: docs.len() as i64,
            size: docs.iter().map(|d| d.bytes.len() as i64).sum(),
        };
        let mut types = Vec::new();
        for doc in docs {
            let name = doc.name.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let media = extract::detect(&doc.name, doc.content_type.as_deref(), &doc.bytes)
                    .map_err(|what| format!("unsupported content: the file is {what}"))?;
                let extracted = extract::extract(media, &doc.bytes)?;
                Ok::<_, String>((media, extracted))
            })
            .await;
            let (media, extracted) = match outcome {
                Ok(Ok(x)) => x,
                Ok(Err(reason)) if !several => return Err(failed(reason, false)),
                // The PDF parser panics on some damaged files.
                Err(_) if !several => {
                    return Err(failed(
                        "the file is damaged and its text cannot be read",
                        false,
                    ));
                }
                Ok(Err(reason)) => {
                    read.warnings.push(format!("{name}: {reason}"));
                    continue;
                }
                Err(_) => {
                    read.warnings
                        .push(format!("{name}: damaged, its text cannot be read"));
                    continue;
                }
            };
            types.push(media);
            if let Some(w) = extracted.warning {
                read.warnings
                    .push(if several { format!("{name}: {w}") } else { w });
            }
            if read.title.is_none() {
                read.title = extracted.title;
            }
            let document = if several { name.clone() } else { String::new() };
            for piece in chunk::split(&extracted.sections) {
                let hash = hex::encode(sha2::Sha256::digest(piece.text.as_bytes()));
                read.chunks.push(NewChunk {
                    document: document.clone(),
                    location: piece.location,
                    text: piece.text,
                    hash,
                    embedding: None,
                });
            }
        }
        types.dedup();
        read.media_type = match types.as_slice() {
            [] => None,
            [one] => Some(one.as_str().to_owned()),
            _ => Some("mixed".into()),
        };
        if read.chunks.len() > MAX_CHUNKS {
            return Err(failed(
                format!(
                    "the source has more than {MAX_CHUNKS} passages; split it into smaller sources"
                ),
                false,
            ));
        }
        Ok(read)
    }

    /// Fills in embeddings: reused from the source's current passages where the text is
    /// the same, computed for the rest. A model that fails leaves the passages keyword-
    /// only and says so; it does not fail the source.
    async fn embed(&self, tenant: &TenantId, source: &KnowledgeSourceId, read: &mut Read) {
        let Some(model) = &self.settings.embedding_model else {
            return;
        };
        let known: HashMap<String, Vec<u8>> = match self.store.tenant_read(tenant).await {
            Ok(mut tx) => tx
                .fetch_all::<(String, Vec<u8>)>(
                    scoped("SELECT text_hash, embedding FROM knowledge_chunks WHERE tenant_id = $1 AND source_id = $2 AND embedding_model = $3 AND embedding IS NOT NULL")
                        .bind(source)
                        .bind(model.as_str()),
                )
                .await
                .map(|rows| rows.into_iter().collect())
                .unwrap_or_default(),
            Err(_) => HashMap::new(),
        };
        let mut missing = Vec::new();
        for (i, c) in read.chunks.iter_mut().enumerate() {
            match known.get(&c.hash) {
                Some(b) => c.embedding = Some(vectors::from_bytes(b)),
                None => missing.push(i),
            }
        }
        for batch in missing.chunks(EMBED_BATCH) {
            let inputs: Vec<String> = batch
                .iter()
                .map(|&i| {
                    let c = &read.chunks[i];
                    let head = [c.document.as_str(), c.location.as_str()]
                        .iter()
                        .filter(|s| !s.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" — ");
                    let text: String = c.text.chars().take(EMBED_CHARS).collect();
                    if head.is_empty() {
                        text
                    } else {
                        format!("{head}\n\n{text}")
                    }
                })
                .collect();
            match self.llm.embed(model, &inputs).await {
                Ok(vs) => {
                    for (&i, v) in batch.iter().zip(vs) {
                        read.chunks[i].embedding = Some(vectors::normalize(v));
                    }
                }
                Err(e) => {
                    read.warnings.push(format!(
                        "semantic index incomplete ({e}); keyword search works, and a resync retries"
                    ));
                    return;
                }
            }
        }
    }

    /// Replaces the source's chunks and marks it ready, if it still exists.
    async fn write(&self, tenant: &TenantId, p: &Prepared, read: Read) -> Result<Option<i64>> {
        let mut tx = self.store.tenant(tenant).await?;
        let Some(row) = super::row(&mut tx, &p.source_id).await? else {
            return Ok(None);
        };
        tx.execute(
            scoped("DELETE FROM knowledge_chunks WHERE tenant_id = $1 AND source_id = $2")
                .bind(&p.source_id),
        )
        .await?;
        let now = Utc::now();
        let model = self.settings.embedding_model.as_deref();
        for (position, c) in read.chunks.iter().enumerate() {
            super::insert_chunk(
                &mut tx,
                &super::NewChunk {
                    source: &p.source_id,
                    position: position as i64,
                    document: &c.document,
                    location: &c.location,
                    text: &c.text,
                    text_hash: &c.hash,
                    embedding: c.embedding.as_deref().zip(model),
                },
            )
            .await?;
        }
        let mut warnings = read.warnings;
        if read.chunks.is_empty() {
            warnings.insert(
                0,
                "no text was found (a scanned PDF or an image needs text recognition first)".into(),
            );
        }
        let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
        // A web page names itself better than its URL does.
        let title = match (&p.origin, &read.title) {
            (Origin::Url { url }, Some(t)) if row.title == *url => {
                t.chars().take(super::MAX_TITLE_CHARS).collect()
            }
            _ => row.title.clone(),
        };
        tx.execute(
            scoped(
                "UPDATE knowledge_sources SET status = 'ready', error = NULL, warning = $2, media_type = COALESCE($3, media_type), \
                 document_count = $4, chunk_count = $5, size_bytes = $6, title = $7, synced_at = $8, updated_at = $8 \
                 WHERE tenant_id = $1 AND id = $9",
            )
            .bind(warning)
            .bind(read.media_type)
            .bind(read.documents)
            .bind(read.chunks.len() as i64)
            .bind(read.size)
            .bind(title)
            .bind(now)
            .bind(&p.source_id),
        )
        .await?;
        super::bump_generation(&mut tx).await?;
        let source = super::get(&mut tx, &p.source_id).await?;
        let ev = super::status_event(&mut tx, &source).await?;
        tx.commit().await?;
        self.bus.after_commit(vec![ev]);
        Ok(Some(source.chunk_count))
    }
}

impl Handler for Ingest {
    fn queue(&self) -> &'static str {
        INGEST_SOURCE
    }

    fn start<'a>(&'a self, tx: &'a mut TenantTx, job: &'a Claimed) -> BoxFuture<'a, Result<Start>> {
        Box::pin(async move {
            let row = match source_of(job) {
                Some(id) => super::row(tx, &id).await?,
                None => None,
            };
            let Some(row) = row else {
                return Ok(Start::Skip { events: vec![] });
            };
            let Some(origin) = row.origin() else {
                return Ok(Start::Skip { events: vec![] });
            };
            let id = KnowledgeSourceId::parse(&row.id).unwrap_or_default();
            tx.execute(
                scoped("UPDATE knowledge_sources SET status = 'ingesting', updated_at = $2 WHERE tenant_id = $1 AND id = $3")
                    .bind(Utc::now())
                    .bind(&id),
            )
            .await?;
            let source = super::get(tx, &id).await?;
            let ev = super::status_event(tx, &source).await?;
            Start::run(
                Duration::from_secs(600),
                vec![ev],
                &Prepared {
                    source_id: id,
                    origin,
                    title: row.title,
                },
            )
        })
    }

    fn run(self: Arc<Self>, job: Claimed, prepared: Value) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let p: Prepared = match crate::queue::worker::prepared(prepared) {
                Ok(p) => p,
                Err(failed) => return failed,
            };
            let (docs, warnings) = match self.documents(&job.tenant_id, &p).await {
                Ok(d) => d,
                Err(outcome) => return outcome,
            };
            // Drive and Notion sources hold several documents, even when only one is left.
            let several = matches!(p.origin, Origin::GoogleDrive { .. } | Origin::Notion { .. });
            let mut read = match self.read(docs, several, warnings).await {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            self.embed(&job.tenant_id, &p.source_id, &mut read).await;
            let documents = read.documents;
            match self.write(&job.tenant_id, &p, read).await {
                Ok(Some(chunks)) => Outcome::Succeeded {
                    summary: Some(format!("{chunks} passages from {documents} document(s)")),
                    output: json!({"chunks": chunks, "documents": documents}),
                },
                // Deleted while we worked: nothing was written.
                Ok(None) => Outcome::Cancelled,
                Err(e) => failed(e.to_string(), true),
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        job: &'a Claimed,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let Some(id) = source_of(job) else {
                return Ok(vec![]);
            };
            let now = Utc::now();
            let changed = match resolution {
                Resolution::Retrying { error, .. } => tx
                    .execute(
                        scoped("UPDATE knowledge_sources SET status = 'queued', error = $2, updated_at = $3 WHERE tenant_id = $1 AND id = $4")
                            .bind(format!("attempt {} failed, retrying: {error}", job.attempts))
                            .bind(now)
                            .bind(&id),
                    )
                    .await?,
                Resolution::Failed { error } | Resolution::Dead { error } => tx
                    .execute(
                        scoped("UPDATE knowledge_sources SET status = 'failed', error = $2, ingest_job_id = NULL, updated_at = $3 WHERE tenant_id = $1 AND id = $4 AND ingest_job_id = $5")
                            .bind(error.as_str())
                            .bind(now)
                            .bind(&id)
                            .bind(&job.id),
                    )
                    .await?,
                Resolution::Succeeded { .. } | Resolution::Cancelled => {
                    tx.execute(
                        scoped("UPDATE knowledge_sources SET ingest_job_id = NULL WHERE tenant_id = $1 AND id = $2 AND ingest_job_id = $3")
                            .bind(&id)
                            .bind(&job.id),
                    )
                    .await?;
                    0
                }
            };
            if changed == 0 {
                return Ok(vec![]);
            }
            let source = super::get(tx, &id).await?;
            if let Resolution::Failed { error } | Resolution::Dead { error } = resolution {
                crate::triggers::events::emit(
                    tx,
                    crate::triggers::events::PlatformEvent {
                        event: "knowledge.source_failed",
                        key: format!("{id}:{}", job.id),
                        percent: None,
                        summary: format!(
                            "The knowledge source \"{}\" could not be read: {error}.",
                            source.title
                        ),
                        figures: vec![],
                        links: vec![crate::alerts::Link {
                            label: "Knowledge".into(),
                            href: "/knowledge".into(),
                        }],
                        data: json!({"source_id": id, "title": source.title, "error": error}),
                    },
                    now,
                )
                .await?;
            }
            Ok(vec![super::status_event(tx, &source).await?])
        })
    }

    fn cancel_requested<'a>(
        &'a self,
        store: &'a Store,
        job: &'a Claimed,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let Some(id) = source_of(job) else {
                return Ok(true);
            };
            let mut tx = store.tenant_read(&job.tenant_id).await?;
            Ok(super::row(&mut tx, &id).await?.is_none())
        })
    }
}
