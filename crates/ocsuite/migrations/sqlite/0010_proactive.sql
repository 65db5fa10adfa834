-- A proactive C-suite: triggers (schedule, metric rule, platform event → action) and
-- their runs, the alert inbox, per-user notification preferences, outgoing webhooks and
-- their delivery log, digests, and a daily history of the modules' figures (for
-- "moved more than k standard deviations" and the digest's "what moved").
-- Keep in step with ../postgres/0010_proactive.sql: a test compares the two.

CREATE TABLE triggers (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- schedule | metric | event
    kind TEXT NOT NULL,
    -- The platform event an event trigger listens to (indexed), NULL otherwise.
    event_type TEXT,
    condition TEXT NOT NULL,
    action TEXT NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    -- When the scheduler next looks at it (schedule: next fire; metric: next evaluation).
    next_run_at TEXT,
    -- A metric condition that is true now, and how many times it became true.
    firing BOOLEAN NOT NULL DEFAULT FALSE,
    episode INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every scheduler claim: the compare-and-set that lets one node fire.
    revision INTEGER NOT NULL DEFAULT 0,
    last_run_at TEXT,
    last_status TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX triggers_due ON triggers (next_run_at) WHERE paused = FALSE;
CREATE INDEX triggers_kind ON triggers (tenant_id, kind, event_type);

CREATE TABLE trigger_runs (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    -- schedule | metric | event | manual
    reason TEXT NOT NULL,
    -- Idempotency per trigger: the due time, the metric episode, the event's key.
    run_key TEXT NOT NULL,
    -- queued | running | succeeded | failed
    status TEXT NOT NULL,
    evidence TEXT NOT NULL,
    output TEXT,
    error TEXT,
    scheduled_for TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, trigger_id, run_key),
    FOREIGN KEY (tenant_id, trigger_id) REFERENCES triggers (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX trigger_runs_trigger ON trigger_runs (tenant_id, trigger_id, created_at);

CREATE TABLE alerts (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    trigger_id TEXT,
    run_id TEXT,
    -- info | warning | critical
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    evidence TEXT NOT NULL,
    -- open | acknowledged | snoozed | resolved
    status TEXT NOT NULL,
    snoozed_until TEXT,
    resolved_note TEXT,
    acted_by TEXT,
    meeting_id TEXT,
    dedupe_key TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX alerts_status ON alerts (tenant_id, status, created_at);

CREATE TABLE notification_preferences (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    -- {"alerts.critical": {"in_app": true, "email": true}, …}: categories set explicitly.
    categories TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE webhooks (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    -- standard (Standard Webhooks) | text (Slack/Teams incoming webhook: {"text": …})
    format TEXT NOT NULL,
    categories TEXT NOT NULL,
    description TEXT NOT NULL,
    -- The tenant_secrets row that holds the signing key (encrypted with the tenant's key).
    secret TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE webhook_deliveries (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- pending | delivered | retrying | failed
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    response_status INTEGER,
    error TEXT,
    duration_ms INTEGER,
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (tenant_id, webhook_id, created_at);

CREATE TABLE digests (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    body TEXT NOT NULL,
    facts TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE metric_history (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    module TEXT NOT NULL,
    -- YYYY-MM-DD (UTC): the day's last snapshot.
    day TEXT NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (tenant_id, module, day)
);

-- Every company starts with a weekly digest on Monday mornings; the scheduler gives it
-- its first due time.
INSERT INTO triggers (tenant_id, id, name, kind, condition, action, created_by, created_at, updated_at)
SELECT id, 'trg_' || lower(hex(randomblob(16))), 'Weekly digest', 'schedule',
       '{"kind":"schedule","cron":"0 8 * * MON","timezone":"UTC"}', '{"kind":"digest"}',
       'system', created_at, created_at
  FROM tenants WHERE id <> 'ten_00000000000000000000000000000000';
