#!/usr/bin/env bash
# bench/shared-lifecycles.sh: durable whole lifecycles per second on the shared stores (Redis,
# PostgreSQL), beside BullMQ on the same Redis and graphile-worker on the same PostgreSQL.
#
# Servers (throwaway, loopback, started and stopped here; see bench/lib-shared.sh):
#   one redis-server with --appendonly yes, switched between --appendfsync everysec and
#   always (CONFIG SET) for the two Redis configurations, no RDB snapshots; emptied and its
#   AOF rewritten (FLUSHALL, BGREWRITEAOF) before every measurement;
#   one PostgreSQL cluster (initdb; default durability: fsync on, synchronous_commit on).
#
# Augur (one node, AUGUR_WORKERS default 64, read cache default): `augur serve` with
#   AUGUR_STORE=redis://127.0.0.1:PORT/0?prefix=<fresh>   and
#   AUGUR_STORE=postgres://postgres@127.0.0.1:PORT/augur?schema=<fresh>
# loaded as bench/lifecycles.sh does: wrk -t2 -c64 -d12s with bench/wrk-lifecycle.lua (POST
# /v1/models/augur/echo/predictions with Prefer: wait, each request one whole lifecycle, each
# response checked to be 201 "succeeded"); after the run, augur_predictions_settled_total must
# equal augur_predictions_created_total and augur_jobs_total{outcome="succeeded"} (waits up to
# 60 s for lifecycles wrk cut off; how long is reported).
#
# References, same servers, same run (bench/node, versions pinned in package-lock.json):
#   bullmq     bench/node/bullmq-bench.js: a Worker (concurrency 64) whose processor calls
#              job.updateProgress twice and returns, fed by a second process adding
#              BULLMQ_JOBS jobs (default 60,000) with Queue.addBulk in batches of 1,000;
#              completed jobs/s from the first job's start to the last completion.
#   graphile   bench/node/graphile-bench.js: BULK enqueue of GRAPHILE_JOBS jobs (default
#              100,000) with addJobs (add_jobs), then a runner with concurrency 64 and a no-op
#              task; completed jobs/s from the runner's start to the last success. Two modes:
#              "batched" (graphile-worker's documented performance settings: localQueue 500,
#              batched completion; the target's reference) and "default" (library defaults,
#              GRAPHILE_DEFAULT_JOBS jobs, default 20,000).
# Ceiling (same run): Augur on its memory store (`AUGUR_STORE=memory://`, nothing written to
# disk, no store server), loaded the same way: what the HTTP path, the worker and wrk cost on
# this machine with no store at all, so no durable store can go faster here.
#
# Each in a fresh queue / schema / database. ROUNDS rounds (default 3), systems interleaved,
# medians reported. Targets (brief): Augur on Redis >= 2x BullMQ on the same Redis (each
# appendfsync setting); Augur on PostgreSQL >= graphile-worker's bulk rate.
#
# Then (DIAGNOSE=1, default) one extra, uncounted 8 s run of Augur per backend: CPU per
# lifecycle by thread (lib.sh diagnose_load, with perf stat if installed), the server's CPU
# and, for Redis, commands per lifecycle (INFO commandstats, script calls included) and AOF
# fdatasync calls (perf); for PostgreSQL, commits and WAL syncs per lifecycle (pg_stat_wal,
# pg_stat_database), samples of pg_stat_activity wait events (what backends wait on) and of
# waiting pg_locks, statements per lifecycle (pg_stat_statements, loaded by a restart after
# the measured rounds), and one more run with pool_size=64.
#
# A measurement during which rustc, cargo or a test binary ran is dropped and repeated (up to
# 3 attempts; see `measure` in bench/lib-shared.sh): the machine is shared with builds.
#
# Everything shares the machine's cores (2 on the development machine): wrk or node, Augur,
# and the store server.
#
# Run from anywhere:  bench/shared-lifecycles.sh   (env: ROUNDS=3 DURATION=12s CONNECTIONS=64
#                     BULLMQ_JOBS=60000 GRAPHILE_JOBS=100000 GRAPHILE_DEFAULT_JOBS=20000
#                     SYSTEMS="augur-memory augur-redis bullmq augur-postgres graphile" FSYNCS="everysec
#                     always" DIAGNOSE=1)
# Raw output: bench/results/raw/shared-lifecycles-<time>/; summary:
# bench/results/shared-lifecycles.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/lib-shared.sh
source "$BENCH_DIR/lib-shared.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-12s}"
CONNECTIONS="${CONNECTIONS:-64}"
BULLMQ_JOBS="${BULLMQ_JOBS:-60000}"
GRAPHILE_JOBS="${GRAPHILE_JOBS:-100000}"
GRAPHILE_DEFAULT_JOBS="${GRAPHILE_DEFAULT_JOBS:-20000}"
SYSTEMS="${SYSTEMS:-augur-memory augur-redis bullmq augur-postgres graphile}"
FSYNCS="${FSYNCS:-everysec always}"
THREADS=2

