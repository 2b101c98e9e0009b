#!/usr/bin/env bash
# bench/lifecycles.sh: whole prediction lifecycles per second, durable, at 64 clients.
#
# Each request is one lifecycle: POST /v1/models/augur/echo/predictions with `Prefer: wait`
# (create, queue, claim by a worker, run the no-op echo model, succeed; the response comes
# when the prediction has settled), sent by wrk with bench/wrk-lifecycle.lua, which checks
# that every response is 201 with "status":"succeeded". Load: `wrk -t2 -c64 -d12s --latency`.
#
# Two stores, interleaved, ROUNDS rounds each (default 3), a fresh server and, for the
# embedded store, a fresh data directory every round:
#   embedded   AUGUR_STORE=embedded://<tmp>  (durable: sync=full, fsync per group commit)
#   memory     AUGUR_STORE=memory://          (not durable; the reference for the store's cost)
# After each round: waits until augur_predictions_settled_total equals
# augur_predictions_created_total (no lost or stuck lifecycles), and fails if any response was
# not a 201 "succeeded" or wrk saw socket errors. Also records the CPU seconds Augur and wrk
# used, and the store operations per lifecycle (from /metrics). Then one extra diagnostic
# round per store (not counted): CPU per lifecycle by thread group, and with perf, context
# switches, fsync/fdatasync and pwrite64 calls per lifecycle.
# Reports median lifecycles/s, p50, p99; the target is 10,000/s (BullMQ did about 6,100/s on
# this machine, measured earlier for the brief, not here).
#
# wrk and Augur share the machine's cores (2 on the development machine).
#
# Run from anywhere:  bench/lifecycles.sh     (env: ROUNDS=3 DURATION=12s CONNECTIONS=64,
#                                              STORES="embedded memory", DIAGNOSE=0 to skip
#                                              the extra diagnostic round)
#
# BASELINE=<git ref> adds a third server to every round: the `augur` of that commit (built
# in a worktree under target/baseline-src, into target/baseline), on a fresh embedded store,
# reported as `embedded@<ref>`: a change's before and after, measured side by side.
# Raw output: bench/results/raw/lifecycles-<time>/; summary: bench/results/lifecycles.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-12s}"
CONNECTIONS="${CONNECTIONS:-64}"
STORES="${STORES:-embedded memory}"
THREADS=2
CLK_TCK="$(getconf CLK_TCK)"

ensure_wrk
build_release
BASE_BIN=""
if [ -n "${BASELINE:-}" ]; then
    BASE_SRC="$ROOT/target/baseline-src"
    log "building the baseline $BASELINE (release, in $BASE_SRC)"
    rm -rf "$BASE_SRC"
    git -C "$ROOT" worktree prune
    git -C "$ROOT" worktree add -q --detach "$BASE_SRC" "$BASELINE"
    (cd "$BASE_SRC" && cargo build --release -q -p augur-server --target-dir "$ROOT/target/baseline")
    git -C "$ROOT" worktree remove --force "$BASE_SRC"
    BASE_BIN="$ROOT/target/baseline/release/augur"
    STORES="$STORES embedded@$BASELINE"
fi
RUN="$RESULTS/raw/lifecycles-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"

# cpu_s PID: user + system CPU seconds the process has used.
cpu_s() { awk -v t="$CLK_TCK" '{ printf "%.2f\n", ($14 + $15) / t }' "/proc/$1/stat"; }

# store_ops URL: store operations by name, "create=N update=N ..." (from the histogram counts).
store_ops() {
    curl -sf -H "Authorization: Bearer $TOKEN" "$1/metrics" |
        sed -n 's/^augur_store_operation_duration_seconds_count{\(.*\)} \([0-9]*\)$/\1 \2/p' |
        sed -n 's/.*operation="\([a-z_]*\)".*outcome="\([a-z_]*\)".* \([0-9]*\)$/\1:\2 \3/p;
                 s/.*outcome="\([a-z_]*\)".*operation="\([a-z_]*\)".* \([0-9]*\)$/\2:\1 \3/p' |
        sort | tr '\n' ' '
}

# diagnose STORE URL: one extra round, not counted (see lib.sh's `diagnose_load`).
diagnose() {
    local store="$1" url="$2" out="$RUN/diagnostic-$1"
    start_augur "$url" "$out.augur.log"
    create_one "$AUGUR_URL" >/dev/null
    {
        echo "store=$store"
        diagnose_load "$AUGUR_PID" "$out" lifecycle -t"$THREADS" -c"$CONNECTIONS" -d8s --timeout 10s \
            -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
            "$AUGUR_URL/v1/models/augur/echo/predictions"
    } >"$out.txt"
    stop_started "$AUGUR_PID"
    log "diagnostic $store: $(tr '\n' ';' <"$out.txt")"
}

