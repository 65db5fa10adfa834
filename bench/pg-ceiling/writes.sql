-- The rows one no-op task writes on PostgreSQL, as the server writes them, in the two
-- transactions it uses (see ../README.md, "PostgreSQL's own ceiling"). Each function is
-- one statement, so each transaction is one round trip: the least any client can do.
-- Reads the server also makes (session, membership, module checks) are left out, so the
-- figure this gives is an upper bound for the whole pipeline.

-- The request's transaction: the task, its `queued` event, its job and the audit entry.
CREATE FUNCTION ceiling_enqueue(p_tenant TEXT, p_id TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE now TIMESTAMPTZ := clock_timestamp();
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    INSERT INTO tasks (tenant_id, id, capability, version, input, status, attempts, max_attempts,
                       created_by, cancel_requested, event_seq, created_at, updated_at)
    VALUES (p_tenant, p_id, 'diagnostics.echo', '1.0.0', '{}', 'queued', 0, 3,
            'user:ceiling', false, 1, now, now);
    INSERT INTO events (tenant_id, topic, seq, kind, data, created_at)
    VALUES (p_tenant, 'task:' || p_id, 1, 'queued',
            '{"task_id":"' || p_id || '","status":"queued","capability":"diagnostics.echo","version":"1.0.0"}', now);
    INSERT INTO jobs (tenant_id, id, queue, payload, priority, run_at, status, attempts,
                      max_attempts, created_at, updated_at)
    VALUES (p_tenant, p_id, 'execute-task', '{"task_id":"' || p_id || '"}', 0, now, 'ready', 0, 3, now, now);
    INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id,
                           details, created_at)
    VALUES (p_tenant, 'aud_' || p_id, 'user', 'ceiling', 'task.queued', 'task', p_id, '{}', now);
END;
$$;

-- A worker's transaction: claim a ready job and mark its task running with a `started`
-- event; then (the server does this in the transaction that claims the next job) delete
-- the job, mark the task succeeded, its `succeeded` event and the audit entry.
CREATE FUNCTION ceiling_run(p_tenant TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE now TIMESTAMPTZ := clock_timestamp(); j TEXT;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    SELECT id INTO j FROM jobs
     WHERE queue = 'execute-task' AND status = 'ready' AND run_at <= now
     ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN RETURN; END IF;
    UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = 'ceiling',
           lease_until = now + interval '30 s', worker = 'ceiling', updated_at = now
     WHERE tenant_id = p_tenant AND id = j;
    UPDATE tasks SET status = 'running', attempts = 1, started_at = now, updated_at = now,
           event_seq = event_seq + 1
     WHERE tenant_id = p_tenant AND id = j;
    INSERT INTO events (tenant_id, topic, seq, kind, data, created_at)
    VALUES (p_tenant, 'task:' || j, 2, 'started', '{"task_id":"' || j || '","status":"running"}', now);
    DELETE FROM jobs WHERE tenant_id = p_tenant AND id = j AND lease_token = 'ceiling';
    UPDATE tasks SET status = 'succeeded', result = '{}', finished_at = now, updated_at = now,
           event_seq = event_seq + 1
     WHERE tenant_id = p_tenant AND id = j;
    INSERT INTO events (tenant_id, topic, seq, kind, data, created_at)
    VALUES (p_tenant, 'task:' || j, 3, 'succeeded', '{"task_id":"' || j || '","status":"succeeded"}', now);
    INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id,
                           details, created_at)
    VALUES (p_tenant, 'aud_' || j || '_done', 'system', 'worker', 'task.succeeded', 'task', j, '{}', now);
END;
$$;
