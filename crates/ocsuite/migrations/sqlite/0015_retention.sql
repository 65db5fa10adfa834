-- Retention (how long a company keeps conversations, events and audit details) and
-- erasures (one person's data removed from a company under dual control).
-- Keep in step with ../postgres/0015_retention.sql: a test compares the two.

-- A company's retention windows in days; NULL keeps for ever. Applied hourly and on
-- demand; audit details past their window are dropped from the audit log and from the
-- receipts (whose commitments stay, so proofs still verify).
CREATE TABLE retention_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    conversations_days BIGINT,
    events_days BIGINT,
    audit_details_days BIGINT,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    applied_at TEXT,
    -- Audit details written before this instant are already dropped (the pass's
    -- watermark, so each pass reads only what came due since the last).
    details_through TEXT
);

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
    requested_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    -- requested | approved | done | cancelled | expired | failed
    status TEXT NOT NULL,
    approved_by TEXT,
    approved_at TEXT,
    finished_at TEXT,
    manifest TEXT,
    receipt_id TEXT,
    error TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX erasures_open ON erasures (tenant_id, subject_hash)
    WHERE status IN ('requested', 'approved');
CREATE INDEX erasures_recent ON erasures (tenant_id, requested_at);

-- A purged company's closing receipt, in the platform's (HQ company's) log: its
-- manifest and the company log's last signed checkpoint.
ALTER TABLE tenant_deletions ADD COLUMN receipt_id TEXT;
