#!/usr/bin/env bash
# bench/shared-reads.sh: status reads, GET /v1/predictions/{id}, on the shared stores (Redis,
# PostgreSQL), with and without Augur's read cache, beside the engines' own benchmarks on the
# same servers in the same run.
#
# Servers (throwaway, loopback; see bench/lib-shared.sh): one redis-server (--appendonly yes
# --appendfsync everysec; reads do not touch the disk) and one PostgreSQL cluster (initdb,
# default settings).
#
# Augur: one node per configuration, each serving one succeeded augur/echo prediction created
# through it, loaded with `wrk -t2 -c64 -d10s --latency` (bench/wrk-report.lua) on
# GET /v1/predictions/{id} with the Authorization header:
#   augur-redis-cache      AUGUR_STORE=redis://...     read cache on (default: entries kept
#                                                       at most 5 s, invalidated by the
#                                                       store's announcements)
#   augur-redis-nocache    same, AUGUR_CACHE_MAX_STALENESS=0s (every read goes to Redis)
#   augur-postgres-cache   AUGUR_STORE=postgres://... (pool_size default 16)
#   augur-postgres-nocache same, AUGUR_CACHE_MAX_STALENESS=0s
# References, same servers:
#   redis-benchmark   redis-benchmark -t get -c 64 -n REDIS_BENCH_N (default 1,000,000)
#                     --threads 2 -d <size of the prediction's JSON>, after SET of that key
#   pgbench -S        pgbench -i (scale 1) once, then pgbench -S -c 64 -j 2 -T 10 -l
#                     (p50/p99 from the per-transaction log)
# ROUNDS rounds (default 3), every configuration once per round (order alternating), 2 s wrk
# warm-up per node before the first round; medians of the rounds. The cache's hits and misses
# and the store's get operations over the measured runs are read from /metrics. A measurement
# during which rustc, cargo or a test binary ran is dropped and repeated (up to 3 attempts;
# see `measure` in bench/lib-shared.sh).
#
# Everything shares the machine's cores (2 on the development machine).
#
# Run from anywhere:  bench/shared-reads.sh   (env: ROUNDS=3 DURATION=10s CONNECTIONS=64
#                                              REDIS_BENCH_N=1000000)
# Raw output: bench/results/raw/shared-reads-<time>/; summary: bench/results/shared-reads.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/lib-shared.sh
source "$BENCH_DIR/lib-shared.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
REDIS_BENCH_N="${REDIS_BENCH_N:-1000000}"
THREADS=2

ensure_wrk
build_release_shared
RUN="$RESULTS/raw/shared-reads-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"

start_redis everysec
start_postgres
pg_sql postgres "CREATE DATABASE augur" >/dev/null
pg_sql postgres "CREATE DATABASE pgbench" >/dev/null
log "redis on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID), postgresql on 127.0.0.1:$PG_PORT (pid $PG_PID)"

CONFIGS="${CONFIGS:-augur-redis-cache augur-redis-nocache augur-postgres-cache augur-postgres-nocache}"
declare -A URL PID
for cfg in $CONFIGS; do
    case "$cfg" in
        augur-redis-*) store="redis://127.0.0.1:$REDIS_PORT/0?prefix=reads-$cfg:" ;;
        augur-postgres-*) store="postgres://postgres@127.0.0.1:$PG_PORT/augur?schema=${cfg//-/_}" ;;
    esac
    extra=()
    [[ "$cfg" == *-nocache ]] && extra=(AUGUR_CACHE_MAX_STALENESS=0s)
    start_augur_shared "$store" "$RUN/$cfg.augur.log" "${extra[@]}"
    created="$(create_one "$AUGUR_URL")"
    id="$(jq -r .id <<<"$created")"
    [ "$(jq -r .status <<<"$created")" = succeeded ] || { log "prediction did not succeed on $cfg: $created"; exit 1; }
    URL[$cfg]="$AUGUR_URL/v1/predictions/$id"
    PID[$cfg]="$AUGUR_PID"
    curl -sf -H "Authorization: Bearer $TOKEN" "${URL[$cfg]}" >"$RUN/$cfg.get.json"
    log "$cfg at ${URL[$cfg]} (pid $AUGUR_PID, $(wc -c <"$RUN/$cfg.get.json") bytes)"
