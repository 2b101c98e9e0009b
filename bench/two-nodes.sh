#!/usr/bin/env bash
# bench/two-nodes.sh: one Augur node versus two on the same shared store (Redis, PostgreSQL):
# whole lifecycles per second, and that nothing is lost or run twice.
#
# Servers (throwaway, loopback; see bench/lib-shared.sh): one redis-server (--appendonly yes
# --appendfsync everysec) and one PostgreSQL cluster (initdb, default durability).
#
# Per engine and round, a fresh key prefix / schema each time:
#   one   one `augur serve` node;  wrk -t2 -c64 -d12s (bench/wrk-lifecycle.lua, Prefer: wait)
#   two   two nodes on the same store URL; two wrk processes at once, wrk -t1 -c32 -d12s
#         against each node (64 connections, 2 wrk threads in all, as for one node)
# The figure is the sum of the wrk rates. After each run (waiting up to 30 s for lifecycles
# wrk cut off; up to 60 s, since one whose creating request wrk dropped can wait for its lease
# to expire; the wait is reported): augur_predictions_settled_total must equal
# augur_predictions_created_total (both are the store's counters, the same on every node), and
# augur_jobs_total{outcome="succeeded"} summed over the nodes (each counts the jobs it ran)
# must equal them too (a job run twice would count twice); every response must be 201
# "succeeded". For two nodes it also reports how many jobs each node ran.
# ROUNDS rounds (default 3), one/two alternating first; medians. A measurement during which
# rustc, cargo or a test binary ran is dropped and repeated (up to 3 attempts; see `measure`
# in bench/lib-shared.sh).
#
# On the 2-core development machine a second node adds no CPU: both nodes, wrk and the store
# server share the same two cores, so this measures the cost (or gain) of splitting the same
# work over two processes that coordinate through the store, not scale-out.
#
# Run from anywhere:  bench/two-nodes.sh   (env: ROUNDS=3 DURATION=12s ENGINES="redis postgres")
# Raw output: bench/results/raw/two-nodes-<time>/; summary: bench/results/two-nodes.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/lib-shared.sh
source "$BENCH_DIR/lib-shared.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-12s}"
ENGINES="${ENGINES:-redis postgres}"

ensure_wrk
build_release_shared
RUN="$RESULTS/raw/two-nodes-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"

start_redis everysec
start_postgres
pg_sql postgres "CREATE DATABASE augur" >/dev/null
log "redis on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID), postgresql on 127.0.0.1:$PG_PORT (pid $PG_PID)"

declare -A RATE P99 SPLIT SETTLE
# totals URL...: "created settled succeeded": created and settled are the store's counters
# (shared by the nodes: every node reports the same totals), read from the first node;
# succeeded is augur_jobs_total{outcome="succeeded"}, counted by each process, summed.
totals() {
    local c s j=0 u
    c="$(metric "$1" augur_predictions_created_total)"
    s="$(metric "$1" augur_predictions_settled_total)"
    for u in "$@"; do
        j=$((j + $(metric_sum "$u" augur_jobs_total 'outcome="succeeded"')))
    done
    echo "$c $s $j"
}

