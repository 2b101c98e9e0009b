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
TEMP_DIRS=()

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
    local dir
    for dir in "${TEMP_DIRS[@]}"; do
        rm -rf "$dir"
    done
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A temporary directory removed on exit.
temp_dir() {
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/augur-bench.XXXXXX")"
    TEMP_DIRS+=("$dir")
    echo "$dir"
}

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
    AUGUR_LISTEN=127.0.0.1:0 AUGUR_STORE="$store" AUGUR_ADMIN_TOKEN="$TOKEN" AUGUR_LOG=warn \
        "$AUGUR" serve >"$logfile" 2>&1 &
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

# The machine, one line per fact, for the results files.
machine_info() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "kernel: $(uname -sr)"
    echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD)"
}