done
SIZE="$(wc -c <"$RUN/$cfg.get.json")"

# The reference data: one key of the prediction's size for redis-benchmark; pgbench's tables.
rcli set 'key:__rand_int__' "$(head -c "$SIZE" /dev/zero | tr '\0' x)" >/dev/null
pgbench -i -q -h 127.0.0.1 -p "$PG_PORT" -U postgres pgbench >"$RUN/pgbench-init.txt" 2>&1

wait_quiet
for cfg in $CONFIGS; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Authorization: Bearer $TOKEN" "${URL[$cfg]}" >/dev/null
done

declare -A RPS P50 P99 REQS HITS MISSES GETS
# (CONFIGS=... runs a subset of the Augur configurations; the references always run.)
# cache_stats URL: "hits misses store_gets" so far.
cache_stats() {
    echo "$(metric_sum "$1" augur_cache_reads_total 'result="hit"') $(metric_sum "$1" augur_cache_reads_total 'result="miss"') $(metric_sum "$1" augur_store_operation_duration_seconds_count 'operation="get"')"
}

# run_augur_reads CFG OUT: one wrk run against the node of CFG.
run_augur_reads() {
    local cfg="$1" out="$2" base="${URL[$1]%%/v1/*}" h0 m0 g0 h1 m1 g1 j
    read -r h0 m0 g0 <<<"$(cache_stats "$base")"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH_DIR/wrk-report.lua" \
        -H "Authorization: Bearer $TOKEN" "${URL[$cfg]}" >"$out"
    read -r h1 m1 g1 <<<"$(cache_stats "$base")"
    j="$(wrk_json "$out")"
    if [ "$(jq '.non2xx + .socket_errors' <<<"$j")" != 0 ]; then
        log "errors in $out: $j"
        exit 1
    fi
    pend RPS "$cfg" "$(jq .rps <<<"$j")"; pend P50 "$cfg" "$(jq .p50_ms <<<"$j")"; pend P99 "$cfg" "$(jq .p99_ms <<<"$j")"
    pend REQS "$cfg" "$(jq .requests <<<"$j")"
    pend HITS "$cfg" "$((h1 - h0))"; pend MISSES "$cfg" "$((m1 - m0))"; pend GETS "$cfg" "$((g1 - g0))"
    log "round $round $cfg: $(jq -c '{rps, p50_ms, p99_ms}' <<<"$j") cache hits $((h1 - h0)) misses $((m1 - m0)) store gets $((g1 - g0))"
}

run_redis_benchmark() {
    local out="$1" line
    redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t get -c "$CONNECTIONS" -n "$REDIS_BENCH_N" \
        -d "$SIZE" --threads 2 --csv --precision 3 >"$out" 2>&1
    line="$(grep '^"GET"' "$out" | tr -d '"')"
    [ -n "$line" ] || { log "redis-benchmark failed: $(cat "$out")"; exit 1; }
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
    pend RPS redis-benchmark "$rps"; pend P50 redis-benchmark "$p50"; pend P99 redis-benchmark "$p99"
    log "round $round redis-benchmark: rps=$rps p50=$p50 p99=$p99"
}

