# shellcheck shell=bash
# Helpers for the shared-store benchmarks (bench/shared-*.sh, bench/two-nodes.sh), sourced
# after bench/lib.sh. They start THROWAWAY servers on free loopback ports inside the script's
# temporary directory (never the machine's own Redis or PostgreSQL):
#
#   start_redis FSYNC         redis-server with --appendonly yes --appendfsync FSYNC (everysec
#                             or always), no RDB snapshots; sets REDIS_PORT, REDIS_PID, REDIS_DIR.
#                             redis_fsync always|everysec switches the same server (CONFIG SET).
#   start_postgres            a cluster made by initdb (as the postgres user when root), started
#                             with pg_ctl, default durability (fsync on, synchronous_commit on,
#                             full_page_writes on), max_connections 300; sets PG_PORT, PG_DIR,
#                             PG_BIN, PG_PID (the postmaster).
#   build_release_shared      builds augur with the redis and postgres features and bare-axum
#                             and copies augur to the script's temp dir (AUGUR points there), so
#                             that other builds in the tree cannot swap the binary mid-run
#                             (BENCH_AUGUR=<binary> uses that one instead of building).
#   start_augur_shared STORE LOG [VAR=VALUE...]   like start_augur, with AUGUR_FILES_DIR set to a
#                             temporary directory and the extra variables in its environment.
#
# On exit (a trap replacing lib.sh's): Augur and other started processes first, then Redis
# (SHUTDOWN NOSAVE, then its PID) and PostgreSQL (pg_ctl stop -m fast), then the temp dir.

# shellcheck disable=SC2034
SERVICE_REDIS_PIDS=()
SERVICE_PG_DIRS=()
BENCH_NODE_DIR="$BENCH_DIR/node"

shared_cleanup() {
    local pid dir
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
    STARTED_PIDS=()
    for pid in "${SERVICE_REDIS_PIDS[@]}"; do
        stop_pid "$pid"
    done
    for dir in "${SERVICE_PG_DIRS[@]}"; do
        if [ -f "$dir/data/postmaster.pid" ]; then
            as_pg_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
        fi
    done
    cleanup
}
trap shared_cleanup EXIT

# free_port: a TCP port on 127.0.0.1 nobody listens on.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# as_pg_owner CMD...: runs CMD as the postgres user when root (initdb refuses root).
as_pg_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# rcli ARGS...: redis-cli against the throwaway Redis.
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# start_redis FSYNC: see the top of this file.
start_redis() {
    local fsync="$1" i
    command -v redis-server >/dev/null || { log "redis-server is missing (apt-get install redis-server)"; return 1; }
    REDIS_DIR="$(temp_dir)"
    REDIS_PORT="$(free_port)"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --save '' \
        --appendonly yes --appendfsync "$fsync" --daemonize no --protected-mode yes \
        --logfile "$REDIS_DIR/redis.log" >/dev/null 2>&1 &
    REDIS_PID=$!
    SERVICE_REDIS_PIDS+=("$REDIS_PID")
    for ((i = 0; i < 100; i++)); do
        [ "$(rcli ping 2>/dev/null)" = PONG ] && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "redis-server did not start:"; cat "$REDIS_DIR/redis.log" >&2
    return 1
}

# redis_fsync MODE: CONFIG SET appendfsync MODE on the throwaway Redis.
redis_fsync() { rcli config set appendfsync "$1" >/dev/null; }

# redis_reset: empties the throwaway Redis and rewrites its append-only file (so that neither
# memory nor the AOF grows across rounds and no automatic rewrite starts mid-measurement).
redis_reset() {
    local i
    rcli flushall >/dev/null
    rcli bgrewriteaof >/dev/null
    for ((i = 0; i < 600; i++)); do
        rcli info persistence | grep -q '^aof_rewrite_in_progress:0' &&
            ! rcli info persistence | grep -q '^aof_rewrite_scheduled:1' && return 0
        sleep 0.1
    done
}

