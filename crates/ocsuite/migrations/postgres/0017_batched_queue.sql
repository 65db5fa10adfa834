-- The batched queue: a worker claims many jobs in one statement and settles many in one
-- transaction (see src/queue/dispatch.rs). PostgreSQL only: SQLite's claim is one plain
-- statement (store/cross_tenant/mod.rs, `claim_jobs`), exact under its single writer.

-- Claims up to p_limit ready jobs of a queue across tenants: highest priority, then
-- oldest; paused tenants and tenants at their concurrency limit are skipped; no tenant
-- gets more jobs than its free slots. Rows another transaction is claiming are skipped
-- (SKIP LOCKED), so claims in many processes never wait on each other. A tenant within
-- 32 + p_limit slots of its limit has its claims serialised across processes by an
-- advisory lock held to commit, and its running jobs counted again under it, so the
-- limit is exact. Each job gets its own lease token. Unlike ocsuite_claim_job it sets
-- no tenant scope: a batch can span tenants, and the caller enters each in turn.
CREATE FUNCTION ocsuite_claim_jobs(p_queue TEXT, p_worker TEXT, p_now TIMESTAMPTZ,
                                   p_lease_until TIMESTAMPTZ, p_limit BIGINT)
RETURNS TABLE (tenant_id TEXT, id TEXT, payload TEXT, attempts BIGINT, max_attempts BIGINT,
               run_at TIMESTAMPTZ, lease_token TEXT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
#variable_conflict use_column
DECLARE
    cand RECORD;
    seen TEXT[] := '{}';
    free BIGINT[] := '{}';
    pick_tenant TEXT[] := '{}';
    pick_id TEXT[] := '{}';
    k INT;
    lim BIGINT;
    running BIGINT;
BEGIN
    IF p_limit < 1 THEN
        RETURN;
    END IF;
    FOR cand IN
        SELECT c.tenant_id AS t, c.id AS i FROM jobs c
         WHERE c.queue = p_queue AND c.status = 'ready' AND c.run_at <= p_now
           AND c.tenant_id NOT IN (SELECT p.id FROM tenants p WHERE p.jobs_paused_at IS NOT NULL)
           AND c.tenant_id NOT IN (
               SELECT r.tenant_id FROM jobs r JOIN tenants n ON n.id = r.tenant_id
                WHERE r.status = 'running'
                GROUP BY r.tenant_id, n.job_concurrency
               HAVING count(*) >= n.job_concurrency)
         ORDER BY c.priority DESC, c.run_at, c.id
         LIMIT p_limit * 4
         FOR UPDATE OF c SKIP LOCKED
    LOOP
        k := array_position(seen, cand.t);
        IF k IS NULL THEN
            SELECT n.job_concurrency INTO lim FROM tenants n WHERE n.id = cand.t;
            SELECT count(*) INTO running FROM jobs r WHERE r.tenant_id = cand.t AND r.status = 'running';
            IF lim - running <= 32 + p_limit THEN
                PERFORM pg_advisory_xact_lock(hashtextextended('ocsuite_claim:' || cand.t, 0));
                SELECT count(*) INTO running FROM jobs r WHERE r.tenant_id = cand.t AND r.status = 'running';
            END IF;
            seen := seen || cand.t;
            free := free || (lim - running);
            k := cardinality(seen);
        END IF;
        IF free[k] > 0 THEN
            free[k] := free[k] - 1;
            pick_tenant := pick_tenant || cand.t;
            pick_id := pick_id || cand.i;
            EXIT WHEN cardinality(pick_id) >= p_limit;
        END IF;
    END LOOP;
    IF cardinality(pick_id) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE jobs j
       SET status = 'running', attempts = j.attempts + 1,
           lease_token = replace(gen_random_uuid()::text, '-', ''),
           lease_until = p_lease_until, worker = p_worker, updated_at = p_now
      FROM unnest(pick_tenant, pick_id) AS p(t, i)
     WHERE j.tenant_id = p.t AND j.id = p.i
    RETURNING j.tenant_id, j.id, j.payload, j.attempts, j.max_attempts, j.run_at, j.lease_token;
END;
$$;

-- Whether a queue has a job ready to run in any tenant: the dispatcher's look before it
-- claims from a queue it has not seen busy (row-level security would hide every row
-- from the runtime role, which has no tenant set for it).
CREATE FUNCTION ocsuite_job_ready(p_queue TEXT, p_now TIMESTAMPTZ)
RETURNS BOOLEAN
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT EXISTS (SELECT 1 FROM jobs j
                    WHERE j.queue = p_queue AND j.status = 'ready' AND j.run_at <= p_now);
$$;

-- Replaced by ocsuite_claim_jobs.
DROP FUNCTION ocsuite_claim_job(TEXT, TEXT, TEXT, TIMESTAMPTZ, TIMESTAMPTZ);
