#!/usr/bin/env bash
# bench/memory.sh: resident memory of Augur (embedded store, sync=full).
#
# (a) Idle server: start `augur serve` on a fresh data directory, wait 2 s, read VmRSS from
#     /proc/PID/status. Target < 30 MB.
# (b) Per stored, idle prediction: on a fresh data directory, start the server, run one
#     warm-up lifecycle, wait 2 s, read the baseline RSS; create COUNT/10 augur/echo
#     predictions with wrk and bench/wrk-lifecycle.lua (Prefer: wait, 64 connections), wait
#     until augur_predictions_settled_total equals augur_predictions_created_total and IDLE_S
#     (default 15) seconds more, read RSS; create more up to COUNT (default 100,000) stored,
#     settle, idle, read RSS again. Reports (RSS_COUNT - RSS_baseline) / stored in bytes
#     (target < 2 KB), split into anonymous memory (heap: SQLite's page caches live here),
#     file-backed memory (SQLite's mmap of augur.db, up to 256 MiB) and shared memory (the
#     WAL index, augur.db-shm); the slope between COUNT/10 and COUNT stored (which leaves out
#     fixed costs of the first load: threads, allocator arenas); and the size on disk per
#     prediction (augur.db + augur.db-wal).
# (c) Then restarts the server on that data directory and reads VmRSS after 2 s (what it
#     holds in memory for COUNT stored predictions before its caches fill again).
# RUNS runs of each (default 3); medians reported.
#
# Run from anywhere:  bench/memory.sh      (env: RUNS=3 COUNT=100000 IDLE_S=15)
# Raw output: bench/results/raw/memory-<time>/; summary: bench/results/memory.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-3}"
COUNT="${COUNT:-100000}"
IDLE_S="${IDLE_S:-15}"

ensure_wrk
build_release
RUN="$RESULTS/raw/memory-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"

# status_kb PID FIELD: a field of /proc/PID/status in KiB (0 when absent).
status_kb() { awk -v f="$2:" '$1 == f { v = $2 } END { print v + 0 }' "/proc/$1/status"; }
snapshot() { echo "VmRSS=$(status_kb "$1" VmRSS) RssAnon=$(status_kb "$1" RssAnon) RssFile=$(status_kb "$1" RssFile) RssShmem=$(status_kb "$1" RssShmem)"; }

# per_prediction FIELD BEFORE AFTER N: (AFTER's FIELD - BEFORE's FIELD) KiB, in bytes per N.
per_prediction() {
    local b a
    b="$(sed "s/.*$1=\([0-9]*\).*/\1/" <<<"$2")"
    a="$(sed "s/.*$1=\([0-9]*\).*/\1/" <<<"$3")"
    awk -v a="$a" -v b="$b" -v n="$4" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }'
}

# create_until TOTAL OUT: creates predictions with wrk (Prefer: wait, 64 connections) until
# augur_predictions_created_total reaches TOTAL, then waits until all settled; sets `created`
# and `settled`. wrk always runs for its -d, so the script stops each of its two threads
# after half the number wanted and wrk is ended with SIGINT (it then prints its report).
create_until() {
    local total="$1" out="$2" wrk_pid i
    created="$(metric "$AUGUR_URL" augur_predictions_created_total)"
    BENCH_REQUESTS_PER_THREAD=$(((total - created + 1) / 2)) wrk -t2 -c64 -d600s --timeout 10s \
        -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
        "$AUGUR_URL/v1/models/augur/echo/predictions" >"$out.wrk.txt" 2>"$out.wrk.err" &
    wrk_pid=$!
    STARTED_PIDS+=("$wrk_pid")
    while kill -0 "$wrk_pid" 2>/dev/null; do
        sleep 0.5
        if (($(metric "$AUGUR_URL" augur_predictions_created_total) >= total)); then
            kill -INT "$wrk_pid" 2>/dev/null || true
            break
        fi
    done
    wait "$wrk_pid" || true
    forget_pid "$wrk_pid"
    if [ "$(wrk_json "$out.wrk.txt" | jq '.non2xx + .socket_errors + .not_succeeded')" != 0 ]; then
        log "errors creating predictions: $(wrk_json "$out.wrk.txt")"
        exit 1
    fi
    for ((i = 0; i < 600; i++)); do
        created="$(metric "$AUGUR_URL" augur_predictions_created_total)"
        settled="$(metric "$AUGUR_URL" augur_predictions_settled_total)"
        [ "$created" = "$settled" ] && return 0
        sleep 0.1
    done
    log "not all settled: created=$created settled=$settled"
    exit 1
}

