-- What /metrics reads, and the claim telling the worker when its job became due (for
-- the enqueue-to-start histogram). Keep in step with ../sqlite/0016_observability.sql.

-- Job counts by queue and status across tenants, with the age in seconds of each
-- queue's oldest job that is due and not started (NULL for other statuses).
CREATE FUNCTION ocsuite_queue_stats(p_now TIMESTAMPTZ)
RETURNS TABLE (queue TEXT, status TEXT, jobs BIGINT, oldest_due_secs DOUBLE PRECISION)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT j.queue, j.status, count(*),
           max(extract(epoch FROM p_now - j.run_at)::double precision)
               FILTER (WHERE j.status = 'ready' AND j.run_at <= p_now)
      FROM jobs j GROUP BY j.queue, j.status;
$$;

-- As in 0005_board.sql, and also returns the job's run_at.
DROP FUNCTION ocsuite_claim_job(TEXT, TEXT, TEXT, TIMESTAMPTZ, TIMESTAMPTZ);
CREATE FUNCTION ocsuite_claim_job(p_queue TEXT, p_worker TEXT, p_token TEXT,
                                  p_now TIMESTAMPTZ, p_lease_until TIMESTAMPTZ)
RETURNS TABLE (tenant_id TEXT, id TEXT, payload TEXT, attempts BIGINT, max_attempts BIGINT,
               run_at TIMESTAMPTZ)
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
            RETURNING j.tenant_id, j.id, j.payload, j.attempts, j.max_attempts, j.run_at INTO claimed;
            PERFORM set_config('app.tenant_id', claimed.tenant_id, true);
            tenant_id := claimed.tenant_id;
            id := claimed.id;
            payload := claimed.payload;
            attempts := claimed.attempts;
            max_attempts := claimed.max_attempts;
            run_at := claimed.run_at;
            RETURN NEXT;
            RETURN;
        END IF;
        skipped := skipped || cand.tenant_id;
    END LOOP;
END;
$$;

-- Backups read every row as the migration owner (`ocsuite backup` counts them, and
-- pg_dump runs with --enable-row-security under FORCE ROW LEVEL SECURITY). The owner
-- already had `owner_maintenance` on 26 tables; give it the same on every other table
-- whose row security is forced, so a dump as the owner is complete. The owner owns
-- these tables and could switch their row security off anyway: nothing is widened for
-- the runtime role. `ocsuite backup` refuses to run while any forced table lacks it.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relforcerowsecurity
           AND NOT EXISTS (SELECT 1 FROM pg_policies p
                            WHERE p.schemaname = 'public' AND p.tablename = c.relname
                              AND p.policyname = 'owner_maintenance')
    LOOP
        EXECUTE format('CREATE POLICY owner_maintenance ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
    END LOOP;
END;
$$;