run_pgbench() {
    local out="$1" dir tps p50 p99
    dir="$(temp_dir)"
    (cd "$dir" && pgbench -S -c "$CONNECTIONS" -j 2 -T "${DURATION%s}" -l --log-prefix=tx \
        -h 127.0.0.1 -p "$PG_PORT" -U postgres pgbench) >"$out" 2>&1 || { log "pgbench failed: $(cat "$out")"; exit 1; }
    tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")"
    # Log lines: client_id transaction_no time_us script_no time_epoch time_us_part.
    read -r p50 p99 <<<"$(cat "$dir"/tx.* | awk '{ print $3 }' | sort -n |
        awk '{ a[NR] = $1 } END { printf "%.3f %.3f\n", a[int(NR * 0.50)] / 1000, a[int(NR * 0.99)] / 1000 }')"
    rm -rf "$dir"
    pend RPS pgbench "$tps"; pend P50 pgbench "$p50"; pend P99 pgbench "$p99"
    log "round $round pgbench -S: tps=$tps p50=$p50 p99=$p99"
}

for ((round = 1; round <= ROUNDS; round++)); do
    order="augur-redis-cache augur-redis-nocache redis-benchmark augur-postgres-cache augur-postgres-nocache pgbench"
    ((round % 2)) || order="pgbench augur-postgres-nocache augur-postgres-cache redis-benchmark augur-redis-nocache augur-redis-cache"
    for cfg in $order; do
        [[ "$cfg" != augur-* || " $CONFIGS " == *" $cfg "* ]] || continue
        out="$RUN/round$round-$cfg.txt"
        case "$cfg" in
            redis-benchmark) measure run_redis_benchmark "$out" ;;
            pgbench) measure run_pgbench "$out" ;;
            *) measure run_augur_reads "$cfg" "$out" ;;
        esac
    done
done

# One extra run per Augur configuration, not counted: CPU per read (Augur by thread; the
# store server's CPU).
if [ "${DIAGNOSE:-1}" = 1 ]; then
    diagnose_reads() {
        local cfg="$1" s0 s1 n
        if [[ "$cfg" == augur-redis-* ]]; then s0="$(tree_cpu_s "$REDIS_PID")"; else s0="$(tree_cpu_s "$PG_PID")"; fi
        {
            echo "config=$cfg"
            diagnose_load "${PID[$cfg]}" "$RUN/diagnostic-$cfg" read -t"$THREADS" -c"$CONNECTIONS" -d8s \
                -s "$BENCH_DIR/wrk-report.lua" -H "Authorization: Bearer $TOKEN" "${URL[$cfg]}"
        } >"$RUN/diagnostic-$cfg.txt"
        if [[ "$cfg" == augur-redis-* ]]; then s1="$(tree_cpu_s "$REDIS_PID")"; else s1="$(tree_cpu_s "$PG_PID")"; fi
        n="$(wrk_json "$RUN/diagnostic-$cfg.wrk.txt" | jq .requests)"
        echo "store server cpu_us_per_read: $(awk -v a="$s0" -v b="$s1" -v n="$n" 'BEGIN { printf "%.0f", 1e6 * (b - a) / n }')" >>"$RUN/diagnostic-$cfg.txt"
        log "diagnostic $cfg: $(tr '\n' ';' <"$RUN/diagnostic-$cfg.txt")"
    }
    for cfg in $CONFIGS; do measure diagnose_reads "$cfg"; done
fi

# Cache probe, not timed: on each node with the cache on, create a new prediction and read it
# once a second for 8 s; record whether each read was a cache hit (the cache keeps entries at
# most AUGUR_CACHE_MAX_STALENESS, 5 s by default, and should refill them on the next read).
probe_cache() {
    local cfg="$1" base="${URL[$1]%%/v1/*}" id h0 h1 line="" t
    id="$(create_one "$base" | jq -r .id)"
    for ((t = 1; t <= 8; t++)); do
        sleep 1
        h0="$(metric_sum "$base" augur_cache_reads_total 'result="hit"')"
        curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$base/v1/predictions/$id"
        h1="$(metric_sum "$base" augur_cache_reads_total 'result="hit"')"
        line+="${t}s:$([ "$h1" -gt "$h0" ] && echo hit || echo miss) "
    done
    echo "$cfg: $line"
}
PROBES=""
for cfg in $CONFIGS; do
    [[ "$cfg" == *-cache ]] && PROBES+="$(probe_cache "$cfg")"$'\n'
