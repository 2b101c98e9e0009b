#!/usr/bin/env bash
# Checks the served OpenAPI document against the real server with schemathesis (PyPI):
#
#   scripts/schemathesis.sh                 # the bounded run of the test command (seed 1)
#   ST_MAX_EXAMPLES=100 ST_MAX_TIME=1800 ST_SEED=7 scripts/schemathesis.sh   # longer
#
# It builds the `augur` binary (dev profile, every backend: the test build), starts it on a
# free loopback port with the embedded store in a temporary directory and a fixed admin token,
# creates an account and an API token for the operations on one's own account, and runs every
# check schemathesis has (server errors, undocumented status codes and content types, answers
# that do not match their schema, schema-valid requests rejected, schema-invalid ones
# accepted, ...) against `GET /openapi.json`. Its configuration, with each exception and why,
# is scripts/schemathesis/schemathesis.toml. The server is stopped on exit; the exit status
# is schemathesis' (non-zero on any finding). schemathesis lives in its own virtualenv
# (target/schemathesis-venv, or AUGUR_SCHEMATHESIS_VENV), pinned by
# scripts/schemathesis/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=scripts/schemathesis/requirements.txt
version="$(sed -n 's/^schemathesis==//p' "$requirements")"
venv="${AUGUR_SCHEMATHESIS_VENV:-$PWD/target/schemathesis-venv}"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $version\$"; then
    echo "== installing schemathesis $version in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
fi
cargo build --workspace --all-features --locked --quiet --bin augur
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
export AUGUR_ST_ADMIN_TOKEN="schemathesis-admin-token-$(date +%s)"
AUGUR_STORE="embedded://$dir/data" AUGUR_LISTEN="127.0.0.1:$port" AUGUR_ADMIN_TOKEN="$AUGUR_ST_ADMIN_TOKEN" \
    target/debug/augur serve >"$dir/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    curl -sf "$base/healthz" >/dev/null && break
    sleep 0.1
done
admin=(-H "Authorization: Bearer $AUGUR_ST_ADMIN_TOKEN" -H 'Content-Type: application/json')
curl -sf "${admin[@]}" -d '{"username":"schemathesis"}' "$base/v1/accounts" >/dev/null
AUGUR_ST_ACCOUNT_TOKEN="$(curl -sf "${admin[@]}" -d '{}' "$base/v1/accounts/schemathesis/tokens" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
export AUGUR_ST_ACCOUNT_TOKEN
# One worker: the Python 3.11 parser is not thread-safe ("AST constructor recursion depth
# mismatch" from hypothesis in a second worker), and the test command's budget is small.
"$venv/bin/schemathesis" --config-file scripts/schemathesis/schemathesis.toml \
    run "$base/openapi.json" --checks all \
    --max-examples "${ST_MAX_EXAMPLES:-5}" --max-time "${ST_MAX_TIME:-75}" \
    --request-timeout 10 --workers 1 --seed "${ST_SEED:-1}" --phases examples,coverage,fuzzing \
    --generation-database none --wait-for-schema 10 --no-color
