-- Knowledge: a tenant's sources (uploads, web pages, Drive, Notion), their stored
-- files, the chunks they split into (keyword-indexed by full-text search, optionally
-- embedded), and the platform's own HQ sources, kept under a reserved tenant.
-- Keep in step with ../sqlite/0008_knowledge.sql: a test compares the two.

ALTER TABLE tenants ADD COLUMN knowledge_seq BIGINT NOT NULL DEFAULT 0;
-- Bumped by every change to a tenant's chunks: search processes reload their
-- in-memory vectors when it moves.
ALTER TABLE tenants ADD COLUMN knowledge_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN citations TEXT;
ALTER TABLE meetings ADD COLUMN citations TEXT;

-- HQ knowledge (the operator's playbooks and help articles) lives under this reserved
-- tenant. Nobody is a member of it; only super-admin routes open its scope.
INSERT INTO tenants (id, name, profile, created_at, updated_at)
VALUES ('ten_00000000000000000000000000000000', 'ocsuite HQ', '{}', '2026-12-06T00:00:00Z', '2026-12-06T00:00:00Z');

CREATE TABLE knowledge_sources (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    warning TEXT,
    media_type TEXT,
    origin TEXT NOT NULL,
    size_bytes BIGINT NOT NULL DEFAULT 0,
    document_count BIGINT NOT NULL DEFAULT 0,
    chunk_count BIGINT NOT NULL DEFAULT 0,
    ingest_job_id TEXT,
    synced_at TIMESTAMPTZ,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX knowledge_sources_sync ON knowledge_sources (kind, synced_at);

CREATE TABLE knowledge_files (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, source_id),
    FOREIGN KEY (tenant_id, source_id) REFERENCES knowledge_sources (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE knowledge_chunks (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    fts_key BIGINT NOT NULL,
    position BIGINT NOT NULL,
    document TEXT NOT NULL,
    location TEXT NOT NULL,
    text TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    embedding BYTEA,
    embedding_model TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, source_id) REFERENCES knowledge_sources (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX knowledge_chunks_fts_key ON knowledge_chunks (fts_key);
CREATE INDEX knowledge_chunks_source ON knowledge_chunks (tenant_id, source_id, position);

-- The keyword index: one tsvector per chunk (English stemming, like SQLite's porter;
-- other languages match word for word),
-- written by the trigger below and removed with its chunk.
CREATE TABLE _knowledge_fts (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    fts_key BIGINT PRIMARY KEY REFERENCES knowledge_chunks (fts_key) ON DELETE CASCADE,
    tsv TSVECTOR NOT NULL
);
CREATE INDEX _knowledge_fts_tsv ON _knowledge_fts USING GIN (tsv);

CREATE FUNCTION knowledge_chunks_fts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO _knowledge_fts (tenant_id, fts_key, tsv)
    VALUES (NEW.tenant_id, NEW.fts_key,
            setweight(to_tsvector('english', NEW.document || ' ' || NEW.location), 'B')
            || to_tsvector('english', NEW.text));
    RETURN NULL;
END $$;
CREATE TRIGGER knowledge_chunks_fts_insert AFTER INSERT ON knowledge_chunks
    FOR EACH ROW EXECUTE FUNCTION knowledge_chunks_fts();

ALTER TABLE knowledge_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_sources FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON knowledge_sources
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE knowledge_files ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_files FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON knowledge_files
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE knowledge_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON knowledge_chunks
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE _knowledge_fts ENABLE ROW LEVEL SECURITY;
ALTER TABLE _knowledge_fts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON _knowledge_fts
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- Fetched sources due for a re-sync, across tenants (the scheduler's one cross-tenant
-- read; it then opens each tenant's scope to queue the job).
CREATE FUNCTION ocsuite_knowledge_due(p_cutoff TIMESTAMPTZ, p_limit BIGINT)
RETURNS TABLE (tenant_id TEXT, id TEXT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT s.tenant_id, s.id FROM knowledge_sources s
     WHERE s.kind <> 'upload' AND s.ingest_job_id IS NULL
       AND (s.synced_at IS NULL OR s.synced_at < p_cutoff)
       AND s.tenant_id NOT IN (SELECT t.id FROM tenants t WHERE t.jobs_paused_at IS NOT NULL)
     ORDER BY s.synced_at NULLS FIRST LIMIT p_limit;
$$;
