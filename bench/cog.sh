#!/usr/bin/env bash
# bench/cog.sh: Cog dispatch overhead. Wall time of a trivial prediction (the test predictor in
# tests/fixtures/cog with steps=1, sleep=0) sent directly to coglet, against the same
# prediction through Augur.
#
#   direct: POST /predictions on coglet (synchronous: answers when the prediction is done)
#   augur:  POST /v1/models/bench/cog/predictions with `Prefer: wait` on Augur (embedded store,
#           the default), which dispatches to the same coglet with PUT /predictions/{id} +
#           `Prefer: respond-async`, follows its webhooks and answers when it settled
#
# One client, one request at a time (curl), N requests per round (default 40) after 5 warm-up
# requests, ROUNDS rounds (default 3) alternating which goes first; medians of the per-round
# medians and p90s are reported, and the overhead (augur minus direct).
#
# Needs coglet: the test virtualenv made by scripts/test.sh (target/test-venv, or
# AUGUR_TEST_VENV).
#
# Run from anywhere:  bench/cog.sh   (env: ROUNDS=3 N=40)
# Summary: bench/results/cog.md; raw: bench/results/raw/cog-<time>/
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
N="${N:-40}"
VENV="${AUGUR_TEST_VENV:-$ROOT/target/test-venv}"
FIXTURE="$ROOT/tests/fixtures/cog"
RAW="$RESULTS/raw/cog-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RAW"

[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import cog, coglet' 2>/dev/null || {
    log "no coglet in $VENV; run scripts/test.sh once (it makes the virtualenv) or set AUGUR_TEST_VENV"
    exit 1
}
build_release

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# coglet first, then Augur with a model routed to it.
COG_PORT="$(free_port)"
AUGUR_PORT="$(free_port)"
DATA="$(temp_dir)"
cat >"$DATA/augur.toml" <<EOF
[[models]]
name = "bench/cog"
provider = "cog"
url = "http://127.0.0.1:$COG_PORT"
concurrency = 1
EOF

# Without --upload-url: the PNG comes back as a data URI on both paths (Augur decodes and stores
# it), so both ask the same of coglet; an upload URL would serve only Augur's predictions.
(cd "$FIXTURE" && PATH="$VENV/bin:$PATH" COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT="$COG_PORT" \
    exec "$VENV/bin/python" -m cog.server.http --host 127.0.0.1) >"$RAW/coglet.log" 2>&1 &
COG_PID=$!
STARTED_PIDS+=("$COG_PID")
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$COG_PORT/health-check" 2>/dev/null | grep -q READY && break
    kill -0 "$COG_PID" 2>/dev/null || { cat "$RAW/coglet.log" >&2; exit 1; }
    sleep 0.1
done

AUGUR_CONFIG="$DATA/augur.toml" AUGUR_LISTEN="127.0.0.1:$AUGUR_PORT" AUGUR_STORE="embedded://$DATA/store" \
    AUGUR_ADMIN_TOKEN="$TOKEN" AUGUR_LOG=warn "$AUGUR" serve >"$RAW/augur.log" 2>&1 &
AUGUR_PID=$!
STARTED_PIDS+=("$AUGUR_PID")
AUGUR_URL="$(wait_url "$RAW/augur.log" 'augur listening on' "$AUGUR_PID")"

BODY='{"input": {"prompt": "bench", "steps": 1, "sleep": 0}}'

direct() {
    curl -sf -o "$RAW/last-direct.json" -w '%{time_total}\n' -X POST \
        -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$COG_PORT/predictions"
    grep -q '"status": *"succeeded"' "$RAW/last-direct.json"
}

through_augur() {
    curl -sf -o "$RAW/last-augur.json" -w '%{time_total}\n' -X POST \
        -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" -H 'prefer: wait' \
        -d "$BODY" "$AUGUR_URL/v1/models/bench/cog/predictions"
    grep -q '"status": *"succeeded"' "$RAW/last-augur.json"
}

# run KIND FILE: N timed requests after 5 warm-up ones, seconds per line in FILE.
run() {
    local kind="$1" file="$2" i
    for i in 1 2 3 4 5; do "$kind" >/dev/null; done
    : >"$file"
    for ((i = 0; i < N; i++)); do "$kind" >>"$file"; done
}

# quantile FILE Q: the Q-quantile (nearest rank) of FILE's numbers, in milliseconds.
quantile() {
    sort -g "$1" | awk -v q="$2" '{ a[NR] = $1 } END { i = int(q * NR + 0.999999); if (i < 1) i = 1; printf "%.2f\n", a[i] * 1000 }'
}

wait_quiet
declare -a D50 D90 A50 A90
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=(direct through_augur); else order=(through_augur direct); fi
    for kind in "${order[@]}"; do run "$kind" "$RAW/round$r-$kind.txt"; done
    D50+=("$(quantile "$RAW/round$r-direct.txt" 0.5)")
    D90+=("$(quantile "$RAW/round$r-direct.txt" 0.9)")
    A50+=("$(quantile "$RAW/round$r-through_augur.txt" 0.5)")
    A90+=("$(quantile "$RAW/round$r-through_augur.txt" 0.9)")
    log "round $r: direct p50 ${D50[-1]} ms p90 ${D90[-1]} ms; through augur p50 ${A50[-1]} ms p90 ${A90[-1]} ms"
done
d50="$(median "${D50[@]}")"
d90="$(median "${D90[@]}")"
a50="$(median "${A50[@]}")"
a90="$(median "${A90[@]}")"
over50="$(awk -v a="$a50" -v d="$d50" 'BEGIN { printf "%.2f", a - d }')"
over90="$(awk -v a="$a90" -v d="$d90" 'BEGIN { printf "%.2f", a - d }')"

{
    echo "# Cog dispatch overhead: a trivial coglet prediction through Augur vs. directly"
    echo
    echo '```text'
    machine_info
    echo "coglet: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("coglet"))'), predictor tests/fixtures/cog/predict.py (steps=1, sleep=0)"
    echo "augur: embedded store, model bench/cog -> coglet (concurrency 1), Prefer: wait"
    echo "one client (curl), one request at a time; $N requests per round after 5 warm-up; $ROUNDS rounds, order alternating"
    echo '```'
    echo
    echo "| | p50 ms (per round) | median p50 ms | p90 ms (per round) | median p90 ms |"
    echo "|---|---|---|---|---|"
    echo "| coglet directly (POST /predictions, synchronous) | ${D50[*]} | **$d50** | ${D90[*]} | **$d90** |"
    echo "| through Augur (create with Prefer: wait) | ${A50[*]} | **$a50** | ${A90[*]} | **$a90** |"
    echo
    echo "Overhead of going through Augur (median p50 minus median p50): **$over50 ms**; at p90: $over90 ms."
    echo "Through Augur a prediction is stored, leased, health-checked (GET /health-check), dispatched (PUT with Prefer: respond-async), and settled by coglet's webhooks (each a durable transition), and the answer waits for the terminal write."
    echo
    echo "Command: \`ROUNDS=$ROUNDS N=$N bench/cog.sh\`"
} >"$RESULTS/cog.md"
cat "$RESULTS/cog.md"