# run ENGINE NODES OUT: one measured run with NODES (1 or 2) nodes.
SEQ=0
run() {
    local engine="$1" nodes="$2" out="$3" store urls=() pids=() i c s j rate p99 bad
    SEQ=$((SEQ + 1))
    case "$engine" in
        redis) redis_reset; store="redis://127.0.0.1:$REDIS_PORT/0?prefix=two$SEQ:" ;;
        postgres) store="postgres://postgres@127.0.0.1:$PG_PORT/augur?schema=two$SEQ" ;;
    esac
    for ((i = 1; i <= nodes; i++)); do
        start_augur_shared "$store" "$out.node$i.log"
        urls+=("$AUGUR_URL"); pids+=("$AUGUR_PID")
    done
    for u in "${urls[@]}"; do create_one "$u" >/dev/null; done # warm-up: one lifecycle per node
    local wrk_pids=()
    for ((i = 1; i <= nodes; i++)); do
        wrk -t$((2 / nodes)) -c$((64 / nodes)) -d"$DURATION" --latency --timeout 10s \
            -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
            "${urls[$((i - 1))]}/v1/models/augur/echo/predictions" >"$out.wrk$i.txt" 2>"$out.wrk$i.err" &
        wrk_pids+=($!)
    done
    for p in "${wrk_pids[@]}"; do wait "$p"; done
    # Lifecycles wrk cut off may wait for a lease to expire (AUGUR_LEASE, 30 s by default):
    # wait up to 60 s, and record how long it took.
    local t0 settle_s
    t0="$(date +%s.%N)"
    for ((i = 0; i < 600; i++)); do
        read -r c s j <<<"$(totals "${urls[@]}")"
        [ "$c" = "$s" ] && [ "$j" = "$c" ] && break
        sleep 0.1
    done
    settle_s="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    local per_node=()
    for u in "${urls[@]}"; do
        per_node+=("ran=$(metric_sum "$u" augur_jobs_total 'outcome="succeeded"')")
    done
    for p in "${pids[@]}"; do stop_started "$p"; done
    rate=0; p99=0; bad=0
    for ((i = 1; i <= nodes; i++)); do
        local w
        w="$(wrk_json "$out.wrk$i.txt")"
        rate="$(awk -v a="$rate" -v b="$(jq .rps <<<"$w")" 'BEGIN { printf "%.1f", a + b }')"
        p99="$(awk -v a="$p99" -v b="$(jq .p99_ms <<<"$w")" 'BEGIN { print (b > a ? b : a) }')"
        bad=$((bad + $(jq '.non2xx + .socket_errors + .not_succeeded' <<<"$w")))
    done
    echo "engine=$engine nodes=$nodes created=$c settled=$s jobs_succeeded=$j per_node: ${per_node[*]} rate=$rate p99_max=$p99 bad=$bad settle_wait_s=$settle_s" >"$out.check.txt"
    log "round $round $engine $nodes node(s): $rate/s p99<=$p99 ms created=$c settled=$s jobs_succeeded=$j (${per_node[*]}) settled ${settle_s}s after wrk"
    if [ "$c" != "$s" ] || [ "$j" != "$c" ] || [ "$bad" != 0 ]; then
        log "FAILED check in round $round ($engine, $nodes nodes): see $out.check.txt"
        exit 1
    fi
    pend RATE "$engine-$nodes" "$rate"; pend P99 "$engine-$nodes" "$p99"
    pend SETTLE "$engine-$nodes" "$settle_s"
    SPLIT[$engine-$nodes]="${per_node[*]}"
}

wait_quiet
for ((round = 1; round <= ROUNDS; round++)); do
    for engine in $ENGINES; do
        if ((round % 2)); then order="1 2"; else order="2 1"; fi
        for nodes in $order; do
            measure run "$engine" "$nodes" "$RUN/round$round-$engine-$nodes"
        done
    done
done

summary="$RESULTS/two-nodes.md"
{
    echo "# one node versus two nodes on one shared store: whole lifecycles"
    echo
    echo '```text'
    machine_info
    redis_info
    pg_info
    echo "one node: wrk -t2 -c64 -d$DURATION; two nodes: two wrk -t1 -c32 -d$DURATION at once, one per node (bench/wrk-lifecycle.lua, Prefer: wait)"
    echo "$ROUNDS rounds, fresh prefix/schema per run; nodes, wrk and the store server share the machine's $(nproc) cores"
    echo '```'
    echo
    echo "| engine | nodes | lifecycles/s (per round) | median lifecycles/s | median p99 (worst wrk) | two / one |"
    echo "|---|---|---|---|---|---|"
    for engine in $ENGINES; do
        one="$(median ${RATE[$engine-1]})"
        two="$(median ${RATE[$engine-2]})"
        echo "| $engine | 1 | ${RATE[$engine-1]% } | **$one** | $(median ${P99[$engine-1]}) ms | |"
        echo "| $engine | 2 | ${RATE[$engine-2]% } | **$two** | $(median ${P99[$engine-2]}) ms | $(awk -v a="$two" -v b="$one" 'BEGIN { printf "%.2f", a / b }') |"
    done
    echo
    echo "Every run: the store's created == settled == augur_jobs_total{outcome=\"succeeded\"} summed over the nodes (nothing lost, nothing run twice); every response 201 \"succeeded\"; 0 socket errors."
    echo
    echo "Seconds from the end of wrk until created == settled == jobs run, per run:"
    echo
    for engine in $ENGINES; do echo "- $engine: one node ${SETTLE[$engine-1]% }; two nodes ${SETTLE[$engine-2]% }"; done
    echo
    echo "Jobs run per node in the last two-node run of each engine:"
    echo
    for engine in $ENGINES; do echo "- $engine: ${SPLIT[$engine-2]}"; done
    echo
    if ((${#NOISY_RUNS[@]})); then
        echo "**Noisy:** a build or test ran during these measurements in all ${MEASURE_ATTEMPTS:-3} attempts (kept anyway): ${NOISY_RUNS[*]}"
        echo
    fi
    echo "On $(nproc) cores a second node adds no CPU: both nodes, both wrk processes and the store server share them."
    echo
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
