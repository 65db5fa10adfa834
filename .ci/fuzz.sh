#!/usr/bin/env bash
# A short schema-driven fuzz run of the whole API (the knowledge source uploads, whose
# body is multipart or JSON, are left out: their bad input is tested in
# tests/api/knowledge.rs): schemathesis generates requests from
# /api/v1/openapi.json, authenticated as a tenant owner, and fails on any 5xx.
# Usage: bash .ci/fuzz.sh BINARY   (FUZZ_EXAMPLES, FUZZ_SECONDS tune the run)
set -euo pipefail
BIN=${1:?usage: fuzz.sh path/to/ocsuite}
EXAMPLES=${FUZZ_EXAMPLES:-30}
SECONDS_BUDGET=${FUZZ_SECONDS:-300}

VENV="$HOME/.cache/ocsuite-fuzz"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==4.32.5"
fi

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export OCSUITE_ADDR="127.0.0.1:$port"
export OCSUITE_DATABASE_URL="sqlite://$dir/fuzz.db"
export OCSUITE_DATA_DIR="$dir"
export OCSUITE_LOG_FORMAT=json
# The fuzzer sends thousands of requests a minute: lift the per-caller limits so it
# tests the handlers, not the limiter.
export OCSUITE_RATE_LIMIT_AUTH_PER_MINUTE=100000
export OCSUITE_RATE_LIMIT_API_PER_SECOND=100000
export OCSUITE_RATE_LIMIT_API_BURST=100000
unset OCSUITE_LLM_API_KEY
"$BIN" serve >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done

token=$(curl -fsS -X POST "$base/api/v1/auth/signup" -H 'Content-Type: application/json' \
  -d '{"email":"fuzz-owner@example.com","password":"correct horse battery","name":"Fuzz Owner"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
tenant=$(curl -fsS -X POST "$base/api/v1/tenants" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' -d '{"name":"Fuzz Ltd"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -X POST "$base/api/v1/demo-data" -H "Authorization: Bearer $token" -H "X-Tenant-Id: $tenant" >/dev/null

# Operations that would end the fuzzer's own session are left out; everything else,
# deletes included, is fair game.
# From the temporary folder: schemathesis keeps a cache in the working directory.
fuzz() {
  local rc=0
  (cd "$dir" && "$VENV/bin/schemathesis" run "$base/api/v1/openapi.json" \
    --url "$base" \
    -H "Authorization: Bearer $token" -H "X-Tenant-Id: $tenant" \
    --checks not_a_server_error \
    --exclude-path /api/v1/auth/logout \
    --exclude-path /api/v1/sessions/revoke-others \
    --exclude-path '/api/v1/sessions/{id}' \
    --exclude-path '/api/v1/members/{user_id}' \
    --exclude-path /api/v1/knowledge/sources \
    --exclude-path /api/v1/admin/knowledge/sources \
    --max-examples "$EXAMPLES" --max-time "$SECONDS_BUDGET" \
    --workers 2 --seed "$1" --no-shrink --warnings off) >"$dir/fuzz.out" 2>&1 || rc=$?
  cat "$dir/fuzz.out"
  return $rc
}
status=0
fuzz 17 || status=$?
# schemathesis itself now and then crashes inside Python on one operation (a "Runtime
# Error", such as CPython's "AST constructor recursion depth mismatch" while hypothesis
# describes a generator): that says nothing about the server. Such a run, with no failing
# check and its one error raised inside hypothesis, runs again with another seed, twice.
# If the fuzzer still cannot finish that one operation, the run counts as passed (every
# other operation was checked; the server log is still checked below); a real failure
# always fails.
fuzzer_crash_only() {
  [ "$status" -ne 0 ] &&
    grep -q "Runtime Error: 1$" "$dir/fuzz.out" &&
    ! grep -q "FAILURES" "$dir/fuzz.out" &&
    grep -q "site-packages/hypothesis/internal" "$dir/fuzz.out"
}
for seed in 18 19; do
  fuzzer_crash_only || break
  echo "the fuzzer crashed internally without finding a failure; running it again (seed $seed)"
  status=0
  fuzz "$seed" || status=$?
done
if fuzzer_crash_only; then
  echo "WARNING: the fuzzer crashed inside hypothesis on one operation in three runs; no check failed, counted as passed"
  status=0
fi

if grep -q -e '"level":"ERROR"' -e 'panicked at' "$dir/server.log"; then
  echo "server errors logged during the fuzz run:"
  grep -e '"level":"ERROR"' -e 'panicked at' -A2 "$dir/server.log" | head -40
  status=1
fi
exit $status
