-- Connectors and OAuth authorization states. Mirrors postgres/0004_connectors.sql;
-- the cross-tenant scheduler and pruning are plain statements in src/connectors/.

CREATE TABLE connectors (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,
    account TEXT,
    scopes TEXT NOT NULL,
    access_expires_at TEXT,
    refresh_expires_at TEXT,
    has_refresh_token INTEGER NOT NULL,
    last_error TEXT,
    last_error_at TEXT,
    last_sync_at TEXT,
    last_refresh_at TEXT,
    refresh_lock_until TEXT,
    sync_job_id TEXT,
    connected_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, provider)
);
CREATE INDEX connectors_sync_due ON connectors (last_sync_at) WHERE sync_job_id IS NULL;

CREATE TABLE oauth_states (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    provider TEXT NOT NULL,
    user_id TEXT NOT NULL,
    verifier BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