# redis_info: the server's version and persistence settings, one line.
redis_info() {
    echo "redis $(rcli info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p'): appendonly $(rcli config get appendonly | tail -1), appendfsync $(rcli config get appendfsync | tail -1), save '$(rcli config get save | tail -1)'"
}

# start_postgres: see the top of this file.
start_postgres() {
    local candidate
    PG_BIN=""
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
        [ -x "$candidate/initdb" ] && { PG_BIN="$candidate"; break; }
    done
    [ -n "$PG_BIN" ] || { log "PostgreSQL is missing (apt-get install postgresql)"; return 1; }
    if [ "$(id -u)" = 0 ]; then
        # The postgres user must reach the cluster through the temp dir (mktemp makes it 0700).
        chmod 711 "$BENCH_TMP"
    fi
    PG_DIR="$(temp_dir)"
    chmod 755 "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
    PG_PORT="$(free_port)"
    as_pg_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C \
        >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    cat >>"$PG_DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 300
EOF
    SERVICE_PG_DIRS+=("$PG_DIR")
    as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        >"$PG_DIR/pg_ctl.log" 2>&1 || { cat "$PG_DIR/pg_ctl.log" "$PG_DIR/server.log" >&2; return 1; }
    PG_PID="$(head -1 "$PG_DIR/data/postmaster.pid")"
}

# pg_sql DB SQL: runs SQL on the throwaway cluster as postgres; prints the unaligned result.
pg_sql() { psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -Atc "$2"; }

# pg_info: the server's version and durability settings, one line.
pg_info() {
    pg_sql postgres "SELECT 'postgresql ' || current_setting('server_version') || ': fsync ' || current_setting('fsync') || ', synchronous_commit ' || current_setting('synchronous_commit') || ', full_page_writes ' || current_setting('full_page_writes') || ', wal_sync_method ' || current_setting('wal_sync_method') || ', shared_buffers ' || current_setting('shared_buffers') || ', max_connections ' || current_setting('max_connections')"
}

# build_release_shared: see the top of this file. BENCH_AUGUR=<path> skips the build and uses
# that binary instead (it must have been built with the features the script needs).
build_release_shared() {
    if [ -n "${BENCH_AUGUR:-}" ]; then
        log "using $BENCH_AUGUR (BENCH_AUGUR set: not building)"
        cp "$BENCH_AUGUR" "$BENCH_TMP/augur"
    else
        log "building release binaries (augur with redis and postgres, bare-axum)"
        (cd "$ROOT" && cargo build --release -q -p augur-server --features redis,postgres &&
            cargo build --release -q -p augur-bench)
        cp "$ROOT/target/release/augur" "$BENCH_TMP/augur"
    fi
    AUGUR="$BENCH_TMP/augur"
}

# start_augur_shared STORE LOG [VAR=VALUE...]: see the top of this file.
start_augur_shared() {
    local store="$1" logfile="$2"
    shift 2
    env AUGUR_LISTEN=127.0.0.1:0 AUGUR_STORE="$store" AUGUR_ADMIN_TOKEN="$TOKEN" AUGUR_LOG=warn \
        AUGUR_FILES_DIR="$(temp_dir)" AUGUR_OUTBOUND_ALLOW="127.0.0.0/8,::1/128" "$@" "$AUGUR" serve >"$logfile" 2>&1 &
    AUGUR_PID=$!
    STARTED_PIDS+=("$AUGUR_PID")
    AUGUR_URL="$(wait_url "$logfile" 'augur listening on' "$AUGUR_PID")"
}

