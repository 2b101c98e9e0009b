#!/usr/bin/env bash
# bench/batches.sh: what a batch saves (issue 10). Wraps `batches`
# (crates/bench/src/bin/batches.rs; documented there), against a fresh `augur serve` and a fresh
# store for every run (embedded in a temp dir; PostgreSQL: a new database on a throwaway cluster
# on loopback, see bench/lib-shared.sh), ROUNDS rounds (default 3), stores and measurements
# interleaved, medians:
#
# 1. Accepting ITEMS items (default 1000) of augur/echo:
#      batch-accept    one POST /v1/batches, request → 201
#      single-accept   ITEMS POST /v1/models/augur/echo/predictions (no Prefer: wait) from
#                      CLIENTS (64) concurrent clients, start → the last 201
#    Target (issue 10): the batch costs at most a tenth of the time per item.
# 2. Submit → completion webhook at a local receiver (axum on 127.0.0.1:0):
#      batch-webhook   one batch with "webhook": request → batch.completed arrives
#      single-webhook  the reference: ITEMS single creates from CLIENTS clients, each with
#                      "webhook" and "webhook_events_filter": ["completed"]; start → the last
#                      prediction's completed message arrives
#
# Each run also reports the server's CPU time (Augur; plus the postmaster and its backends on
# PostgreSQL) and its store operations (counts, summed durations from /metrics) during the
# timed part. The machine may be shared: a run during which rustc, cargo or a test binary ran
# is listed as noisy (and not repeated).
#
# Run from anywhere:  bench/batches.sh
#   env: ROUNDS=3 ITEMS=1000 CLIENTS=64 STORES="embedded postgres"
#        MEASURES="batch-accept single-accept batch-webhook single-webhook"
#        BENCH_QUIET_WAIT=1800 (seconds to wait for builds to end first)
#        BENCH_AUGUR=<binary> to skip the build
#        PG_WAITS=1: samples pg_stat_activity every 0.1 s during the PostgreSQL runs and logs
#        the active backends by wait event (a diagnosis; it costs CPU, so off by default)
# Raw output: bench/results/raw/batches-<time>/; summary: bench/results/batches.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/lib-shared.sh
source "$BENCH_DIR/lib-shared.sh"

ROUNDS="${ROUNDS:-3}"
ITEMS="${ITEMS:-1000}"
CLIENTS="${CLIENTS:-64}"
STORES="${STORES:-embedded postgres}"
MEASURES="${MEASURES:-batch-accept single-accept batch-webhook single-webhook}"

build_release_shared
# The bench binary is copied too, so that other builds cannot swap it mid-run.
cp "$ROOT/target/release/batches" "$BENCH_TMP/batches"
BIN="$BENCH_TMP/batches"
RUN="$RESULTS/raw/batches-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
for store in $STORES; do
    [ "$store" = postgres ] && start_postgres
done

# store_url STORE: a fresh store of STORE.
store_url() {
    case "$1" in
        embedded) echo "embedded://$(temp_dir)/store" ;;
        postgres)
            local db="b$RANDOM$RANDOM"
            pg_sql postgres "CREATE DATABASE $db" >/dev/null
            echo "postgres://postgres@127.0.0.1:$PG_PORT/$db"
            ;;
        *) log "unknown store $1"; return 1 ;;
    esac
}

NOISY=()
wait_quiet
for ((round = 1; round <= ROUNDS; round++)); do
    for store in $STORES; do
        for measure in $MEASURES; do
            out="$RUN/round$round-$store-$measure"
            start_augur_shared "$(store_url "$store")" "$out.augur.log"
            pids="$AUGUR_PID"
            [ "$store" = postgres ] && pids+=",$PG_PID"
            flag="$(mktemp "$BENCH_TMP/noise.XXXXXX")"
            (while :; do _noise_busy && echo busy >>"$flag"; sleep 0.5; done) &
            watcher=$!
            STARTED_PIDS+=("$watcher")
            if [ "$store" = postgres ] && [ "${PG_WAITS:-0}" = 1 ]; then
                (while :; do
                    pg_sql postgres "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-')
                        FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()" 2>/dev/null
                    sleep 0.1
                done >"$out.pgwaits") &
                sampler=$!
                STARTED_PIDS+=("$sampler")
            fi
            "$BIN" --url "$AUGUR_URL" --token "$TOKEN" --measure "$measure" --items "$ITEMS" \
                --clients "$CLIENTS" --pids "$pids" >"$out.json" 2>"$out.log" ||
                { log "FAILED: $store $measure (see $out.log)"; cat "$out.log" >&2; exit 1; }
            stop_started "$watcher"
            if [ "$store" = postgres ] && [ "${PG_WAITS:-0}" = 1 ]; then
                stop_started "$sampler"
                log "  PostgreSQL backends seen active (every 0.1 s), by wait event: $(sort "$out.pgwaits" | uniq -c | sort -rn | head -6 | awk '{ printf "%s %s; ", $2, $1 }')"
            fi
            stop_started "$AUGUR_PID"
            [ -s "$flag" ] && NOISY+=("round $round $store $measure")
            log "round $round $store $measure: $(jq -c '{accept_s, accept_us_per_item, webhook_s, server_cpu_s}' "$out.json")"
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
    # shellcheck disable=SC2046,SC2086
    echo "| $1 | $values | **$(median $(printf '%s\n' $values | grep -v '^-$' || echo -))** |"
}
# ratio_row LABEL STORE NUM_MEASURE DEN_MEASURE FILTER: per-round NUM/DEN and their median.
ratio_row() {
    local values="" a b
    for ((round = 1; round <= ROUNDS; round++)); do
        a="$RUN/round$round-$2-$3.json"
        b="$RUN/round$round-$2-$4.json"
        [ -f "$a" ] && [ -f "$b" ] || continue
        values+="$(jq -rn --slurpfile a "$a" --slurpfile b "$b" "(\$a[0] | $5) / (\$b[0] | $5) * 100 | round / 100") "
    done
    [ -n "$values" ] || return 0
    # shellcheck disable=SC2086
    echo "| $1 | ${values% } | **$(median $values)** |"
}

