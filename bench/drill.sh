#!/usr/bin/env bash
# Disaster-recovery drill: loads data, backs up under load, restores into a fresh
# database, checks every row and that every secret decrypts, and prints RPO and RTO.
#
# SQLite (default):   bash bench/drill.sh
# PostgreSQL:         DRILL_DATABASE_URL=postgres://ocsuite_bench:bench@127.0.0.1:5432/ocsuite_drill \
#                     DRILL_MIGRATION_DATABASE_URL=postgres://postgres@127.0.0.1:5432/ocsuite_drill \
#                     bash bench/drill.sh
#
# It uses the release binary in ${CARGO_TARGET_DIR:-$HOME/.cache/ocsuite-target}/release
# (build it with `cargo build --release -p ocsuite`, or pass DRILL_BUILD=1).
# Settings (environment):
#   DRILL_GB (1)                    company data to load, in GiB (1 GiB = 2^30 bytes)
#   DRILL_COMPANIES (50)            companies signed up, each with a webhook endpoint
#   OCSUITE_BACKUP_EVERY_MINUTES (10)  backup interval the RPO bound assumes
#   DRILL_LOAD_WORKERS (2)          HTTP writers running while the backup is taken
#   DRILL_ENFORCE=1                 exit 1 when RPO ≤ 15 min or RTO ≤ 60 min is missed
#   DRILL_KEEP=1                    keep the work folder (and PostgreSQL databases)
# On PostgreSQL the owner (DRILL_MIGRATION_DATABASE_URL) must be able to CREATE
# DATABASE: the restore goes into a new database `<name>_restore`, dropped at the end.
# The source database is created if missing (and then dropped at the end); the runtime
# role must exist (see bench/README.md, "PostgreSQL"). A failed check (rows, secrets,
# sign-in, a write acknowledged before the snapshot missing) always exits 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SRC_ADDR=127.0.0.1:18191
DST_ADDR=127.0.0.1:18192
GB=${DRILL_GB:-1}
COMPANIES=${DRILL_COMPANIES:-50}
EVERY_MIN=${OCSUITE_BACKUP_EVERY_MINUTES:-10}
LOAD_WORKERS=${DRILL_LOAD_WORKERS:-2}
LOAD_LEAD_S=${DRILL_LOAD_LEAD_S:-3}   # load before the backup starts
LOAD_TAIL_S=${DRILL_LOAD_TAIL_S:-5}   # load after it ends, before the failure
CHUNK_MSGS=${DRILL_CHUNK_MESSAGES:-1000}
CONTENT_BYTES=4096
PER_CONV=50
MAX_RPO_S=900
MAX_RTO_S=3600

log() { printf '[drill] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

# --- binary and tools --------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ocsuite-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/ocsuite"
if [ "${DRILL_BUILD:-0}" = 1 ]; then
  log "building release binary"
  CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p ocsuite
fi
if [ ! -x "$BIN" ]; then
  log "no release binary at $BIN"
  log "build it first: cargo build --release -p ocsuite (or run with DRILL_BUILD=1)"
  exit 2
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

BACKEND=sqlite
case "${DRILL_DATABASE_URL:-}" in postgres*) BACKEND=postgres ;; "") ;; *) die "DRILL_DATABASE_URL must be postgres://…" ;; esac
if [ "$BACKEND" = postgres ]; then
  for tool in psql pg_dump pg_restore; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required for PostgreSQL"
  done
else
  command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 is required (apt-get install sqlite3)"
fi