done

med() { median $1; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
summary="$RESULTS/shared-reads.md"
{
    echo "# status reads on the shared stores: GET /v1/predictions/{id}"
    echo
    echo '```text'
    machine_info
    redis_info
    pg_info
    echo "augur: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, one succeeded augur/echo prediction ($SIZE bytes of JSON), one node per configuration"
    echo "redis-benchmark -t get -c $CONNECTIONS -n $REDIS_BENCH_N --threads 2 -d $SIZE; pgbench -S -c $CONNECTIONS -j 2 -T ${DURATION%s} (scale 1)"
    echo "$ROUNDS rounds, order alternating; everything shares the machine's $(nproc) cores"
    echo '```'
    echo
    echo "| engine | server | per second (per round) | median per second | median p50 | median p99 |"
    echo "|---|---|---|---|---|---|"
    for cfg in augur-redis-cache augur-redis-nocache redis-benchmark augur-postgres-cache augur-postgres-nocache pgbench; do
        case "$cfg" in
            augur-redis-cache) label="Redis | Augur, read cache on (default)" ;;
            augur-redis-nocache) label="Redis | Augur, AUGUR_CACHE_MAX_STALENESS=0s" ;;
            redis-benchmark) label="Redis | redis-benchmark -t get (reference)" ;;
            augur-postgres-cache) label="PostgreSQL | Augur, read cache on (default)" ;;
            augur-postgres-nocache) label="PostgreSQL | Augur, AUGUR_CACHE_MAX_STALENESS=0s" ;;
            pgbench) label="PostgreSQL | pgbench -S (reference)" ;;
        esac
        [ -n "${RPS[$cfg]:-}" ] || continue
        echo "| $label | ${RPS[$cfg]% } | **$(med "${RPS[$cfg]}")** | $(med "${P50[$cfg]}") ms | $(med "${P99[$cfg]}") ms |"
    done
    echo
    rb="$(med "${RPS[redis-benchmark]}")"; pb="$(med "${RPS[pgbench]}")"
    [ -n "${RPS[augur-redis-cache]:-}" ] && echo "- Redis: Augur with cache / redis-benchmark = **$(pct "$(med "${RPS[augur-redis-cache]}")" "$rb")**; without cache = **$(pct "$(med "${RPS[augur-redis-nocache]}")" "$rb")**"
    [ -n "${RPS[augur-postgres-cache]:-}" ] && echo "- PostgreSQL: Augur with cache / pgbench -S = **$(pct "$(med "${RPS[augur-postgres-cache]}")" "$pb")**; without cache = **$(pct "$(med "${RPS[augur-postgres-nocache]}")" "$pb")**"
    echo
    echo "Cache and store reads over the measured runs (from /metrics):"
    echo
    sum() { printf '%s\n' $1 | awk '{ s += $1 } END { printf "%d", s }'; }
    for cfg in $CONFIGS; do
        echo "- $cfg: $(sum "${REQS[$cfg]}") requests; cache hits $(sum "${HITS[$cfg]}"), misses $(sum "${MISSES[$cfg]}"); store get operations $(sum "${GETS[$cfg]}")"
    done
    echo
    echo "Cache probe (a new prediction read once a second after its create; hit or miss of the read cache):"
    echo
    echo '```text'
    printf '%s' "$PROBES"
    echo '```'
    echo
    if ((${#NOISY_RUNS[@]})); then
        echo "**Noisy:** a build or test ran during these measurements in all ${MEASURE_ATTEMPTS:-3} attempts (kept anyway): ${NOISY_RUNS[*]}"
        echo
    fi
    if [ "${DIAGNOSE:-1}" = 1 ]; then
        echo "where the time goes (one extra 8 s wrk run per configuration, not counted above):"
        echo
        echo '```text'
        for cfg in $CONFIGS; do cat "$RUN/diagnostic-$cfg.txt"; echo; done
        echo '```'
        echo
    fi
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