# ensure_node_deps: `npm install` in bench/node (bullmq, ioredis, graphile-worker; exact versions
# pinned in package.json, the tree in package-lock.json) when node_modules is missing or older
# than the lock file. Not `npm ci`: npm 11 writes lock files without the other platforms'
# optional msgpackr-extract binaries and then refuses them as out of sync.
ensure_node_deps() {
    command -v node >/dev/null || { log "node is missing (apt-get install nodejs npm)"; return 1; }
    if [ ! -f "$BENCH_NODE_DIR/node_modules/.package-lock.json" ] ||
        [ "$BENCH_NODE_DIR/package-lock.json" -nt "$BENCH_NODE_DIR/node_modules/.package-lock.json" ]; then
        log "installing bench/node dependencies (npm install)"
        (cd "$BENCH_NODE_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

# metric_sum URL NAME LABELS: the sum of the samples of NAME whose labels contain LABELS
# (e.g. 'outcome="succeeded"'); 0 when none.
metric_sum() {
    curl -sf -H "Authorization: Bearer $TOKEN" "$1/metrics" |
        awk -v n="$2" -v l="$3" 'index($1, n "{") == 1 && index($1, l) { v += $2 } END { printf "%d\n", v }'
}

# store_ops URL: store operations by name, "operation:outcome=N ..." from the counts of
# augur_store_operation_duration_seconds.
store_ops_shared() {
    curl -sf -H "Authorization: Bearer $TOKEN" "$1/metrics" |
        sed -n 's/^augur_store_operation_duration_seconds_count{\(.*\)} \([0-9]*\)$/\1 \2/p' |
        sed -n 's/.*operation="\([a-z_]*\)".*outcome="\([a-z_]*\)".* \([0-9]*\)$/\1:\2 \3/p;
                 s/.*outcome="\([a-z_]*\)".*operation="\([a-z_]*\)".* \([0-9]*\)$/\2:\1 \3/p' |
        sort | awk '{ printf "%s=%s ", $1, $2 }'
}

# pcpu_s PID: user + system CPU seconds used by PID (0 if gone).
pcpu_s() {
    awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# tree_cpu_s PID...: CPU seconds of the given PIDs, of their live children, and of their
# children that ended (cutime + cstime): for PostgreSQL, the postmaster and its backends.
tree_cpu_s() {
    local p c
    {
        for p in "$@"; do
            awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15 + $16 + $17) / t }' "/proc/$p/stat" 2>/dev/null
            for c in $(pgrep -P "$p" 2>/dev/null); do pcpu_s "$c"; done
        done
    } | awk '{ s += $1 } END { printf "%.2f\n", s }'
}

# ---- measurements that are repeated when something else used the CPU meanwhile ----
# The machine is shared with builds and test suites. `measure CMD...` runs CMD (a function
# that records its figures with `pend ARRAY KEY VALUE`) after wait_quiet, watching twice a
# second for rustc, cargo, rust-lld or a test binary (target/*/deps/*); if one ran, the
# figures are dropped and CMD runs again, up to MEASURE_ATTEMPTS times (default 3); the last
# attempt's figures are kept whatever happened, and CMD is listed in NOISY_RUNS.
PENDING=()
NOISY_RUNS=()

# pend ARRAY KEY VALUE: appends "VALUE " to ARRAY[KEY] once the measurement is accepted.
pend() { PENDING+=("$1" "$2" "$3"); }

commit_pending() {
    local i
    for ((i = 0; i < ${#PENDING[@]}; i += 3)); do
        declare -n _pend_target="${PENDING[i]}"
        _pend_target[${PENDING[i + 1]}]+="${PENDING[i + 2]} "
        unset -n _pend_target
    done
    PENDING=()
}

_noise_busy() {
    pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null || pgrep -x rust-lld >/dev/null ||
        pgrep -f '/target/[a-z0-9_-]*/deps/' >/dev/null
}

measure() {
    local attempt limit="${MEASURE_ATTEMPTS:-3}" flag watcher
    for ((attempt = 1; attempt <= limit; attempt++)); do
        PENDING=()
        wait_quiet
        flag="$(mktemp "$BENCH_TMP/noise.XXXXXX")"
        (while :; do _noise_busy && echo busy >>"$flag"; sleep 0.5; done) &
        watcher=$!
        STARTED_PIDS+=("$watcher")
        "$@"
        stop_started "$watcher"
        if [ ! -s "$flag" ]; then
            commit_pending
            return 0
        fi
        log "a build or test ran during '$*' (attempt $attempt of $limit)"
    done
    NOISY_RUNS+=("$1 ${2:-}")
    commit_pending
}