# url_db URL → its database name; url_with_db URL NAME → URL naming database NAME.
url_db() { python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).path.lstrip("/"))' "$1"; }
url_user() { python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.urlsplit(sys.argv[1]).username or ""))' "$1"; }
url_with_db() { python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$1" "$2"; }
# json PATH: a field of the JSON on stdin, e.g. `json user.id`.
json() {
  python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"
}

# --- work folder, processes, cleanup --------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ocsuite-drill.XXXXXX")"
SERVER_PID=""
LOAD_PIDS=()
DROP_DBS=()   # PostgreSQL databases this run created
ADMIN_URL=""

stop_pid() { # pid: TERM, wait up to 30 s, then KILL
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_load() {
  touch "$WORK/load.stop"
  local p
  for p in "${LOAD_PIDS[@]+"${LOAD_PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
  LOAD_PIDS=()
}
cleanup() {
  local rc=$?
  if [ "${#LOAD_PIDS[@]}" -gt 0 ]; then
    touch "$WORK/load.stop"
    for p in "${LOAD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  fi
  stop_pid "$SERVER_PID"
  if [ "$rc" -ne 0 ]; then
    for f in "$WORK"/*.log; do
      [ -s "$f" ] || continue
      log "--- last lines of $(basename "$f")"
      tail -n 20 "$f" >&2 || true
    done
  fi
  if [ "${DRILL_KEEP:-0}" = 1 ]; then
    log "kept $WORK${DROP_DBS[*]+ and databases ${DROP_DBS[*]}}"
    return
  fi
  local db
  for db in "${DROP_DBS[@]+"${DROP_DBS[@]}"}"; do
    psql -X -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
      || log "could not drop database $db"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for addr in "$SRC_ADDR" "$DST_ADDR"; do
  if curl -fsS -o /dev/null --max-time 2 "http://$addr/healthz" 2>/dev/null; then
    die "something already listens on $addr"
  fi
done

# --- configuration -----------------------------------------------------------------------
MASTER_KEY=$(head -c 32 /dev/urandom | base64)
RUN=$(( (RANDOM << 15 | RANDOM) & 0x3fffffff ))
COMMON_ENV=(
  OCSUITE_MASTER_KEY="$MASTER_KEY"
  OCSUITE_LOG_FORMAT=pretty
  RUST_LOG=warn
  OCSUITE_RATE_LIMIT_API_PER_SECOND=1000000
  OCSUITE_RATE_LIMIT_API_BURST=1000000
  OCSUITE_RATE_LIMIT_AUTH_PER_MINUTE=100000
)
mkdir -p "$WORK/source/data" "$WORK/restored/data" "$WORK/backups"
if [ "$BACKEND" = sqlite ]; then
  SRC_DB="$WORK/source/data/ocsuite.db"
  DST_DB="$WORK/restored/data/ocsuite.db"
  SRC_ENV=(OCSUITE_DATABASE_URL="sqlite://$SRC_DB")
  DST_ENV=(OCSUITE_DATABASE_URL="sqlite://$DST_DB")
else
  SRC_URL=$DRILL_DATABASE_URL
  SRC_OWNER=${DRILL_MIGRATION_DATABASE_URL:-$DRILL_DATABASE_URL}
  SRC_NAME=$(url_db "$SRC_URL")
  [ -n "$SRC_NAME" ] || die "DRILL_DATABASE_URL names no database"
  [ "$(url_db "$SRC_OWNER")" = "$SRC_NAME" ] || die "DRILL_MIGRATION_DATABASE_URL must name the same database as DRILL_DATABASE_URL"
  DST_NAME="${SRC_NAME}_restore"
  DST_URL=$(url_with_db "$SRC_URL" "$DST_NAME")
  DST_OWNER=$(url_with_db "$SRC_OWNER" "$DST_NAME")
  ADMIN_URL=${DRILL_ADMIN_DATABASE_URL:-$(url_with_db "$SRC_OWNER" postgres)}
  psql -X -q "$ADMIN_URL" -c 'SELECT 1' >/dev/null || die "cannot connect as the owner to $ADMIN_URL"
  RUNTIME_ROLE=$(url_user "$SRC_URL")
  if [ -z "$(psql -X -Atq "$ADMIN_URL" -c "SELECT 1 FROM pg_roles WHERE rolname = '$RUNTIME_ROLE'")" ]; then
    die "runtime role $RUNTIME_ROLE does not exist: CREATE ROLE $RUNTIME_ROLE LOGIN PASSWORD '…' NOSUPERUSER NOBYPASSRLS (bench/README.md)"
  fi
  db_exists() { [ -n "$(psql -X -Atq "$ADMIN_URL" -c "SELECT 1 FROM pg_database WHERE datname = '$1'")" ]; }
  if db_exists "$DST_NAME"; then
    die "database $DST_NAME already exists (left by an earlier drill?): DROP DATABASE \"$DST_NAME\" first"
  fi
  if db_exists "$SRC_NAME"; then
    log "database $SRC_NAME exists: the drill adds its companies and data to it"
  else
    log "creating database $SRC_NAME"
    psql -X -q "$ADMIN_URL" -c "CREATE DATABASE \"$SRC_NAME\"" >/dev/null
    DROP_DBS+=("$SRC_NAME")
  fi
  SRC_ENV=(OCSUITE_DATABASE_URL="$SRC_URL" OCSUITE_MIGRATION_DATABASE_URL="$SRC_OWNER")
  DST_ENV=(OCSUITE_DATABASE_URL="$DST_URL" OCSUITE_MIGRATION_DATABASE_URL="$DST_OWNER")
fi
SRC_ENV+=(OCSUITE_ADDR="$SRC_ADDR" OCSUITE_DATA_DIR="$WORK/source/data")
DST_ENV+=(OCSUITE_ADDR="$DST_ADDR" OCSUITE_DATA_DIR="$WORK/restored/data")

# ocsuite_cmd ENV_ARRAY_NAME ARGS…: sets CMD to the binary with exactly these OCSUITE_*
# settings (the caller's own do not leak in). Run it as `(cd "$WORK" && exec "${CMD[@]}")`
# (no ocsuite.toml there; with exec, a background run's $! is the server itself).
ocsuite_cmd() {
  local -n extra=$1
  shift
  CMD=(env)
  local name
  for name in $(env | awk -F= '/^OCSUITE_/ {print $1}'); do CMD+=(-u "$name"); done
  CMD+=("${COMMON_ENV[@]}" "${extra[@]}" "$BIN" "$@")
}
ocsuite() { # ENV_ARRAY_NAME ARGS…, in the foreground
  ocsuite_cmd "$@"
  (cd "$WORK" && exec "${CMD[@]}")
}

# start_server ENV_ARRAY_NAME ADDR LOG: starts `serve`, waits for /readyz; sets
# SERVER_PID and READY_S (start to ready, seconds).
start_server() {
  local envs=$1 addr=$2 logf=$3 t0
  ocsuite_cmd "$envs" serve
  t0=$(now)
  (cd "$WORK" && exec "${CMD[@]}") >"$logf" 2>&1 &
  SERVER_PID=$!
  while :; do
    if curl -fsS -o /dev/null --max-time 2 "http://$addr/readyz" 2>/dev/null; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during start (see $(basename "$logf"))"
    if [ "$(secs "$t0" "$(now)" | cut -d. -f1)" -ge 600 ]; then die "server not ready after 600 s"; fi
    sleep 0.1
  done
  READY_S=$(secs "$t0" "$(now)")
}

# --- 1. source server and companies -----------------------------------------------------
log "backend $BACKEND, work folder $WORK"
log "starting the source server on $SRC_ADDR"
start_server SRC_ENV "$SRC_ADDR" "$WORK/source-server.log"
log "ready in ${READY_S} s"
SRC="http://$SRC_ADDR/api/v1"

post() { # base path token tenant body → response body; fails on non-2xx
  local hdr=(-H 'Content-Type: application/json')
  [ -n "$3" ] && hdr+=(-H "Authorization: Bearer $3")
  [ -n "$4" ] && hdr+=(-H "X-Tenant-Id: $4")
  curl -fsS --max-time 60 -X POST "${hdr[@]}" -d "$5" "$1$2"
}

log "signing up $COMPANIES companies, each with a webhook endpoint"
: >"$WORK/companies.tsv"
for i in $(seq "$COMPANIES"); do
  email="drill-$RUN-$i@example.com"
  password="drill password $RUN $i"
  out=$(post "$SRC" /auth/signup "" "" "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"Drill $i\"}") \
    || die "signup $i failed"
  token=$(json token <<<"$out")
  user=$(json user.id <<<"$out")
  tenant=$(post "$SRC" /tenants "$token" "" "{\"name\":\"Drill Co $i\"}" | json id) \
    || die "company $i failed"
  webhook=$(post "$SRC" /webhooks "$token" "$tenant" \
    '{"url":"https://example.com/hook","categories":["alerts.critical"],"description":"drill"}' \
    | json webhook.id) || die "webhook $i failed"
  printf '%s\t%s\t%s\t%s\t%s\n' "$email" "$password" "$user" "$tenant" "$webhook" >>"$WORK/companies.tsv"
done
mapfile -t TENANTS < <(cut -f4 "$WORK/companies.tsv")
mapfile -t USERS < <(cut -f3 "$WORK/companies.tsv")

# --- 2. bulk load ---------------------------------------------------------------------------
TARGET_BYTES=$(awk -v g="$GB" 'BEGIN {printf "%.0f", g * 1073741824}')
CONVS=$(( (CHUNK_MSGS + PER_CONV - 1) / PER_CONV ))

load_chunk() { # chunk tenant user → prints the database size in bytes
  local prefix
  prefix=$(printf '%08x%08x' "$RUN" "$1")
  if [ "$BACKEND" = sqlite ]; then
    local ts="strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
    sqlite3 -batch -bail -cmd '.timeout 30000' "$SRC_DB" <<SQL
BEGIN IMMEDIATE;
WITH RECURSIVE c(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM c WHERE j + 1 < $CONVS)
INSERT INTO conversations (tenant_id, id, persona, title, created_by, created_at, updated_at)
SELECT '$2', 'cnv_$prefix' || printf('%016x', j), 'ceo', 'Drill conversation ' || j, 'user:$3', $ts, $ts FROM c;
WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i + 1 < $CHUNK_MSGS)
INSERT INTO messages (tenant_id, id, conversation_id, role, persona, content, model, status,
                      prompt_tokens, completion_tokens, created_by, created_at)
SELECT '$2', 'msg_$prefix' || printf('%016x', i), 'cnv_$prefix' || printf('%016x', i / $PER_CONV),
       CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, 'ceo',
       lower(hex(randomblob($((CONTENT_BYTES / 2))))), NULL, 'complete', 0, 0, 'user:$3', $ts
  FROM m;
COMMIT;
SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size();
SQL
  else
    psql -X -q -At -v ON_ERROR_STOP=1 "$SRC_OWNER" <<SQL
BEGIN;
INSERT INTO conversations (tenant_id, id, persona, title, created_by, created_at, updated_at)
SELECT '$2', 'cnv_$prefix' || lpad(to_hex(j), 16, '0'), 'ceo', 'Drill conversation ' || j, 'user:$3', now(), now()
  FROM generate_series(0, $CONVS - 1) j;
INSERT INTO messages (tenant_id, id, conversation_id, role, persona, content, model, status,
                      prompt_tokens, completion_tokens, created_by, created_at)
SELECT '$2', 'msg_$prefix' || lpad(to_hex(i), 16, '0'), 'cnv_$prefix' || lpad(to_hex(i / $PER_CONV), 16, '0'),
       CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, 'ceo',
       (SELECT string_agg(md5(random()::text || i::text || k::text), '')
          FROM generate_series(1, $((CONTENT_BYTES / 32))) k),
       NULL, 'complete', 0, 0, 'user:$3', now()
  FROM generate_series(0, $CHUNK_MSGS - 1) i;
COMMIT;
SELECT pg_database_size(current_database());
SQL
  fi
}

db_size() {
  if [ "$BACKEND" = sqlite ]; then
    sqlite3 -batch -cmd '.timeout 30000' "$SRC_DB" 'SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size();'
  else
    psql -X -Atq "$SRC_OWNER" -c 'SELECT pg_database_size(current_database())'
  fi
}
mb() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

log "bulk-loading $GB GiB of conversations and messages ($CHUNK_MSGS messages of $CONTENT_BYTES bytes per transaction)"
t0=$(now)
size=$(db_size)
chunk=0
next_report=$(( TARGET_BYTES / 10 ))
while [ "$size" -lt "$TARGET_BYTES" ]; do
  k=$(( chunk % COMPANIES ))
  size=$(load_chunk "$chunk" "${TENANTS[$k]}" "${USERS[$k]}" 2>"$WORK/bulk-load.log" | tail -n 1) \
    || die "bulk load transaction $chunk failed: $(cat "$WORK/bulk-load.log")"
  [[ "$size" =~ ^[0-9]+$ ]] || die "bulk load transaction $chunk printed no size"
  chunk=$(( chunk + 1 ))
  if [ "$size" -ge "$next_report" ]; then
    log "  $(mb "$size") MB after $chunk transactions ($(secs "$t0" "$(now)") s)"
    next_report=$(( next_report + TARGET_BYTES / 10 ))
  fi
  sleep 0.02 # let the server's writer in
done
LOAD_S=$(secs "$t0" "$(now)")
LOADED_MSGS=$(( chunk * CHUNK_MSGS ))
DATA_BYTES=$(db_size)
log "loaded $LOADED_MSGS messages in $chunk transactions, $LOAD_S s; database size $(mb "$DATA_BYTES") MB"

# --- 3. backup under load -----------------------------------------------------------------
# The load: a user creates companies, each with a webhook endpoint (a new encrypted
# secret). Every request is logged: start, end, HTTP status, kind, id.
out=$(post "$SRC" /auth/signup "" "" "{\"email\":\"drill-$RUN-load@example.com\",\"password\":\"drill load password $RUN\",\"name\":\"Load\"}") \
  || die "load user signup failed"
LOAD_TOKEN=$(json token <<<"$out")

load_worker() { # worker number
  local w=$1 i=0 s e code body id
  body="$WORK/load-$w.body"
  while [ ! -e "$WORK/load.stop" ]; do
    i=$(( i + 1 ))
    s=$(now)
    code=$(curl -s -o "$body" -w '%{http_code}' --max-time 30 -X POST \
      -H 'Content-Type: application/json' -H "Authorization: Bearer $LOAD_TOKEN" \
      -d "{\"name\":\"Load $w-$i\"}" "$SRC/tenants" || true)
    e=$(now)
    id=$(grep -o '"id":"ten_[0-9a-f]*"' "$body" 2>/dev/null | head -n 1 | cut -d'"' -f4 || true)
    printf '%s %s %s tenant %s\n' "$s" "$e" "${code:-000}" "${id:--}" >>"$WORK/load-$w.tsv"
    case "$code" in 2*) ;; *) continue ;; esac
    [ -n "$id" ] || continue
    s=$(now)
    code=$(curl -s -o "$body" -w '%{http_code}' --max-time 30 -X POST \
      -H 'Content-Type: application/json' -H "Authorization: Bearer $LOAD_TOKEN" -H "X-Tenant-Id: $id" \
      -d '{"url":"https://example.com/hook","categories":["alerts.critical"]}' "$SRC/webhooks" || true)
    e=$(now)
    id=$(grep -o '"id":"whk_[0-9a-f]*"' "$body" 2>/dev/null | head -n 1 | cut -d'"' -f4 || true)
    printf '%s %s %s webhook %s\n' "$s" "$e" "${code:-000}" "${id:--}" >>"$WORK/load-$w.tsv"
  done
}

log "starting $LOAD_WORKERS HTTP writers"
rm -f "$WORK/load.stop"
for w in $(seq "$LOAD_WORKERS"); do
  load_worker "$w" &
  LOAD_PIDS+=($!)
done
sleep "$LOAD_LEAD_S"

log "ocsuite backup --out $WORK/backups (under load)"
t0=$(now)
ocsuite SRC_ENV backup --out "$WORK/backups" >"$WORK/backup.out" 2>"$WORK/backup.log" \
  || { cat "$WORK/backup.out" "$WORK/backup.log" >&2; die "ocsuite backup failed"; }
BACKUP_S=$(secs "$t0" "$(now)")
cat "$WORK/backup.out" >&2
BACKUP_DIR=$(find "$WORK/backups" -mindepth 1 -maxdepth 1 -type d -name 'ocsuite-*' | head -n 1)
[ -n "$BACKUP_DIR" ] && [ -f "$BACKUP_DIR/manifest.json" ] || die "no backup folder in $WORK/backups"
BACKUP_BYTES=$(du -sb "$BACKUP_DIR" | cut -f1)
SNAPSHOT_AT=$(json snapshot_at <"$BACKUP_DIR/manifest.json")
SNAPSHOT_EPOCH=$(python3 -c 'import re, sys, datetime as d
t = re.sub(r"(\.\d{6})\d+", r"\1", sys.argv[1].replace("Z", "+00:00"))
print(d.datetime.fromisoformat(t).timestamp())' "$SNAPSHOT_AT")
log "backup: $BACKUP_S s, $(mb "$BACKUP_BYTES") MB, snapshot_at $SNAPSHOT_AT"

sleep "$LOAD_TAIL_S"
stop_load
log "load stopped; stopping the source server (the failure)"
T_FAIL=$(now)
stop_pid "$SERVER_PID"
SERVER_PID=""
SNAPSHOT_AGE_S=$(secs "$SNAPSHOT_EPOCH" "$T_FAIL")

# Fingerprint of the bulk-loaded rows in the source (nothing changes them after the load).
fingerprint() { # sqlite-file-or-owner-url
  local q1="SELECT tenant_id, id, persona, title, created_by FROM conversations ORDER BY tenant_id, id"
  local q2="SELECT tenant_id, id, conversation_id, role, content FROM messages ORDER BY tenant_id, id"
  if [ "$BACKEND" = sqlite ]; then
    { sqlite3 -batch -separator $'\t' "$1" "$q1"; sqlite3 -batch -separator $'\t' "$1" "$q2"; } | sha256sum | cut -c1-64
  else
    { psql -X -q "$1" -c "COPY ($q1) TO STDOUT"; psql -X -q "$1" -c "COPY ($q2) TO STDOUT"; } | sha256sum | cut -c1-64
  fi
}
log "fingerprinting the conversations and messages of the source"
if [ "$BACKEND" = sqlite ]; then SRC_FP=$(fingerprint "$SRC_DB"); else SRC_FP=$(fingerprint "$SRC_OWNER"); fi

# --- 4. restore into a fresh database ---------------------------------------------------------
if [ "$BACKEND" = postgres ]; then
  log "creating database $DST_NAME"
  psql -X -q "$ADMIN_URL" -c "CREATE DATABASE \"$DST_NAME\"" >/dev/null
  DROP_DBS+=("$DST_NAME")
fi

log "restore with a different master key (must be refused)"
WRONG_KEY=(OCSUITE_MASTER_KEY="$(head -c 32 /dev/urandom | base64)")
WRONG_ENV=("${DST_ENV[@]}" "${WRONG_KEY[@]}")
WRONG_KEY_REFUSED=0
if ocsuite WRONG_ENV restore "$BACKUP_DIR" >"$WORK/restore-wrong-key.out" 2>&1; then
  log "a restore with a different master key succeeded"
elif grep -q "different master key" "$WORK/restore-wrong-key.out"; then
  WRONG_KEY_REFUSED=1
else
  cat "$WORK/restore-wrong-key.out" >&2
fi
if [ "$BACKEND" = sqlite ] && [ -e "$DST_DB" ]; then
  log "the refused restore left a file at $DST_DB"
  WRONG_KEY_REFUSED=0
fi

log "ocsuite restore $BACKUP_DIR"
t0=$(now)
ocsuite DST_ENV restore "$BACKUP_DIR" >"$WORK/restore.out" 2>"$WORK/restore.log" \
  || { cat "$WORK/restore.out" "$WORK/restore.log" >&2; die "ocsuite restore failed"; }
RESTORE_S=$(secs "$t0" "$(now)")
cat "$WORK/restore.out" >&2
RESTORED_SECRETS=$(sed -n 's/.*; \([0-9]*\) stored secrets decrypt;.*/\1/p' "$WORK/restore.out")
RESTORED_ROWS=$(sed -n 's/^restored [0-9]* tables, \([0-9]*\) rows;.*/\1/p' "$WORK/restore.out")
[ -n "$RESTORED_SECRETS" ] || die "cannot read the restore's output"

restored_sql() { # SQL → rows, tab-separated
  if [ "$BACKEND" = sqlite ]; then
    sqlite3 -batch -cmd '.timeout 30000' -separator $'\t' "$DST_DB" "$1"
  else
    psql -X -Atq -F $'\t' "$DST_OWNER" -c "$1"
  fi
}

# Rows per table, counted in the restored database before its server starts, against
# the manifest (the restore checks the same; this checks the restore). On SQLite the
# virtual (FTS5) tables are left to the restore's own check: the sqlite3 CLI may be
# older than the SQLite built into ocsuite and unable to open them; their shadow tables
# are counted here.
SKIP_TABLES=""
if [ "$BACKEND" = sqlite ]; then
  SKIP_TABLES=$(restored_sql "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'" | paste -sd, -)
fi
COUNT_SQL=$(python3 -c 'import json, sys
t = json.load(open(sys.argv[1]))["tables"]
skip = set(filter(None, sys.argv[2].split(",")))
print(" UNION ALL ".join("SELECT \x27%s\x27, count(*) FROM \"%s\"" % (n, n) for n in sorted(t) if n not in skip))' \
  "$BACKUP_DIR/manifest.json" "$SKIP_TABLES")
restored_sql "$COUNT_SQL" >"$WORK/restored-counts.tsv"
read -r TABLES_CHECKED MANIFEST_ROWS TABLE_DIFF < <(python3 - "$BACKUP_DIR/manifest.json" "$WORK/restored-counts.tsv" "$SKIP_TABLES" <<'PY'
import json, sys
skip = set(filter(None, sys.argv[3].split(",")))
want = {t: n for t, n in json.load(open(sys.argv[1]))["tables"].items() if t not in skip}
got = dict((l.split("\t")[0], int(l.split("\t")[1])) for l in open(sys.argv[2]) if l.strip())
diff = ["%s:%s/%s" % (t, n, got.get(t)) for t, n in sorted(want.items()) if got.get(t) != n]
print(len(want), sum(want.values()), ",".join(diff) or "none")
PY
)

log "starting a server on the restored database ($DST_ADDR)"
start_server DST_ENV "$DST_ADDR" "$WORK/restored-server.log"
DST_READY_S=$READY_S
RTO_S=$(awk -v a="$RESTORE_S" -v b="$DST_READY_S" 'BEGIN {printf "%.1f", a + b}')
log "restored in $RESTORE_S s, ready $DST_READY_S s later: RTO $RTO_S s"

# --- 5. checks ---------------------------------------------------------------------------------------
CHECKS_FAILED=0
check() { # ok(1/0) text
  if [ "$1" = 1 ]; then log "check ok: $2"; else log "CHECK FAILED: $2"; CHECKS_FAILED=1; fi
}
check "$WRONG_KEY_REFUSED" "a restore with a different master key is refused before writing anything"

check "$([ "$TABLE_DIFF" = none ] && echo 1 || echo 0)" \
  "every table of the restored database holds the manifest's rows ($TABLES_CHECKED tables, $MANIFEST_ROWS rows${SKIP_TABLES:+; virtual $SKIP_TABLES left to the restore}; differ: $TABLE_DIFF)"

# Every stored secret decrypts: the restore opened them all; is that all there are?
SECRETS_IN_DB=$(restored_sql "SELECT (SELECT count(*) FROM tenant_secrets)
  + (SELECT count(*) FROM users WHERE totp_secret IS NOT NULL) + (SELECT count(*) FROM log_keys)")
check "$([ "$RESTORED_SECRETS" = "$SECRETS_IN_DB" ] && [ "$RESTORED_SECRETS" -ge "$COMPANIES" ] && echo 1 || echo 0)" \
  "every stored secret decrypts ($RESTORED_SECRETS of $SECRETS_IN_DB)"

log "fingerprinting the conversations and messages of the restored database"
if [ "$BACKEND" = sqlite ]; then DST_FP=$(fingerprint "$DST_DB"); else DST_FP=$(fingerprint "$DST_OWNER"); fi
RESTORED_MSGS=$(restored_sql "SELECT count(*) FROM messages")
check "$([ "$SRC_FP" = "$DST_FP" ] && [ "$RESTORED_MSGS" -ge "$LOADED_MSGS" ] && echo 1 || echo 0)" \
  "every loaded conversation and message is restored byte for byte ($RESTORED_MSGS messages, sha256 ${DST_FP:0:16}…)"

# The writes acknowledged under load: those before the snapshot must all be there.
restored_sql "SELECT id FROM tenants UNION ALL SELECT id FROM webhooks" >"$WORK/restored-ids.txt"
cat "$WORK"/load-*.tsv >"$WORK/load.tsv" 2>/dev/null || : >"$WORK/load.tsv"
read -r ACKED ACKED_BEFORE ACKED_AFTER MISSING_BEFORE LOST_AFTER FAILED_REQS < <(python3 - "$WORK/load.tsv" "$WORK/restored-ids.txt" "$SNAPSHOT_EPOCH" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
present = set(l.strip() for l in open(sys.argv[2]))
snap = float(sys.argv[3])
acked = [r for r in rows if r[2].startswith("2") and r[4] != "-"]
before = [r for r in acked if float(r[1]) < snap]
after = [r for r in acked if float(r[1]) >= snap]
print(len(acked), len(before), len(after),
      sum(1 for r in before if r[4] not in present),
      sum(1 for r in after if r[4] not in present),
      len(rows) - len(acked))
PY
)
check "$([ "$MISSING_BEFORE" = 0 ] && [ "$ACKED_BEFORE" -gt 0 ] && echo 1 || echo 0)" \
  "all $ACKED_BEFORE writes acknowledged before snapshot_at are restored ($MISSING_BEFORE missing)"
check "$([ "$FAILED_REQS" = 0 ] && echo 1 || echo 0)" "no write failed during the backup ($FAILED_REQS failed of $(wc -l <"$WORK/load.tsv"))"

# A company signs in on the restored server and finds its company and webhook.
DST="http://$DST_ADDR/api/v1"
for n in 1 $(( (COMPANIES + 1) / 2 )) "$COMPANIES"; do
  IFS=$'\t' read -r email password user tenant webhook < <(sed -n "${n}p" "$WORK/companies.tsv")
  ok=0
  if out=$(post "$DST" /auth/login "" "" "{\"email\":\"$email\",\"password\":\"$password\"}"); then
    token=$(json token <<<"$out")
    me=$(curl -fsS --max-time 30 -H "Authorization: Bearer $token" "$DST/me" || true)
    hooks=$(curl -fsS --max-time 30 -H "Authorization: Bearer $token" -H "X-Tenant-Id: $tenant" "$DST/webhooks" || true)
    if grep -q "\"$tenant\"" <<<"$me" && grep -q "\"$webhook\"" <<<"$hooks"; then ok=1; fi
  fi
  check "$ok" "company $n signs in on the restored server and sees its company and webhook"
done

# --- 6. report -------------------------------------------------------------------------------------------
RPO_S=$(awk -v m="$EVERY_MIN" -v b="$BACKUP_S" 'BEGIN {printf "%.1f", m * 60 + b}')
FAILED=0
row() { # label value target-text ok(1/0)
  local result=ok
  if [ "$4" != 1 ]; then result=MISS; FAILED=1; fi
  printf '%-34s %14s %12s %8s\n' "$1" "$2" "$3" "$result"
}
info() { printf '%-34s %14s\n' "$1" "$2"; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a + 0 <= b + 0) ? 1 : 0}'; }

echo
echo "ocsuite disaster-recovery drill: backend=$BACKEND, $COMPANIES companies, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
info "data size (database)" "$(mb "$DATA_BYTES") MB"
info "messages loaded" "$LOADED_MSGS"
info "bulk load seconds" "$LOAD_S"
info "backup seconds (under load)" "$BACKUP_S"
info "backup size" "$(mb "$BACKUP_BYTES") MB"
info "writes acknowledged under load" "$ACKED"
info "  after snapshot_at (at risk)" "$ACKED_AFTER"
info "  lost by this restore" "$LOST_AFTER"
info "snapshot age at failure seconds" "$SNAPSHOT_AGE_S"
info "restore seconds" "$RESTORE_S"
info "restored rows / secrets" "$RESTORED_ROWS / $RESTORED_SECRETS"
info "start-to-ready seconds" "$DST_READY_S"
printf '%-34s %14s %12s %8s\n' "objective" "value" "target" "result"
row "RTO seconds (restore + ready)" "$RTO_S" "<= $MAX_RTO_S" "$(le "$RTO_S" "$MAX_RTO_S")"
row "RPO bound seconds (${EVERY_MIN} min + backup)" "$RPO_S" "<= $MAX_RPO_S" "$(le "$RPO_S" "$MAX_RPO_S")"
if [ "$CHECKS_FAILED" -ne 0 ]; then
  echo "result: FAIL (a check failed: see the log above)"
elif [ "$FAILED" -ne 0 ]; then
  echo "result: FAIL (objective missed)"
else
  echo "result: PASS"
fi
echo

if [ "$CHECKS_FAILED" -ne 0 ]; then
  exit 1
fi
if [ "$FAILED" -ne 0 ]; then
  if [ "${DRILL_ENFORCE:-0}" = 1 ]; then
    log "objectives missed (DRILL_ENFORCE=1)"
    exit 1
  fi
  log "objectives missed (set DRILL_ENFORCE=1 to fail on this)"
fi
