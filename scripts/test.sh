#!/usr/bin/env bash
# The test command: runs every test of the workspace against real components.
#
#   scripts/test.sh                         # all tests
#   scripts/test.sh -E 'test(crash)'        # extra arguments go to cargo nextest (or cargo test)
#
# It prepares what the tests need and cannot ship in the repository:
# - Redis, a three-master Redis Cluster and PostgreSQL (scripts/services/*.sh): the servers
#   already running on their usual ports, or throwaway ones on free loopback ports, installed
#   from Debian's packages when missing; their URLs go to AUGUR_TEST_REDIS_URL,
#   AUGUR_TEST_REDIS_CLUSTER_URL and AUGUR_TEST_POSTGRES_URL, and what it started is stopped
#   on exit. The Cloudflare store's Worker (cloudflare/) runs on a local workerd
#   (scripts/services/cloudflare.sh: `wrangler dev`, pinned by cloudflare/package-lock.json),
#   its URL in AUGUR_TEST_CLOUDFLARE_URL. With AUGUR_STORE_TESTS_REQUIRED=1 (set by .ci/run) a
#   backend test whose server is missing fails instead of skipping.
# - a Python virtualenv with the official Replicate client and the Cog model server (coglet),
#   from PyPI (scripts/requirements-test.txt), used by the end-to-end tests of the real binary
#   (AUGUR_TEST_PYTHON), and moto's S3-compatible server for the files tests on S3;
#   AUGUR_E2E_REQUIRED=1 makes a missing interpreter a failure instead of a skip.
# - the official Replicate JS client (npm `replicate`) and, for the dashboard's browser tests,
#   `playwright-core` and `axe-core`, pinned by crates/server/tests/js/package-lock.json
#   (`npm ci`), with Node.js and npm from Debian's packages when missing; only the tests use
#   Node, never Augur itself. Playwright drives Debian's `chromium` (installed when missing;
#   AUGUR_CHROMIUM names another binary), never a browser build of its own.
# Then it runs the Rust tests once, in the dev profile with every backend compiled in (one
# build, no rebuilds). A full run (no arguments) first runs each fuzz target for a few seconds
# (scripts/fuzz.sh; AUGUR_FUZZ_SECONDS sets how long, 0 skips it) and checks the served
# OpenAPI document with schemathesis (scripts/schemathesis.sh, about a minute;
# AUGUR_SCHEMATHESIS=0 skips it), so that the test runner's summary stays the last thing
# printed; a schemathesis finding still fails the run, after the Rust tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/toolchain.sh

# shellcheck source=scripts/services/redis.sh
source scripts/services/redis.sh
# shellcheck source=scripts/services/postgres.sh
source scripts/services/postgres.sh
# shellcheck source=scripts/services/cloudflare.sh
source scripts/services/cloudflare.sh
cleanup() {
    augur_redis_down || true
    augur_postgres_down || true
    augur_cloudflare_down || true
}
trap cleanup EXIT

echo "== starting or finding Redis, Redis Cluster and PostgreSQL"
augur_redis_up
augur_postgres_up
echo "   redis:         $AUGUR_TEST_REDIS_URL"
echo "   redis cluster: $AUGUR_TEST_REDIS_CLUSTER_URL"
echo "   postgres:      ${AUGUR_TEST_POSTGRES_URL%%\?*}"

venv="${AUGUR_TEST_VENV:-$PWD/target/test-venv}"
if ! "$venv/bin/python" -c 'import replicate, standardwebhooks, cog, coglet, moto.server' >/dev/null 2>&1; then
    echo "== preparing the Python test environment in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export AUGUR_TEST_PYTHON="$venv/bin/python"

js=crates/server/tests/js
if [ ! -f "$js/node_modules/.package-lock.json" ] ||
    [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    echo "== installing the JS client tests' packages in $js (npm ci)"
    if ! command -v npm >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null 2>&1; } ||
            echo "   node and npm could not be installed; the JS client tests will fail"
    fi
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error) ||
        echo "   npm ci failed; the JS client tests will fail"
fi
if ! command -v "${AUGUR_CHROMIUM:-/usr/bin/chromium}" >/dev/null 2>&1; then
    echo "== installing Debian's chromium for the dashboard's browser tests"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } ||
        echo "   chromium could not be installed; the dashboard's browser tests will fail"
fi
export AUGUR_E2E_REQUIRED="${AUGUR_E2E_REQUIRED:-1}"

# The Cloudflare store's Worker on a local workerd (needs Node, installed above).
echo "== starting the Cloudflare store's Worker (wrangler dev, scripts/services/cloudflare.sh)"
if augur_cloudflare_up; then
    echo "   cloudflare:    ${AUGUR_TEST_CLOUDFLARE_BASE%%:*}://127.0.0.1:${AUGUR_TEST_CLOUDFLARE_BASE##*@127.0.0.1:}"
    # wrangler bundles without type checks; the Worker's TypeScript is checked here.
    echo "== type-checking the Worker (tsc --noEmit in cloudflare/)"
    (cd cloudflare && node_modules/.bin/tsc --noEmit) || { echo "the Worker does not type-check" >&2; exit 1; }
else
    echo "   the Worker did not start; the Cloudflare store's tests will skip or fail"
fi

if [ $# -eq 0 ] && [ "${AUGUR_FUZZ_SECONDS:-5}" != 0 ]; then
    echo "== fuzzing each target for ${AUGUR_FUZZ_SECONDS:-5} s (scripts/fuzz.sh)"
    scripts/fuzz.sh "${AUGUR_FUZZ_SECONDS:-5}"
fi

# The OpenAPI document against the real server (scripts/schemathesis.sh: every check, seed 1,
# bounded in time). A finding fails the run, but only at the end, so that one run shows the
# Rust tests' results too. AUGUR_SCHEMATHESIS=0 skips it.
schemathesis_status=0
if [ $# -eq 0 ] && [ "${AUGUR_SCHEMATHESIS:-1}" != 0 ]; then
    echo "== checking the OpenAPI document with schemathesis (scripts/schemathesis.sh)"
    scripts/schemathesis.sh || schemathesis_status=$?
fi

echo "== running the Rust tests"
tests_status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --locked --no-fail-fast "$@" || tests_status=$?
else
    cargo test --workspace --all-features --locked --no-fail-fast "$@" || tests_status=$?
fi
if [ "$schemathesis_status" != 0 ]; then
    echo "== schemathesis found problems (exit status $schemathesis_status; its report is above)"
    [ "$tests_status" != 0 ] || tests_status=$schemathesis_status
fi
exit "$tests_status"
