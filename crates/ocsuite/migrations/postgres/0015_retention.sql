-- Retention (how long a company keeps conversations, events and audit details) and
-- erasures (one person's data removed from a company under dual control).
-- Keep in step with ../sqlite/0015_retention.sql: a test compares the two.

-- A company's retention windows in days; NULL keeps for ever. Applied hourly and on
-- demand; audit details past their window are dropped from the audit log and from the
-- receipts (whose commitments stay, so proofs still verify).
CREATE TABLE retention_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    conversations_days BIGINT,
    events_days BIGINT,
    audit_details_days BIGINT,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    applied_at TIMESTAMPTZ,
    -- Audit details written before this instant are already dropped (the pass's
    -- watermark, so each pass reads only what came due since the last).
    details_through TIMESTAMPTZ
);

ALTER TABLE retention_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON retention_settings
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- Receipts by time, for the retention pass. `receipts.purged_at` is set whenever fields
-- are dropped from a receipt (by retention or an erasure).
CREATE INDEX receipts_time ON receipts (tenant_id, created_at);

-- A request to erase one person (by email address) from a company: asked by one admin,
-- approved by a different one, carried out by the `erase-person` job. Once done the
-- address itself is dropped; its hint and salted hash stay as the record.
CREATE TABLE erasures (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    email TEXT,
    email_hint TEXT NOT NULL,
    subject_hash TEXT NOT NULL,
    user_id TEXT,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- requested | approved | done | cancelled | expired | failed
    status TEXT NOT NULL,
    approved_by TEXT,
    approved_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    manifest TEXT,
    receipt_id TEXT,
    error TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX erasures_open ON erasures (tenant_id, subject_hash)
    WHERE status IN ('requested', 'approved');
CREATE INDEX erasures_recent ON erasures (tenant_id, requested_at);

ALTER TABLE erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasures FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON erasures
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- Companies with retention windows set (the hourly pass visits only these).
CREATE FUNCTION ocsuite_retention_tenants()
RETURNS TABLE (tenant_id TEXT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT s.tenant_id FROM retention_settings s
     WHERE s.conversations_days IS NOT NULL OR s.events_days IS NOT NULL
        OR s.audit_details_days IS NOT NULL;
$$;

-- Requests nobody approved in time forget the address they named.
CREATE FUNCTION ocsuite_expire_erasures(p_now TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public AS $$
    WITH x AS (
        UPDATE erasures SET status = 'expired', email = NULL, user_id = NULL
         WHERE status = 'requested' AND expires_at <= p_now RETURNING 1)
    SELECT count(*) FROM x;
$$;

-- A purged company's closing receipt, in the platform's (HQ company's) log: its
-- manifest and the company log's last signed checkpoint.
ALTER TABLE tenant_deletions ADD COLUMN receipt_id TEXT;
