-- Knowledge: a tenant's sources (uploads, web pages, Drive, Notion), their stored
-- files, the chunks they split into (keyword-indexed by FTS5, optionally embedded),
-- and the platform's own HQ sources, kept under a reserved tenant.
-- Keep in step with ../postgres/0008_knowledge.sql: a test compares the two.

ALTER TABLE tenants ADD COLUMN knowledge_seq INTEGER NOT NULL DEFAULT 0;
-- Bumped by every change to a tenant's chunks: search processes reload their
-- in-memory vectors when it moves.
ALTER TABLE tenants ADD COLUMN knowledge_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN citations TEXT;
ALTER TABLE meetings ADD COLUMN citations TEXT;

-- HQ knowledge (the operator's playbooks and help articles) lives under this reserved
-- tenant. Nobody is a member of it; only super-admin routes open its scope.
INSERT INTO tenants (id, name, profile, created_at, updated_at)
VALUES ('ten_00000000000000000000000000000000', 'ocsuite HQ', '{}', '2026-12-06T00:00:00Z', '2026-12-06T00:00:00Z');

CREATE TABLE knowledge_sources (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    -- upload | url | google_drive | notion
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    -- queued | ingesting | ready | failed | stale
    status TEXT NOT NULL,
    error TEXT,
    warning TEXT,
    -- pdf | docx | markdown | text | html | csv | mixed (several documents)
    media_type TEXT,
    -- What to fetch, as JSON: {"url"} / {"file_ids", "folder_id"} / {"page_ids"} / {"filename"}
    origin TEXT NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    document_count INTEGER NOT NULL DEFAULT 0,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    ingest_job_id TEXT,
    synced_at TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX knowledge_sources_sync ON knowledge_sources (kind, synced_at);

-- An upload's original bytes: every node and worker reads them from the database.
CREATE TABLE knowledge_files (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, source_id),
    FOREIGN KEY (tenant_id, source_id) REFERENCES knowledge_sources (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE knowledge_chunks (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    -- The keyword index's key for this chunk (random, unique).
    fts_key INTEGER NOT NULL,
    position INTEGER NOT NULL,
    -- The document inside the source (a Drive file's name, a Notion page's title).
    document TEXT NOT NULL,
    -- Where in the document: "page 3", "Pricing › Enterprise", "rows 2–41".
    location TEXT NOT NULL,
    text TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    -- Little-endian f32s, unit length; NULL when no embedding model is configured.
    embedding BLOB,
    embedding_model TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, source_id) REFERENCES knowledge_sources (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX knowledge_chunks_fts_key ON knowledge_chunks (fts_key);
CREATE INDEX knowledge_chunks_source ON knowledge_chunks (tenant_id, source_id, position);

-- BM25 keyword index (porter: English stemming). Contentless (the text lives in
-- knowledge_chunks), keyed by fts_key. The application writes each row with every word
-- prefixed by its tenant's tag (`knowledge::fts_text`), so one tenant's words are other
-- terms than another's: a search reads only its tenant's postings and ranks by its
-- tenant's own word frequencies. The source is a column, for searches limited to some.
CREATE VIRTUAL TABLE _knowledge_fts USING fts5(
    source, document, location, text,
    content = '', contentless_delete = 1,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER knowledge_chunks_fts_delete AFTER DELETE ON knowledge_chunks BEGIN
    DELETE FROM _knowledge_fts WHERE rowid = old.fts_key;
END;
