-- Signed receipts in per-company transparency logs (RFC 6962 trees, C2SP checkpoints)
-- and exports of a company's data with its evidence.
-- Keep in step with ../sqlite/0013_receipts.sql: a test compares the two.

-- The platform's Ed25519 keys that sign checkpoints. One is active (the unique index);
-- retired ones stay published so what they signed keeps verifying. The private half is
-- encrypted under the platform key scope.
CREATE TABLE log_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    public_key BYTEA NOT NULL,
    private_key BYTEA NOT NULL,
    active BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX log_keys_active ON log_keys (active) WHERE active = TRUE;

-- One receipt per audit entry, written in the same transaction. `seq` (its position in
-- the log) is given by the integrator shortly after. `fields` holds each field's value
-- and salt (NULL once purged); `commitments` each field's salted hash, which the leaf
-- commits to, so proofs outlive a purge.
CREATE TABLE receipts (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    seq BIGINT,
    action TEXT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    fields TEXT,
    commitments TEXT NOT NULL,
    leaf_hash TEXT NOT NULL,
    purged_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX receipts_seq ON receipts (tenant_id, seq);
CREATE INDEX receipts_pending ON receipts (tenant_id, created_at) WHERE seq IS NULL;

-- The hash of every complete subtree of a company's tree (level 0: the leaves), so any
-- proof reads O(log n) rows.
CREATE TABLE log_nodes (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    level BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
);

-- A company's integrated size and its log's origin (fixed at the first integration);
-- its row is the integrator's lock.
CREATE TABLE log_heads (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    size BIGINT NOT NULL,
    origin TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Signed checkpoints (C2SP signed notes), one per integration.
CREATE TABLE log_checkpoints (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    size BIGINT NOT NULL,
    root TEXT NOT NULL,
    note TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, size)
);

-- A company's export: a signed archive built by the `export` job, downloadable until it
-- expires (then the bytes are dropped and the row stays as a record).
CREATE TABLE exports (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    -- queued | ready | failed | expired
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    size_bytes BIGINT,
    sha256 TEXT,
    archive BYTEA,
    error TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX exports_recent ON exports (tenant_id, created_at);
CREATE INDEX exports_expiring ON exports (expires_at) WHERE archive IS NOT NULL;

ALTER TABLE receipts ENABLE ROW LEVEL SECURITY;
ALTER TABLE receipts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON receipts
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE log_nodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE log_nodes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON log_nodes
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE log_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE log_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON log_heads
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE log_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE log_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON log_checkpoints
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE exports ENABLE ROW LEVEL SECURITY;
ALTER TABLE exports FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON exports
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- Companies with receipts waiting for a position (every process's integrator).
CREATE FUNCTION ocsuite_log_pending(p_limit BIGINT)
RETURNS TABLE (tenant_id TEXT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT DISTINCT r.tenant_id FROM receipts r WHERE r.seq IS NULL LIMIT p_limit;
$$;

-- Drops the bytes of exports past their download window, in every company.
CREATE FUNCTION ocsuite_expire_exports(p_now TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public AS $$
    WITH x AS (
        UPDATE exports SET archive = NULL, status = 'expired'
         WHERE archive IS NOT NULL AND expires_at < p_now RETURNING 1)
    SELECT count(*) FROM x;
$$;
