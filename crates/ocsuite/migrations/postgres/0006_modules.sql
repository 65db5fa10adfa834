-- Core modules: LeadTracker (leads, stages, stage history), Bookkeeping (accounts,
-- transactions, categories, rules), the Email Orchestrator (campaigns, recipients,
-- suppression list) and the modules' metric snapshots.

CREATE TABLE lead_stages (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    label TEXT NOT NULL,
    position BIGINT NOT NULL,
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
    value_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    stage TEXT NOT NULL,
    owner TEXT,
    notes TEXT,
    -- manual | import | demo | task
    origin TEXT NOT NULL,
    stage_entered_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX leads_stage ON leads (tenant_id, stage);
CREATE INDEX leads_email ON leads (tenant_id, email);

-- Every stage a lead entered, in order; `from_stage` is NULL for the first.
CREATE TABLE lead_stage_history (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    lead_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
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
    opening_balance_minor BIGINT NOT NULL,
    origin TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE transactions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    -- Calendar date, YYYY-MM-DD.
    booked_on TEXT NOT NULL,
    -- Signed minor units: money in is positive, money out negative.
    amount_minor BIGINT NOT NULL,
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
    created_at TIMESTAMPTZ NOT NULL,
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
    position BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
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
    rate_per_minute BIGINT NOT NULL,
    -- draft | scheduled | sending | sent | cancelled
    status TEXT NOT NULL,
    scheduled_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    task_id TEXT,
    origin TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
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
    attempts BIGINT NOT NULL,
    message_id TEXT,
    sent_at TIMESTAMPTZ,
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
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, email)
);

-- The latest figures each module reported, read by the dashboard and the board.
CREATE TABLE metric_snapshots (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    module TEXT NOT NULL,
    -- JSON array of metrics (module SDK `Metric`).
    metrics TEXT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, module)
);

ALTER TABLE lead_stages ENABLE ROW LEVEL SECURITY;
ALTER TABLE lead_stages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON lead_stages
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE leads ENABLE ROW LEVEL SECURITY;
ALTER TABLE leads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON leads
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE lead_stage_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE lead_stage_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON lead_stage_history
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON accounts
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE transactions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON transactions
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE categories ENABLE ROW LEVEL SECURITY;
ALTER TABLE categories FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON categories
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE category_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE category_rules FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON category_rules
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE email_campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_campaigns FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON email_campaigns
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE email_recipients ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_recipients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON email_recipients
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE email_suppressions ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_suppressions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON email_suppressions
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE metric_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE metric_snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON metric_snapshots
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
