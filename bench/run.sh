#!/usr/bin/env bash
# Benchmark of the authenticated read path: GET /api/v1/me (session → user scope) and
# GET /api/v1/members (session → TenantCtx → tenant-scoped read).
#
# SQLite (default):   bash bench/run.sh
# PostgreSQL:         BENCH_DATABASE_URL=postgres://ocsuite_bench:…@127.0.0.1:5432/ocsuite_bench \
#                     BENCH_MIGRATION_DATABASE_URL=postgres://postgres@127.0.0.1:5432/ocsuite_bench \
#                     bash bench/run.sh
# BENCH_ENFORCE=1 makes a missed target exit non-zero. See bench/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ADDR=127.0.0.1:18181
BASE="http://$ADDR"
MIN_RPS=${BENCH_MIN_RPS:-5000}
MAX_P99_MS=${BENCH_MAX_P99_MS:-5}
MAX_RSS_MB=${BENCH_MAX_RSS_MB:-30}
DURATION=${BENCH_DURATION:-15s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- build -------------------------------------------------------------------------
log "building release binary"
cargo build --release -p ocsuite
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/ocsuite"
[ -x "$BIN" ] || die "no binary at $BIN"

# --- tools -------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "wrk is missing and sudo is unavailable: install wrk"
    SUDO=sudo
  fi
  $SUDO apt-get update
  $SUDO apt-get install -y wrk
fi
command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v curl >/dev/null 2>&1 || die "curl is required"

# --- server ------------------------------------------------------------------------
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null; then
  die "something already listens on $ADDR"
fi

# Defaults otherwise: development mode, SQLite at data/ocsuite.db and a generated
# master key in data/, both inside the temp dir the server runs in.
SERVER_ENV=(
  OCSUITE_ADDR="$ADDR"
  RUST_LOG=warn
  OCSUITE_RATE_LIMIT_API_PER_SECOND=1000000
  OCSUITE_RATE_LIMIT_API_BURST=1000000
  OCSUITE_RATE_LIMIT_AUTH_PER_MINUTE=1000
)
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  SERVER_ENV+=(OCSUITE_DATABASE_URL="$BENCH_DATABASE_URL")
fi
if [ -n "${BENCH_MIGRATION_DATABASE_URL:-}" ]; then
  SERVER_ENV+=(OCSUITE_MIGRATION_DATABASE_URL="$BENCH_MIGRATION_DATABASE_URL")
fi
BACKEND=sqlite
case "${BENCH_DATABASE_URL:-}" in postgres*) BACKEND=postgres ;; esac

log "starting server ($BACKEND) in $WORK"
(
  cd "$WORK"
  # The caller's own OCSUITE_* settings do not leak into the run; the temp dir has no
  # ocsuite.toml.
  exec env $(env | awk -F= '/^OCSUITE_/ {printf "-u %s ", $1}') "${SERVER_ENV[@]}" "$BIN" serve
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for i in $(seq 300); do
  if curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    cat "$WORK/server.log" >&2
    die "server exited during start"
  fi
  if [ "$i" -eq 300 ]; then cat "$WORK/server.log" >&2; die "server not ready after 30 s"; fi
  sleep 0.1
done
sleep 1
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
RSS_MB=$(awk -v k="$RSS_KB" 'BEGIN {printf "%.1f", k / 1024}')
log "idle RSS: ${RSS_MB} MB"

# --- data --------------------------------------------------------------------------
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

EMAIL="bench-$(date +%s)-$$@example.com"
SIGNUP=$(curl -fsS -X POST "$BASE/api/v1/auth/signup" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"password\":\"bench password 123\",\"name\":\"Bench\"}") \
  || die "signup failed"
TOKEN=$(printf '%s' "$SIGNUP" | json_field token)
TENANT=$(curl -fsS -X POST "$BASE/api/v1/tenants" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $TOKEN" -d '{"name":"Bench Co"}' | json_field id) \
  || die "tenant creation failed"
log "user $EMAIL, tenant $TENANT"

# --- load --------------------------------------------------------------------------
# to_ms "1.23ms" → 1.23; wrk prints us, ms, s or m.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

declare -A RPS P99 ERRS
run_wrk() { # name path [extra header]
  local name=$1 path=$2 out p99
  local -a hdr=(-H "Authorization: Bearer $TOKEN")
  if [ $# -ge 3 ]; then hdr+=(-H "$3"); fi
  curl -fsS -o /dev/null "${hdr[@]}" "$BASE$path" || die "GET $path is not 200 before the run"
  wrk -t1 -c"$CONNECTIONS" -d3s "${hdr[@]}" "$BASE$path" >/dev/null
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${hdr[@]}" "$BASE$path")
  printf '%s\n' "$out" >&2
  RPS[$name]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  if [ -z "${RPS[$name]}" ] || [ -z "$p99" ]; then die "could not parse wrk output"; fi
  P99[$name]=$(to_ms "$p99")
  ERRS[$name]=$(awk '/Non-2xx or 3xx responses:/ {n = $NF} /Socket errors:/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i} END {print n + s}' <<<"$out")
}

log "GET /api/v1/me"
run_wrk me /api/v1/me
log "GET /api/v1/members"
run_wrk members /api/v1/members "X-Tenant-Id: $TENANT"

# --- report ------------------------------------------------------------------------
FAILED=0
row() { # label value target-text ok(1/0)
  local result=ok
  if [ "$4" != 1 ]; then result=MISS; FAILED=1; fi
  printf '%-28s %12s %12s %8s\n' "$1" "$2" "$3" "$result"
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN {print (a + 0 >= b + 0) ? 1 : 0}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a + 0 <= b + 0) ? 1 : 0}'; }

echo
echo "ocsuite bench: backend=$BACKEND, wrk -t1 -c$CONNECTIONS -d$DURATION, $(nproc) CPUs"
printf '%-28s %12s %12s %8s\n' "measure" "value" "target" "result"
for name in me members; do
  row "GET /api/v1/$name req/s" "${RPS[$name]}" ">= $MIN_RPS" "$(ge "${RPS[$name]}" "$MIN_RPS")"
  row "GET /api/v1/$name p99 ms" "${P99[$name]}" "<= $MAX_P99_MS" "$(le "${P99[$name]}" "$MAX_P99_MS")"
  row "GET /api/v1/$name errors" "${ERRS[$name]}" "0" "$(le "${ERRS[$name]}" 0)"
done
row "idle RSS MB" "$RSS_MB" "<= $MAX_RSS_MB" "$(le "$RSS_MB" "$MAX_RSS_MB")"
echo

if [ "$FAILED" -ne 0 ]; then
  if [ "${BENCH_ENFORCE:-0}" = 1 ]; then
    log "targets missed (BENCH_ENFORCE=1)"
    exit 1
  fi
  log "targets missed (set BENCH_ENFORCE=1 to fail on this)"
fi
