#!/usr/bin/env bash
# ocsuite's task queue and pg-boss side by side: one run of each, back to back, on the
# same PostgreSQL and the same machine, then one table with both and their ratio.
#
#   bash bench/compare.sh                           # ocsuite first, then pg-boss
#   COMPARE_ORDER=pgboss-first bash bench/compare.sh
#
# ocsuite: the release binary ocsuite-bench-tasks (bench/tasks), OCSUITE_BENCH_BIN or
#   ${CARGO_TARGET_DIR:-$HOME/.cache/ocsuite-target}/release/ocsuite-bench-tasks
#   (cargo build --release -p ocsuite-bench-tasks --bin ocsuite-bench-tasks). Its database
#   (BENCH_DATABASE_URL's, ocsuite_bench) is dropped and recreated, owned by the
#   migration role, before the run; the runtime role (ocsuite_bench, password bench,
#   NOSUPERUSER NOBYPASSRLS) is created if missing. Its fan-out phase is skipped
#   (BENCH_SUBSCRIBERS=0, BENCH_FANOUT_TASKS=0): pg-boss has no counterpart.
# pg-boss: bench/pgboss/bench.mjs (node; `npm ci` there if node_modules is missing), on
#   its own database (PGBOSS_DATABASE, pgboss_bench), dropped and created by the script.
#
# Settings (environment), passed to both sides where both have them:
#   BENCH_TASKS (8000)      jobs in the saturated and drain phases   (pg-boss: PGBOSS_JOBS)
#   BENCH_CLIENTS (32)      concurrent senders                       (PGBOSS_SENDERS)
#   BENCH_RATE (300)        paced phase, jobs/s                      (PGBOSS_RATE)
#   BENCH_RATE_SECS (10)    paced phase, seconds                     (PGBOSS_RATE_SECS)
#   BENCH_WORKERS (8)       ocsuite workers; PGBOSS_WORKERS (16) and PGBOSS_BATCH (100)
#                           are pg-boss's workers and fetch size; other PGBOSS_* settings
#                           (PGBOSS_POOL, PGBOSS_STAGGER: see bench/pgboss/bench.mjs) pass through
#   BENCH_DATABASE_URL (postgres://ocsuite_bench:bench@127.0.0.1:5432/ocsuite_bench)
#   BENCH_MIGRATION_DATABASE_URL (postgres://postgres@127.0.0.1:5432/ocsuite_bench)
#   COMPARE_ADMIN_URL       a superuser on the same server; by default the migration URL
#                           with database `postgres`. pg-boss runs through it too.
#   COMPARE_ORDER           ocsuite-first (default) or pgboss-first
#   COMPARE_KEEP=1          keep the work folder with both raw outputs
# Needs psql, node (>= 20), npm and python3. Exits non-zero on any failure of either side.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[compare] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# combine OCSUITE_OUT PGBOSS_OUT RATE: the side-by-side table (markdown) on stdout, from
# ocsuite-bench-tasks's report and bench.mjs's PGBOSS_RESULT line.
combine() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, math, re, sys

ocs_path, pgb_path, rate = sys.argv[1], sys.argv[2], sys.argv[3]
ocs_lines = open(ocs_path, encoding="utf-8").read().splitlines()
pgb_lines = open(pgb_path, encoding="utf-8").read().splitlines()

def fail(msg):
    print(f"[compare] error: {msg}", file=sys.stderr)
    sys.exit(3)

# ocsuite's report rows: `{label:<40} {value:>12} {target:>12} {result:>6}`.
def ocs(label):
    for line in ocs_lines:
        if line.startswith(label) and (len(line) == len(label) or line[len(label)] == " "):
            rest = line[len(label):].split()
            if rest:
                try:
                    return float(rest[0])
                except ValueError:
                    fail(f"ocsuite row {label!r}: {rest[0]!r} is not a number")
    fail(f"no row {label!r} in the ocsuite output ({ocs_path})")

header = next((l for l in ocs_lines if l.startswith("ocsuite task bench:")), None)
if header is None:
    fail(f"no 'ocsuite task bench:' header in the ocsuite output ({ocs_path})")
m = re.search(r"backend=(\w+), (\d+) tasks, (\d+) clients, (\d+) workers", header)
if not m:
    fail(f"unexpected ocsuite header: {header!r}")
backend, ocs_tasks, ocs_clients, ocs_workers = m.group(1), *map(int, m.groups()[1:])
if backend != "postgres":
    fail(f"the ocsuite run used {backend}, not PostgreSQL")

result = [l[len("PGBOSS_RESULT "):] for l in pgb_lines if l.startswith("PGBOSS_RESULT ")]
if len(result) != 1:
    fail(f"expected one PGBOSS_RESULT line in the pg-boss output ({pgb_path}), found {len(result)}")
