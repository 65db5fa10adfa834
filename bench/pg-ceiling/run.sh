#!/usr/bin/env bash
# PostgreSQL's own ceiling for the task pipeline on this machine: pgbench runs exactly the
# rows a no-op task writes (writes.sql), one statement per transaction, with no server, no
# HTTP and no reads. No end-to-end figure can exceed what this prints. See ../README.md.
#
#   bash bench/pg-ceiling/run.sh
#
# CEILING_ADMIN_URL: a superuser connection (default postgres://postgres@127.0.0.1:5432/postgres).
# It creates (and at the end drops) the database ocsuite_ceiling and the role
# ocsuite_ceiling (NOSUPERUSER NOBYPASSRLS, so row-level security applies as in production).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
ADMIN=${CEILING_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DURATION=${CEILING_SECONDS:-10}
CLIENTS=${CEILING_CLIENTS:-16}
HOSTPORT=$(printf '%s' "$ADMIN" | sed -E 's#^postgres(ql)?://[^@]*@([^/]*)/.*#\2#')
HOST=${HOSTPORT%:*}
PORT=${HOSTPORT##*:}
OWNER_URL="${ADMIN%/*}/ocsuite_ceiling"
WORK="$(mktemp -d)"

command -v pgbench >/dev/null || { echo "pgbench is required (postgresql-client)" >&2; exit 2; }
cleanup() {
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS ocsuite_ceiling" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql -q -v ON_ERROR_STOP=1 "$ADMIN" <<'SQL'
DROP DATABASE IF EXISTS ocsuite_ceiling;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ocsuite_ceiling') THEN
    CREATE ROLE ocsuite_ceiling LOGIN PASSWORD 'ceiling' NOSUPERUSER NOBYPASSRLS;
  END IF;
END $$;
CREATE DATABASE ocsuite_ceiling;
SQL

echo "[ceiling] migrating with the server's own migrations" >&2
cargo build -q --release -p ocsuite
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
(cd "$WORK" && OCSUITE_DATABASE_URL="$OWNER_URL" "$TARGET_DIR/release/ocsuite" migrate >/dev/null)

TENANT=ten_$(printf '%032x' 1)
psql -q -v ON_ERROR_STOP=1 "$OWNER_URL" -f bench/pg-ceiling/writes.sql
psql -q -v ON_ERROR_STOP=1 "$OWNER_URL" <<SQL
INSERT INTO tenants (id, name, profile, created_at, updated_at, job_concurrency)
VALUES ('$TENANT', 'ceiling', '{}', now(), now(), 64);
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ocsuite_ceiling;
GRANT EXECUTE ON FUNCTION ceiling_enqueue(TEXT, TEXT), ceiling_run(TEXT) TO ocsuite_ceiling;
SQL

echo "SELECT ceiling_enqueue('$TENANT', 'tsk_' || md5(random()::text || clock_timestamp()::text));" >"$WORK/enqueue.sql"
echo "SELECT ceiling_run('$TENANT');" >"$WORK/run.sql"

# Three rounds of each, alternating, each on emptied tables. Rounds differ by up to 3x on
# this kind of machine: every claimed and finished job leaves dead entries at the front
# of the ready-jobs index that each later claim steps over until autovacuum (which wakes
# once a minute by default) removes them, so a round slows down as it goes. Report every
# round; the fastest is the ceiling for a short burst, the slowest for sustained load.
for round in 1 2 3; do
  for ssl in require disable; do
    out=$(PGPASSWORD=ceiling PGSSLMODE=$ssl pgbench -h "$HOST" -p "$PORT" -U ocsuite_ceiling -n \
      -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" \
      -f "$WORK/enqueue.sql@1" -f "$WORK/run.sql@1" ocsuite_ceiling 2>&1)
    # The worker script's rate: each of its transactions that found a job ran one task.
    run_tps=$(printf '%s\n' "$out" | awk '/SQL script 2/{f=1} f && /tps =/{gsub(/[(),]/,""); for(i=1;i<=NF;i++) if($i=="tps") {print $(i+2); exit}}')
    left=$(psql -At "$OWNER_URL" -c "SELECT count(*) FROM jobs")
    printf 'round %s  sslmode=%-8s  tasks/s: %5.0f  (jobs still queued at the end: %s)\n' \
      "$round" "$ssl" "$run_tps" "$left"
    psql -q "$OWNER_URL" -c "TRUNCATE jobs, tasks, events, audit_log; CHECKPOINT"
  done
done
