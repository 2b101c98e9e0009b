# shellcheck shell=bash
# Shared helpers for the bench/*.sh scripts (sourced, not run). They start processes only on
# loopback, remember every PID they start and stop exactly those on exit.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
RESULTS="$BENCH_DIR/results"
AUGUR="$ROOT/target/release/augur"
BARE="$ROOT/target/release/bare-axum"
TOKEN="bench-admin-token-0123456789"
mkdir -p "$RESULTS"

STARTED_PIDS=()
# Temporary directories live under one per-script directory, removed on exit (temp_dir runs in
# command substitutions, i.e. subshells, so it cannot register them itself).
BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/augur-bench.XXXXXX")"

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
    rm -rf "$BENCH_TMP"
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A temporary directory, removed on exit.
temp_dir() { mktemp -d "$BENCH_TMP/dir.XXXXXX"; }

ensure_wrk() {
    if ! command -v wrk >/dev/null; then
        log "installing wrk from Debian"
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
        else
            sudo apt-get install -y wrk >/dev/null || { sudo apt-get update >/dev/null && sudo apt-get install -y wrk >/dev/null; }
        fi
    fi
}

# Builds the release binaries (cargo does nothing if they are current). Separately, so that
# each is built with its own feature set, as `cargo build --release -p <it>` would.
build_release() {
    log "building release binaries (augur, bare-axum)"
    (cd "$ROOT" && cargo build --release -q -p augur-server && cargo build --release -q -p augur-bench)
}

# Waits (up to BENCH_QUIET_WAIT seconds, default 1800) until no rustc/cargo runs on the machine,
# so that builds do not share the two cores with a measurement. Records a warning otherwise.
wait_quiet() {
    local waited=0 limit="${BENCH_QUIET_WAIT:-1800}"
    while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; do
        if [ "$waited" -ge "$limit" ]; then
            log "WARNING: rustc/cargo still running after ${limit}s; measuring anyway"
            return 0
        fi
        [ $((waited % 60)) = 0 ] && log "waiting for rustc/cargo to finish before measuring"
        sleep 5
        waited=$((waited + 5))
    done
}

# stop_pid PID: SIGTERM, up to 20 s for a graceful stop, then SIGKILL.
stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# forget_pid PID: removes PID from STARTED_PIDS (it has ended).
forget_pid() {
    local kept=() p
    for p in "${STARTED_PIDS[@]}"; do
        [ "$p" = "$1" ] || kept+=("$p")
    done
    STARTED_PIDS=("${kept[@]}")
}

# stop_started PID: stops a process started here and forgets it.
stop_started() {
    stop_pid "$1"
    forget_pid "$1"
}

# wait_url FILE PATTERN PID: waits until FILE has a line matching PATTERN; prints the URL in it.
wait_url() {
    local file="$1" pattern="$2" pid="$3" i
    for ((i = 0; i < 600; i++)); do
        if grep -q "$pattern" "$file" 2>/dev/null; then
            grep -m1 "$pattern" "$file" | grep -o 'http://[^ ]*'
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { log "process $pid exited:"; cat "$file" >&2; return 1; }
        sleep 0.1
    done
    log "timed out waiting for $pattern in $file"
    return 1
}

# start_augur STORE_URL LOGFILE: starts `augur serve` on a free loopback port; sets AUGUR_PID
# and AUGUR_URL.
start_augur() {
    local store="$1" logfile="$2"
    # The benchmarks' webhook receivers are on loopback, which only the allowlist opens.
    AUGUR_LISTEN=127.0.0.1:0 AUGUR_STORE="$store" AUGUR_ADMIN_TOKEN="$TOKEN" AUGUR_LOG=warn \
        AUGUR_OUTBOUND_ALLOW="127.0.0.0/8,::1/128" "$AUGUR" serve >"$logfile" 2>&1 &
    AUGUR_PID=$!
    STARTED_PIDS+=("$AUGUR_PID")
    AUGUR_URL="$(wait_url "$logfile" 'augur listening on' "$AUGUR_PID")"
}

# start_bare JSONFILE LOGFILE: starts bare-axum on a free loopback port; sets BARE_PID, BARE_URL.
start_bare() {
    local json="$1" logfile="$2"
    "$BARE" 127.0.0.1:0 "$json" >"$logfile" 2>&1 &
    BARE_PID=$!
    STARTED_PIDS+=("$BARE_PID")
    BARE_URL="$(wait_url "$logfile" 'bare-axum listening on' "$BARE_PID")"
}