p = json.loads(result[0])
if int(p["jobs"]) != ocs_tasks or int(p["senders"]) != ocs_clients:
    fail(f"the runs differ: ocsuite {ocs_tasks} tasks from {ocs_clients} clients, pg-boss {p['jobs']} jobs from {p['senders']} senders")
if int(p["rate"]) != int(rate):
    fail(f"pg-boss ran its paced phase at {p['rate']}/s, ocsuite at {rate}/s")

rows = [
    # label, ocsuite, pg-boss, unit / direction
    ("jobs/s end to end (first enqueue → last done)", ocs("no-op tasks/s (end to end)"), p["e2e_jobs_per_s"], "higher is better"),
    ("drain jobs/s (backlog, workers alone)", ocs("drain rate (claim+run+commit/s)"), p["drain_jobs_per_s"], "higher is better"),
    (f"enqueue-to-start p50 ms @ {rate}/s", ocs(f"enqueue-to-start p50 ms @ {rate}/s"), p["paced_p50_ms"], "lower is better"),
    (f"enqueue-to-start p99 ms @ {rate}/s", ocs(f"enqueue-to-start p99 ms @ {rate}/s"), p["paced_p99_ms"], "lower is better"),
]

def fmt(x, ms):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.2f}" if ms else f"{x:,.0f}"

print(f"ocsuite: {ocs_tasks} tasks, {ocs_clients} HTTP clients, {ocs_workers} workers (batched claims and settles). "
      f"pg-boss {p['pgboss_version']}: {p['jobs']} jobs, {p['senders']} senders, {p['workers']} workers "
      f"× fetch {p['batch']}, polling {p['poll_s']} s (least allowed {p['poll_min_s']} s)"
      f"{', starts staggered' if p.get('stagger') else ''}, pool {p['pool']}. "
      f"PostgreSQL {p['postgres']}, {p['cpus']} CPUs.")
print()
print("| measure | ocsuite | pg-boss | ocsuite / pg-boss | |")
print("| --- | ---: | ---: | ---: | --- |")
for label, o, g, note in rows:
    ms = "ms" in label
    ratio = "n/a" if not g or math.isnan(o) else f"{o / g:.2f}"
    print(f"| {label} | {fmt(o, ms)} | {fmt(g, ms)} | {ratio} | {note} |")
PY
}

main() {
  cd "$ROOT"
  local order=${COMPARE_ORDER:-ocsuite-first}
  case "$order" in ocsuite-first|pgboss-first) ;; *) die "COMPARE_ORDER must be ocsuite-first or pgboss-first, not $order" ;; esac

  # --- tools and binary ------------------------------------------------------------------
  local tool
  for tool in psql node npm python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not on PATH"
  done
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 20 ] || die "node >= 20 is required (found $(node -v))"

  local target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/ocsuite-target}"
  case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
  local bin="${OCSUITE_BENCH_BIN:-$target_dir/release/ocsuite-bench-tasks}"
  if [ ! -x "$bin" ]; then
    die "no ocsuite bench binary at $bin: build it with
  cargo build --release -p ocsuite-bench-tasks --bin ocsuite-bench-tasks