has() { [[ " $SYSTEMS " == *" $1 "* ]]; }

ensure_wrk
ensure_node_deps
build_release_shared
RUN="$RESULTS/raw/shared-lifecycles-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"

start_redis everysec
start_postgres
pg_sql postgres "CREATE DATABASE augur" >/dev/null
log "redis on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID), postgresql on 127.0.0.1:$PG_PORT (pid $PG_PID)"

declare -A RATE P50 P99 ACPU SCPU LCPU SETTLEW REWRITES
# record KEY RATE P50 P99 AUGUR_US SERVER_US LOADGEN_US: appends one round's figures.
# (Kept only if no build or test ran meanwhile; see `measure` in lib-shared.sh.)
record() {
    pend RATE "$1" "$2"; pend P50 "$1" "$3"; pend P99 "$1" "$4"
    pend ACPU "$1" "$5"; pend SCPU "$1" "$6"; pend LCPU "$1" "$7"
}
us_per() { awk -v c="$1" -v n="$2" 'BEGIN { printf "%.0f", (n > 0 ? 1e6 * c / n : 0) }'; }
delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# server_cpu KIND: CPU seconds of the store server so far.
# (For Redis, its AOF rewrite children included: tree_cpu_s counts reaped children's time.)
server_cpu() {
    case "$1" in
    redis) tree_cpu_s "$REDIS_PID" ;;
    postgres) tree_cpu_s "$PG_PID" ;;
    *) echo 0 ;;
    esac
}
# aof_rewrites: how many AOF rewrites the throwaway Redis has done (automatic ones start when
# the file doubles past 64 MB: auto-aof-rewrite-percentage 100, -min-size 64mb, the defaults).
aof_rewrites() { rcli info persistence | sed -n 's/^aof_rewrites:\([0-9]*\).*/\1/p'; }

# wait_settled URL: waits (up to 60 s: a lifecycle whose creating request wrk dropped can wait
# for its lease to expire, AUGUR_LEASE 30 s by default) until settled == created == jobs run;
# sets CREATED, SETTLED, SUCCEEDED and SETTLE_S (how long it waited).
wait_settled() {
    local i t0
    t0="$(date +%s.%N)"
    for ((i = 0; i < 600; i++)); do
        CREATED="$(metric "$1" augur_predictions_created_total)"
        SETTLED="$(metric "$1" augur_predictions_settled_total)"
        SUCCEEDED="$(metric_sum "$1" augur_jobs_total 'outcome="succeeded"')"
        [ "$CREATED" = "$SETTLED" ] && [ "$SUCCEEDED" = "$CREATED" ] && break
        sleep 0.1
    done
    SETTLE_S="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
}

