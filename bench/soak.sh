#!/usr/bin/env bash
# bench/soak.sh: CYCLES (default 100) `kill -9` cycles under a mixed load, on the embedded
# store and on two nodes over Redis and over PostgreSQL (issue 12). A reliability soak, not a
# speed measurement: it runs the end-to-end test crates/server/tests/soak.rs (documented
# there) with AUGUR_SOAK_CYCLES=CYCLES through the test command (scripts/test.sh, which finds or
# starts Redis and PostgreSQL on loopback and stops what it started), in the dev profile the
# tests are built in.
#
# Each cycle: eight clients of two accounts create priced predictions (augur/echo 1 credit,
# augur/demo-image 2 a second) with a completion webhook to a loopback receiver; a batch of 10
# and a two-node workflow run are submitted; after 0.3-1.2 s one node is killed (-9) and
# restarted (two nodes die in turn). At the end everything must settle; per store it prints
#   acknowledged, lost, never settled, settled twice, ledger imbalance, duplicate completion
#   webhooks (and missing completion webhooks, redeliveries of one message id)
# and fails unless all but the acknowledged count are zero.
#
# Run from anywhere:  bench/soak.sh
#   env: CYCLES=100  TESTS='test(soak_)' (a nextest filter, e.g. 'test(soak_kill_9_cycles_on_the_embedded_store)')
# Raw output: bench/results/raw/soak-<time>.log; summary: bench/results/soak.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES="${CYCLES:-100}"
TESTS="${TESTS:-test(soak_)}"
RAW="$RESULTS/raw/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
mkdir -p "$(dirname "$RAW")"
commit="$(cd "$ROOT" && git rev-parse --short HEAD)"
log "soak: $CYCLES cycles per store at $commit; raw output in $RAW"
started=$(date +%s)
status=0
# One store at a time (-j 1): the two cores are the servers', not three soaks'. The soak
# profile (.config/nextest.toml) allows an hour per store instead of five minutes.
AUGUR_SOAK_CYCLES="$CYCLES" AUGUR_STORE_TESTS_REQUIRED=1 \
    "$ROOT/scripts/test.sh" -E "$TESTS" -j 1 --no-capture --profile soak >"$RAW" 2>&1 || status=$?
took=$(($(date +%s) - started))
{
    echo "# Soak: \`CYCLES=$CYCLES bench/soak.sh\` at \`$commit\`, $(date -u +%Y-%m-%d)"
    echo
    echo "Exit status $status after ${took} s. Per store:"
    echo
    echo '```text'
    grep -E '^soak [a-z]+: ' "$RAW" | grep -vE ': seed ' || true
    echo '```'
} >"$RESULTS/soak.md"
cat "$RESULTS/soak.md"
exit "$status"
