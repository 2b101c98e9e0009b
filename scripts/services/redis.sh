# shellcheck shell=bash
# Redis servers for the tests of the Redis store (crates/store-redis). Sourced by
# scripts/test.sh; defines two functions:
#
#   augur_redis_up    finds or starts what the tests need and exports
#                       AUGUR_TEST_REDIS_URL          a single Redis (redis://127.0.0.1:PORT/0)
#                       AUGUR_TEST_REDIS_CLUSTER_URL  a 3-master Redis Cluster (redis+cluster://...)
#                       AUGUR_TEST_REDIS_SERVER_BIN   redis-server, for tests that start their own
#   augur_redis_down  stops what augur_redis_up started (by pid), nothing else
#
# The single server: AUGUR_TEST_REDIS_URL if set; else a Redis answering on 127.0.0.1:6379
# (AUGUR_REDIS_PROBE_PORT overrides the port); else a throwaway one on a free loopback port.
# The cluster: AUGUR_TEST_REDIS_CLUSTER_URL if set; else always a throwaway one (three
# masters on free loopback ports, no replicas). Throwaway servers keep no snapshots, append
# every write with `appendfsync always`, and live in target/test-services/redis-PORT.
# Debian's redis-server is installed (apt-get) when missing. Both functions are idempotent,
# print nothing on success and say what failed (with the server's log) on failure.

_augur_redis_pids="${_augur_redis_pids:-}"
_augur_redis_dirs="${_augur_redis_dirs:-}"

_augur_redis_fail() {
    echo "augur_redis_up: $*" >&2
    return 1
}

_augur_redis_services_dir() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    echo "$root/target/test-services"
}

# Installs Debian's redis-server (and redis-cli with it) unless both are there.
_augur_redis_install() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || _augur_redis_fail "redis-server is missing and installing it needs root (or sudo)" || return 1
        sudo="sudo"
    fi
    local log
    log="$(mktemp)"
    if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        _augur_redis_fail "could not install redis-server with apt-get"
        return 1
    fi
    rm -f "$log"
    command -v redis-server >/dev/null 2>&1 || _augur_redis_fail "redis-server is still missing after apt-get install" || return 1
}

# Prints a loopback port that is free, and whose cluster bus port (port + 10000) is free too.
_augur_redis_free_port() {
    python3 - <<'EOF'
import random, socket
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(1000):
    port = random.randint(20000, 29999)
    if free(port) and free(port + 10000):
        print(port)
        break
else:
    raise SystemExit("no free port pair found")
EOF
}

# Starts a throwaway redis-server on port $1 with the extra arguments that follow, and
# records its pid and directory for augur_redis_down.
_augur_redis_start() {
    local port="$1" dir
    shift
    dir="$(_augur_redis_services_dir)/redis-$port"
    rm -rf "$dir"
    mkdir -p "$dir" || return 1
    _augur_redis_dirs="$_augur_redis_dirs $dir"
    if ! redis-server --port "$port" --bind 127.0.0.1 --save "" \
        --appendonly yes --appendfsync always --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" >"$dir/start.out" 2>&1; then
        cat "$dir/start.out" "$dir/redis.log" >&2 2>/dev/null
        _augur_redis_fail "redis-server did not start on port $port"
        return 1
    fi
    local i
    for i in $(seq 1 100); do
        if [ -s "$dir/redis.pid" ] && [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            _augur_redis_pids="$_augur_redis_pids $(cat "$dir/redis.pid")"
            return 0
        fi
        sleep 0.1
    done
    [ -s "$dir/redis.pid" ] && _augur_redis_pids="$_augur_redis_pids $(cat "$dir/redis.pid")"
    tail -n 30 "$dir/redis.log" >&2 2>/dev/null
    _augur_redis_fail "redis-server on port $port did not answer within 10 s (log: $dir/redis.log)"
}

_augur_redis_up_single() {
    if [ -n "${AUGUR_TEST_REDIS_URL:-}" ]; then
        return 0
    fi
    local probe="${AUGUR_REDIS_PROBE_PORT:-6379}"
    if command -v redis-cli >/dev/null 2>&1 &&
        [ "$(redis-cli -h 127.0.0.1 -p "$probe" ping 2>/dev/null)" = PONG ]; then
        export AUGUR_TEST_REDIS_URL="redis://127.0.0.1:$probe/0"
        return 0
    fi
    local port
    port="$(_augur_redis_free_port)" || _augur_redis_fail "cannot find a free loopback port" || return 1
    _augur_redis_start "$port" || return 1
    _augur_redis_started_single=1
    export AUGUR_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
}

_augur_redis_up_cluster() {
    if [ -n "${AUGUR_TEST_REDIS_CLUSTER_URL:-}" ]; then
        return 0
    fi
    local ports=() port i
    for i in 1 2 3; do
        port="$(_augur_redis_free_port)" || _augur_redis_fail "cannot find a free loopback port" || return 1
        _augur_redis_start "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 5000 || return 1
        ports+=("$port")
    done
    local nodes=() log
    for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
    log="$(mktemp)"
    if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        _augur_redis_fail "redis-cli --cluster create ${nodes[*]} failed"
        return 1
    fi
    rm -f "$log"
    local ok
    for i in $(seq 1 200); do
        ok=0
        for port in "${ports[@]}"; do
            if redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
                ok=$((ok + 1))
            fi
        done
        if [ "$ok" = 3 ]; then
            _augur_redis_started_cluster=1
            export AUGUR_TEST_REDIS_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")"
            return 0
        fi
        sleep 0.1
    done
    for port in "${ports[@]}"; do redis-cli -h 127.0.0.1 -p "$port" cluster info >&2 2>&1; done
    _augur_redis_fail "the cluster on ${nodes[*]} did not reach cluster_state:ok within 20 s"
}

augur_redis_up() {
    # Only a server we start needs the binary; a cluster is started unless one is given.
    if [ -z "${AUGUR_TEST_REDIS_CLUSTER_URL:-}" ] || [ -z "${AUGUR_TEST_REDIS_URL:-}" ] ||
        [ -z "${AUGUR_TEST_REDIS_SERVER_BIN:-}" ]; then
        _augur_redis_install || return 1
    fi
    _augur_redis_up_single || return 1
    _augur_redis_up_cluster || return 1
    if [ -z "${AUGUR_TEST_REDIS_SERVER_BIN:-}" ]; then
        AUGUR_TEST_REDIS_SERVER_BIN="$(command -v redis-server)"
        export AUGUR_TEST_REDIS_SERVER_BIN
    fi
}

augur_redis_down() {
    local pid dir i
    for pid in $_augur_redis_pids; do
        kill "$pid" 2>/dev/null || continue
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "augur_redis_down: redis-server pid $pid ignored SIGTERM for 5 s; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    for dir in $_augur_redis_dirs; do
        rm -rf "$dir"
    done
    # Forget the URLs of what we stopped; URLs given from outside stay.
    if [ -n "${_augur_redis_started_single:-}" ]; then
        unset AUGUR_TEST_REDIS_URL _augur_redis_started_single
    fi
    if [ -n "${_augur_redis_started_cluster:-}" ]; then
        unset AUGUR_TEST_REDIS_CLUSTER_URL _augur_redis_started_cluster
    fi
    _augur_redis_pids=""
    _augur_redis_dirs=""
    return 0
}