wait_quiet
IDLE="" PER="" ANON="" FILE="" SHM="" SLOPE="" DISK="" RESTART=""
for ((run = 1; run <= RUNS; run++)); do
    # (a) idle server
    data="$(temp_dir)"
    start_augur "embedded://$data/store" "$RUN/idle$run.augur.log"
    sleep 2
    snap="$(snapshot "$AUGUR_PID")"
    stop_started "$AUGUR_PID"
    echo "$snap" >"$RUN/idle$run.txt"
    idle_kb="$(sed 's/.*VmRSS=\([0-9]*\).*/\1/' <<<"$snap")"
    IDLE+="$(awk -v k="$idle_kb" 'BEGIN { printf "%.1f", k / 1024 }') "
    log "run $run idle: $snap"

    # (b) per stored prediction: baseline, then COUNT/10 stored, then COUNT stored
    data="$(temp_dir)"
    out="$RUN/stored$run"
    start_augur "embedded://$data/store" "$out.augur.log"
    create_one "$AUGUR_URL" >/dev/null
    sleep 2
    before="$(snapshot "$AUGUR_PID")"
    created0="$(metric "$AUGUR_URL" augur_predictions_created_total)"
    started_s="$(date +%s.%N)"
    create_until $((created0 + COUNT / 10)) "$out.phase1"
    sleep "$IDLE_S"
    middle="$(snapshot "$AUGUR_PID")"
    stored_middle=$((created - created0))
    create_until $((created0 + COUNT)) "$out.phase2"
    settled_s="$(date +%s.%N)"
    sleep "$IDLE_S"
    after="$(snapshot "$AUGUR_PID")"
    stored=$((created - created0))
    rate="$(awk -v n="$stored" -v s="$started_s" -v e="$settled_s" -v i="$IDLE_S" 'BEGIN { printf "%.0f", n / (e - s - i) }')"
    disk_bytes="$(du -cb "$data/store/augur.db" "$data/store/augur.db-wal" 2>/dev/null | tail -1 | cut -f1)"
    stop_started "$AUGUR_PID"
    # (c) the same data directory, after a restart: what a server holding COUNT stored
    # predictions needs before its caches fill again.
    start_augur "embedded://$data/store" "$out.restart.augur.log"
    sleep 2
    restart="$(snapshot "$AUGUR_PID")"
    stop_started "$AUGUR_PID"
    RESTART+="$(awk -v k="$(sed 's/.*VmRSS=\([0-9]*\).*/\1/' <<<"$restart")" 'BEGIN { printf "%.1f", k / 1024 }') "
    {
        echo "after restart with $stored stored: $restart"
        echo "baseline: $before"
        echo "at $stored_middle stored: $middle"
        echo "at $stored stored: $after"
        echo "created_during_run=$stored settled=$settled disk_bytes(db+wal)=$disk_bytes created_per_s=$rate"
    } >"$out.txt"
    log "run $run: baseline $before; at $stored_middle: $middle; at $stored: $after; db+wal $disk_bytes bytes; $rate/s"
    PER+="$(per_prediction VmRSS "$before" "$after" "$stored") "
    ANON+="$(per_prediction RssAnon "$before" "$after" "$stored") "
    FILE+="$(per_prediction RssFile "$before" "$after" "$stored") "
    SHM+="$(per_prediction RssShmem "$before" "$after" "$stored") "
    SLOPE+="$(per_prediction VmRSS "$middle" "$after" $((stored - stored_middle))) "
    DISK+="$(awk -v d="$disk_bytes" -v n="$stored" 'BEGIN { printf "%.0f", d / n }') "
done

# shellcheck disable=SC2086
{
    idle="$(median $IDLE)"
    per="$(median $PER)"
}
summary="$RESULTS/memory.md"
{
    echo "# resident memory (embedded store, sync=full)"
    echo
    echo '```text'
    machine_info
    echo "runs: $RUNS; per-prediction: $COUNT created by wrk -t2 -c64 (Prefer: wait), then ${IDLE_S}s idle"
    echo '```'
    echo
    echo "| measure | per run | median | target |"
    echo "|---|---|---|---|"
    # shellcheck disable=SC2086
    {
        echo "| idle server VmRSS (MiB) | ${IDLE% } | **$idle** | < 30 MB: $(awk -v v="$idle" 'BEGIN { print (v * 1.048576 < 30 ? "met" : "NOT met") }') |"
        echo "| VmRSS per stored prediction (bytes) | ${PER% } | **$per** | < 2048: $(awk -v v="$per" 'BEGIN { print (v < 2048 ? "met" : "NOT met") }') |"
        echo "| VmRSS per prediction from $((COUNT / 10)) to $COUNT stored (bytes) | ${SLOPE% } | $(median $SLOPE) | |"
        echo "| of which anonymous (RssAnon) | ${ANON% } | $(median $ANON) | |"
        echo "| of which file-backed (RssFile: SQLite mmap of augur.db) | ${FILE% } | $(median $FILE) | |"
        echo "| of which shared (RssShmem: augur.db-shm) | ${SHM% } | $(median $SHM) | |"
        echo "| VmRSS 2 s after a restart on the data dir holding them (MiB) | ${RESTART% } | $(median $RESTART) | |"
        echo "| database on disk per prediction (augur.db + wal, bytes) | ${DISK% } | $(median $DISK) | |"
    }
    echo
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
