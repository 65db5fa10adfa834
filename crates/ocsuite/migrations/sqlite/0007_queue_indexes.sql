-- Mirrors postgres/0007_queue_indexes.sql (the indexes; SQLite has no functions).
-- Fewer index writes per task, and claims that only ever walk ready jobs: partial
-- indexes hold a job only while it is in the state a query looks for.
DROP INDEX jobs_claim;
DROP INDEX jobs_tenant_status;
DROP INDEX jobs_lease;
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id) WHERE status = 'ready';
CREATE INDEX jobs_running ON jobs (lease_until, tenant_id) WHERE status = 'running';

DROP INDEX tasks_recent;
DROP INDEX tasks_meeting;
CREATE INDEX tasks_meeting ON tasks (tenant_id, meeting_id) WHERE meeting_id IS NOT NULL;

DROP INDEX audit_log_time;
DROP INDEX events_created;