SEQ=0
# run_augur KEY KIND OUT: one measured wrk run against a fresh Augur node on a fresh prefix
# (Redis, emptied first) or schema (PostgreSQL).
run_augur() {
    local key="$1" kind="$2" out="$3" url s0 s1 a0 a1 j n
    SEQ=$((SEQ + 1))
    if [ "$kind" = redis ]; then
        redis_reset
        url="redis://127.0.0.1:$REDIS_PORT/0?prefix=run$SEQ:"
    elif [ "$kind" = memory ]; then
        url="memory://"
    else
        url="postgres://postgres@127.0.0.1:$PG_PORT/augur?schema=run$SEQ"
    fi
    start_augur_shared "$url" "$out.augur.log"
    create_one "$AUGUR_URL" >/dev/null # warm-up: one lifecycle
    local rw0=0 rw1=0
    [ "$kind" = redis ] && rw0="$(aof_rewrites)"
    s0="$(server_cpu "$kind")"; a0="$(pcpu_s "$AUGUR_PID")"
    TIMEFORMAT='%R %U %S'
    { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency --timeout 10s \
        -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
        "$AUGUR_URL/v1/models/augur/echo/predictions" >"$out.wrk.txt" 2>"$out.wrk.err"; } 2>"$out.time"
    s1="$(server_cpu "$kind")"; a1="$(pcpu_s "$AUGUR_PID")"
    [ "$kind" = redis ] && rw1="$(aof_rewrites)"
    [ "$kind" = redis ] && pend REWRITES "$key" "$((rw1 - rw0))"
    wait_settled "$AUGUR_URL"
    local ops succeeded="$SUCCEEDED"
    ops="$(store_ops_shared "$AUGUR_URL")"
    stop_started "$AUGUR_PID"
    j="$(wrk_json "$out.wrk.txt")"
    n="$(jq .requests <<<"$j")"
    local wrk_user wrk_sys
    read -r _ wrk_user wrk_sys <"$out.time"
    {
        echo "key=$key created=$CREATED settled=$SETTLED jobs_succeeded=$succeeded settle_wait_s=$SETTLE_S"
        echo "aof_rewrites=$((rw1 - rw0))"
        echo "augur_cpu_s=$(delta "$a0" "$a1") server_cpu_s=$(delta "$s0" "$s1") wrk_cpu_s=$(awk -v u="$wrk_user" -v s="$wrk_sys" 'BEGIN { print u + s }')"
        echo "store_ops: $ops"
        echo "wrk: $j"
    } >"$out.check.txt"
    log "round $round $key: $(jq -c '{rps, p50_ms, p99_ms, succeeded, not_succeeded}' <<<"$j") created=$CREATED settled=$SETTLED (${SETTLE_S}s after wrk)"
    pend SETTLEW "$key" "$SETTLE_S"
    if [ "$CREATED" != "$SETTLED" ] || [ "$succeeded" != "$CREATED" ] ||
        [ "$(jq '.non2xx + .socket_errors + .not_succeeded' <<<"$j")" != 0 ]; then
        log "FAILED check in round $round ($key): see $out.check.txt and $out.wrk.err"
        exit 1
    fi
    record "$key" "$(jq .rps <<<"$j")" "$(jq .p50_ms <<<"$j")" "$(jq .p99_ms <<<"$j")" \
        "$(us_per "$(delta "$a0" "$a1")" "$n")" "$(us_per "$(delta "$s0" "$s1")" "$n")" \
        "$(us_per "$(awk -v u="$wrk_user" -v s="$wrk_sys" 'BEGIN { print u + s }')" "$n")"
}

