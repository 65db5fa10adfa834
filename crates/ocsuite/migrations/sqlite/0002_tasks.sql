-- Modules, tasks, the durable job queue and the realtime event log.
-- Mirrors postgres/0002_tasks.sql; SQLite has no row-level security or functions: the
-- queue's cross-tenant operations are plain statements in src/queue/.

ALTER TABLE tenants ADD COLUMN jobs_paused_at TEXT;
ALTER TABLE tenants ADD COLUMN job_concurrency INTEGER NOT NULL DEFAULT 4;

CREATE TABLE tenant_modules (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    module TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, module)
);

CREATE TABLE mcp_servers (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    secret_id TEXT,
    tools TEXT NOT NULL,
    server_info TEXT,
    status TEXT NOT NULL,
    last_error TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    refreshed_at TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE tasks (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    capability TEXT NOT NULL,
    version TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    idempotency_key TEXT,
    created_by TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL,
    event_seq INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_recent ON tasks (tenant_id, created_at);
CREATE INDEX tasks_status ON tasks (tenant_id, status);

CREATE TABLE jobs (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    run_at TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    lease_token TEXT,
    lease_until TEXT,
    worker TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX jobs_claim ON jobs (queue, status, priority DESC, run_at, id);
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX tenants_jobs_paused ON tenants (jobs_paused_at) WHERE jobs_paused_at IS NOT NULL;

CREATE TABLE events (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX events_topic_seq ON events (tenant_id, topic, seq);
CREATE INDEX events_tenant_id ON events (tenant_id, id);
CREATE INDEX events_created ON events (created_at);
