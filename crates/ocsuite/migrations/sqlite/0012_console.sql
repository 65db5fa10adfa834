-- Running the platform: suspending a company, support's "view as" sessions
-- (impersonation), deletion under dual control, owner invites, and the console's
-- tenant list and health figures.
-- Keep in step with ../postgres/0012_console.sql: a test compares the two.

-- A suspended company's API refuses writes with 403 `tenant_suspended` (reads go on,
-- so its people can still take their data out) and its jobs and triggers wait. The suspension turns the job kill switch on; it turns it off
-- again on unsuspend only if it was the one that turned it on.
ALTER TABLE tenants ADD COLUMN suspended_at TEXT;
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
    started_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    ended_at TEXT,
    -- exit | logout (expiry needs no write: expires_at says it)
    end_reason TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX impersonations_recent ON impersonations (tenant_id, started_at);

-- The session carries its open impersonation, so every request resolves it with the
-- session itself (no extra read).
ALTER TABLE sessions ADD COLUMN impersonation_id TEXT;
ALTER TABLE sessions ADD COLUMN impersonated_tenant TEXT;
ALTER TABLE sessions ADD COLUMN impersonation_until TEXT;

-- Deleting a company under dual control: one super-admin asks, a different one
-- approves within 24 hours, then a job purges it. The record outlives the company
-- (hence no foreign key, and a column that is not `tenant_id`).
CREATE TABLE tenant_deletions (
    id TEXT PRIMARY KEY,
    target_tenant TEXT NOT NULL,
    tenant_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    -- requested | approved | purged | cancelled | expired
    status TEXT NOT NULL,
    approved_by TEXT,
    approved_at TEXT,
    purged_at TEXT,
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
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    accepted_at TEXT,
    -- The company the acceptance created (no foreign key: the record outlives it).
    created_tenant TEXT,
    revoked_at TEXT
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

CREATE INDEX tenants_created ON tenants (created_at DESC, id);
