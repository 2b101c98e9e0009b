#!/usr/bin/env bash
# The test command: runs every test of the workspace against real components.
#
#   scripts/test.sh            # all tests
#   scripts/test.sh -E 'test(crash)'   # extra arguments go to cargo nextest (or cargo test)
#
# It prepares what the tests need and cannot ship in the repository:
# - a Python virtualenv with the official Replicate client (from PyPI), used by the
#   end-to-end tests of the real binary (AUGUR_TEST_PYTHON); AUGUR_E2E_REQUIRED=1 makes a
#   missing interpreter a failure instead of a skip.
# Then it runs the Rust tests once, in the dev profile (one build, no rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${AUGUR_TEST_VENV:-$PWD/target/test-venv}"
if ! "$venv/bin/python" -c 'import replicate, standardwebhooks' >/dev/null 2>&1; then
    echo "== preparing the Python test environment in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export AUGUR_TEST_PYTHON="$venv/bin/python"
export AUGUR_E2E_REQUIRED="${AUGUR_E2E_REQUIRED:-1}"

echo "== running the Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
