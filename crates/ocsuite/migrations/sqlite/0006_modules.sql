-- Mirrors postgres/0006_modules.sql.
-- Core modules: LeadTracker (leads, stages, stage history), Bookkeeping (accounts,
-- transactions, categories, rules), the Email Orchestrator (campaigns, recipients,
-- suppression list) and the modules' metric snapshots.

CREATE TABLE lead_stages (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    label TEXT NOT NULL,
    position INTEGER NOT NULL,
    -- open | won | lost
    kind TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE leads (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    company TEXT,
    email TEXT,
    source TEXT,
    -- Expected deal value in minor units of `currency`.
    value_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    stage TEXT NOT NULL,
    owner TEXT,
    notes TEXT,
    -- manual | import | demo | task
    origin TEXT NOT NULL,
    stage_entered_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX leads_stage ON leads (tenant_id, stage);
CREATE INDEX leads_email ON leads (tenant_id, email);

-- Every stage a lead entered, in order; `from_stage` is NULL for the first.
CREATE TABLE lead_stage_history (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    lead_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    note TEXT,
    PRIMARY KEY (tenant_id, lead_id, seq)
);

CREATE TABLE accounts (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- bank | card | cash | other
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    opening_balance_minor INTEGER NOT NULL,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE transactions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    -- Calendar date, YYYY-MM-DD.
    booked_on TEXT NOT NULL,
    -- Signed minor units: money in is positive, money out negative.
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    counterparty TEXT,
    memo TEXT,
    category TEXT,
    -- rule | model | manual, when categorised
    categorized_by TEXT,
    -- Same account, date, amount and description, numbered by occurrence: a re-import
    -- of the same export finds every row already there.
    fingerprint TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX transactions_fingerprint ON transactions (tenant_id, fingerprint);
CREATE INDEX transactions_date ON transactions (tenant_id, booked_on);

CREATE TABLE categories (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- income | expense | transfer (transfers count in the cash balance, not in revenue or expenses)
    kind TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE category_rules (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    -- counterparty | memo | any
    field TEXT NOT NULL,
    -- Case-insensitive substring.
    pattern TEXT NOT NULL,
    category TEXT NOT NULL,
    -- Lower runs first.
    position INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE email_campaigns (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    -- smtp | gmail
    channel TEXT NOT NULL,
    -- JSON: {"stages": [...]} (leads) or {"recipients": [{email, name, vars}]}
    audience TEXT NOT NULL,
    rate_per_minute INTEGER NOT NULL,
    -- draft | scheduled | sending | sent | cancelled
    status TEXT NOT NULL,
    scheduled_at TEXT,
    started_at TEXT,
    finished_at TEXT,
    task_id TEXT,
    origin TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE email_recipients (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    email TEXT NOT NULL,
    name TEXT,
    -- JSON object of template variables.
    vars TEXT NOT NULL,
    -- pending | sent | failed | skipped | cancelled
    status TEXT NOT NULL,
    -- Why it was skipped (suppressed, invalid) or the last error.
    reason TEXT,
    attempts INTEGER NOT NULL,
    message_id TEXT,
    sent_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX email_recipients_once ON email_recipients (tenant_id, campaign_id, email);

CREATE TABLE email_suppressions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- Lowercased.
    email TEXT NOT NULL,
    -- unsubscribed | bounced | manual
    reason TEXT NOT NULL,
    campaign_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, email)
);

-- The latest figures each module reported, read by the dashboard and the board.
CREATE TABLE metric_snapshots (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    module TEXT NOT NULL,
    -- JSON array of metrics (module SDK `Metric`).
    metrics TEXT NOT NULL,
    taken_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, module)
);
