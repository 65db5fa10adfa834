#!/usr/bin/env bash
# Where a no-op task's time goes on PostgreSQL: runs the task bench (no fan-out phase)
# with pg_stat_statements and pg_stat_wal reset before, then prints statements per task,
# the top statements by total time, commits, WAL bytes and flushes per task, and how the
# machine's CPU time split between the bench process (server + load generator) and the
# rest (PostgreSQL). Needs `shared_preload_libraries = 'pg_stat_statements'` (the script
# says how to turn it on) and a superuser at PROFILE_ADMIN_URL.
#
#   cargo build --release -p ocsuite-bench-tasks --bin ocsuite-bench-tasks
#   bash bench/pg-profile.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ADMIN=${PROFILE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=ocsuite_bench ROLE=ocsuite_bench
BIN=${OCSUITE_BENCH_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/ocsuite-target}/release/ocsuite-bench-tasks}
TASKS=${BENCH_TASKS:-8000}
RATE=${BENCH_RATE:-300}
SECS=${BENCH_RATE_SECS:-10}
log() { printf '[profile] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
q() { psql "$ADMIN" -v ON_ERROR_STOP=1 -qAtX "$@"; }

[ -x "$BIN" ] || die "no bench binary at $BIN (build it first)"
if [ "$(q -c 'SHOW shared_preload_libraries')" != *pg_stat_statements* ] &&
   ! q -c 'SHOW shared_preload_libraries' | grep -q pg_stat_statements; then
  die "pg_stat_statements is not loaded: ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'; restart PostgreSQL; ALTER SYSTEM SET pg_stat_statements.track = 'all'; SELECT pg_reload_conf();"
fi
q -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
q -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
      CREATE ROLE $ROLE LOGIN PASSWORD 'bench' NOSUPERUSER NOBYPASSRLS; END IF; END \$\$" >/dev/null
q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
q -c "CREATE DATABASE $DB" >/dev/null
psql "${ADMIN%/*}/$DB" -qAtX -c "GRANT USAGE ON SCHEMA public TO $ROLE" >/dev/null

cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }  # busy idle (jiffies)
q -c "SELECT pg_stat_statements_reset(), pg_stat_reset_shared('wal')" >/dev/null
before_xact=$(q -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
read -r busy0 idle0 < <(cpu)
log "running $BIN ($TASKS tasks × 3 phases + $((RATE * SECS)) paced, no fan-out)"
/usr/bin/time -f '%U %S' -o /tmp/ocsuite-profile.time env \
  BENCH_DATABASE_URL="postgres://$ROLE:bench@127.0.0.1:5432/$DB" \
  BENCH_MIGRATION_DATABASE_URL="${ADMIN%/*}/$DB" \
  BENCH_TASKS="$TASKS" BENCH_RATE="$RATE" BENCH_RATE_SECS="$SECS" \
  BENCH_SUBSCRIBERS=0 BENCH_FANOUT_TASKS=0 "$BIN" >/tmp/ocsuite-profile.out 2>/dev/null
read -r busy1 idle1 < <(cpu)
read -r user sys < /tmp/ocsuite-profile.time
hz=$(getconf CLK_TCK)
total_tasks=$((TASKS * 3 + RATE * SECS))
commits=$(( $(q -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'") - before_xact ))

grep -E 'tasks/s|drain' /tmp/ocsuite-profile.out
echo
echo "### per task ($total_tasks no-op tasks)"
echo
q -F ' | ' -c "
  SELECT 'statements per task', round(sum(calls)::numeric / $total_tasks, 1)
    FROM pg_stat_statements WHERE toplevel
  UNION ALL SELECT 'transactions committed per task', round($commits::numeric / $total_tasks, 2)
  UNION ALL SELECT 'WAL records per task', round(wal_records::numeric / $total_tasks, 1) FROM pg_stat_wal
  UNION ALL SELECT 'WAL bytes per task', round(wal_bytes::numeric / $total_tasks) FROM pg_stat_wal
  UNION ALL SELECT 'WAL flushes (fsync) per task', round(wal_sync::numeric / $total_tasks, 2) FROM pg_stat_wal
  UNION ALL SELECT 'statement execution ms per task', round(sum(total_exec_time)::numeric / $total_tasks, 3)
    FROM pg_stat_statements WHERE toplevel
  UNION ALL SELECT 'planning ms per task', round(sum(total_plan_time)::numeric / $total_tasks, 3)
    FROM pg_stat_statements WHERE toplevel" | sed 's/^/| /; s/$/ |/'
echo
awk -v u="$user" -v s="$sys" -v b0="$busy0" -v b1="$busy1" -v hz="$hz" -v n="$total_tasks" 'BEGIN {
  busy = (b1 - b0) / hz; own = u + s;
  printf "| CPU s, whole machine busy | %.1f |\n| CPU s, bench process (server + HTTP load) | %.1f (%.0f%%) |\n| CPU s, everything else (mostly PostgreSQL) | %.1f (%.0f%%) |\n| CPU ms per task, all | %.2f |\n", busy, own, 100*own/busy, busy-own, 100*(busy-own)/busy, 1000*busy/n }'
echo
echo "### top statements by total execution time"
echo
echo "| calls per task | ms per call | share of time | statement |"
echo "| --- | --- | --- | --- |"
q -F ' | ' -c "
  WITH s AS (SELECT query, calls, total_exec_time FROM pg_stat_statements WHERE toplevel),
       t AS (SELECT sum(total_exec_time) AS all_ms FROM s)
  SELECT round(calls::numeric / $total_tasks, 2), round((total_exec_time / calls)::numeric, 3),
         round((100 * total_exec_time / all_ms)::numeric, 1) || '%',
         left(regexp_replace(query, '\s+', ' ', 'g'), 110)
    FROM s, t ORDER BY total_exec_time DESC LIMIT 15" | sed 's/^/| /; s/$/ |/'