# run_bullmq KEY QUEUE OUT: BullMQ worker + bulk producer on the throwaway Redis.
run_bullmq() {
    local key="$1" queue="$2" out="$3" wpid s0 s1 i j p
    redis_reset
    (cd "$BENCH_NODE_DIR" && exec node bullmq-bench.js work "$REDIS_PORT" "$queue" "$BULLMQ_JOBS" 64) \
        >"$out.worker.txt" 2>&1 &
    wpid=$!
    STARTED_PIDS+=("$wpid")
    for ((i = 0; i < 300; i++)); do
        grep -q '^READY' "$out.worker.txt" && break
        kill -0 "$wpid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^READY' "$out.worker.txt" || { log "bullmq worker did not start:"; cat "$out.worker.txt" >&2; exit 1; }
    s0="$(server_cpu redis)"
    local rw0 rw1
    rw0="$(aof_rewrites)"
    (cd "$BENCH_NODE_DIR" && node bullmq-bench.js produce "$REDIS_PORT" "$queue" "$BULLMQ_JOBS" 1000) \
        >"$out.producer.txt" 2>&1 || { log "bullmq producer failed:"; cat "$out.producer.txt" >&2; exit 1; }
    wait "$wpid" || { log "bullmq worker failed:"; cat "$out.worker.txt" >&2; exit 1; }
    forget_pid "$wpid"
    s1="$(server_cpu redis)"
    rw1="$(aof_rewrites)"
    pend REWRITES "$key" "$((rw1 - rw0))"
    j="$(grep -m1 '^BULLMQJSON ' "$out.worker.txt" | sed 's/^BULLMQJSON //')"
    p="$(grep -m1 '^PRODUCEDJSON ' "$out.producer.txt" | sed 's/^PRODUCEDJSON //')"
    log "round $round $key: $(jq -c '{jobs_per_s, seconds, counts, ok}' <<<"$j") producer $(jq -c '{added_per_s}' <<<"$p")"
    [ "$(jq .ok <<<"$j")" = true ] || { log "FAILED check in round $round ($key)"; exit 1; }
    record "$key" "$(jq .jobs_per_s <<<"$j")" - - - \
        "$(us_per "$(delta "$s0" "$s1")" "$BULLMQ_JOBS")" \
        "$(us_per "$(jq -n --argjson a "$j" --argjson b "$p" '$a.cpu_s + $b.cpu_s')" "$BULLMQ_JOBS")"
}

# run_graphile KEY MODE JOBS OUT: bulk enqueue then a runner, in a fresh database.
run_graphile() {
    local key="$1" mode="$2" jobs="$3" out="$4" db j
    SEQ=$((SEQ + 1))
    db="gw_${SEQ}_$mode"
    pg_sql postgres "CREATE DATABASE $db" >/dev/null
    (cd "$BENCH_NODE_DIR" && node graphile-bench.js "postgres://postgres@127.0.0.1:$PG_PORT/$db" "$jobs" 64 "$mode") \
        >"$out.txt" 2>&1 || { log "graphile-worker ($mode) failed:"; cat "$out.txt" >&2; exit 1; }
    j="$(grep -m1 '^GRAPHILEJSON ' "$out.txt" | sed 's/^GRAPHILEJSON //')"
    log "round $round $key: $(jq -c '{jobs_per_s, seconds, enqueued_per_s, left, ok}' <<<"$j")"
    pg_sql postgres "DROP DATABASE $db" >/dev/null
    record "$key" "$(jq .jobs_per_s <<<"$j")" - - - - "$(us_per "$(jq .cpu_s <<<"$j")" "$jobs")"
}

