-- Conversations with personas, their messages, and the token usage ledger.

-- The tenant's plan sets its monthly token budget and chat request rate.
ALTER TABLE tenants ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';

-- Tokens held for model calls in flight, so concurrent calls cannot overshoot the budget
-- by more than one call. Rows older than ten minutes are ignored (a crashed call).
CREATE TABLE token_reservations (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    tokens BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE conversations (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    persona TEXT NOT NULL,
    title TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX conversations_recent ON conversations (tenant_id, updated_at);

CREATE TABLE messages (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    role TEXT NOT NULL,
    persona TEXT NOT NULL,
    content TEXT NOT NULL,
    model TEXT,
    status TEXT NOT NULL,
    finish_reason TEXT,
    error TEXT,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms BIGINT,
    rating BIGINT,
    rating_comment TEXT,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX messages_conversation ON messages (tenant_id, conversation_id, created_at);

-- Tokens by day, persona and model; cost in millionths of a US dollar (price table in config).
CREATE TABLE usage_ledger (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    persona TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day, persona, model)
);

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversations
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE token_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE token_reservations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON token_reservations
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY owner_maintenance ON token_reservations TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE usage_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_ledger
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE POLICY owner_maintenance ON conversations TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON messages TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON usage_ledger TO CURRENT_USER USING (true) WITH CHECK (true);

-- Agents a tenant built, and its customisations of the built-in personas.
CREATE TABLE agents (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    instructions TEXT NOT NULL,
    model TEXT,
    temperature DOUBLE PRECISION,
    max_tokens BIGINT,
    capabilities TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, slug)
);

CREATE TABLE persona_overrides (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    prompt_additions TEXT,
    model TEXT,
    temperature DOUBLE PRECISION,
    max_tokens BIGINT,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, slug)
);

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE persona_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE persona_overrides FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON persona_overrides
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE POLICY owner_maintenance ON agents TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON persona_overrides TO CURRENT_USER USING (true) WITH CHECK (true);
