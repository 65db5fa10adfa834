-- Policy as code: each company's Cedar policy, versioned. The newest version is in
-- force; rollback saves an older text again. No row: the built-in default.
-- Keep in step with ../sqlite/0014_policy.sql: a test compares the two.
CREATE TABLE policy_versions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    text TEXT NOT NULL,
    note TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

ALTER TABLE policy_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON policy_versions
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- The decision log reads audit entries by action.
CREATE INDEX audit_log_action ON audit_log (tenant_id, action, id);
