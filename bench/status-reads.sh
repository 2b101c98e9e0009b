#!/usr/bin/env bash
# bench/status-reads.sh: status reads, `GET /v1/predictions/{id}` over HTTP on loopback.
#
# Measures requests/s, p50 and p99 of Augur answering GET /v1/predictions/{id} (embedded store
# in a temporary directory, one succeeded augur/echo prediction) against the reference: the
# `bare-axum` binary (crates/bench) answering the same route with the same JSON bytes from
# memory. Load: `wrk -t2 -c64 -d10s --latency` with the Authorization header, against both,
# interleaved (the order alternates per round), ROUNDS rounds (default 3) after a 2 s warm-up
# of each. Reports medians and the ratio Augur/bare. Target: >= 60% of bare, p99 < 5 ms.
#
# wrk, Augur and bare-axum all run on this machine and share its cores (2 on the development
# machine), so the load generator takes CPU from the server under test, for both servers.
#
# Then one extra 8 s run per server, not counted: CPU time per request by thread, context
# switches per request (DIAGNOSE=0 skips it).
#
# Run from anywhere:  bench/status-reads.sh        (env: ROUNDS=3 DURATION=10s CONNECTIONS=64)
# Raw wrk output: bench/results/raw/status-reads-<time>/; summary: bench/results/status-reads.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS=2

ensure_wrk
build_release
RUN="$RESULTS/raw/status-reads-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
data="$(temp_dir)"

start_augur "embedded://$data/store" "$RUN/augur.log"
log "augur at $AUGUR_URL (pid $AUGUR_PID)"
created="$(create_one "$AUGUR_URL")"
id="$(jq -r .id <<<"$created")"
[ "$(jq -r .status <<<"$created")" = succeeded ] || { log "prediction did not succeed: $created"; exit 1; }
curl -sf -H "Authorization: Bearer $TOKEN" "$AUGUR_URL/v1/predictions/$id" >"$RUN/get.json"
log "captured GET /v1/predictions/$id ($(wc -c <"$RUN/get.json") bytes)"

start_bare "$RUN/get.json" "$RUN/bare.log"
log "bare-axum at $BARE_URL (pid $BARE_PID)"
curl -sf "$BARE_URL/v1/predictions/$id" | cmp -s - "$RUN/get.json" ||
    { log "bare-axum does not return the same bytes"; exit 1; }

declare -A URL=([augur]="$AUGUR_URL/v1/predictions/$id" [bare]="$BARE_URL/v1/predictions/$id")

wait_quiet
for target in augur bare; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Authorization: Bearer $TOKEN" "${URL[$target]}" >/dev/null
done

declare -A RPS P50 P99
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(augur bare); else order=(bare augur); fi
    for target in "${order[@]}"; do
        out="$RUN/round$round-$target.txt"
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH_DIR/wrk-report.lua" \
            -H "Authorization: Bearer $TOKEN" "${URL[$target]}" >"$out"
        j="$(wrk_json "$out")"
        if [ "$(jq '.non2xx + .socket_errors' <<<"$j")" != 0 ]; then
            log "errors in $out: $j"
            exit 1
        fi
        RPS[$target]+="$(jq .rps <<<"$j") "
        P50[$target]+="$(jq .p50_ms <<<"$j") "
        P99[$target]+="$(jq .p99_ms <<<"$j") "
        log "round $round $target: $(jq -c '{rps, p50_ms, p99_ms}' <<<"$j")"
    done
done

# One extra run per server, not counted: where the CPU time goes (see lib.sh's diagnose_load).
if [ "${DIAGNOSE:-1}" = 1 ]; then
    for target in augur bare; do
        if [ "$target" = augur ]; then pid="$AUGUR_PID"; else pid="$BARE_PID"; fi
        {
            echo "server=$target"
            diagnose_load "$pid" "$RUN/diagnostic-$target" read -t"$THREADS" -c"$CONNECTIONS" -d8s \
                -s "$BENCH_DIR/wrk-report.lua" -H "Authorization: Bearer $TOKEN" "${URL[$target]}"
        } >"$RUN/diagnostic-$target.txt"
        log "diagnostic $target: $(tr '\n' ';' <"$RUN/diagnostic-$target.txt")"
    done
fi

# shellcheck disable=SC2086
{
    a_rps="$(median ${RPS[augur]})"; b_rps="$(median ${RPS[bare]})"
    a_p50="$(median ${P50[augur]})"; b_p50="$(median ${P50[bare]})"
    a_p99="$(median ${P99[augur]})"; b_p99="$(median ${P99[bare]})"
}
ratio="$(awk -v a="$a_rps" -v b="$b_rps" 'BEGIN { printf "%.1f", 100 * a / b }')"
rps_met="$(awk -v r="$ratio" 'BEGIN { print (r >= 60 ? "met" : "NOT met") }')"
p99_met="$(awk -v p="$a_p99" 'BEGIN { print (p < 5 ? "met" : "NOT met") }')"

summary="$RESULTS/status-reads.md"
{
    echo "# status reads: GET /v1/predictions/{id}"
    echo
    echo '```text'
    machine_info
    echo "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS rounds, interleaved; wrk and both servers share the machine's $(nproc) cores"
    echo "response: $(wc -c <"$RUN/get.json") bytes of JSON (a succeeded augur/echo prediction); embedded store"
    echo '```'
    echo
    echo "| server | requests/s (per round) | median requests/s | median p50 | median p99 |"
    echo "|---|---|---|---|---|"
    echo "| augur | ${RPS[augur]% } | $a_rps | $a_p50 ms | $a_p99 ms |"
    echo "| bare axum, same JSON from memory | ${RPS[bare]% } | $b_rps | $b_p50 ms | $b_p99 ms |"
    echo
    echo "augur / bare: **$ratio%** (target >= 60%: $rps_met); augur p99 $a_p99 ms (target < 5 ms: $p99_met)"
    echo
    if [ "${DIAGNOSE:-1}" = 1 ]; then
        echo "where the time goes (one extra 8 s wrk run per server, not counted above; perf stat and /proc/PID/task CPU times over it):"
        echo
        echo '```text'
        cat "$RUN/diagnostic-augur.txt" "$RUN/diagnostic-bare.txt"
        echo '```'
        echo
    fi
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
