-- Connectors: the tenant's OAuth connections to SaaS accounts, and the short-lived
-- authorization states of connections in progress. Tokens are never stored here: they
-- live encrypted in tenant_secrets (purpose 'oauth', name = connector id).

CREATE TABLE connectors (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    provider TEXT NOT NULL,
    -- connected | expired | revoked | error
    status TEXT NOT NULL,
    account TEXT,
    -- Space-separated, as the provider granted them.
    scopes TEXT NOT NULL,
    access_expires_at TIMESTAMPTZ,
    refresh_expires_at TIMESTAMPTZ,
    has_refresh_token BOOLEAN NOT NULL,
    last_error TEXT,
    last_error_at TIMESTAMPTZ,
    last_sync_at TIMESTAMPTZ,
    last_refresh_at TIMESTAMPTZ,
    -- A worker refreshing the tokens holds this lease so no other refreshes at once.
    refresh_lock_until TIMESTAMPTZ,
    -- The pending sync-connector job, so syncs are not queued twice.
    sync_job_id TEXT,
    connected_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, provider)
);
CREATE INDEX connectors_sync_due ON connectors (last_sync_at) WHERE sync_job_id IS NULL;

-- One row per authorization in progress; deleted when its callback arrives (single use)
-- or after it expires. `id` is the SHA-256 of the state value, never the value itself.
CREATE TABLE oauth_states (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    provider TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- The PKCE code verifier, encrypted with the tenant key.
    verifier BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

ALTER TABLE connectors ENABLE ROW LEVEL SECURITY;
ALTER TABLE connectors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON connectors
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE oauth_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_states FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oauth_states
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE POLICY owner_maintenance ON connectors TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON oauth_states TO CURRENT_USER USING (true) WITH CHECK (true);

-- Connectors due a scheduled sync (tokens stored, no sync queued, last one older than
-- the cutoff, and not waiting for a person to reconnect): their tenant and id, so the scheduler queues
-- each job inside that tenant's scope.
CREATE FUNCTION ocsuite_connectors_due(p_cutoff TIMESTAMPTZ, p_limit BIGINT)
RETURNS TABLE (tenant_id TEXT, id TEXT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT c.tenant_id, c.id FROM connectors c
     WHERE c.sync_job_id IS NULL AND c.status IN ('connected', 'error')
       AND c.last_refresh_at IS NOT NULL
       AND (c.last_sync_at IS NULL OR c.last_sync_at < p_cutoff)
     ORDER BY c.last_sync_at NULLS FIRST LIMIT p_limit;
$$;

-- Drops authorization states that expired without a callback, across tenants.
CREATE FUNCTION ocsuite_prune_oauth_states(p_now TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH d AS (DELETE FROM oauth_states WHERE expires_at < p_now RETURNING 1)
    SELECT count(*) FROM d;
$$;
