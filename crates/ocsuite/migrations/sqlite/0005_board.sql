-- Board meetings, turns, action items, approval policy, notifications and the email
-- outbox. Mirrors postgres/0005_board.sql.

CREATE TABLE meetings (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    agenda TEXT NOT NULL,
    context TEXT,
    -- JSON array of the members' slugs, in seat order.
    personas TEXT NOT NULL,
    rounds INTEGER NOT NULL,
    chair TEXT NOT NULL,
    -- running | complete | failed
    status TEXT NOT NULL,
    synthesis TEXT,
    error TEXT,
    offline INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    duration_ms INTEGER,
    -- Time spent on anything but waiting for the model.
    overhead_ms INTEGER,
    rating INTEGER,
    rating_comment TEXT,
    rated_by TEXT,
    rated_at TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX meetings_recent ON meetings (tenant_id, created_at);

-- What each member said; round 0 is the chair's synthesis.
CREATE TABLE meeting_turns (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    meeting_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    persona TEXT NOT NULL,
    round INTEGER NOT NULL,
    content TEXT NOT NULL,
    -- complete | failed
    status TEXT NOT NULL,
    error TEXT,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, meeting_id, seq)
);

CREATE TABLE action_items (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    meeting_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    owner_persona TEXT NOT NULL,
    -- The capability and input the board proposed (null: a manual follow-up).
    capability TEXT,
    input TEXT,
    priority TEXT NOT NULL,
    due_date TEXT,
    expected_impact TEXT NOT NULL,
    -- The proposed task, when the item maps to a capability.
    task_id TEXT,
    -- Why a proposed capability did not become a task.
    note TEXT,
    done_at TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX action_items_meeting ON action_items (tenant_id, meeting_id, seq);

-- Tasks the board proposed wait for a person's decision.
ALTER TABLE tasks ADD COLUMN meeting_id TEXT;
ALTER TABLE tasks ADD COLUMN decided_by TEXT;
ALTER TABLE tasks ADD COLUMN decided_at TEXT;
ALTER TABLE tasks ADD COLUMN decision_rationale TEXT;
-- The task this one compensates (an undo).
ALTER TABLE tasks ADD COLUMN undo_of TEXT;
CREATE INDEX tasks_meeting ON tasks (tenant_id, meeting_id);

-- The tenant's approval policy: the lowest role that may approve each side-effect class
-- (absent: the default), and per-capability modes (absent: always ask).
CREATE TABLE approval_roles (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    side_effect TEXT NOT NULL,
    min_role TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, side_effect)
);
CREATE TABLE approval_modes (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    capability TEXT NOT NULL,
    mode TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, capability)
);

-- Numbers the tenant's `notifications` realtime topic.
ALTER TABLE tenants ADD COLUMN notification_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE notifications (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    meeting_id TEXT,
    task_id TEXT,
    read_at TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX notifications_user ON notifications (tenant_id, user_id, id);

-- Email waiting to be sent (or sent). Without SMTP configured, rows stay here as the
-- development mailbox admins can read.
CREATE TABLE outbox (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    to_email TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    -- pending | sent | failed | held (no SMTP: kept in the dev mailbox)
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_recent ON outbox (tenant_id, created_at);
