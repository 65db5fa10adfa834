-- Feature flags (platform-wide, evaluated in each process from a cached copy), the
-- platform's own audit log (operator actions that belong to no tenant) and the system
-- banner.
-- Keep in step with ../sqlite/0011_flags.sql: a test compares the two.

CREATE TABLE feature_flags (
    key TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    -- off | alpha | beta | ga
    stage TEXT NOT NULL,
    -- The global kill switch: off for everyone, whatever else says.
    killed BOOLEAN NOT NULL DEFAULT FALSE,
    -- Share of companies (sticky by company) that get a beta flag, 0-100.
    rollout_percent BIGINT NOT NULL DEFAULT 0,
    -- Targeting, as JSON lists: user ids, tenant ids, plan names.
    users TEXT NOT NULL,
    tenants TEXT NOT NULL,
    plans TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE platform_audit (
    id TEXT PRIMARY KEY,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX platform_audit_created ON platform_audit (created_at);

-- The system banner every page shows (at most one; absent: none).
CREATE TABLE system_banner (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    -- info | warning
    level TEXT NOT NULL,
    text TEXT NOT NULL,
    ends_at TIMESTAMPTZ,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
