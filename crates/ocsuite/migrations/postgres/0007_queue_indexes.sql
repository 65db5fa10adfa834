-- Keep in step with ../sqlite/0007_queue_indexes.sql.
-- Fewer index writes per task, and claims that only ever walk ready jobs.
--
-- Every job is inserted ready, updated to running when claimed and deleted when it
-- ends. Indexes over every status made each of those steps write an entry in each of
-- them, and left the claim walking past the entries of jobs claimed moments ago. Partial
-- indexes hold a job only while it is in the state a query looks for.
DROP INDEX jobs_claim;
DROP INDEX jobs_tenant_status;
DROP INDEX jobs_lease;
-- The claim: next ready job of a queue by priority, then due time.
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id) WHERE status = 'ready';
-- Expired leases (by lease end) and each tenant's running count (a scan of the few
-- running jobs).
CREATE INDEX jobs_running ON jobs (lease_until, tenant_id) WHERE status = 'running';

-- No query orders tasks by creation time (lists page by id, which is time-ordered), and
-- most tasks have no meeting.
DROP INDEX tasks_recent;
DROP INDEX tasks_meeting;
CREATE INDEX tasks_meeting ON tasks (tenant_id, meeting_id) WHERE meeting_id IS NOT NULL;

-- Every tenant-scoped request calls this. A SQL-language function that is not inlined
-- (SECURITY DEFINER never is) plans its query again on every call; PL/pgSQL keeps the
-- plans for the session.
CREATE OR REPLACE FUNCTION ocsuite_member_role(p_tenant TEXT, p_user TEXT)
RETURNS TABLE (role TEXT, tenant_exists BOOLEAN)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
#variable_conflict use_column
BEGIN
    role := (SELECT m.role FROM memberships m WHERE m.tenant_id = p_tenant AND m.user_id = p_user);
    tenant_exists := EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant);
    RETURN NEXT;
END;
$$;

-- Audit entries are listed by id (time-ordered), never by creation time.
DROP INDEX audit_log_time;
-- Old events are pruned by id (ids follow creation time), so the log needs no index on
-- created_at: one index fewer written for every event (three per task).
DROP INDEX events_created;
CREATE OR REPLACE FUNCTION ocsuite_prune_events(p_before TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH d AS (
        DELETE FROM events
         WHERE id < COALESCE((SELECT e.id FROM events e WHERE e.created_at >= p_before ORDER BY e.id LIMIT 1),
                             (SELECT max(e.id) + 1 FROM events e))
        RETURNING 1)
    SELECT count(*) FROM d;
$$;