wait_quiet
{
    echo "$(redis_info | sed 's/appendfsync [a-z]*/appendfsync (switched per run)/')"
    pg_info
} >"$RUN/servers.txt"
for ((round = 1; round <= ROUNDS; round++)); do
    if has augur-memory; then
        measure run_augur augur-memory memory "$RUN/round$round-augur-memory"
    fi
    for fsync in $FSYNCS; do
        redis_fsync "$fsync"
        # Alternate which goes first, round by round.
        if ((round % 2)); then order="augur-redis bullmq"; else order="bullmq augur-redis"; fi
        for sys in $order; do
            has "$sys" || continue
            if [ "$sys" = augur-redis ]; then
                measure run_augur "augur-redis-$fsync" redis "$RUN/round$round-augur-redis-$fsync"
            else
                measure run_bullmq "bullmq-$fsync" "q$round$fsync" "$RUN/round$round-bullmq-$fsync"
            fi
        done
    done
    if ((round % 2)); then order="augur-postgres graphile"; else order="graphile augur-postgres"; fi
    for sys in $order; do
        has "$sys" || continue
        if [ "$sys" = augur-postgres ]; then
            measure run_augur augur-postgres postgres "$RUN/round$round-augur-postgres"
        else
            measure run_graphile graphile-batched batched "$GRAPHILE_JOBS" "$RUN/round$round-graphile-batched"
            measure run_graphile graphile-default default "$GRAPHILE_DEFAULT_JOBS" "$RUN/round$round-graphile-default"
        fi
    done
done
redis_fsync everysec

# ---- diagnostic runs (not counted) ----
# redis_cmdstats: "command calls" lines from INFO commandstats.
redis_cmdstats() { rcli info commandstats | sed -n 's/^cmdstat_\([a-z|_]*\):calls=\([0-9]*\),.*/\1 \2/p'; }

diagnose_redis() {
    local fsync="$1" out="$RUN/diagnostic-augur-redis-$1" before after s0 s1 n
    redis_fsync "$fsync"
    redis_reset
    rcli config resetstat >/dev/null
    start_augur_shared "redis://127.0.0.1:$REDIS_PORT/0?prefix=diag$fsync:" "$out.augur.log"
    create_one "$AUGUR_URL" >/dev/null
    before="$(redis_cmdstats)"
    s0="$(tree_cpu_s "$REDIS_PID")"
    if command -v perf >/dev/null; then
        perf stat -x, -o "$out.redis-perf.txt" -p "$REDIS_PID" \
            -e task-clock,context-switches,syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync,syscalls:sys_enter_write \
            -- sleep 9 &
        local perf_pid=$!
    fi
    {
        echo "store=redis appendfsync=$fsync"
        diagnose_load "$AUGUR_PID" "$out" lifecycle -t"$THREADS" -c"$CONNECTIONS" -d8s --timeout 10s \
            -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
            "$AUGUR_URL/v1/models/augur/echo/predictions"
    } >"$out.txt"
    s1="$(tree_cpu_s "$REDIS_PID")"
    [ -n "${perf_pid:-}" ] && wait "$perf_pid" 2>/dev/null || true
    after="$(redis_cmdstats)"
    n="$(wrk_json "$out.wrk.txt" | jq .requests)"
    {
        echo "redis-server cpu_us_per_lifecycle: $(us_per "$(delta "$s0" "$s1")" "$n")"
        printf 'redis commands per lifecycle (INFO commandstats; commands run by scripts included): '
        { printf '%s\n' "$before"; echo "--"; printf '%s\n' "$after"; } | awk -v n="$n" '
            $1 == "--" { later = 1; next } !later { b[$1] = $2; next }
            { d = $2 - b[$1]; if (d / n >= 0.01) printf "%s=%.2f ", $1, d / n }'
        echo
        if [ -f "$out.redis-perf.txt" ]; then
            # perf ran over ~9 s around the 8 s load: per lifecycle, approximately.
            awk -F, -v n="$n" '$1 ~ /^[0-9.]+$/ && $3 != "" {
                v = $1 / n; if ($3 == "task-clock") { v *= 1000; $3 = "task-clock_us" }
                printf "redis-server per_lifecycle %s: %.3f\n", $3, v }' "$out.redis-perf.txt"
        fi
        echo "store_ops: $(store_ops_shared "$AUGUR_URL")"
    } >>"$out.txt"
    stop_started "$AUGUR_PID"
    log "diagnostic redis $fsync: $(tr '\n' ';' <"$out.txt")"
}

