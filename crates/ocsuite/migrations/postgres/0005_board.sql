-- Board meetings, their turns and action items; task approval; notifications and the
-- email outbox.

CREATE TABLE meetings (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    agenda TEXT NOT NULL,
    context TEXT,
    -- JSON array of the members' slugs, in seat order.
    personas TEXT NOT NULL,
    rounds BIGINT NOT NULL,
    chair TEXT NOT NULL,
    -- running | complete | failed
    status TEXT NOT NULL,
    synthesis TEXT,
    error TEXT,
    offline BOOLEAN NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    duration_ms BIGINT,
    -- Time spent on anything but waiting for the model.
    overhead_ms BIGINT,
    rating BIGINT,
    rating_comment TEXT,
    rated_by TEXT,
    rated_at TIMESTAMPTZ,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX meetings_recent ON meetings (tenant_id, created_at);

-- What each member said; round 0 is the chair's synthesis.
CREATE TABLE meeting_turns (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    meeting_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    persona TEXT NOT NULL,
    round BIGINT NOT NULL,
    content TEXT NOT NULL,
    -- complete | failed
    status TEXT NOT NULL,
    error TEXT,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, meeting_id, seq)
);

CREATE TABLE action_items (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    meeting_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
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
    done_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX action_items_meeting ON action_items (tenant_id, meeting_id, seq);

-- Tasks the board proposed wait for a person's decision.
ALTER TABLE tasks ADD COLUMN meeting_id TEXT;
ALTER TABLE tasks ADD COLUMN decided_by TEXT;
ALTER TABLE tasks ADD COLUMN decided_at TIMESTAMPTZ;
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
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, side_effect)
);
CREATE TABLE approval_modes (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    capability TEXT NOT NULL,
    mode TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, capability)
);

-- Numbers the tenant's `notifications` realtime topic.
ALTER TABLE tenants ADD COLUMN notification_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE notifications (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    meeting_id TEXT,
    task_id TEXT,
    read_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
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
    attempts BIGINT NOT NULL,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_recent ON outbox (tenant_id, created_at);

ALTER TABLE meetings ENABLE ROW LEVEL SECURITY;
ALTER TABLE meetings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON meetings
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
ALTER TABLE meeting_turns ENABLE ROW LEVEL SECURITY;
ALTER TABLE meeting_turns FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON meeting_turns
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
ALTER TABLE action_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE action_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON action_items
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
ALTER TABLE approval_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE approval_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON approval_roles
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
ALTER TABLE approval_modes ENABLE ROW LEVEL SECURITY;
ALTER TABLE approval_modes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON approval_modes
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notifications
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE POLICY owner_maintenance ON meetings TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON meeting_turns TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON action_items TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON approval_roles TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON approval_modes TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON notifications TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_maintenance ON outbox TO CURRENT_USER USING (true) WITH CHECK (true);

-- The claim now keeps the per-tenant concurrency limit exact. A tenant within 32 slots
-- of its limit has its claims serialised by a transaction-scoped advisory lock, and
-- its running jobs are counted again under that lock (the lock is held until the claim
-- commits, so the count sees every earlier claim). Tenants further from their limit
-- claim in parallel as before. Ready jobs of a tenant found at its limit are skipped
-- for another tenant's, up to 8 tenants per claim.
CREATE OR REPLACE FUNCTION ocsuite_claim_job(p_queue TEXT, p_worker TEXT, p_token TEXT,
                                             p_now TIMESTAMPTZ, p_lease_until TIMESTAMPTZ)
RETURNS TABLE (tenant_id TEXT, id TEXT, payload TEXT, attempts BIGINT, max_attempts BIGINT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
#variable_conflict use_column
DECLARE
    cand RECORD;
    claimed RECORD;
    skipped TEXT[] := '{}';
    running BIGINT;
    lim BIGINT;
BEGIN
    FOR i IN 1..8 LOOP
        SELECT c.tenant_id, c.id INTO cand FROM jobs c
         WHERE c.queue = p_queue AND c.status = 'ready' AND c.run_at <= p_now
           AND NOT (c.tenant_id = ANY (skipped))
           AND c.tenant_id NOT IN (SELECT t.id FROM tenants t WHERE t.jobs_paused_at IS NOT NULL)
           AND c.tenant_id NOT IN (
               SELECT r.tenant_id FROM jobs r JOIN tenants t ON t.id = r.tenant_id
                WHERE r.status = 'running'
                GROUP BY r.tenant_id, t.job_concurrency
               HAVING count(*) >= t.job_concurrency)
         ORDER BY c.priority DESC, c.run_at, c.id
         LIMIT 1
         FOR UPDATE OF c SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        SELECT t.job_concurrency INTO lim FROM tenants t WHERE t.id = cand.tenant_id;
        SELECT count(*) INTO running FROM jobs r WHERE r.tenant_id = cand.tenant_id AND r.status = 'running';
        IF lim - running <= 32 THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('ocsuite_claim:' || cand.tenant_id, 0));
            SELECT count(*) INTO running FROM jobs r WHERE r.tenant_id = cand.tenant_id AND r.status = 'running';
        END IF;
        IF running < lim THEN
            UPDATE jobs j
               SET status = 'running', attempts = j.attempts + 1, lease_token = p_token,
                   lease_until = p_lease_until, worker = p_worker, updated_at = p_now
             WHERE j.tenant_id = cand.tenant_id AND j.id = cand.id
            RETURNING j.tenant_id, j.id, j.payload, j.attempts, j.max_attempts INTO claimed;
            PERFORM set_config('app.tenant_id', claimed.tenant_id, true);
            tenant_id := claimed.tenant_id;
            id := claimed.id;
            payload := claimed.payload;
            attempts := claimed.attempts;
            max_attempts := claimed.max_attempts;
            RETURN NEXT;
            RETURN;
        END IF;
        skipped := skipped || cand.tenant_id;
    END LOOP;
END;
$$;

-- Meetings a stopped server left `running`: marked failed so they do not wait for ever.
CREATE FUNCTION ocsuite_fail_stale_meetings(p_before TIMESTAMPTZ, p_now TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH u AS (
        UPDATE meetings SET status = 'failed', finished_at = p_now,
               error = 'interrupted: the server stopped while the meeting ran'
         WHERE status = 'running' AND created_at < p_before
        RETURNING 1)
    SELECT count(*) FROM u;
$$;