# metric URL NAME: the value of an unlabelled Prometheus sample (0 when absent).
metric() {
    curl -sf -H "Authorization: Bearer $TOKEN" "$1/metrics" |
        awk -v n="$2" '$1 == n { v = $2 } END { printf "%d\n", (v == "" ? 0 : v) }'
}

# rss_kb PID: resident set size in KiB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# create_one URL: creates one echo prediction with Prefer: wait; prints the response JSON.
create_one() {
    curl -sf -X POST "$1/v1/models/augur/echo/predictions" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -H 'Prefer: wait' -d '{"input":{"text":"hello from the benchmark"}}'
}

# wrk_json OUTFILE: the JSON line bench/wrk-report.lua or bench/wrk-lifecycle.lua printed.
wrk_json() { grep -m1 '^WRKJSON ' "$1" | sed 's/^WRKJSON //'; }

# median X Y Z ...: the median of numbers (the middle one; the mean of the middle two if even).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# thread_cpu PID: "tid name cpu_ticks" (user + system) for each thread of PID.
thread_cpu() {
    local t
    for t in /proc/"$1"/task/*; do
        [ -r "$t/stat" ] || continue
        # Fields after "(comm) state": ppid ... utime (11th) stime (12th).
        sed 's/^\([0-9]*\) (\(.*\)) [A-Z] \(.*\)$/\1 \2 \3/' "$t/stat" 2>/dev/null |
            awk '{ print $1, $2, $13 + $14 }'
    done
}

# diagnose_load PID OUT UNIT WRK_ARGS...: runs wrk with WRK_ARGS under `perf stat -p PID` (if
# perf is installed) and prints, per request ("per UNIT"), Augur's CPU time split by thread
# (the embedded store's writer thread; the two busiest tokio threads, i.e. the runtime's two
# workers on 2 cores; every other thread, i.e. tokio's blocking pool, where store reads run)
# and the context switches, fsync/fdatasync and pwrite64 calls of the process.
diagnose_load() {
    local pid="$1" out="$2" unit="$3" before after n
    shift 3
    before="$(thread_cpu "$pid")"
    if command -v perf >/dev/null; then
        perf stat -x, -o "$out.perf.txt" -p "$pid" \
            -e task-clock,context-switches,syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64 \
            -- wrk "$@" >"$out.wrk.txt" 2>"$out.wrk.err"
    else
        wrk "$@" >"$out.wrk.txt" 2>"$out.wrk.err"
    fi
    after="$(thread_cpu "$pid")"
    n="$(wrk_json "$out.wrk.txt" | jq .requests)"
    echo "requests=$n rps=$(wrk_json "$out.wrk.txt" | jq .rps) threads=$(wc -l <<<"$after")"
    {
        printf '%s\n' "$before"
        echo "--"
        printf '%s\n' "$after"
    } | awk -v n="$n" -v tck="$(getconf CLK_TCK)" '
        $1 == "--" { later = 1; next }
        !later { start[$1] = $3; next }
        { d = $3 - start[$1]; if ($2 ~ /store-wri/) print "writer", d; else if ($2 ~ /tokio/) print "tokio", d; else print "other", d }' |
        sort -k1,1 -k2,2nr |
        awk -v n="$n" -v tck="$(getconf CLK_TCK)" -v unit="$unit" '
            $1 == "writer" { w += $2 } $1 == "other" { o += $2 }
            $1 == "tokio" { if (++k <= 2) r += $2; else b += $2 }
            END {
                f = 1e6 / tck / n
                printf "cpu_us_per_%s: writer=%.0f runtime_workers=%.0f blocking_pool=%.0f other=%.0f total=%.0f\n", unit, w * f, r * f, b * f, o * f, (w + r + b + o) * f
            }'
    if [ -f "$out.perf.txt" ]; then
        awk -F, -v n="$n" -v unit="$unit" '$1 ~ /^[0-9.]+$/ && $3 != "" {
            v = $1 / n; if ($3 == "task-clock") { v *= 1000; $3 = "task-clock_us" }
            printf "per_%s %s: %.2f\n", unit, $3, v }' "$out.perf.txt"
    fi
}

# The machine, one line per fact, for the results files.
machine_info() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "kernel: $(uname -sr)"
    echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD) (working tree; files changed in crates/ but not committed: $(cd "$ROOT" && git status --porcelain -- crates | wc -l))"
}