declare -A LPS P50 P99 CPU
wait_quiet
for ((round = 1; round <= ROUNDS; round++)); do
    for store in $STORES; do
        AUGUR_BIN="$AUGUR"
        case "$store" in
            embedded) url="embedded://$(temp_dir)/store" ;;
            memory) url="memory://" ;;
            embedded@*) url="embedded://$(temp_dir)/store"; AUGUR_BIN="$BASE_BIN" ;;
            *) log "unknown store $store"; exit 2 ;;
        esac
        out="$RUN/round$round-${store//@/-at-}"
        AUGUR="$AUGUR_BIN" start_augur "$url" "$out.augur.log"
        create_one "$AUGUR_URL" >/dev/null # warm-up: one lifecycle
        cpu_before="$(cpu_s "$AUGUR_PID")"
        TIMEFORMAT='%R %U %S'
        { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency --timeout 10s \
            -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
            "$AUGUR_URL/v1/models/augur/echo/predictions" >"$out.wrk.txt" 2>"$out.wrk.err"; } 2>"$out.time"
        cpu_after="$(cpu_s "$AUGUR_PID")"
        # Wait for the lifecycles wrk cut off mid-flight to settle.
        for ((i = 0; i < 300; i++)); do
            created="$(metric "$AUGUR_URL" augur_predictions_created_total)"
            settled="$(metric "$AUGUR_URL" augur_predictions_settled_total)"
            [ "$created" = "$settled" ] && break
            sleep 0.1
        done
        ops="$(store_ops "$AUGUR_URL")"
        stop_started "$AUGUR_PID"

        j="$(wrk_json "$out.wrk.txt")"
        read -r _ wrk_user wrk_sys <"$out.time"
        augur_cpu="$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { printf "%.2f", b - a }')"
        wrk_cpu="$(awk -v u="$wrk_user" -v s="$wrk_sys" 'BEGIN { printf "%.2f", u + s }')"
        {
            echo "store=$store created=$created settled=$settled"
            echo "augur_cpu_s=$augur_cpu wrk_cpu_s=$wrk_cpu"
            echo "store_ops: $ops"
            echo "wrk: $j"
        } >"$out.check.txt"
        log "round $round $store: $(jq -c '{rps, p50_ms, p99_ms, succeeded, not_succeeded}' <<<"$j") created=$created settled=$settled augur_cpu=${augur_cpu}s wrk_cpu=${wrk_cpu}s"
        if [ "$created" != "$settled" ] || [ "$(jq '.non2xx + .socket_errors + .not_succeeded' <<<"$j")" != 0 ]; then
            log "FAILED check in round $round ($store): see $out.check.txt and $out.wrk.err"
            exit 1
        fi
        LPS[$store]+="$(jq .rps <<<"$j") "
        P50[$store]+="$(jq .p50_ms <<<"$j") "
        P99[$store]+="$(jq .p99_ms <<<"$j") "
        CPU[$store]+="$(awk -v c="$augur_cpu" -v n="$(jq .requests <<<"$j")" 'BEGIN { printf "%.0f", 1e6 * c / n }') "
    done
done
if [ "${DIAGNOSE:-1}" = 1 ]; then
    for store in $STORES; do
        case "$store" in
            embedded) diagnose embedded "embedded://$(temp_dir)/store" ;;
            memory) diagnose memory "memory://" ;;
            *) ;;
        esac
    done
fi

summary="$RESULTS/lifecycles.md"
{
    echo "# whole lifecycles: POST augur/echo with Prefer: wait (create -> succeeded)"
    echo
    echo '```text'
    machine_info
    echo "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/wrk-lifecycle.lua, $ROUNDS rounds, stores interleaved, fresh server (and data dir) per round"
    echo "wrk and augur share the machine's $(nproc) cores; AUGUR_WORKERS default (64)"
    echo '```'
    echo
    echo "| store | lifecycles/s (per round) | median lifecycles/s | median p50 | median p99 | augur CPU per lifecycle (median) |"
    echo "|---|---|---|---|---|---|"
    for store in $STORES; do
        # shellcheck disable=SC2086
        echo "| $store | ${LPS[$store]% } | $(median ${LPS[$store]}) | $(median ${P50[$store]}) ms | $(median ${P99[$store]}) ms | $(median ${CPU[$store]}) us |"
    done
    echo
    echo "Every round: created == settled after the run, 0 non-2xx, 0 socket errors, every response 201 \"succeeded\"."
    echo
    if [[ " $STORES " == *" embedded "* ]]; then
        # shellcheck disable=SC2086
        e="$(median ${LPS[embedded]})"
        echo "embedded (durable): **$e/s**, target 10,000/s: $(awk -v e="$e" 'BEGIN { print (e >= 10000 ? "met" : "NOT met") }'); $(awk -v e="$e" 'BEGIN { printf "%.0f", 100 * e / 6100 }')% of BullMQ's 6,100/s (measured earlier on this machine, not in this run)."
        if [[ " $STORES " == *" memory "* ]]; then
            # shellcheck disable=SC2086
            m="$(median ${LPS[memory]})"
            echo "embedded / memory (same run): $(awk -v e="$e" -v m="$m" 'BEGIN { printf "%.1f", 100 * e / m }')%."
        fi
        if [ -n "${BASELINE:-}" ]; then
            # shellcheck disable=SC2086
            b="$(median ${LPS[embedded@$BASELINE]})"
            echo "embedded now / embedded at $BASELINE (same run): $(awk -v e="$e" -v b="$b" 'BEGIN { printf "%.1f", 100 * e / b }')%."
        fi
    fi
    echo
    echo "store operations in the last round (operation:outcome count, including the warm-up):"
    echo
    for store in $STORES; do
        echo "- $store: $(sed -n 's/^store_ops: //p' "$RUN/round$ROUNDS-${store//@/-at-}.check.txt")"
    done
    echo
    if [ "${DIAGNOSE:-1}" = 1 ]; then
        echo "where the time goes (one extra 8 s wrk run per store, not counted above; perf stat and /proc/PID/task CPU times over it):"
        echo
        echo '```text'
        for store in $STORES; do cat "$RUN/diagnostic-$store.txt"; done
        echo '```'
        echo
    fi
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