# pg_counters: "wal_sync wal_write xact_commit" of the cluster / database augur.
pg_counters() {
    pg_sql postgres "SELECT (SELECT wal_sync FROM pg_stat_wal), (SELECT wal_write FROM pg_stat_wal), (SELECT xact_commit FROM pg_stat_database WHERE datname = 'augur')" | tr '|' ' '
}

# pg_enable_statements: restarts the cluster with pg_stat_statements loaded (after the measured
# rounds, for the diagnostics only) and creates the extension in database augur.
pg_enable_statements() {
    as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c shared_preload_libraries=pg_stat_statements" restart >"$PG_DIR/pg_ctl-restart.log" 2>&1
    PG_PID="$(head -1 "$PG_DIR/data/postmaster.pid")"
    pg_sql augur "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
}

diagnose_postgres() {
    local pool="$1" out="$RUN/diagnostic-augur-postgres-pool$1" c0 c1 s0 s1 n wpid i
    SEQ=$((SEQ + 1))
    start_augur_shared "postgres://postgres@127.0.0.1:$PG_PORT/augur?schema=diag$SEQ&pool_size=$pool" "$out.augur.log"
    create_one "$AUGUR_URL" >/dev/null
    sleep 0.5
    pg_sql augur "SELECT pg_stat_statements_reset()" >/dev/null
    c0="$(pg_counters)"
    s0="$(tree_cpu_s "$PG_PID")"
    {
        echo "store=postgres pool_size=$pool"
        diagnose_load "$AUGUR_PID" "$out" lifecycle -t"$THREADS" -c"$CONNECTIONS" -d8s --timeout 10s \
            -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
            "$AUGUR_URL/v1/models/augur/echo/predictions"
    } >"$out.txt" &
    wpid=$!
    # Sample what Augur's backends are doing, 5 times a second for 5 s, from the 2nd second.
    sleep 2
    for ((i = 0; i < 25; i++)); do
        pg_sql augur "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') || ' ' || state || ' | ' || left(regexp_replace(query, '\s+', ' ', 'g'), 60) FROM pg_stat_activity WHERE datname = 'augur' AND application_name LIKE 'augur%' AND pid <> pg_backend_pid()"
        pg_sql augur "SELECT 'LOCKWAIT ' || l.locktype || ' ' || coalesce(l.classid::regclass::text, '-') || ' objid=' || coalesce(l.objid::text, '-') || ' ' || l.mode FROM pg_locks l WHERE NOT l.granted" 2>/dev/null
        sleep 0.2
    done >"$out.samples.txt"
    wait "$wpid"
    c1="$(pg_counters)"
    s1="$(tree_cpu_s "$PG_PID")"
    n="$(wrk_json "$out.wrk.txt" | jq .requests)"
    {
        echo "postgres (postmaster + backends) cpu_us_per_lifecycle: $(us_per "$(delta "$s0" "$s1")" "$n")"
        read -r ws0 ww0 xc0 <<<"$c0"
        read -r ws1 ww1 xc1 <<<"$c1"
        awk -v n="$n" -v s="$((ws1 - ws0))" -v w="$((ww1 - ww0))" -v c="$((xc1 - xc0))" 'BEGIN {
            printf "per lifecycle: commits=%.2f wal_syncs=%.2f wal_writes=%.2f (wal_syncs per commit %.2f)\n", c / n, s / n, w / n, s / c }'
        echo "store_ops: $(store_ops_shared "$AUGUR_URL")"
        echo "backend samples (25 x every 0.2 s; wait_event_type:wait_event state | query), most frequent first:"
        # grep finds nothing when nothing waited: not a failure.
        { grep -v '^LOCKWAIT' "$out.samples.txt" || true; } | sort | uniq -c | sort -rn | head -8 | sed 's/^/  /'
        echo "ungranted pg_locks in the same samples:"
        { grep '^LOCKWAIT' "$out.samples.txt" || echo "none"; } | sort | uniq -c | sort -rn | head -4 | sed 's/^/  /'
        echo "statements per lifecycle (pg_stat_statements, database augur; calls, execution µs; by execution time):"
        pg_sql augur "SELECT to_char(calls::float8 / $n, 'FM990.00') || ' calls, ' || to_char(1000 * total_exec_time / $n, 'FM99990.0') || ' us | ' || left(regexp_replace(query, '\s+', ' ', 'g'), 70) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'augur') AND calls > $n / 100 ORDER BY total_exec_time DESC LIMIT 12" | sed 's/^/  /'
        pg_sql augur "SELECT 'all statements: ' || to_char(sum(calls)::float8 / $n, 'FM990.00') || ' calls, ' || to_char(1000 * sum(total_exec_time) / $n, 'FM99990.0') || ' us of execution per lifecycle' FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'augur')" | sed 's/^/  /'
    } >>"$out.txt"
    stop_started "$AUGUR_PID"
    log "diagnostic postgres pool $pool: $(tr '\n' ';' <"$out.txt")"
}

