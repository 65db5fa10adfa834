-- Policy as code: each company's Cedar policy, versioned. The newest version is in
-- force; rollback saves an older text again. No row: the built-in default.
-- Keep in step with ../postgres/0014_policy.sql: a test compares the two.
CREATE TABLE policy_versions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    text TEXT NOT NULL,
    note TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- The decision log reads audit entries by action.
CREATE INDEX audit_log_action ON audit_log (tenant_id, action, id);
