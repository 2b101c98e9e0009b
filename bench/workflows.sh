#!/usr/bin/env bash
# bench/workflows.sh: what a workflow costs (issue 11). Wraps `workflows`
# (crates/bench/src/bin/workflows.rs; documented there), against a fresh `augur serve` and a
# fresh store for every run (embedded in a temp dir; Redis: a fresh key prefix on a throwaway
# redis-server, appendfsync everysec; PostgreSQL: a new database on a throwaway cluster; all on
# loopback, see bench/lib-shared.sh), ROUNDS rounds (default 5), measurements interleaved (their
# order rotates by round), medians:
#
# 1. Overhead per node, on OVERHEAD_STORES (default embedded), NODES (100) of augur/echo:
#      chain    a run of NODES nodes, each referencing the previous one's output
#      fan      a run of a NODES-item fan-out and a join (NODES + 1 predictions)
#      plain    the reference: NODES echo creates with Prefer: wait, sent at once
#      serial   a second reference: the same NODES creates one after another (as a chain's
#               nodes follow each other: each its own commit, none sharing a write or a claim)
#    Server CPU per prediction (from /proc/<pid>/task/*/schedstat, Augur plus the store's
#    processes; also less the idle server's CPU rate over the window), store operations per
#    prediction (from /metrics) and wall time. Target (issue 11): CPU per node at most 1.5x a plain prediction's.
# 2. Throughput, on STORES (default embedded redis postgres), RUNS (200) from CLIENTS (16):
#      runs     runs of the issue's four-node blueprint (demo-image 64x64, 1 step, no sleep),
#               each waited for through its run.completed webhook
#      manual   the same four predictions driven by the client (Prefer: wait), RUNS times
#      singles  4 x RUNS plain echo creates with Prefer: wait
#
# A run during which rustc, cargo or a test binary ran is listed as noisy (and not repeated).
#
# Run from anywhere:  bench/workflows.sh
#   env: ROUNDS=5 NODES=100 RUNS=200 CLIENTS=16 OVERHEAD_STORES=embedded
#        STORES="embedded redis postgres" BENCH_QUIET_WAIT=1800
#        BENCH_AUGUR=<binary> to skip the build (it needs the redis and postgres features)
# Raw output: bench/results/raw/workflows-<time>/; summary: bench/results/workflows.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/lib-shared.sh
source "$BENCH_DIR/lib-shared.sh"

ROUNDS="${ROUNDS:-5}"
NODES="${NODES:-100}"
RUNS="${RUNS:-200}"
CLIENTS="${CLIENTS:-16}"
OVERHEAD_STORES="${OVERHEAD_STORES:-embedded}"
STORES="${STORES:-embedded redis postgres}"

build_release_shared
# The bench binary is copied too, so that other builds cannot swap it mid-run.
cp "$ROOT/target/release/workflows" "$BENCH_TMP/workflows"
BIN="$BENCH_TMP/workflows"
RUN="$RESULTS/raw/workflows-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
for store in $OVERHEAD_STORES $STORES; do
    case "$store" in
        redis) [ -n "${REDIS_PORT:-}" ] || start_redis everysec ;;
        postgres) [ -n "${PG_PORT:-}" ] || start_postgres ;;
    esac
done

# store_url STORE: a fresh store of STORE.
store_url() {
    case "$1" in
        embedded) echo "embedded://$(temp_dir)/store" ;;
        redis) echo "redis://127.0.0.1:$REDIS_PORT/0?prefix=w$RANDOM$RANDOM" ;;
        postgres)
            local db="w$RANDOM$RANDOM"
            pg_sql postgres "CREATE DATABASE $db" >/dev/null
            echo "postgres://postgres@127.0.0.1:$PG_PORT/$db"
            ;;
        *) log "unknown store $1"; return 1 ;;
    esac
}