summary="$RESULTS/batches.md"
{
    echo "# bench/batches.sh: batches against single creates (issue 10)"
    echo
    echo '```text'
    machine_info
    [[ " $STORES " == *" postgres "* ]] && pg_info
    echo "command: ROUNDS=$ROUNDS ITEMS=$ITEMS CLIENTS=$CLIENTS bench/batches.sh   (stores: $STORES)"
    echo "batch body: $(col embedded batch-accept .body_bytes | awk '{ print $1 }') bytes for $ITEMS items"
    if [ "${#NOISY[@]}" -gt 0 ]; then
        echo "a build or test binary ran during: $(printf '%s; ' "${NOISY[@]}")(noise)"
    fi
    echo '```'
    for store in $STORES; do
        echo
        echo "## $store"
        echo
        echo "| | per round | median |"
        echo "|---|---|---|"
        row "batch of $ITEMS: request → 201 (s)" "$store" batch-accept .accept_s
        row "batch: µs per item" "$store" batch-accept .accept_us_per_item
        row "$ITEMS single creates, $CLIENTS clients: start → last 201 (s)" "$store" single-accept .accept_s
        row "single: µs per item" "$store" single-accept .accept_us_per_item
        row "single: one create's latency p50 (ms)" "$store" single-accept .latency_p50_ms
        row "single: one create's latency p99 (ms)" "$store" single-accept .latency_p99_ms
        ratio_row "**batch / single, time per item** (target ≤ 0.10)" "$store" batch-accept single-accept .accept_s
        row "server CPU while accepting the batch (s)" "$store" batch-accept .server_cpu_s
        [ "$store" = postgres ] && row "… of which PostgreSQL (postmaster and backends)" "$store" batch-accept .others_cpu_s
        row "server CPU while accepting the singles (s)" "$store" single-accept .server_cpu_s
        [ "$store" = postgres ] && row "… of which PostgreSQL" "$store" single-accept .others_cpu_s
        # The engine starts on the items as soon as the batch committed, so writes that overlap
        # the 201 and the /metrics read may be counted too: the batch write's own duration is
        # only known in runs that counted one write ("-" otherwise; the median skips those).
        row "batch: store writes counted between the request and the metrics read after the 201" "$store" batch-accept '.store_ops.write.count // 0'
        row "batch: the batch write's duration (s; runs with one write)" "$store" batch-accept 'if .store_ops.write.count == 1 then .store_ops.write.seconds else "-" end'
        row "batch: request → every item settled (s, polled every 20 ms)" "$store" batch-accept .settled_s
        row "batch with webhook: request → 201 (s)" "$store" batch-webhook .accept_s
        row "batch with webhook: request → the last item's completed_at (s, server clock)" "$store" batch-webhook .last_item_completed_s
        row "batch with webhook: request → the batch's completed_at (s, its tally)" "$store" batch-webhook .batch_completed_s
        row "batch with webhook: request → batch.completed received (s)" "$store" batch-webhook .webhook_s
        row "reference, $ITEMS singles with webhooks: start → last 201 (s)" "$store" single-webhook .accept_s
        row "reference: start → the last completed_at (s, server clock)" "$store" single-webhook .last_item_completed_s
        row "reference: start → last completed webhook received (s)" "$store" single-webhook .webhook_s
        ratio_row "batch / reference, submit → last webhook" "$store" batch-webhook single-webhook .webhook_s
    done
    echo
    echo "Checks, per run: batch final status (batch-accept): $(for s in $STORES; do col "$s" batch-accept .final_status; done | tr '\n' ' ');" \
        "batch.completed status: $(for s in $STORES; do col "$s" batch-webhook .webhook_status; done | tr '\n' ' ');" \
        "single creates not answered 201: $(for s in $STORES; do col "$s" single-accept .errors; col "$s" single-webhook .errors; done | tr '\n' ' ');" \
        "completed webhooks received (of $ITEMS): $(for s in $STORES; do col "$s" single-webhook .webhooks_received; done | tr '\n' ' ')."
    echo
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