if [ "${DIAGNOSE:-1}" = 1 ]; then
    if has augur-redis; then for fsync in $FSYNCS; do measure diagnose_redis "$fsync"; done; fi
    if has augur-postgres; then
        pg_enable_statements
        measure diagnose_postgres 16
        measure diagnose_postgres 64
    fi
    redis_fsync everysec
fi

# ---- summary ----
med() { local v="${1:-}"; [ -z "${v// /}" ] && { echo "-"; return; }; [[ "$v" == *-* ]] && { echo "-"; return; }; median $v; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
row() {
    local key="$1" label="$2"
    [ -n "${RATE[$key]:-}" ] || return 0
    echo "| $label | ${RATE[$key]% } | **$(med "${RATE[$key]}")** | $(med "${P50[$key]}") | $(med "${P99[$key]}") | $(med "${ACPU[$key]}") | $(med "${SCPU[$key]}") | $(med "${LCPU[$key]}") |"
}
summary="$RESULTS/shared-lifecycles.md"
{
    echo "# whole lifecycles on the shared stores, beside BullMQ and graphile-worker"
    echo
    echo '```text'
    machine_info
    cat "$RUN/servers.txt"
    echo "node: $(node --version); bullmq $(jq -r .version "$BENCH_NODE_DIR/node_modules/bullmq/package.json"), ioredis $(jq -r .version "$BENCH_NODE_DIR/node_modules/ioredis/package.json"), graphile-worker $(jq -r .version "$BENCH_NODE_DIR/node_modules/graphile-worker/package.json"), pg $(jq -r .version "$BENCH_NODE_DIR/node_modules/pg/package.json")"
    echo "augur: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/wrk-lifecycle.lua (Prefer: wait), fresh node and prefix/schema per run, AUGUR_WORKERS default (64), read cache default"
    echo "bullmq: $BULLMQ_JOBS jobs, addBulk(1000) in a producer process, Worker concurrency 64, two updateProgress per job"
    echo "graphile-worker: bulk addJobs of $GRAPHILE_JOBS (batched) / $GRAPHILE_DEFAULT_JOBS (default) jobs, then run() concurrency 64, no-op task"
    echo "$ROUNDS rounds, systems interleaved (order alternating); everything shares the machine's $(nproc) cores"
    echo '```'
    echo
    echo "| system | per second (per round) | median per second | p50 ms | p99 ms | Augur CPU µs per lifecycle | store server CPU µs per job | load generator / node CPU µs per job |"
    echo "|---|---|---|---|---|---|---|---|"
    row augur-memory "Augur, memory store (not durable, no store server: the ceiling here)"
    for fsync in $FSYNCS; do
        row "augur-redis-$fsync" "Augur, Redis appendfsync $fsync"
        row "bullmq-$fsync" "BullMQ, same Redis, appendfsync $fsync (reference)"
    done
    row augur-postgres "Augur, PostgreSQL"
    row graphile-batched "graphile-worker bulk, documented performance settings (reference)"
    row graphile-default "graphile-worker bulk, library defaults"
    echo
    echo "Every Augur run: created == settled == augur_jobs_total{outcome=\"succeeded\"} afterwards, 0 non-2xx, 0 socket errors, every response 201 \"succeeded\". Every BullMQ run: all jobs completed, none failed. Every graphile-worker run: no job left, none failed."
    echo
    for fsync in $FSYNCS; do
        if [ -n "${RATE[augur-redis-$fsync]:-}" ] && [ -n "${RATE[bullmq-$fsync]:-}" ]; then
            r="$(ratio "$(med "${RATE[augur-redis-$fsync]}")" "$(med "${RATE[bullmq-$fsync]}")")"
            echo "- Redis, appendfsync $fsync: Augur / BullMQ = **${r}x** (target >= 2x: $(awk -v r="$r" 'BEGIN { print (r >= 2 ? "met" : "NOT met") }'))"
        fi
    done
    if [ -n "${RATE[augur-memory]:-}" ]; then
        for ref in $(for f in $FSYNCS; do echo "bullmq-$f"; done) graphile-batched; do
            [ -n "${RATE[$ref]:-}" ] || continue
            echo "- Ceiling: Augur on the memory store / $ref = **$(ratio "$(med "${RATE[augur-memory]}")" "$(med "${RATE[$ref]}")")x**"
        done
    fi
    if [ -n "${RATE[augur-postgres]:-}" ]; then
        for ref in graphile-batched graphile-default; do
            [ -n "${RATE[$ref]:-}" ] || continue
            r="$(ratio "$(med "${RATE[augur-postgres]}")" "$(med "${RATE[$ref]}")")"
            echo "- PostgreSQL: Augur / $ref = **${r}x** (target >= 1x: $(awk -v r="$r" 'BEGIN { print (r >= 1 ? "met" : "NOT met") }'))"
        done
    fi
    echo
    echo "seconds from the end of wrk until created == settled == jobs run (per round; over a second means a lifecycle waited for a lease to expire):"
    echo
    for key in augur-memory $(for f in $FSYNCS; do echo "augur-redis-$f"; done) augur-postgres; do
        [ -n "${SETTLEW[$key]:-}" ] && echo "- $key: ${SETTLEW[$key]% }"
    done
    echo
    echo "automatic AOF rewrites of the throwaway Redis during each measured run (a forked child; its CPU is in the store server column):"
    echo
    for fsync in $FSYNCS; do
        for key in "augur-redis-$fsync" "bullmq-$fsync"; do
            [ -n "${REWRITES[$key]:-}" ] && echo "- $key: ${REWRITES[$key]% }"
        done
    done
    echo
    if ((${#NOISY_RUNS[@]})); then
        echo "**Noisy:** a build or test ran during these measurements in all ${MEASURE_ATTEMPTS:-3} attempts (kept anyway): ${NOISY_RUNS[*]}"
        echo
    fi
    echo "store operations in the last round (operation:outcome=count, including the warm-up):"
    echo
    for key in $(for f in $FSYNCS; do echo "augur-redis-$f"; done) augur-postgres; do
        f="$RUN/round$ROUNDS-$key.check.txt"
        [ -f "$f" ] && echo "- $key: $(sed -n 's/^store_ops: //p' "$f")"
    done
    echo
    if [ "${DIAGNOSE:-1}" = 1 ]; then
        echo "where the time goes (one extra 8 s wrk run per configuration, not counted above):"
        echo
        echo '```text'
        for f in "$RUN"/diagnostic-*.txt; do
            case "$f" in *.wrk.txt | *.perf.txt | *.samples.txt | *.redis-perf.txt) continue ;; esac
            cat "$f"
            echo
        done
        echo '```'
        echo
    fi
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