or point OCSUITE_BENCH_BIN at it"
  fi

  if [ ! -d bench/pgboss/node_modules/pg-boss ]; then
    log "installing bench/pgboss dependencies (npm ci)"
    (cd bench/pgboss && npm ci --no-audit --no-fund) >&2 || die "npm ci in bench/pgboss failed"
  fi

  # --- settings ----------------------------------------------------------------------------
  local tasks=${BENCH_TASKS:-8000} clients=${BENCH_CLIENTS:-32}
  local rate=${BENCH_RATE:-300} rate_secs=${BENCH_RATE_SECS:-10}
  local url=${BENCH_DATABASE_URL:-postgres://ocsuite_bench:bench@127.0.0.1:5432/ocsuite_bench}
  local owner_url=${BENCH_MIGRATION_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ocsuite_bench}
  local parts db role password owner_db owner admin_url
  # Fields split by \x1f, not whitespace, so that an empty one (no password) keeps its place.
  parts=$(python3 -c 'import sys, urllib.parse as u
r, o = u.urlsplit(sys.argv[1]), u.urlsplit(sys.argv[2])
print(r.path.lstrip("/"), u.unquote(r.username or ""), u.unquote(r.password or ""), o.path.lstrip("/"),
      u.unquote(o.username or "postgres"), u.urlunsplit(o._replace(path="/postgres")), sep="\x1f")' "$url" "$owner_url")
  IFS=$'\x1f' read -r db role password owner_db owner admin_url <<<"$parts"
  admin_url=${COMPARE_ADMIN_URL:-$admin_url}
  [ -n "$db" ] && [ "$db" = "$owner_db" ] || die "BENCH_DATABASE_URL and BENCH_MIGRATION_DATABASE_URL must name the same database"
  [[ "$db" =~ ^[a-z_][a-z0-9_]*$ ]] || die "database name $db: use lower-case letters, digits and _"
  [[ "$role" =~ ^[a-z_][a-z0-9_]*$ ]] || die "runtime role $role: use lower-case letters, digits and _"
  [[ "$owner" =~ ^[a-z_][a-z0-9_]*$ ]] || die "owner role $owner: use lower-case letters, digits and _"
  [[ "$password" != *"'"* ]] || die "the runtime role's password must not contain '"
  case "${PGBOSS_DATABASE:-pgboss_bench}" in "$db") die "PGBOSS_DATABASE must differ from the ocsuite database" ;; esac

  psql_admin() { PGOPTIONS='-c client_min_messages=warning' psql "$admin_url" -v ON_ERROR_STOP=1 -qAtX "$@"; }
  psql_admin -c 'SELECT 1' >/dev/null || die "cannot connect to $admin_url (COMPARE_ADMIN_URL)"
  [ "$(psql_admin -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user')" = t ] \
    || die "$admin_url must connect as a superuser (it creates roles and databases)"

  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/ocsuite-compare.XXXXXX")
  # shellcheck disable=SC2064
  if [ "${COMPARE_KEEP:-0}" = 1 ]; then trap "log 'kept $work'" EXIT; else trap "rm -rf '$work'" EXIT; fi

  run_ocsuite() {
    log "ocsuite: recreating database $db (owner $owner), runtime role $role"
    psql_admin -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role') THEN
      CREATE ROLE $role LOGIN PASSWORD '$password' NOSUPERUSER NOBYPASSRLS; END IF; END \$\$" >/dev/null
    local flags
    flags=$(psql_admin -c "SELECT rolsuper::text || rolbypassrls::text FROM pg_roles WHERE rolname = '$role'")
    [ "$flags" = falsefalse ] || die "role $role is a superuser or has BYPASSRLS: the ocsuite server refuses to run as it"
    psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    psql_admin -c "CREATE DATABASE $db OWNER \"$owner\"" >/dev/null
    # What the migrations grant too (bench/faults.sh does the same); on PostgreSQL 15 the
    # runtime role gets no CREATE on public, as in production.
    psql "$owner_url" -v ON_ERROR_STOP=1 -qAtX -c "GRANT USAGE ON SCHEMA public TO $role" >/dev/null
    log "ocsuite: $bin ($tasks tasks, $clients clients, ${BENCH_WORKERS:-8} workers, paced $rate/s for $rate_secs s, no fan-out)"
    env -u BENCH_ENFORCE \
      BENCH_DATABASE_URL="$url" BENCH_MIGRATION_DATABASE_URL="$owner_url" \
      BENCH_TASKS="$tasks" BENCH_CLIENTS="$clients" BENCH_RATE="$rate" BENCH_RATE_SECS="$rate_secs" \
      BENCH_SUBSCRIBERS=0 BENCH_FANOUT_TASKS=0 \
      "$bin" >"$work/ocsuite.out" || die "the ocsuite bench failed (exit $?)"
    cat "$work/ocsuite.out"
  }

  run_pgboss() {
    log "pg-boss: bench/pgboss/bench.mjs ($tasks jobs, $clients senders, ${PGBOSS_WORKERS:-16} workers × ${PGBOSS_BATCH:-100}, paced $rate/s for $rate_secs s)"
    PGBOSS_ADMIN_URL="$admin_url" PGBOSS_JOBS="$tasks" PGBOSS_SENDERS="$clients" \
      PGBOSS_RATE="$rate" PGBOSS_RATE_SECS="$rate_secs" \
      node bench/pgboss/bench.mjs >"$work/pgboss.out" || die "the pg-boss bench failed (exit $?)"
    cat "$work/pgboss.out"
  }

  log "order: $order; PostgreSQL $(psql_admin -c 'SHOW server_version'), $(nproc) CPUs"
  if [ "$order" = ocsuite-first ]; then
    run_ocsuite
    run_pgboss
  else
    run_pgboss
    run_ocsuite
  fi

  echo
  echo "ocsuite vs pg-boss, $(date -u +%Y-%m-%dT%H:%MZ), $order, same PostgreSQL, same machine"
  echo
  combine "$work/ocsuite.out" "$work/pgboss.out" "$rate"
  echo
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