# rotate N WORDS...: WORDS rotated left by N.
rotate() {
    local n="$1"
    shift
    local words=("$@") i out=()
    for ((i = 0; i < ${#words[@]}; i++)); do
        out+=("${words[$(((i + n) % ${#words[@]}))]}")
    done
    echo "${out[*]}"
}

NOISY=()
FAILED=()
# one ROUND STORE MEASURE: one measurement against a fresh server and store (a failure is
# logged, listed in the summary and left out of the medians).
one() {
    local round="$1" store="$2" measure="$3" out pids flag watcher
    out="$RUN/round$round-$store-$measure"
    start_augur_shared "$(store_url "$store")" "$out.augur.log"
    pids="$AUGUR_PID"
    [ "$store" = redis ] && pids+=",$REDIS_PID"
    [ "$store" = postgres ] && pids+=",$PG_PID"
    flag="$(mktemp "$BENCH_TMP/noise.XXXXXX")"
    (while :; do _noise_busy && echo busy >>"$flag"; sleep 0.5; done) &
    watcher=$!
    STARTED_PIDS+=("$watcher")
    "$BIN" --url "$AUGUR_URL" --token "$TOKEN" --measure "$measure" --nodes "$NODES" \
        --runs "$RUNS" --clients "$CLIENTS" --pids "$pids" >"$out.json" 2>"$out.log" || {
        log "FAILED: round $round $store $measure (see $out.log)"
        tail -5 "$out.log" >&2
        mv "$out.json" "$out.failed"
        FAILED+=("round $round $store $measure")
    }
    stop_started "$watcher"
    stop_started "$AUGUR_PID"
    [ -s "$flag" ] && NOISY+=("round $round $store $measure")
    [ -f "$out.json" ] || return 0
    log "round $round $store $measure: $(jq -c 'del(.measure, .augur_cpu_s, .webhook_duplicates, .store_ops_per_prediction, .store_ops_per_item)' "$out.json")"
}

wait_quiet
for ((round = 1; round <= ROUNDS; round++)); do
    for store in $OVERHEAD_STORES; do
        for measure in $(rotate "$round" chain fan plain serial); do
            one "$round" "$store" "$measure"
        done
    done
    for store in $STORES; do
        for measure in $(rotate "$round" runs manual singles); do
            one "$round" "$store" "$measure"
        done
    done
done

# col STORE MEASURE FILTER: the values of a jq filter over the rounds, space-separated.
col() {
    local f values=""
    for ((round = 1; round <= ROUNDS; round++)); do
        f="$RUN/round$round-$1-$2.json"
        [ -f "$f" ] && values+="$(jq -r "$3" "$f") "
    done
    echo "${values% }"
}
# row LABEL STORE MEASURE FILTER: a table row with the per-round values and their median.
row() {
    local values
    values="$(col "$2" "$3" "$4")"
    [ -n "$values" ] || return 0
    # shellcheck disable=SC2086
    echo "| $1 | $values | **$(median $values)** |"
}
# ratio_row LABEL STORE NUM_MEASURE DEN_MEASURE FILTER [DEN_FILTER]: per-round NUM/DEN, median.
ratio_row() {
    local values="" a b
    for ((round = 1; round <= ROUNDS; round++)); do
        a="$RUN/round$round-$2-$3.json"
        b="$RUN/round$round-$2-$4.json"
        [ -f "$a" ] && [ -f "$b" ] || continue
        values+="$(jq -rn --slurpfile a "$a" --slurpfile b "$b" "(\$a[0] | $5) / (\$b[0] | ${6:-$5}) * 100 | round / 100") "
    done
    [ -n "$values" ] || return 0
    # shellcheck disable=SC2086
    echo "| $1 | ${values% } | **$(median $values)** |"
}

summary="$RESULTS/workflows.md"
{
    echo "# bench/workflows.sh: workflow overhead and throughput (issue 11)"
    echo
    echo '```text'
    machine_info
    [[ " $STORES " == *" redis "* ]] && redis_info
    [[ " $STORES " == *" postgres "* ]] && pg_info
    echo "command: ROUNDS=$ROUNDS NODES=$NODES RUNS=$RUNS CLIENTS=$CLIENTS OVERHEAD_STORES=\"$OVERHEAD_STORES\" STORES=\"$STORES\" bench/workflows.sh"
    if [ "${#NOISY[@]}" -gt 0 ]; then
        echo "a build or test binary ran during: $(printf '%s; ' "${NOISY[@]}")(noise)"
    fi
    if [ "${#FAILED[@]}" -gt 0 ]; then
        echo "FAILED (left out): $(printf '%s; ' "${FAILED[@]}")"
    fi
    echo '```'
    for store in $OVERHEAD_STORES; do
        echo
        echo "## Overhead per node, $store ($NODES augur/echo)"
        echo
        echo "| | per round | median |"
        echo "|---|---|---|"
        row "plain: $NODES creates with Prefer: wait at once, server CPU per prediction (µs)" "$store" plain .cpu_us_per_prediction
        row "chain of $NODES: server CPU per node (µs)" "$store" chain .cpu_us_per_prediction
        row "fan-out of $NODES + join: server CPU per prediction (µs)" "$store" fan .cpu_us_per_prediction
        row "serial: $NODES creates one after another, server CPU per prediction (µs)" "$store" serial .cpu_us_per_prediction
        ratio_row "**chain / plain, CPU per prediction** (target ≤ 1.5)" "$store" chain plain .cpu_us_per_prediction
        ratio_row "chain / serial, CPU per prediction" "$store" chain serial .cpu_us_per_prediction
        ratio_row "**fan-out / plain, CPU per prediction** (target ≤ 1.5)" "$store" fan plain .cpu_us_per_prediction
        row "idle server's CPU (ms per s), measured before the chain" "$store" chain .idle_cpu_ms_per_s
        row "plain, less the idle rate over its window (µs per prediction)" "$store" plain .cpu_us_per_prediction_net
        row "chain, less the idle rate over its window (µs per node)" "$store" chain .cpu_us_per_prediction_net
        row "fan-out, less the idle rate over its window (µs per prediction)" "$store" fan .cpu_us_per_prediction_net
        ratio_row "chain / plain, less idle" "$store" chain plain .cpu_us_per_prediction_net
        ratio_row "fan-out / plain, less idle" "$store" fan plain .cpu_us_per_prediction_net
        [ "$store" != embedded ] && row "… of which the store's processes, chain (s)" "$store" chain .others_cpu_s
        row "plain: store claims per prediction" "$store" plain '.store_ops_per_prediction.claim // 0'
        row "chain: store claims per node" "$store" chain '.store_ops_per_prediction.claim // 0'
        row "fan-out: store claims per prediction" "$store" fan '.store_ops_per_prediction.claim // 0'
        row "plain: store writes + finishes per prediction" "$store" plain '(.store_ops_per_prediction.write // 0) + (.store_ops_per_prediction.finish // 0) | . * 100 | round / 100'
        row "chain: store writes + finishes per node" "$store" chain '(.store_ops_per_prediction.write // 0) + (.store_ops_per_prediction.finish // 0) | . * 100 | round / 100'
        row "fan-out: store writes + finishes per prediction" "$store" fan '(.store_ops_per_prediction.write // 0) + (.store_ops_per_prediction.finish // 0) | . * 100 | round / 100'
        row "plain: start → last answered (s)" "$store" plain .wall_s
        row "serial: start → last answered (s)" "$store" serial .wall_s
        row "chain: request → run.completed (s)" "$store" chain .wall_s
        row "chain: per node (ms)" "$store" chain .wall_ms_per_prediction
        row "fan-out + join: request → run.completed (s)" "$store" fan .wall_s
    done
    for store in $STORES; do
        echo
        echo "## Throughput, $store: $RUNS runs of the four-node blueprint, $CLIENTS clients"
        echo
        echo "| | per round | median |"
        echo "|---|---|---|"
        row "workflow runs/s" "$store" runs .per_s
        row "run latency p50, create → run.completed (ms)" "$store" runs .latency_p50_ms
        row "run latency p99 (ms)" "$store" runs .latency_p99_ms
        row "reference: the same 4 predictions driven by the client, \"runs\"/s" "$store" manual .per_s
        row "reference: client-driven latency p50 (ms)" "$store" manual .latency_p50_ms
        row "reference: plain echo creates with Prefer: wait, predictions/s" "$store" singles .per_s
        row "reference: plain latency p50 (ms)" "$store" singles .latency_p50_ms
        ratio_row "**workflow / client-driven, runs/s**" "$store" runs manual .per_s
        ratio_row "**predictions/s inside runs (4 per run) / plain predictions/s**" "$store" runs singles '.per_s * 4' .per_s
        row "server CPU per run (ms)" "$store" runs .cpu_ms_per_item
        row "server CPU per client-driven \"run\" (ms)" "$store" manual .cpu_ms_per_item
        row "server CPU per plain prediction (ms)" "$store" singles .cpu_ms_per_item
    done
    echo
    echo "Checks, per run: errors (runs not succeeded, creates not 201 + succeeded):" \
        "$(for s in $OVERHEAD_STORES; do for m in chain fan plain serial; do col "$s" "$m" .errors; done; done | tr '\n' ' ')" \
        "$(for s in $STORES; do for m in runs manual singles; do col "$s" "$m" .errors; done; done | tr '\n' ' ');" \
        "runs found by polling instead of their webhook: $(for s in $OVERHEAD_STORES; do col "$s" chain .polled; col "$s" fan .polled; done | tr '\n' ' ')$(for s in $STORES; do col "$s" runs .polled; done | tr '\n' ' ');" \
        "duplicate run.completed: $(for s in $STORES; do col "$s" runs .webhook_duplicates; done | tr '\n' ' ')."
    echo
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
