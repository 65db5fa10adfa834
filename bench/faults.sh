#!/usr/bin/env bash
# Fault suite: what ocsuite does when a worker is killed mid-job, PostgreSQL restarts
# under load, the disk fills up, or the database's filesystem turns read-only. Prints a
# PASS/FAIL summary with its figures (for the release note) and exits 1 if a case fails.
#
#   bash bench/faults.sh                       # every case (as root)
#   FAULTS_CASES="1 3" bash bench/faults.sh    # some of them
#
# Cases (run in the order 1, 3, 4, 2 so that case 2, which restarts the machine's
# PostgreSQL cluster, comes last; the summary lists them by number):
#   1. kill -9 a worker mid-job under load (PostgreSQL): `serve` with OCSUITE_WORKERS=0,
#      two `ocsuite worker` processes (4 slots each, 5 s leases), FAULTS_TASKS (1000)
#      tasks; one worker is killed while it holds jobs (preferably one of the row-writing
#      capabilities below), a replacement starts. Checks from the database: every task
#      succeeded with exactly one `succeeded` event, no job rows left, the killed worker's
#      jobs recovered from their expired leases, and the built-in capabilities that find
#      an earlier attempt's row by their task id instead of writing it again
#      (leadtracker.add_lead, bookkeeping.add_transaction: 5% of the tasks each) wrote
#      exactly one row per task. The SDK has no "idempotent" flag; these two are the
#      built-ins with a real side effect that run without external services.
#   2. restart PostgreSQL under load: same topology, FAULTS_RATE (50) tasks/s and an SSE
#      stream on `tasks`; `pg_ctlcluster FAULTS_PG_CLUSTER restart` once. Measures the
#      5xx answers and when they fall, checks every acknowledged task ends, and that a task
#      queued after the restart is seen live on a stream opened before it and on one opened
#      after. Also reports whether `serve` exits on SIGTERM while SSE clients are still
#      connected. Restarting breaks anyone else using the cluster: the case first waits (up to
#      FAULTS_PG_IDLE_WAIT_MIN, 30) until no test, CI run or drill is running
#      (`pgrep -f 'deps/api-'`, `'.ci/run'`, `'drill.sh'`), else it is skipped.
#   3. disk full (SQLite on a 64 MiB tmpfs): the disk is filled while writes keep coming;
#      5xx with a JSON error body, no hang, /healthz and reads keep working; writes work
#      again once space is freed, without a restart; `PRAGMA integrity_check` is ok.
#   4. read-only filesystem (SQLite on a read-only bind mount): the kernel refuses to make
#      it read-only while the server holds the database open (reported; the live checks
#      run only if it allows it), so the server is started on it: it must exit at once
#      with an error that names the file or the cause; once writable again it starts,
#      the earlier data reads back and new tasks run.
#
# Needs root (mount, pg_ctlcluster), curl, python3 (standard library only), psql, sqlite3,
# and the release binary ${CARGO_TARGET_DIR:-$HOME/.cache/ocsuite-target}/release/ocsuite
# (it waits up to FAULTS_BUILD_WAIT_MIN, 40, minutes for a running release build).
# PostgreSQL: FAULTS_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres) must be a
# superuser; the database `ocsuite_faults` is dropped and recreated each run (and dropped
# at the end when every case passed), the runtime role `ocsuite_faults` (LOGIN,
# NOSUPERUSER, NOBYPASSRLS) is created once and kept.
# Other settings: FAULTS_PG_CLUSTER ("15 main"), FAULTS_LEASE_SECS (5),
# FAULTS_KEEP=1 keeps the work folder (server logs, raw results; kept anyway on failure).
# Ports: 127.0.0.1:18201 (PostgreSQL cases), :18202 (case 3), :18203 (case 4).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ocsuite-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/ocsuite"
CASES=${FAULTS_CASES:-"1 2 3 4"}
ADMIN_URL=${FAULTS_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_CLUSTER=${FAULTS_PG_CLUSTER:-"15 main"}
TASKS=${FAULTS_TASKS:-1000}
RATE=${FAULTS_RATE:-50}
LEASE_SECS=${FAULTS_LEASE_SECS:-5}
BUILD_WAIT_MIN=${FAULTS_BUILD_WAIT_MIN:-40}
PG_IDLE_WAIT_MIN=${FAULTS_PG_IDLE_WAIT_MIN:-30}
KEEP=${FAULTS_KEEP:-0}
DB=ocsuite_faults
ROLE=ocsuite_faults
ROLE_PASSWORD=faults
PG_ADDR=127.0.0.1:18201
SQLITE_ADDR=127.0.0.1:18202
RO_ADDR=127.0.0.1:18203
PASSWORD="fault suite password 1"
JSON='Content-Type: application/json'

log() { printf '[faults %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

selected() { case " $CASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- tools -------------------------------------------------------------------------
for tool in curl python3 psql sqlite3 fallocate mount pgrep; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if [ "$(id -u)" -ne 0 ] && { selected 2 || selected 3 || selected 4; }; then
  die "cases 2-4 need root (pg_ctlcluster, mount); run as root or set FAULTS_CASES=1"
fi

# --- binary ------------------------------------------------------------------------
# A release build may be running: wait until the binary exists and either no cargo runs
# or the binary is newer than the queue code it must contain.
wait_for_binary() {
  local src="$ROOT/crates/ocsuite/src/queue/batch.rs"
  local deadline=$((SECONDS + BUILD_WAIT_MIN * 60)) a b
  while :; do
    if [ -x "$BIN" ] && { ! pgrep -x cargo >/dev/null || [ "$BIN" -nt "$src" ]; }; then
      break
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "no fresh release binary at $BIN after $BUILD_WAIT_MIN minutes"
    log "waiting for the release build ($BIN)"
    sleep 30
  done
  # The linker may still be writing it.
  while :; do
    a=$(stat -c '%s %Y' "$BIN"); sleep 2; b=$(stat -c '%s %Y' "$BIN")
    [ "$a" = "$b" ] && break
  done
  log "binary: $BIN ($(stat -c %y "$BIN" | cut -d. -f1))"
}
wait_for_binary

# --- work folder, bookkeeping, cleanup ---------------------------------------------
WORK="$(mktemp -d /tmp/ocsuite-faults.XXXXXX)"
mkdir -p "$WORK/run"
RESULTS="$WORK/results.tsv"   # case, label, value, ok (1 | 0 | - for a figure)
CASEFILE="$WORK/cases.tsv"    # case, state (ran | skipped), reason
PIDS="$WORK/pids"             # every process started: pid, name
MOUNTS="$WORK/mounts"         # every mount made, in order
: >"$RESULTS"; : >"$CASEFILE"; : >"$PIDS"; : >"$MOUNTS"
export FAULTS_RESULTS="$RESULTS"
# One run tests one binary, even if a build replaces the original meanwhile.
cp -p "$BIN" "$WORK/ocsuite"
BIN_BUILT=$(stat -c %y "$BIN" | cut -d. -f1)
BIN="$WORK/ocsuite"

# stop_pid PID NAME: SIGTERM, then SIGKILL after 20 s.
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "${2:-process} ($pid) did not stop in 20 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

unmount_all() {
  local m
  [ -s "$MOUNTS" ] || return 0
  while read -r m; do
    if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m" || true; fi
  done < <(tac "$MOUNTS")
  : >"$MOUNTS"
}

cleanup() {
  local rc=$?
  set +e
  if [ -s "$PIDS" ]; then
    while read -r pid name; do stop_pid "$pid" "$name"; done < <(tac "$PIDS")
  fi
  unmount_all
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then KEEP=1; fi
  if [ "$KEEP" = 1 ] || grep -q "	0$" "$RESULTS" 2>/dev/null; then
    log "work folder kept: $WORK"
  elif grep -q " $WORK" /proc/mounts; then
    log "work folder kept (a mount under it is still busy): $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for addr in "$PG_ADDR" "$SQLITE_ADDR" "$RO_ADDR"; do
  if curl -fsS -o /dev/null "http://$addr/healthz" 2>/dev/null; then
    die "something already listens on $addr"
  fi
done

MASTER_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
# Tasks a day are capped per plan (free: 500); the suite queues several thousand.
cat >"$WORK/ocsuite.toml" <<'TOML'
[plans.free]
tasks_per_day = -1
TOML

read -r OWNER_URL RUNTIME_URL < <(python3 - "$ADMIN_URL" "$DB" "$ROLE" "$ROLE_PASSWORD" <<'PY'
import sys, urllib.parse as u
url, db, role, pw = sys.argv[1:]
p = u.urlsplit(url)
print(p._replace(path="/" + db).geturl(),
      f"postgres://{role}:{pw}@{p.hostname or '127.0.0.1'}:{p.port or 5432}/{db}")
PY
)

# Settings every process gets; the caller's own OCSUITE_* variables are not passed on.
COMMON_ENV=(
  RUST_LOG=warn
  OCSUITE_LOG_FORMAT=json
  OCSUITE_CONFIG="$WORK/ocsuite.toml"
  OCSUITE_MASTER_KEY="$MASTER_KEY"
  OCSUITE_DATA_DIR="$WORK/run/data"
  OCSUITE_RATE_LIMIT_API_PER_SECOND=1000000
  OCSUITE_RATE_LIMIT_API_BURST=1000000
  OCSUITE_RATE_LIMIT_AUTH_PER_MINUTE=100000
  OCSUITE_QUEUE_LEASE_SECS="$LEASE_SECS"
  OCSUITE_DB_MAX_CONNECTIONS=8
)
PG_ENV=(OCSUITE_DATABASE_URL="$RUNTIME_URL" OCSUITE_MIGRATION_DATABASE_URL="$OWNER_URL")

# --- the Python side: load, SSE readers, checks, summary ---------------------------
cat >"$WORK/faults.py" <<'PY'
"""Helpers for bench/faults.sh (standard library only)."""
import argparse, collections, http.client, json, os, queue, random, sys, threading, time
import urllib.parse

FINAL = {"succeeded", "failed", "cancelled", "dead", "rejected"}


def now():
    return time.time()


def check(case, label, value, ok):
    """Appends a check (ok True/False) or a figure (ok None) to the results file."""
    tag = "-" if ok is None else ("1" if ok else "0")
    value = str(value).replace("\t", " ").replace("\n", " ")
    with open(os.environ["FAULTS_RESULTS"], "a") as f:
        f.write(f"{case}\t{label}\t{value}\t{tag}\n")


def err_json(js):
    return isinstance(js, dict) and isinstance(js.get("error"), dict) and "code" in js["error"]


class Api:
    """One keep-alive HTTP connection."""

    def __init__(self, base, token=None, tenant=None, timeout=15.0):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.token, self.tenant, self.timeout = token, tenant, timeout
        self.conn, self.used = None, False

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn, self.used = None, False

    def call(self, method, path, body=None, auth=True):
        """Returns a record: status (0 = no answer), json, err, ms."""
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = "Bearer " + self.token
        if auth and self.tenant:
            headers["X-Tenant-Id"] = self.tenant
        t0 = now()
        for attempt in (1, 2):
            reused = self.used
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                self.used = True
                if (r.getheader("connection") or "").lower() == "close":
                    self.close()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A keep-alive connection the server had closed: once more on a new one.
                self.close()
                if reused and attempt == 1:
                    continue
                return {"status": 0, "json": None, "err": f"{type(e).__name__}: {e}", "ms": (now() - t0) * 1000}
            except Exception as e:
                self.close()
                return {"status": 0, "json": None, "err": f"{type(e).__name__}: {e}", "ms": (now() - t0) * 1000}
        text = raw.decode("utf-8", "replace")
        try:
            js = json.loads(text) if text else None
        except ValueError:
            js = None
        return {"status": r.status, "json": js, "err": None, "ms": (now() - t0) * 1000,
                "text": text[:300] if r.status >= 400 else None}


def task_body(kind, i, prefix, pad=0):
    if kind == "sleep":
        return "diagnostics.sleep", {"seconds": 0.05}
    if kind == "echo":
        return "diagnostics.echo", ({"n": i, "pad": "x" * pad} if pad else {"n": i})
    if kind == "lead":
        return "leadtracker.add_lead", {"name": f"Fault lead {prefix} {i}",
                                        "email": f"{prefix}-{i}@example.com"}
    if kind == "txn":
        return "bookkeeping.add_transaction", {"date": "2026-12-01",
                                               "amount": f"-{1 + i % 90}.{i % 100:02d}",
                                               "memo": f"fault {prefix} {i}"}
    raise SystemExit(f"unknown task kind {kind}")


def execute(api, key, cap, inp):
    r = api.call("POST", "/api/v1/tasks/execute", {"capability": cap, "input": inp, "idempotency_key": key})
    js = r.pop("json")
    r["key"] = key
    r["capability"] = cap
    if r["status"] in (200, 202) and isinstance(js, dict):
        r["task_id"] = js.get("task", {}).get("id")
    r["err_json"] = err_json(js)
    r["code"] = js["error"]["code"] if err_json(js) else None
    return r


def api_from(a, timeout=15.0):
    return Api(a.base, a.token, a.tenant, timeout)


def load(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    return out


def write_jsonl(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


# --- load ------------------------------------------------------------------------------

def cmd_submit(a):
    """Closed loop: every task of the mix, as fast as `threads` clients go."""
    kinds = []
    for part in a.mix.split(","):
        k, n = part.split(":")
        kinds += [k] * int(n)
    random.Random(7).shuffle(kinds)
    work = queue.Queue()
    for i, k in enumerate(kinds):
        work.put((i, k))
    recs, lock = [], threading.Lock()

    def run():
        api = api_from(a, 30.0)
        while True:
            try:
                i, k = work.get_nowait()
            except queue.Empty:
                return
            cap, inp = task_body(k, i, a.prefix)
            t0 = now()
            r = execute(api, f"{a.prefix}-{i:05d}", cap, inp)
            r.update(t0=t0, t1=now(), kind=k)
            with lock:
                recs.append(r)

    threads = [threading.Thread(target=run) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write_jsonl(a.out, recs)
    n = collections.Counter(r["status"] for r in recs)
    print(f"submitted {len(recs)}: {dict(n)}", file=sys.stderr)


def cmd_paced(a):
    """Open loop: `rate` tasks a second for `duration` seconds, whatever the answers."""
    work, recs, lock = queue.Queue(), [], threading.Lock()

    def run():
        api = api_from(a, 30.0)
        while True:
            item = work.get()
            if item is None:
                return
            i, planned = item
            cap, inp = task_body("sleep" if i % 2 else "echo", i, a.prefix)
            t0 = now()
            r = execute(api, f"{a.prefix}-{i:06d}", cap, inp)
            r.update(planned=planned, t0=t0, t1=now())
            with lock:
                recs.append(r)

    threads = [threading.Thread(target=run) for _ in range(a.threads)]
    for t in threads:
        t.start()
    start = now()
    for i in range(int(a.rate * a.duration)):
        at = start + i / a.rate
        d = at - now()
        if d > 0:
            time.sleep(d)
        work.put((i, at))
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    write_jsonl(a.out, recs)
    n = collections.Counter(r["status"] for r in recs)
    print(f"paced {len(recs)}: {dict(n)}", file=sys.stderr)


def cmd_post_task(a):
    """Queues one task (idempotency key: safe to retry) until it is accepted; prints its id."""
    api = api_from(a)
    cap, inp = task_body(a.kind, 0, a.key)
    deadline = now() + a.timeout
    while True:
        r = execute(api, a.key, cap, inp)
        if r["status"] in (200, 202) and r.get("task_id"):
            print(r["task_id"])
            return 0
        if now() > deadline:
            print(f"task {a.key} not accepted: {r}", file=sys.stderr)
            return 1
        time.sleep(0.5)


def cmd_writes(a):
    """Writes (tasks, sign-ups) with /healthz and reads in between, for a phase."""
    api = api_from(a, a.timeout)
    anon = Api(a.base, timeout=a.timeout)
    out = open(a.out, "a", buffering=1)
    start = now()
    out.write(json.dumps({"phase": a.phase, "op": "start", "t": start}) + "\n")
    i, ok_task, ok_signup = 0, None, None

    def rec(op, r, **kw):
        js = r.pop("json", None)
        if "err_json" not in r:
            r["err_json"] = err_json(js)
            r["code"] = js["error"]["code"] if err_json(js) else None
        r.update(phase=a.phase, op=op, t=now(), **kw)
        out.write(json.dumps(r) + "\n")
        return r

    while True:
        el = now() - start
        if a.until_ok:
            if ok_task and ok_signup and now() - max(ok_task, ok_signup) > a.after:
                break
            if el > a.until_ok:
                break
        elif el > a.duration:
            break
        i += 1
        key = f"{a.prefix}-{a.phase}-{i}"
        cap, inp = task_body("echo", i, a.prefix, a.pad)
        r = rec("task", execute(api, key, cap, inp))
        if r["status"] in (200, 202) and ok_task is None:
            ok_task = now()
        if a.until_ok or i % 4 == 0:
            email = f"{a.prefix}-{a.phase}-{i}-{os.getpid()}@example.com"
            r = rec("signup", anon.call("POST", "/api/v1/auth/signup",
                                        {"email": email, "password": "fault suite password 1", "name": "F"},
                                        auth=False))
            if 200 <= r["status"] < 300 and ok_signup is None:
                ok_signup = now()
        rec("health", anon.call("GET", "/healthz", auth=False))
        if a.read_task:
            rec("read", api.call("GET", f"/api/v1/tasks/{a.read_task}"))
            rec("read", api.call("GET", "/api/v1/me"))
        time.sleep(a.pause)
    out.write(json.dumps({"phase": a.phase, "op": "end", "t": now(),
                          "ok_task": ok_task, "ok_signup": ok_signup}) + "\n")


# --- realtime --------------------------------------------------------------------------

def cmd_sse(a):
    """Reads GET /api/v1/events?topics=tasks into a file until the stream ends."""
    u = urllib.parse.urlparse(a.base)
    out = open(a.out, "a", buffering=1)

    def w(d):
        d["t"] = now()
        out.write(json.dumps(d) + "\n")

    deadline = now() + a.open_timeout
    while True:
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=a.read_timeout)
            conn.request("GET", "/api/v1/events?topics=tasks", headers={
                "Authorization": "Bearer " + a.token, "X-Tenant-Id": a.tenant,
                "Accept": "text/event-stream"})
            r = conn.getresponse()
            if r.status == 200:
                break
            w({"open_failed": r.status, "body": r.read().decode("utf-8", "replace")[:200]})
            conn.close()
        except Exception as e:
            w({"open_failed": f"{type(e).__name__}: {e}"})
        if now() > deadline:
            w({"closed": "never opened"})
            return
        time.sleep(1)
    w({"open": True})
    fields = {}
    try:
        while True:
            line = r.readline()
            if not line:
                w({"closed": "end of stream"})
                return
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if "data" in fields:
                    try:
                        d = json.loads(fields["data"])
                        w({"id": d.get("id"), "kind": d.get("kind"), "topic": d.get("topic")})
                    except ValueError:
                        w({"bad_event": fields["data"][:200]})
                fields = {}
            elif line.startswith(":"):
                continue
            else:
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                fields[k] = fields[k] + "\n" + v if k in fields else v
    except Exception as e:
        w({"closed": f"{type(e).__name__}: {e}"})


def seen(path, task, kind):
    topic = f"task:{task}"
    for r in load(path):
        if r.get("topic") == topic and r.get("kind") == kind:
            return r["t"]
    return None


def cmd_wait_event(a):
    deadline = now() + a.timeout
    while now() < deadline:
        t = seen(a.file, a.task, a.kind)
        if t is not None:
            print(f"{t:.3f}")
            return 0
        time.sleep(0.1)
    return 1


def cmd_wait_line(a):
    deadline = now() + a.timeout
    while now() < deadline:
        for r in load(a.file):
            if a.key in r:
                return 0
        time.sleep(0.1)
    return 1


# --- settling --------------------------------------------------------------------------

def acked_ids(files):
    ids = []
    for f in files:
        for r in load(f):
            if r.get("status") in (200, 202) and r.get("task_id") and r.get("op", "task") == "task":
                ids.append(r["task_id"])
    return list(dict.fromkeys(ids))


def cmd_await_final(a):
    """Polls GET /tasks/{id} until every acknowledged task is in a final state."""
    ids = acked_ids(a.files) + [i for i in (a.ids or "").split(",") if i]
    ids = list(dict.fromkeys(ids))
    api = api_from(a, 15.0)
    status = {}
    deadline = now() + a.timeout
    pending = list(ids)
    while pending and now() < deadline:
        left = []
        for i in pending:
            r = api.call("GET", f"/api/v1/tasks/{i}")
            s = ((r.get("json") or {}).get("task") or {}).get("status") if r["status"] == 200 else None
            if s:
                status[i] = s
            if s not in FINAL:
                left.append(i)
        pending = left
        if pending:
            time.sleep(1)
    final = sum(1 for i in ids if status.get(i) in FINAL)
    json.dump(status, open(a.out, "w"))
    if a.case:
        check(a.case, a.label, f"{final}/{len(ids)}", final == len(ids) and len(ids) > 0)
        check(a.case, a.label + " (by status)",
              dict(collections.Counter(status.get(i, "unknown") for i in ids)), None)
    print(f"final {final}/{len(ids)}", file=sys.stderr)
    return 0 if final == len(ids) else 1


# --- checks ----------------------------------------------------------------------------

def read_tsv(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    rows.append(line.split("\t"))
    return rows


def db_state(a):
    """tasks: id → (key, capability, status, attempts, finished); events: id → counts."""
    tasks = {r[0]: {"key": r[1], "cap": r[2], "status": r[3], "attempts": int(r[4]),
                    "finished": float(r[5]) if r[5] else None} for r in read_tsv(a.tasks)}
    events = {r[0]: {"succeeded": int(r[1]), "started": int(r[2]), "lease_retry": int(r[3]),
                     "lease_retry_at": float(r[4]) if len(r) > 4 and r[4] else None}
              for r in read_tsv(a.events)}
    return tasks, events


def exactly_once(case, tasks, events, ids, what):
    ok = [i for i in ids if tasks.get(i, {}).get("status") == "succeeded"]
    check(case, f"{what}: succeeded", f"{len(ok)}/{len(ids)}", len(ok) == len(ids) and ids)
    once = [i for i in ids if events.get(i, {}).get("succeeded", 0) == 1]
    dup = [i for i in ids if events.get(i, {}).get("succeeded", 0) > 1]
    check(case, f"{what}: exactly one 'succeeded' event each", f"{len(once)}/{len(ids)} (more than one: {len(dup)})",
          len(once) == len(ids) and ids)


def side_effects(case, tasks, events, path, cap, prefix, what):
    """Rows per task (`prefix` + task id names its rows), and for tasks that ran again
    after a lease expired, whether the killed attempt had already written its row."""
    rows = {r[0]: (int(r[1]), float(r[2])) for r in read_tsv(path)}
    ids = [i for i, t in tasks.items() if t["cap"] == cap]
    one = [i for i in ids if rows.get(prefix + i, (0, 0))[0] == 1]
    more = [i for i in ids if rows.get(prefix + i, (0, 0))[0] > 1]
    check(case, f"{cap}: {what} per task = 1", f"{len(one)}/{len(ids)} (more than one: {len(more)})",
          len(one) == len(ids) and ids)
    rerun = [i for i in ids if tasks[i]["attempts"] > 1]
    early = [i for i in rerun if prefix + i in rows and events.get(i, {}).get("lease_retry_at")
             and rows[prefix + i][1] < events[i]["lease_retry_at"]]
    check(case, f"{cap}: ran again after its lease expired / row already written by the killed attempt",
          f"{len(rerun)} / {len(early)}", None)
    return ids


def cmd_analyze1(a):
    C = 1
    recs = load(a.submit)
    acked = [r for r in recs if r["status"] == 202]
    check(C, "tasks queued (202)", f"{len(acked)}/{len(recs)}", len(acked) == len(recs) and recs)
    if recs:
        span = max(r["t1"] for r in recs) - min(r["t0"] for r in recs)
        check(C, "queueing rate, tasks/s", f"{len(recs) / span:.0f}", None)
    tasks, events = db_state(a)
    ids = [r["task_id"] for r in acked]
    missing = [i for i in ids if i not in tasks]
    check(C, "acknowledged tasks found in the database", f"{len(ids) - len(missing)}/{len(ids)}", not missing)
    final = [i for i in ids if tasks.get(i, {}).get("status") in FINAL]
    check(C, "acknowledged tasks in a final state", f"{len(final)}/{len(ids)}", len(final) == len(ids))
    exactly_once(C, tasks, events, list(tasks), "every task of the tenant")
    jobs = int(a.jobs)
    check(C, "job rows left (any status)", jobs, jobs == 0)
    orphans = [l.strip() for l in open(a.orphans) if l.strip()]
    check(C, "jobs the killed worker held (running, its lease)", len(orphans), len(orphans) > 0)
    rec_ok = [i for i in orphans if tasks.get(i, {}).get("status") == "succeeded"
              and tasks[i]["attempts"] >= 2 and events.get(i, {}).get("lease_retry", 0) >= 1]
    check(C, "of those, retried after the lease expired and succeeded", f"{len(rec_ok)}/{len(orphans)}",
          len(rec_ok) == len(orphans))
    caps = collections.Counter(tasks.get(i, {}).get("cap", "?") for i in orphans)
    check(C, "killed worker's jobs by capability", dict(caps), None)
    recovered = [i for i, t in tasks.items() if t["attempts"] > 1]
    check(C, "tasks recovered from expired leases (attempts > 1)", len(recovered), None)
    lease_events = sum(e["lease_retry"] for e in events.values())
    check(C, "'retrying' events for an expired lease", lease_events, None)
    fin = [tasks[i]["finished"] for i in orphans if tasks.get(i, {}).get("finished")]
    if fin:
        check(C, "kill -9 → last recovered job succeeded, s", f"{max(fin) - float(a.kill_t):.1f}", None)
    done = [t["finished"] for t in tasks.values() if t["finished"]]
    if recs and done:
        span = max(done) - min(r["t0"] for r in recs)
        check(C, "end to end, first request → last task done, s",
              f"{span:.1f} ({len(ids) / span:.0f} tasks/s)", None)
    side_effects(C, tasks, events, a.leads, "leadtracker.add_lead", "task:", "leads")
    side_effects(C, tasks, events, a.txns, "bookkeeping.add_transaction", "task:", "transactions")


def cmd_analyze2(a):
    C = 2
    t0, t1 = float(a.t0), float(a.t1)
    recs = load(a.paced)
    check(C, "restart: pg_ctlcluster restart took, s", f"{t1 - t0:.1f}", None)
    by = collections.Counter(r["status"] for r in recs)
    check(C, f"requests at {a.rate}/s (by status; 0 = no answer)", f"{len(recs)} {dict(sorted(by.items()))}", None)
    bad = [r for r in recs if r["status"] >= 500]
    if bad:
        first = min(r["t0"] for r in bad) - t0
        last = max(r["t1"] for r in bad) - t0
        window = f"sent +{first:.1f} s to answered +{last:.1f} s after the restart began"
    else:
        window = "none"
    check(C, "HTTP 5xx answers", f"{len(bad)} ({window})", None)
    codes = collections.Counter((r["status"], r.get("code")) for r in bad)
    if bad:
        check(C, "5xx by status and error code", {f"{s} {c}": n for (s, c), n in codes.items()}, None)
    late = [r for r in bad if r["t0"] > t1 + 15]
    check(C, "5xx sent later than 15 s after the restart completed", len(late), not late)
    nojson = [r for r in bad if not r["err_json"]]
    check(C, "5xx answers with a JSON error body", f"{len(bad) - len(nojson)}/{len(bad)}", not nojson)
    lost = [r for r in recs if r["status"] == 0]
    check(C, "requests without an answer (connection error or 30 s timeout)", len(lost), not lost)
    slow = max((r["t1"] - r["t0"] for r in recs), default=0)
    during = [r["t1"] - r["t0"] for r in recs if t0 - 1 <= r["t0"] <= t1 + 15]
    check(C, "slowest request, s (any time / around the restart)",
          f"{slow:.2f} / {max(during, default=0):.2f}", None)
    tasks, events = db_state(a)
    acked = [r["task_id"] for r in recs if r["status"] == 202]
    final = [i for i in acked if tasks.get(i, {}).get("status") in FINAL]
    check(C, "acknowledged (202) tasks in a final state", f"{len(final)}/{len(acked)}", len(final) == len(acked) and acked)
    exactly_once(C, tasks, events, acked, "acknowledged tasks")
    keys = {t["key"] for t in tasks.values()}
    unacked = [r for r in recs if r["status"] != 202]
    committed = [r for r in unacked if r["key"] in keys]
    check(C, "unacknowledged requests whose task exists anyway", f"{len(committed)} of {len(unacked)}", None)
    retried = [i for i in acked if tasks.get(i, {}).get("attempts", 0) > 1]
    check(C, "acknowledged tasks that needed a second attempt", len(retried), None)
    # Realtime.
    for name, path in (("A (opened before)", a.sse_a), ("B (opened after)", a.sse_b)):
        closed = [r for r in load(path) if "closed" in r]
        check(C, f"SSE stream {name} still open at the end",
              "yes" if not closed else f"no: {closed[0]['closed']} at +{closed[0]['t'] - t0:.1f} s", not closed)
    for name, path in (("A (opened before the restart)", a.sse_a), ("B (opened after)", a.sse_b)):
        for kind, how in (("queued", "local to serve"), ("succeeded", "relayed from a worker")):
            t = seen(path, a.probe_after, kind)
            check(C, f"task queued after the restart: '{kind}' ({how}) live on stream {name}",
                  "no" if t is None else f"yes, {t - float(a.probe_t):.2f} s after queueing", t is not None)
    got = {r["topic"][5:] for r in load(a.sse_a) if r.get("kind") == "succeeded" and r.get("topic")}
    missed = [i for i in acked if i not in got and tasks.get(i, {}).get("status") == "succeeded"]
    check(C, "acknowledged tasks whose 'succeeded' never reached stream A live", len(missed), None)


def cmd_check_writes(a):
    C = a.case
    recs = [r for r in load(a.file) if r.get("phase") == a.phase]
    writes = [r for r in recs if r["op"] in ("task", "signup")]
    health = [r for r in recs if r["op"] == "health"]
    reads = [r for r in recs if r["op"] == "read"]
    lost = [r for r in recs if r.get("status") == 0]
    n = collections.Counter(f"{r['op']} {r['status']}" for r in writes)
    check(C, f"{a.label}: writes by answer", dict(sorted(n.items())), None)
    if a.expect == "fail":
        bad = [r for r in writes if r["status"] >= 500]
        check(C, f"{a.label}: writes refused with 5xx", f"{len(bad)} of {len(writes)}", bool(bad))
        codes = collections.Counter(f"{r['status']} {r.get('code')}" for r in bad)
        nojson = [r for r in bad if not r["err_json"]]
        check(C, f"{a.label}: 5xx answers with a JSON error body", f"{len(bad) - len(nojson)}/{len(bad)} {dict(codes)}",
              bad and not nojson)
        other = [r for r in writes if 0 < r["status"] < 500 and not 200 <= r["status"] < 300]
        if other:
            check(C, f"{a.label}: other refusals", dict(collections.Counter(f"{r['status']} {r.get('code')}" for r in other)), None)
    else:
        end = [r for r in load(a.file) if r.get("phase") == a.phase and r.get("op") == "end"]
        since = 0
        if a.recovery and end and end[-1].get("ok_task") and end[-1].get("ok_signup"):
            # Recovered from the moment both a task and a sign-up were accepted; what was
            # refused before that is the recovery time, reported below.
            since = min(end[-1]["ok_task"], end[-1]["ok_signup"]) - 0.001
            before = [r for r in writes if r["t"] < since and not 200 <= r["status"] < 300]
            check(C, f"{a.label}: writes refused before the first accepted ones", len(before), None)
        after = [r for r in writes if r["t"] >= since]
        good = [r for r in after if 200 <= r["status"] < 300]
        what = "writes accepted" + (" from then on" if since else "")
        check(C, f"{a.label}: {what}", f"{len(good)}/{len(after)}", after and len(good) == len(after))
    check(C, f"{a.label}: requests that hung or got no answer (timeout {a.timeout:.0f} s)", len(lost), not lost)
    slow = max((r["ms"] for r in recs if "ms" in r), default=0)
    check(C, f"{a.label}: slowest request, ms", f"{slow:.0f}", None)
    hok = [r for r in health if r["status"] == 200]
    check(C, f"{a.label}: /healthz 200", f"{len(hok)}/{len(health)}", health and len(hok) == len(health))
    if reads:
        rok = [r for r in reads if r["status"] == 200]
        check(C, f"{a.label}: reads 200 (GET /tasks/{{id}}, /me)", f"{len(rok)}/{len(reads)}", len(rok) == len(reads))
    end = [r for r in load(a.file) if r.get("phase") == a.phase and r.get("op") == "end"]
    start = [r for r in load(a.file) if r.get("phase") == a.phase and r.get("op") == "start"]
    if a.expect == "ok" and end and start and a.recovery:
        e, s = end[-1], start[-1]
        ok = e.get("ok_task") and e.get("ok_signup")
        check(C, f"{a.label}: first accepted task and sign-up after the space came back, s",
              f"{e['ok_task'] - s['t']:.2f} / {e['ok_signup'] - s['t']:.2f}" if ok else "never", bool(ok))


def cmd_summary(a):
    cases = {}
    for row in read_tsv(a.cases):
        cases[row[0]] = row
    results = collections.defaultdict(list)
    for row in read_tsv(a.results):
        results[row[0]].append(row)
    names = {"1": "kill -9 a worker mid-job under load (PostgreSQL)",
             "2": "restart PostgreSQL under load",
             "3": "disk full (SQLite)",
             "4": "read-only filesystem (SQLite)"}
    verdict = {}
    print()
    print(f"ocsuite fault suite, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs, binary {a.binary}")
    for num in sorted(names):
        if num not in cases:
            continue
        print()
        print(f"== {num}. {names[num]} ==")
        state = cases[num][1]
        if state == "skipped":
            verdict[num] = "SKIPPED"
            print(f"  skipped: {cases[num][2] if len(cases[num]) > 2 else ''}")
            continue
        rows = results.get(num, [])
        for _, label, value, ok in rows:
            tag = {"1": "ok", "0": "FAIL", "-": ""}[ok]
            print(f"  {tag:<5} {label}: {value}")
        checks = [r for r in rows if r[3] in ("0", "1")]
        verdict[num] = "FAIL" if any(r[3] == "0" for r in checks) or not checks else "PASS"
    print()
    print("Summary")
    for num in sorted(verdict):
        print(f"  {num}. {names[num]:<52} {verdict[num]}")
    print()
    return 1 if "FAIL" in verdict.values() else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name, *args):
        s = sub.add_parser(name)
        for arg in args:
            s.add_argument(*arg[0], **arg[1])
        return s

    conn = ([("--base",), {}], [("--token",), {"default": None}], [("--tenant",), {"default": None}])
    cmd("submit", *conn, [("--mix",), {}], [("--prefix",), {}], [("--threads",), {"type": int, "default": 8}],
        [("--out",), {}])
    cmd("paced", *conn, [("--rate",), {"type": float}], [("--duration",), {"type": float}],
        [("--prefix",), {}], [("--threads",), {"type": int, "default": 64}], [("--out",), {}])
    cmd("post-task", *conn, [("--key",), {}], [("--kind",), {"default": "echo"}],
        [("--timeout",), {"type": float, "default": 60}])
    cmd("writes", *conn, [("--phase",), {}], [("--prefix",), {}], [("--out",), {}],
        [("--duration",), {"type": float, "default": 10}], [("--until-ok",), {"type": float, "default": 0}],
        [("--after",), {"type": float, "default": 5}], [("--pad",), {"type": int, "default": 0}],
        [("--pause",), {"type": float, "default": 0.02}], [("--timeout",), {"type": float, "default": 15}],
        [("--read-task",), {"default": None}])
    cmd("sse", *conn, [("--out",), {}], [("--open-timeout",), {"type": float, "default": 30}],
        [("--read-timeout",), {"type": float, "default": 90}])
    cmd("wait-event", [("--file",), {}], [("--task",), {}], [("--kind",), {}],
        [("--timeout",), {"type": float, "default": 30}])
    cmd("wait-line", [("--file",), {}], [("--key",), {}], [("--timeout",), {"type": float, "default": 30}])
    cmd("await-final", *conn, [("files",), {"nargs": "*"}], [("--ids",), {"default": ""}],
        [("--timeout",), {"type": float, "default": 300}], [("--out",), {}],
        [("--case",), {"default": None}], [("--label",), {"default": "acknowledged tasks in a final state"}])
    state = ([("--tasks",), {}], [("--events",), {}])
    cmd("analyze1", *state, [("--submit",), {}], [("--jobs",), {}], [("--orphans",), {}],
        [("--kill-t",), {}], [("--leads",), {}], [("--txns",), {}])
    cmd("analyze2", *state, [("--paced",), {}], [("--t0",), {}], [("--t1",), {}], [("--rate",), {}],
        [("--sse-a",), {}], [("--sse-b",), {}], [("--probe-after",), {}], [("--probe-t",), {}])
    cmd("check-writes", [("--case",), {}], [("--file",), {}], [("--phase",), {}], [("--label",), {}],
        [("--expect",), {"choices": ["ok", "fail"]}], [("--timeout",), {"type": float, "default": 15}],
        [("--recovery",), {"action": "store_true"}])
    cmd("summary", [("--cases",), {}], [("--results",), {}], [("--binary",), {}])
    a = p.parse_args()
    fn = globals()["cmd_" + a.cmd.replace("-", "_")]
    sys.exit(fn(a) or 0)


if __name__ == "__main__":
    main()
PY
py() { python3 "$WORK/faults.py" "$@"; }
# Background runs start python itself (not the function, whose subshell $! would name).
PY=(python3 "$WORK/faults.py")

# --- helpers -----------------------------------------------------------------------
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# check CASE LABEL VALUE OK(1|0|-)
check() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
# fail_case CASE MESSAGE: records why the case stopped, and stops it.
fail_case() { log "case $1: $2"; check "$1" "case stopped early" "$2" 0; exit 1; }

psql_admin() { psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qAtX "$@"; }
psql_owner() { psql "$OWNER_URL" -v ON_ERROR_STOP=1 -qAtX -F $'\t' "$@"; }

# start_ocsuite NAME LOG [VAR=value…] -- ARGS…: starts the binary in $WORK/run with
# exactly these settings; sets LAST_PID.
start_ocsuite() {
  local name=$1 logf=$2
  shift 2
  local -a envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  (
    cd "$WORK/run"
    # shellcheck disable=SC2046
    exec env $(env | awk -F= '/^OCSUITE_/ {printf "-u %s ", $1}') "${envs[@]}" "$BIN" "$@"
  ) >>"$logf" 2>&1 &
  LAST_PID=$!
  echo "$LAST_PID $name" >>"$PIDS"
  log "started $name (pid $LAST_PID)"
}

# wait_ready CASE BASE PID LOG
wait_ready() {
  for _ in $(seq 600); do
    if curl -fsS -o /dev/null "$2/readyz" 2>/dev/null; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then tail -n 20 "$4" >&2; fail_case "$1" "server exited during start"; fi
    sleep 0.1
  done
  tail -n 20 "$4" >&2
  fail_case "$1" "server not ready after 60 s"
}

# new_tenant CASE BASE LABEL: signs up, creates a tenant, lets it run 8 jobs at once;
# sets TOKEN, TENANT, EMAIL.
new_tenant() {
  local c=$1 base=$2 out
  EMAIL="faults-$3-$(date +%s)-$$@example.com"
  out=$(curl -fsS -X POST "$base/api/v1/auth/signup" -H "$JSON" \
    -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\",\"name\":\"Faults\"}") || fail_case "$c" "sign-up failed"
  TOKEN=$(json_field token <<<"$out")
  TENANT=$(curl -fsS -X POST "$base/api/v1/tenants" -H "$JSON" -H "Authorization: Bearer $TOKEN" \
    -d "{\"name\":\"Faults $3\"}" | json_field id) || fail_case "$c" "tenant creation failed"
  curl -fsS -o /dev/null -X PATCH "$base/api/v1/queues" -H "$JSON" -H "Authorization: Bearer $TOKEN" \
    -H "X-Tenant-Id: $TENANT" -d '{"concurrency":8}' || fail_case "$c" "raising the job concurrency failed"
  log "user $EMAIL, tenant $TENANT"
}

# The database and role, once per run; then `ocsuite migrate` as the owner.
prepare_pg() {
  local c=$1
  [ -f "$WORK/pg-ready" ] && return 0
  log "recreating database $DB (role $ROLE)"
  psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  psql_admin -c "CREATE DATABASE $DB OWNER postgres" >/dev/null
  psql_admin -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN PASSWORD '$ROLE_PASSWORD' NOSUPERUSER NOBYPASSRLS; END IF; END \$\$" >/dev/null
  psql_admin -c "ALTER ROLE $ROLE LOGIN PASSWORD '$ROLE_PASSWORD' NOSUPERUSER NOBYPASSRLS" >/dev/null
  psql_owner -c "GRANT USAGE ON SCHEMA public TO $ROLE" >/dev/null
  log "ocsuite migrate"
  (
    cd "$WORK/run"
    # shellcheck disable=SC2046
    exec env $(env | awk -F= '/^OCSUITE_/ {printf "-u %s ", $1}') "${COMMON_ENV[@]}" "${PG_ENV[@]}" "$BIN" migrate
  ) >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; fail_case "$c" "ocsuite migrate failed"; }
  touch "$WORK/pg-ready"
}

# LISTEN connections of the runtime role: one per started process (its relay listener).
listeners() {
  psql_owner -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB' AND usename = '$ROLE' AND query ILIKE '%listen%'"
}
wait_listeners() {
  local n=0
  for _ in $(seq 150); do
    n=$(listeners) || n=0
    [ "$n" -ge "$1" ] && return 0
    sleep 0.2
  done
  log "warning: $n LISTEN connections after 30 s, expected $1"
}

# wait_sql SQL SECONDS: until the query answers t.
wait_sql() {
  local deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ "$(psql_owner -c "$1" 2>/dev/null)" = t ] && return 0
    sleep 0.2
  done
  return 1
}

# start_pg_topology CASE DIR: serve (no workers) and workers a and b, one at a time (the
# start-up grants must not run concurrently); sets SERVE_PID, WA_PID, WB_PID.
start_pg_topology() {
  local c=$1 d=$2
  start_ocsuite serve "$d/serve.log" "${COMMON_ENV[@]}" "${PG_ENV[@]}" \
    OCSUITE_ADDR="$PG_ADDR" OCSUITE_WORKERS=0 -- serve
  SERVE_PID=$LAST_PID
  wait_ready "$c" "http://$PG_ADDR" "$SERVE_PID" "$d/serve.log"
  wait_listeners 1
  start_ocsuite worker-a "$d/worker-a.log" "${COMMON_ENV[@]}" "${PG_ENV[@]}" OCSUITE_WORKERS=4 -- worker
  WA_PID=$LAST_PID
  wait_listeners 2
  start_ocsuite worker-b "$d/worker-b.log" "${COMMON_ENV[@]}" "${PG_ENV[@]}" OCSUITE_WORKERS=4 -- worker
  WB_PID=$LAST_PID
  wait_listeners 3
}

dump_db() { # TENANT DIR
  psql_owner -c "SELECT id, coalesce(idempotency_key, ''), capability, status, attempts,
      coalesce(extract(epoch FROM finished_at)::text, '') FROM tasks WHERE tenant_id = '$1'" >"$2/tasks.tsv"
  psql_owner -c "SELECT substr(topic, 6), count(*) FILTER (WHERE kind = 'succeeded'),
      count(*) FILTER (WHERE kind = 'started'),
      count(*) FILTER (WHERE kind = 'retrying' AND data LIKE '%lease expired%'),
      coalesce(extract(epoch FROM min(created_at) FILTER (WHERE kind = 'retrying' AND data LIKE '%lease expired%'))::text, '')
      FROM events WHERE tenant_id = '$1' AND topic LIKE 'task:%' GROUP BY 1" >"$2/events.tsv"
}

alive() { # CASE NAME PID
  if kill -0 "$3" 2>/dev/null; then check "$1" "$2 still running" yes 1; else check "$1" "$2 still running" no 0; fi
}

log_count() { # PATTERN FILES… → number of matching lines
  local p=$1
  shift
  cat "$@" 2>/dev/null | grep -c -- "$p" || true
}

# =====================================================================================
# Case 1: kill -9 a worker mid-job under load (PostgreSQL)
# =====================================================================================
case1() {
  local C=1 D="$WORK/c1" base="http://$PG_ADDR"
  mkdir -p "$D"
  prepare_pg $C
  start_pg_topology $C "$D"
  new_tenant $C "$base" c1
  local -a auth=(--base "$base" --token "$TOKEN" --tenant "$TENANT")
  # A company's first lead and first transaction set up its pipeline stages and its
  # default account; run one of each before the load so the load only adds rows.
  local warm
  warm=$(py post-task "${auth[@]}" --key c1-warm-lead --kind lead) || fail_case $C "warm-up add_lead not accepted"
  warm="$warm,$(py post-task "${auth[@]}" --key c1-warm-txn --kind txn)" || fail_case $C "warm-up add_transaction not accepted"
  py await-final "${auth[@]}" --ids "$warm" --timeout 60 --out "$D/warm.json" \
    || fail_case $C "warm-up tasks did not finish: $(cat "$D/warm.json")"
  grep -q '"failed"\|"dead"' "$D/warm.json" && fail_case $C "warm-up tasks failed: $(cat "$D/warm.json")"

  local n_side=$((TASKS / 20)) n_rest
  n_rest=$(((TASKS - 2 * n_side) / 2))
  local mix="sleep:$n_rest,echo:$((TASKS - 2 * n_side - n_rest)),lead:$n_side,txn:$n_side"
  log "queueing $TASKS tasks ($mix) with 8 clients"
  "${PY[@]}" submit "${auth[@]}" --mix "$mix" --prefix c1 --threads 8 --out "$D/submit.jsonl" &
  local sub=$!
  echo "$sub submitter" >>"$PIDS"

  # Kill worker a once the pipeline is well under way and it holds jobs.
  wait_sql "SELECT count(*) >= $((TASKS * 15 / 100)) FROM tasks WHERE tenant_id = '$TENANT' AND status = 'succeeded'" 300 \
    || fail_case $C "the workers did not get going"
  # Preferably while it holds a job of a capability that writes a row, so the kill tests
  # that such a job, run again, does not write it twice.
  if ! wait_sql "SELECT count(*) > 0 FROM jobs j JOIN tasks t ON t.tenant_id = j.tenant_id
        AND t.id = j.payload::json->>'task_id' WHERE j.status = 'running' AND j.worker LIKE '${WA_PID}-%'
        AND t.capability IN ('leadtracker.add_lead', 'bookkeeping.add_transaction')" 20; then
    log "worker a held no add_lead/add_transaction job within 20 s; killing it while it holds any job"
    wait_sql "SELECT count(*) > 0 FROM jobs WHERE status = 'running' AND worker LIKE '${WA_PID}-%'" 30 \
      || fail_case $C "worker a never held a job"
  fi
  local kill_t
  kill_t=$(date +%s.%N)
  kill -KILL "$WA_PID"
  wait "$WA_PID" 2>/dev/null || true
  log "kill -9 worker a ($WA_PID)"
  sleep 0.5
  psql_owner -c "SELECT payload::json->>'task_id' FROM jobs WHERE tenant_id = '$TENANT' AND status = 'running'
      AND worker LIKE '${WA_PID}-%'" >"$D/orphans.txt"
  log "worker a held $(wc -l <"$D/orphans.txt") jobs when it died"
  local done_at_kill
  done_at_kill=$(psql_owner -c "SELECT count(*) FROM tasks WHERE tenant_id = '$TENANT' AND status = 'succeeded'")
  check $C "tasks done when the worker was killed" "$done_at_kill of $((TASKS + 2))" -
  sleep 0.5
  start_ocsuite worker-c "$D/worker-c.log" "${COMMON_ENV[@]}" "${PG_ENV[@]}" OCSUITE_WORKERS=4 -- worker
  local wc_pid=$LAST_PID
  wait_listeners 3

  wait "$sub" || fail_case $C "the submitter failed"
  py await-final "${auth[@]}" "$D/submit.jsonl" --timeout 300 --out "$D/final.json" || true
  dump_db "$TENANT" "$D"
  local jobs
  jobs=$(psql_owner -c "SELECT count(*) FROM jobs WHERE tenant_id = '$TENANT'")
  psql_owner -c "SELECT created_by, count(*), extract(epoch FROM min(created_at)) FROM leads
      WHERE tenant_id = '$TENANT' AND origin = 'task' GROUP BY 1" >"$D/leads.tsv"
  psql_owner -c "SELECT origin, count(*), extract(epoch FROM min(created_at)) FROM transactions
      WHERE tenant_id = '$TENANT' AND origin LIKE 'task:%' GROUP BY 1" >"$D/txns.tsv"
  py analyze1 --submit "$D/submit.jsonl" --tasks "$D/tasks.tsv" --events "$D/events.tsv" --jobs "$jobs" \
    --orphans "$D/orphans.txt" --kill-t "$kill_t" --leads "$D/leads.tsv" --txns "$D/txns.tsv"
  check $C "server log: 'recovered a job from an expired lease' (workers b, c)" \
    "$(log_count 'recovered a job from an expired lease' "$D/worker-b.log" "$D/worker-c.log")" -
  alive $C "serve" "$SERVE_PID"
  alive $C "worker b" "$WB_PID"
  alive $C "replacement worker c" "$wc_pid"
  check $C "server errors logged (serve, workers b, c)" \
    "$(log_count '"level":"ERROR"' "$D/serve.log" "$D/worker-b.log" "$D/worker-c.log")" -
  for pid in "$wc_pid" "$WB_PID" "$SERVE_PID"; do stop_pid "$pid"; done
}

# =====================================================================================
# Case 2: restart PostgreSQL under load
# =====================================================================================
pg_in_use() {
  pgrep -f 'deps/api-' >/dev/null || pgrep -f '.ci/run' >/dev/null || pgrep -f 'drill.sh' >/dev/null
}
# wait_pg_idle DEADLINE: polls every 20 s until nothing else uses PostgreSQL.
wait_pg_idle() {
  while pg_in_use; do
    [ "$SECONDS" -lt "$1" ] || return 1
    log "PostgreSQL is in use ($( { pgrep -f 'deps/api-'; pgrep -f '.ci/run'; pgrep -f 'drill.sh'; } | tr '\n' ' ')); waiting"
    sleep 20
  done
}

case2() {
  local C=2 D="$WORK/c2" base="http://$PG_ADDR"
  local deadline=$((SECONDS + PG_IDLE_WAIT_MIN * 60))
  mkdir -p "$D"
  if ! wait_pg_idle "$deadline"; then
    printf '2\tskipped\tPostgreSQL stayed in use by tests, CI or the drill for %s minutes; not restarted\n' \
      "$PG_IDLE_WAIT_MIN" >"$WORK/case2-skip"
    return 0
  fi
  prepare_pg $C
  start_pg_topology $C "$D"
  new_tenant $C "$base" c2
  local -a auth=(--base "$base" --token "$TOKEN" --tenant "$TENANT")

  "${PY[@]}" sse "${auth[@]}" --out "$D/sse-a.jsonl" &
  local sse_a=$!
  echo "$sse_a sse-a" >>"$PIDS"
  py wait-line --file "$D/sse-a.jsonl" --key open --timeout 30 || fail_case $C "SSE stream A did not open"
  # The method works: a task's 'succeeded' (written by a worker process) reaches the
  # stream through the relay before anything is broken.
  local probe0
  probe0=$(py post-task "${auth[@]}" --key c2-probe-before) || fail_case $C "probe not accepted"
  if py wait-event --file "$D/sse-a.jsonl" --task "$probe0" --kind succeeded --timeout 30 >/dev/null; then
    check $C "before the restart: a task's 'succeeded' arrives live on stream A" yes 1
  else
    check $C "before the restart: a task's 'succeeded' arrives live on stream A" no 0
  fi

  # Nobody else may be using PostgreSQL at the moment it restarts.
  if ! wait_pg_idle "$deadline"; then
    printf '2\tskipped\tPostgreSQL came into use by tests, CI or the drill and stayed so; not restarted\n' >"$WORK/case2-skip"
    kill "$sse_a" 2>/dev/null || true
    for pid in "$WB_PID" "$WA_PID" "$SERVE_PID"; do stop_pid "$pid"; done
    return 0
  fi
  local secs=45
  log "queueing $RATE tasks/s for $secs s; PostgreSQL restarts after 10 s"
  "${PY[@]}" paced "${auth[@]}" --rate "$RATE" --duration "$secs" --prefix c2 --out "$D/paced.jsonl" &
  local paced=$!
  echo "$paced paced-load" >>"$PIDS"
  sleep 10
  [ -e "$WORK/pg-restarted" ] && fail_case $C "PostgreSQL was already restarted in this run"
  touch "$WORK/pg-restarted"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  log "pg_ctlcluster $PG_CLUSTER restart"
  # shellcheck disable=SC2086
  pg_ctlcluster $PG_CLUSTER restart || rc=$?
  t1=$(date +%s.%N)
  [ "$rc" -eq 0 ] || fail_case $C "pg_ctlcluster restart failed ($rc)"
  log "PostgreSQL restarted in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"

  "${PY[@]}" sse "${auth[@]}" --out "$D/sse-b.jsonl" --open-timeout 60 &
  local sse_b=$!
  echo "$sse_b sse-b" >>"$PIDS"
  py wait-line --file "$D/sse-b.jsonl" --key open --timeout 60 || fail_case $C "SSE stream B did not open after the restart"
  local probe_t probe1
  probe_t=$(date +%s.%N)
  probe1=$(py post-task "${auth[@]}" --key c2-probe-after --timeout 60) || fail_case $C "probe after the restart not accepted"
  py wait-event --file "$D/sse-b.jsonl" --task "$probe1" --kind succeeded --timeout 30 >/dev/null || true
  py wait-event --file "$D/sse-a.jsonl" --task "$probe1" --kind succeeded --timeout 5 >/dev/null || true

  wait "$paced" || fail_case $C "the load generator failed"
  py await-final "${auth[@]}" "$D/paced.jsonl" --ids "$probe0,$probe1" --timeout 300 --out "$D/final.json" || true
  sleep 1
  dump_db "$TENANT" "$D"
  py analyze2 --paced "$D/paced.jsonl" --t0 "$t0" --t1 "$t1" --rate "$RATE" --tasks "$D/tasks.tsv" \
    --events "$D/events.tsv" --sse-a "$D/sse-a.jsonl" --sse-b "$D/sse-b.jsonl" \
    --probe-after "$probe1" --probe-t "$probe_t"
  check $C "jobs left (any status)" "$(psql_owner -c "SELECT count(*) FROM jobs WHERE tenant_id = '$TENANT'")" -
  check $C "server log: 'LISTEN connection lost' (serve, workers)" \
    "$(log_count 'LISTEN connection lost' "$D/serve.log" "$D/worker-a.log" "$D/worker-b.log")" -
  check $C "server log: 'relaying events to other processes failed'" \
    "$(log_count 'relaying events to other processes failed' "$D/serve.log" "$D/worker-a.log" "$D/worker-b.log")" -
  check $C "server log: 'a queue cycle failed' (workers)" \
    "$(log_count 'a queue cycle failed' "$D/worker-a.log" "$D/worker-b.log")" -
  check $C "server log: 'recovered a job from an expired lease'" \
    "$(log_count 'recovered a job from an expired lease' "$D/worker-a.log" "$D/worker-b.log")" -
  alive $C "serve" "$SERVE_PID"
  alive $C "worker a" "$WA_PID"
  alive $C "worker b" "$WB_PID"
  # Not part of the fault: how `serve` stops while SSE clients are still connected.
  kill -TERM "$SERVE_PID"
  local i
  for i in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill "$sse_a" "$sse_b" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.2; done
    check $C "serve on SIGTERM with 2 SSE clients connected" \
      "still running after 20 s; exited $(kill -0 "$SERVE_PID" 2>/dev/null && echo "not even" || echo "only") once the clients disconnected" -
  else
    check $C "serve on SIGTERM with 2 SSE clients connected" "exited within 20 s" -
  fi
  kill "$sse_a" "$sse_b" 2>/dev/null || true
  for pid in "$WB_PID" "$WA_PID" "$SERVE_PID"; do stop_pid "$pid"; done
}

# =====================================================================================
# SQLite on a tmpfs
# =====================================================================================
mount_tmpfs() { # DIR SIZE
  mkdir -p "$1"
  mount -t tmpfs -o "size=$2" tmpfs "$1"
  echo "$1" >>"$MOUNTS"
}

start_sqlite() { # CASE NAME DIR ADDR LOG
  start_ocsuite "$2" "$5" "${COMMON_ENV[@]}" OCSUITE_DATABASE_URL="sqlite://$3/ocsuite.db" \
    OCSUITE_DATA_DIR="$3/data" OCSUITE_ADDR="$4" OCSUITE_WORKERS=4 -- serve
  wait_ready "$1" "http://$4" "$LAST_PID" "$5"
}

integrity() { # CASE DBFILE
  local out
  out=$(sqlite3 "$2" 'PRAGMA integrity_check;' 2>&1 | head -n 5 | tr '\n' ' ' | sed 's/ $//') || true
  check "$1" "PRAGMA integrity_check" "$out" "$([ "$out" = ok ] && echo 1 || echo 0)"
}

# stop_and_wait CASE PID NAME: SIGTERM, expects a clean exit within 30 s.
stop_and_wait() {
  local rc=0
  kill -TERM "$2" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$2" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$2" 2>/dev/null; then
    check "$1" "$3 stops on SIGTERM within 30 s" no 0
    kill -KILL "$2" 2>/dev/null || true
  fi
  wait "$2" 2>/dev/null || rc=$?
  check "$1" "$3 exit status after SIGTERM" "$rc" "$([ "$rc" -eq 0 ] && echo 1 || echo 0)"
}

# =====================================================================================
# Case 3: disk full (SQLite)
# =====================================================================================
case3() {
  local C=3 D="$WORK/c3" S="$WORK/small" base="http://$SQLITE_ADDR"
  mkdir -p "$D"
  mount_tmpfs "$S" 64m
  start_sqlite $C sqlite "$S" "$SQLITE_ADDR" "$D/serve.log"
  local pid=$LAST_PID
  new_tenant $C "$base" c3
  local -a auth=(--base "$base" --token "$TOKEN" --tenant "$TENANT")
  local first
  first=$(py post-task "${auth[@]}" --key c3-first) || fail_case $C "first task not accepted"
  local -a w=("${auth[@]}" --prefix c3 --out "$D/writes.jsonl" --read-task "$first")

  py writes "${w[@]}" --phase baseline --duration 3
  py check-writes --case $C --file "$D/writes.jsonl" --phase baseline --label "before" --expect ok

  local avail
  avail=$(df --output=avail -B1 "$S" | tail -n 1 | tr -d ' ')
  fallocate -l "$avail" "$S/filler" 2>/dev/null || true
  dd if=/dev/zero of="$S/filler2" bs=4096 status=none 2>/dev/null || true
  check $C "disk filled: free bytes left on the 64 MiB tmpfs" \
    "$(df --output=avail -B1 "$S" | tail -n 1 | tr -d ' ') (database $(du -cb "$S"/ocsuite.db* | tail -n 1 | cut -f1) bytes)" -
  log "disk full; writing for 20 s"
  # 50 kB inputs: the WAL needs new pages within a few writes.
  py writes "${w[@]}" --phase full --duration 20 --pad 50000
  py check-writes --case $C --file "$D/writes.jsonl" --phase full --label "disk full" --expect fail
  alive $C "server (disk full)" "$pid"

  rm -f "$S/filler" "$S/filler2"
  log "space freed; writing until writes succeed"
  py writes "${w[@]}" --phase freed --until-ok 60 --after 5
  py check-writes --case $C --file "$D/writes.jsonl" --phase freed --label "space freed, no restart" \
    --expect ok --recovery
  py await-final "${auth[@]}" "$D/writes.jsonl" --ids "$first" --timeout 120 --out "$D/final.json" \
    --case $C --label "acknowledged tasks in a final state after recovery" || true
  check $C "server log: lines with 'disk is full' / error lines" \
    "$(log_count 'disk is full' "$D/serve.log") / $(log_count '"level":"ERROR"' "$D/serve.log")" -
  alive $C "server (after recovery)" "$pid"
  stop_and_wait $C "$pid" "server"
  integrity $C "$S/ocsuite.db"
  # Every acknowledged task is in the file.
  python3 - "$D/writes.jsonl" "$first" >"$D/acked.txt" <<'PY'
import json, sys
ids = {sys.argv[2]}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("op") == "task" and r.get("status") in (200, 202) and r.get("task_id"):
        ids.add(r["task_id"])
print("\n".join(sorted(ids)))
PY
  local n_acked n_found
  n_acked=$(wc -l <"$D/acked.txt")
  n_found=$(sqlite3 "$S/ocsuite.db" "SELECT id FROM tasks" | LC_ALL=C sort | LC_ALL=C comm -12 - "$D/acked.txt" | wc -l)
  check $C "acknowledged tasks stored in the database file" "$n_found/$n_acked" \
    "$([ "$n_found" -eq "$n_acked" ] && echo 1 || echo 0)"
  umount "$S" && sed -i "\|^$S\$|d" "$MOUNTS"
}

# =====================================================================================
# Case 4: read-only filesystem (SQLite)
# =====================================================================================
case4() {
  local C=4 D="$WORK/c4" B="$WORK/ro-base" R="$WORK/ro" base="http://$RO_ADDR"
  mkdir -p "$D" "$R"
  mount_tmpfs "$B" 64m
  mount --bind "$B" "$R"
  echo "$R" >>"$MOUNTS"
  start_sqlite $C sqlite "$R" "$RO_ADDR" "$D/serve.log"
  local pid=$LAST_PID
  new_tenant $C "$base" c4
  local -a auth=(--base "$base" --token "$TOKEN" --tenant "$TENANT")
  local first
  first=$(py post-task "${auth[@]}" --key c4-first) || fail_case $C "first task not accepted"
  py await-final "${auth[@]}" --ids "$first" --timeout 60 --out "$D/first.json" || fail_case $C "first task did not finish"

  # While the server runs, the kernel refuses a read-only remount: SQLite holds its files
  # open for writing.
  local msg
  if msg=$(mount -o remount,bind,ro "$R" 2>&1); then
    check $C "read-only remount while the server runs" "done (live case follows)" -
    py writes "${auth[@]}" --prefix c4 --out "$D/writes.jsonl" --read-task "$first" --phase ro --duration 10
    py check-writes --case $C --file "$D/writes.jsonl" --phase ro --label "read-only, live" --expect fail
    alive $C "server (read-only)" "$pid"
    mount -o remount,bind,rw "$R"
    py writes "${auth[@]}" --prefix c4 --out "$D/writes.jsonl" --read-task "$first" --phase rw --until-ok 60 --after 3
    py check-writes --case $C --file "$D/writes.jsonl" --phase rw --label "writable again, no restart" \
      --expect ok --recovery
  else
    check $C "read-only remount while the server runs" "refused by the kernel: $(head -n 1 <<<"$msg")" -
  fi
  stop_and_wait $C "$pid" "server"

  # Start on a read-only filesystem: must fail fast with a message that says why.
  mount -o remount,bind,ro "$R" || fail_case $C "cannot remount read-only with the server stopped"
  start_ocsuite sqlite-ro "$D/serve-ro.log" "${COMMON_ENV[@]}" OCSUITE_DATABASE_URL="sqlite://$R/ocsuite.db" \
    OCSUITE_DATA_DIR="$R/data" OCSUITE_ADDR="$RO_ADDR" OCSUITE_WORKERS=4 -- serve
  local ro_pid=$LAST_PID rc=0 i
  for i in $(seq 300); do kill -0 "$ro_pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$ro_pid" 2>/dev/null; then
    local ready=no
    curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && ready=yes
    check $C "start on a read-only filesystem: exits with an error" "still running after 60 s (ready: $ready)" 0
    stop_pid "$ro_pid" sqlite-ro
  else
    wait "$ro_pid" 2>/dev/null || rc=$?
    check $C "start on a read-only filesystem: exits with an error" \
      "exit $rc after $(awk -v i="$i" 'BEGIN {printf "%.1f", i * 0.2}') s" "$([ "$rc" -ne 0 ] && echo 1 || echo 0)"
  fi
  local why
  why=$(grep -v '^\s*$' "$D/serve-ro.log" | tail -n 1 | cut -c1-300)
  check $C "its last log line" "$why" -
  local names=() 
  grep -qF "$R/ocsuite.db" "$D/serve-ro.log" && names+=("the file")
  grep -qiE 'read-only|readonly|os error 30' "$D/serve-ro.log" && names+=("the read-only cause")
  check $C "the start-up error names the database file or the read-only cause" \
    "$([ ${#names[@]} -gt 0 ] && echo "${names[*]}" || echo "neither")" "$([ ${#names[@]} -gt 0 ] && echo 1 || echo 0)"

  # Writable again: starts, the earlier data is there, writes work.
  mount -o remount,bind,rw "$R"
  start_sqlite $C sqlite-rw "$R" "$RO_ADDR" "$D/serve-rw.log"
  pid=$LAST_PID
  local st
  st=$(curl -fsS "$base/api/v1/tasks/$first" -H "Authorization: Bearer $TOKEN" -H "X-Tenant-Id: $TENANT" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["task"]["status"])') || st="unreadable"
  check $C "after remounting read-write: the earlier task reads back" "$st" "$([ "$st" = succeeded ] && echo 1 || echo 0)"
  local next
  if next=$(py post-task "${auth[@]}" --key c4-after --timeout 30) \
    && py await-final "${auth[@]}" --ids "$next" --timeout 60 --out "$D/after.json"; then
    check $C "after remounting read-write: a new task runs" "$(cat "$D/after.json")" 1
  else
    check $C "after remounting read-write: a new task runs" "no" 0
  fi
  stop_and_wait $C "$pid" "server"
  integrity $C "$R/ocsuite.db"
  umount "$R" && sed -i "\|^$R\$|d" "$MOUNTS"
  umount "$B" && sed -i "\|^$B\$|d" "$MOUNTS"
}

# =====================================================================================
# run
# =====================================================================================
# run_case N FUNCTION: runs the case in a subshell; a setup failure fails that case only.
run_case() {
  local n=$1 rc=0 line pid name
  selected "$n" || return 0
  log "=== case $n ==="
  local mark
  mark=$(wc -l <"$PIDS")
  set +e
  (set -e; "$2")
  rc=$?
  set -e
  # Stop whatever the case left running.
  tail -n +"$((mark + 1))" "$PIDS" | tac | while read -r pid name; do stop_pid "$pid" "$name"; done
  if [ -f "$WORK/case$n-skip" ]; then
    cat "$WORK/case$n-skip" >>"$CASEFILE"
    log "case $n skipped: $(cut -f3 "$WORK/case$n-skip")"
    return 0
  fi
  printf '%s\tran\t\n' "$n" >>"$CASEFILE"
  if [ "$rc" -ne 0 ] && ! grep -q "^$n	case stopped early	" "$RESULTS"; then
    check "$n" "case stopped early" "exit status $rc (see the log above)" 0
  fi
  line=$(grep -c "^$n	" "$RESULTS" || true)
  log "case $n done ($line results)"
}

run_case 1 case1
run_case 3 case3
run_case 4 case4
run_case 2 case2
unmount_all

# Drop the database when everything passed (keep it for a look otherwise).
if [ -f "$WORK/pg-ready" ] && ! grep -q "	0$" "$RESULTS"; then
  psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
fi
set +e
py summary --cases "$CASEFILE" --results "$RESULTS" --binary "built $BIN_BUILT"
status=$?
set -e
exit "$status"
