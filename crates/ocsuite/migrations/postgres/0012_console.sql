-- Running the platform: suspending a company, support's "view as" sessions
-- (impersonation), deletion under dual control, owner invites, and the console's
-- tenant list and health figures.
-- Keep in step with ../sqlite/0012_console.sql: a test compares the two.

-- A suspended company's API refuses writes with 403 `tenant_suspended` (reads go on,
-- so its people can still take their data out) and its jobs and triggers wait. The suspension turns the job kill switch on; it turns it off
-- again on unsuspend only if it was the one that turned it on.
ALTER TABLE tenants ADD COLUMN suspended_at TIMESTAMPTZ;
ALTER TABLE tenants ADD COLUMN suspended_reason TEXT;
ALTER TABLE tenants ADD COLUMN suspension_paused_jobs BOOLEAN NOT NULL DEFAULT FALSE;

-- A super-admin's time-limited, reasoned "view as" session in one company. The
-- company sees these rows (its own audit of who looked).
CREATE TABLE impersonations (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    admin_id TEXT NOT NULL,
    admin_email TEXT NOT NULL,
    session_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    -- exit | logout (expiry needs no write: expires_at says it)
    end_reason TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX impersonations_recent ON impersonations (tenant_id, started_at);

ALTER TABLE impersonations ENABLE ROW LEVEL SECURITY;
ALTER TABLE impersonations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON impersonations
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- The session carries its open impersonation, so every request resolves it with the
-- session itself (no extra read).
ALTER TABLE sessions ADD COLUMN impersonation_id TEXT;
ALTER TABLE sessions ADD COLUMN impersonated_tenant TEXT;
ALTER TABLE sessions ADD COLUMN impersonation_until TIMESTAMPTZ;

-- Deleting a company under dual control: one super-admin asks, a different one
-- approves within 24 hours, then a job purges it. The record outlives the company
-- (hence no foreign key, and a column that is not `tenant_id`).
CREATE TABLE tenant_deletions (
    id TEXT PRIMARY KEY,
    target_tenant TEXT NOT NULL,
    tenant_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- requested | approved | purged | cancelled | expired
    status TEXT NOT NULL,
    approved_by TEXT,
    approved_at TIMESTAMPTZ,
    purged_at TIMESTAMPTZ,
    -- Tables and row counts removed (JSON), once purged.
    manifest TEXT
);
CREATE UNIQUE INDEX tenant_deletions_open ON tenant_deletions (target_tenant)
    WHERE status IN ('requested', 'approved');

-- An operator's invitation to start a company: accepting it (signed in as the email)
-- creates the company with the invitee as owner on the plan. Single use, expires,
-- revocable; only the token's digest is kept.
CREATE TABLE owner_invites (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    company_name TEXT NOT NULL,
    plan TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    accepted_at TIMESTAMPTZ,
    -- The company the acceptance created (no foreign key: the record outlives it).
    created_tenant TEXT,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX owner_invites_recent ON owner_invites (created_at);

-- Security events name the company they concern, where one does (an API key used from
-- a new address, a denied attempt on a company, a support session): its admins see
-- those and their members' sign-in events. Not `tenant_id`: the platform owns the
-- table, and the rows outlive the company.
ALTER TABLE security_events ADD COLUMN about_tenant TEXT;
CREATE INDEX security_events_tenant ON security_events (about_tenant, created_at);
CREATE INDEX security_events_recent ON security_events (created_at);

-- The addresses each API key was used from (JSON list, the latest 20), to tell a new one.
ALTER TABLE api_keys ADD COLUMN seen_ips TEXT;

-- Companies that are suspended now, for every process's cached copy.
CREATE FUNCTION ocsuite_suspended_tenants()
RETURNS TABLE (id TEXT, reason TEXT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT t.id, COALESCE(t.suspended_reason, '') FROM tenants t WHERE t.suspended_at IS NOT NULL;
$$;

-- The operator console's tenant list: a page of companies matching a search (name,
-- owner email, or id), newest first, with this month's figures. The figures are
-- computed for the page only, each from an index, so the list stays fast at any size.
CREATE FUNCTION ocsuite_console_tenants(
    p_pattern TEXT, p_exact TEXT, p_day TEXT, p_since TIMESTAMPTZ, p_limit BIGINT, p_offset BIGINT)
RETURNS TABLE (
    id TEXT, name TEXT, plan TEXT, created_at TIMESTAMPTZ, suspended_at TIMESTAMPTZ,
    owner_email TEXT, members BIGINT, last_active TIMESTAMPTZ, tokens BIGINT,
    cost_micros BIGINT, tasks BIGINT, storage_bytes BIGINT, total BIGINT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    WITH page AS (
        SELECT t.id, t.name, t.plan, t.created_at, t.suspended_at, count(*) OVER () AS total
          FROM tenants t
         WHERE t.id <> 'ten_00000000000000000000000000000000'
           AND (p_pattern IS NULL OR t.id = p_exact OR lower(t.name) LIKE p_pattern ESCAPE '\'
            OR EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id
                        WHERE m.tenant_id = t.id AND m.role = 'owner' AND u.email LIKE p_pattern ESCAPE '\'))
         ORDER BY t.created_at DESC, t.id
         LIMIT p_limit OFFSET p_offset)
    SELECT p.id, p.name, p.plan, p.created_at, p.suspended_at,
           (SELECT min(u.email) FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.tenant_id = p.id AND m.role = 'owner'),
           (SELECT count(*) FROM memberships m WHERE m.tenant_id = p.id),
           (SELECT max(x.at) FROM (
                SELECT max(a.created_at) AS at FROM audit_log a WHERE a.tenant_id = p.id
                UNION ALL SELECT max(k.created_at) FROM tasks k WHERE k.tenant_id = p.id
                UNION ALL SELECT max(c.updated_at) FROM conversations c WHERE c.tenant_id = p.id) x),
           (SELECT COALESCE(sum(l.prompt_tokens + l.completion_tokens), 0)::BIGINT FROM usage_ledger l
             WHERE l.tenant_id = p.id AND l.day >= p_day),
           (SELECT COALESCE(sum(l.cost_micros), 0)::BIGINT FROM usage_ledger l
             WHERE l.tenant_id = p.id AND l.day >= p_day),
           (SELECT count(*) FROM tasks k WHERE k.tenant_id = p.id AND k.created_at >= p_since),
           (SELECT COALESCE(sum(s.size_bytes), 0)::BIGINT FROM knowledge_sources s WHERE s.tenant_id = p.id),
           p.total
      FROM page p
     ORDER BY p.created_at DESC, p.id;
$$;
CREATE INDEX tenants_created ON tenants (created_at DESC, id);

-- The oldest ready job per queue, across tenants, for the health page.
CREATE FUNCTION ocsuite_queue_oldest(p_now TIMESTAMPTZ)
RETURNS TABLE (queue TEXT, oldest TIMESTAMPTZ)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT j.queue, min(j.run_at) FROM jobs j
     WHERE j.status = 'ready' AND j.run_at <= p_now GROUP BY j.queue;
$$;

-- Connections by provider and status across tenants, for the health page.
CREATE FUNCTION ocsuite_connector_health()
RETURNS TABLE (provider TEXT, status TEXT, connections BIGINT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT c.provider, c.status, count(*) FROM connectors c GROUP BY c.provider, c.status;
$$;
