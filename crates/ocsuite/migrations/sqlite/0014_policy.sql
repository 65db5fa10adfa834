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

-- Every decision on a privileged action: the question (principal, action, resource,
-- context), the answer, the determining policies and the version in force. Each is
-- sealed into a receipt in the transaction that decided it.
CREATE TABLE policy_decisions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    action TEXT NOT NULL,
    principal_type TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    allowed BOOLEAN NOT NULL,
    -- JSON arrays of policy ids and of evaluation errors.
    policies TEXT NOT NULL,
    errors TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- The question, JSON.
    question TEXT NOT NULL,
    request_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX policy_decisions_action ON policy_decisions (tenant_id, action, id);
