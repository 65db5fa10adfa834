-- Modules, tasks, the durable job queue and the realtime event log.
-- JSON is stored as TEXT on both backends and validated in Rust before it is written.

-- Per-tenant queue controls: the kill switch (no job of a paused tenant is claimed) and
-- how many of its jobs may run at once, so one tenant cannot take every worker.
ALTER TABLE tenants ADD COLUMN jobs_paused_at TIMESTAMPTZ;
ALTER TABLE tenants ADD COLUMN job_concurrency BIGINT NOT NULL DEFAULT 4;

-- Modules a tenant switched off (absent = enabled).
CREATE TABLE tenant_modules (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    module TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, module)
);

-- External modules: MCP servers a tenant registered. Credentials live in tenant_secrets.
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
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    refreshed_at TIMESTAMPTZ,
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
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    result TEXT,
    error TEXT,
    idempotency_key TEXT,
    created_by TEXT NOT NULL,
    cancel_requested BOOLEAN NOT NULL,
    event_seq BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_recent ON tasks (tenant_id, created_at);
CREATE INDEX tasks_status ON tasks (tenant_id, status);

-- One row per pending, running or dead job; a finished job is deleted in the same
-- transaction that records its outcome on the row it serves.
CREATE TABLE jobs (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority BIGINT NOT NULL,
    run_at TIMESTAMPTZ NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    lease_token TEXT,
    lease_until TIMESTAMPTZ,
    worker TEXT,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- Every job is inserted, updated and deleted within seconds: vacuum it early and fast,
-- or claims wade through dead index entries.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000,
                      autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.05);
CREATE INDEX jobs_claim ON jobs (queue, status, priority DESC, run_at, id);
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX tenants_jobs_paused ON tenants (jobs_paused_at) WHERE jobs_paused_at IS NOT NULL;

-- The realtime event log: every event published on a topic, for resume after reconnect.
CREATE TABLE events (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX events_topic_seq ON events (tenant_id, topic, seq);
CREATE INDEX events_tenant_id ON events (tenant_id, id);
CREATE INDEX events_created ON events (created_at);

ALTER TABLE tenant_modules ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_modules FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_modules
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE mcp_servers ENABLE ROW LEVEL SECURITY;
ALTER TABLE mcp_servers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON mcp_servers
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tasks
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobs
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE POLICY owner_maintenance ON tenant_modules TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON mcp_servers TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON tasks TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON jobs TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON events TO CURRENT_USER USING (true) WITH CHECK (true);

-- Workers serve every tenant, but the runtime role sees no job without a tenant set.
-- These functions are the only cross-tenant doors: they run as the owner (SECURITY
-- DEFINER), do exactly one queue operation, and return only what the worker needs to
-- continue inside the job's own tenant scope.

-- Claims the next runnable job of a queue: highest priority, then oldest; skipping
-- paused tenants and tenants already running their concurrency limit. Which tenants to
-- skip is worked out once per claim from the running jobs (few: at most one per worker),
-- so the ready jobs are read in index order and the scan stops at the first claimable.
-- It also enters the job's tenant scope (app.tenant_id, transaction-local), so the
-- worker records "started" in the same transaction without another round trip.
-- PL/pgSQL rather than SQL so its plan is cached per connection.
CREATE FUNCTION ocsuite_claim_job(p_queue TEXT, p_worker TEXT, p_token TEXT,
                                  p_now TIMESTAMPTZ, p_lease_until TIMESTAMPTZ)
RETURNS TABLE (tenant_id TEXT, id TEXT, payload TEXT, attempts BIGINT, max_attempts BIGINT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
#variable_conflict use_column
DECLARE
    claimed RECORD;
BEGIN
    UPDATE jobs j
       SET status = 'running', attempts = j.attempts + 1, lease_token = p_token,
           lease_until = p_lease_until, worker = p_worker, updated_at = p_now
     WHERE (j.tenant_id, j.id) = (
        SELECT c.tenant_id, c.id FROM jobs c
         WHERE c.queue = p_queue AND c.status = 'ready' AND c.run_at <= p_now
           AND c.tenant_id NOT IN (SELECT t.id FROM tenants t WHERE t.jobs_paused_at IS NOT NULL)
           AND c.tenant_id NOT IN (
               SELECT r.tenant_id FROM jobs r JOIN tenants t ON t.id = r.tenant_id
                WHERE r.status = 'running'
                GROUP BY r.tenant_id, t.job_concurrency
               HAVING count(*) >= t.job_concurrency)
         ORDER BY c.priority DESC, c.run_at, c.id
         LIMIT 1
         FOR UPDATE OF c SKIP LOCKED)
    RETURNING j.tenant_id, j.id, j.payload, j.attempts, j.max_attempts INTO claimed;
    IF FOUND THEN
        PERFORM set_config('app.tenant_id', claimed.tenant_id, true);
        tenant_id := claimed.tenant_id;
        id := claimed.id;
        payload := claimed.payload;
        attempts := claimed.attempts;
        max_attempts := claimed.max_attempts;
        RETURN NEXT;
    END IF;
END;
$$;

-- Jobs whose worker stopped renewing its lease: their tenant and id, so the caller can
-- requeue or dead-letter each inside that tenant's scope.
CREATE FUNCTION ocsuite_expired_leases(p_now TIMESTAMPTZ, p_limit BIGINT)
RETURNS TABLE (tenant_id TEXT, id TEXT)
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    SELECT j.tenant_id, j.id FROM jobs j
     WHERE j.status = 'running' AND j.lease_until < p_now
     ORDER BY j.lease_until LIMIT p_limit;
$$;

-- A user's role in a tenant (no row: not a member), and whether the tenant exists; the
-- one membership fact every tenant-scoped request needs, in one round trip and without
-- a transaction.
CREATE FUNCTION ocsuite_member_role(p_tenant TEXT, p_user TEXT)
RETURNS TABLE (role TEXT, tenant_exists BOOLEAN)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT (SELECT m.role FROM memberships m WHERE m.tenant_id = p_tenant AND m.user_id = p_user),
           EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant);
$$;

-- Queue depths over all tenants, for the platform admin API and metrics.
CREATE FUNCTION ocsuite_queue_depths()
RETURNS TABLE (queue TEXT, status TEXT, jobs BIGINT)
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    SELECT j.queue, j.status, count(*) FROM jobs j GROUP BY j.queue, j.status;
$$;

-- Drops realtime events older than the retention window.
CREATE FUNCTION ocsuite_prune_events(p_before TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH d AS (DELETE FROM events WHERE created_at < p_before RETURNING 1)
    SELECT count(*) FROM d;
$$;
