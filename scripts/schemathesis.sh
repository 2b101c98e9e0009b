#!/usr/bin/env bash
# Checks the served OpenAPI document against the real server with schemathesis (PyPI):
#
#   scripts/schemathesis.sh                 # 10 examples per operation, at most 240 s
#   ST_MAX_EXAMPLES=50 scripts/schemathesis.sh
#
# It builds the `augur` binary (dev profile, every backend: the test build), starts it on a
# free loopback port with the embedded store in a temporary directory and a fixed admin token,
# and runs every check schemathesis has (server errors, undocumented status codes and content
# types, answers that do not match their schema, schema-valid requests rejected, schema-invalid
# ones accepted) against `GET /openapi.json`, with the token as the Authorization header. The
# server is stopped on exit. schemathesis lives in its own virtualenv
# (target/schemathesis-venv, or AUGUR_SCHEMATHESIS_VENV), pinned below.
set -euo pipefail
cd "$(dirname "$0")/.."
version=4.32.5
venv="${AUGUR_SCHEMATHESIS_VENV:-$PWD/target/schemathesis-venv}"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    echo "== installing schemathesis $version in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
cargo build --workspace --all-features --locked --quiet --bin augur
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="schemathesis-admin-token-$(date +%s)"
AUGUR_STORE="embedded://$dir/data" AUGUR_LISTEN="127.0.0.1:$port" AUGUR_ADMIN_TOKEN="$token" \
    target/debug/augur serve >"$dir/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer $token" --checks all \
    --max-examples "${ST_MAX_EXAMPLES:-10}" --max-time "${ST_MAX_TIME:-240}" \
    --request-timeout 10 --workers 2 --seed 1 --phases examples,coverage,fuzzing \
    --wait-for-schema 10 --no-color
