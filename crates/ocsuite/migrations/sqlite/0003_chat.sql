-- Conversations with personas, their messages, and the token usage ledger.
-- Mirrors postgres/0003_chat.sql (no row-level security on SQLite).

-- The tenant's plan sets its monthly token budget and chat request rate.
ALTER TABLE tenants ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';

-- Tokens held for model calls in flight, so concurrent calls cannot overshoot the budget
-- by more than one call. Rows older than ten minutes are ignored (a crashed call).
CREATE TABLE token_reservations (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE conversations (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    persona TEXT NOT NULL,
    title TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
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
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms INTEGER,
    rating INTEGER,
    rating_comment TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
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
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, persona, model)
);

-- Agents a tenant built, and its customisations of the built-in personas.
CREATE TABLE agents (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    instructions TEXT NOT NULL,
    model TEXT,
    temperature REAL,
    max_tokens INTEGER,
    capabilities TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, slug)
);

CREATE TABLE persona_overrides (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    prompt_additions TEXT,
    model TEXT,
    temperature REAL,
    max_tokens INTEGER,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, slug)
);
