# shellcheck shell=bash
# The Cloudflare store's Worker (cloudflare/) on a local workerd, for the tests of the
# cloudflare:// store (crates/store-cloudflare). Sourced by scripts/test.sh; defines two
# functions:
#
#   augur_cloudflare_up    starts `wrangler dev` (npm wrangler 4.86.0, pinned by
#                          cloudflare/package-lock.json) on a free loopback port with a random
#                          secret, waits until a signed `hello` answers, and exports
#                            AUGUR_TEST_CLOUDFLARE_URL   a complete AUGUR_STORE value, secret
#                                                        included, for a fresh namespace:
#                                                        cloudflare+http://:SECRET@127.0.0.1:PORT/?namespace=tRANDOM
#                            AUGUR_TEST_CLOUDFLARE_BASE  the same without the namespace (tests
#                                                        add their own)
#   augur_cloudflare_down  stops what augur_cloudflare_up started (its process group), nothing else
#
# AUGUR_TEST_CLOUDFLARE_URL, if set, is used as it is (nothing is started). `npm ci` runs in
# cloudflare/ when node_modules is missing or older than the lock file (offline first).
# Telemetry, update checks and the Request.cf download are off. The Worker's state lives in
# target/test-services/cloudflare-PORT. Both functions are idempotent, print nothing on
# success and say what failed (with wrangler's log) on failure.

_augur_cloudflare_pgid="${_augur_cloudflare_pgid:-}"
_augur_cloudflare_dir="${_augur_cloudflare_dir:-}"

_augur_cloudflare_fail() {
    echo "augur_cloudflare_up: $*" >&2
    return 1
}

_augur_cloudflare_root() {
    cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd
}

# Installs the Worker's npm packages (exactly the lock file's) unless they are there and fresh.
_augur_cloudflare_npm() {
    local app="$1"
    if [ -x "$app/node_modules/.bin/wrangler" ] &&
        [ "$app/node_modules/.package-lock.json" -nt "$app/package-lock.json" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || _augur_cloudflare_fail "npm is missing (Node 20 or later is needed for the Worker)" || return 1
    local log
    log="$(mktemp)"
    if ! (cd "$app" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        _augur_cloudflare_fail "npm ci in $app failed"
        return 1
    fi
    rm -f "$log"
}

# Prints a free loopback port.
_augur_cloudflare_free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

augur_cloudflare_up() {
    if [ -n "${AUGUR_TEST_CLOUDFLARE_URL:-}" ]; then
        return 0
    fi
    local root app port secret dir
    root="$(_augur_cloudflare_root)"
    app="$root/cloudflare"
    _augur_cloudflare_npm "$app" || return 1
    port="$(_augur_cloudflare_free_port)" || _augur_cloudflare_fail "cannot find a free loopback port" || return 1
    secret="$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
    dir="$root/target/test-services/cloudflare-$port"
    rm -rf "$dir"
    mkdir -p "$dir/state" || return 1
    _augur_cloudflare_dir="$dir"
    # The secret goes in through an env file outside the repository, never on a command line.
    printf 'AUGUR_STORE_SECRET=%s\n' "$secret" >"$dir/dev.vars"
    chmod 600 "$dir/dev.vars"
    # setsid: the server and its workerd children form one process group, stopped together.
    (
        cd "$app" &&
            WRANGLER_SEND_METRICS=false WRANGLER_HIDE_BANNER=true \
                CLOUDFLARE_CF_FETCH_ENABLED=false MINIFLARE_CACHE_DIR="$dir/cache" \
                WRANGLER_LOG_PATH="$dir/logs" CI=1 \
                exec setsid node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$port" \
                --inspector-port 0 --persist-to "$dir/state" --env-file "$dir/dev.vars" \
                --log-level warn --show-interactive-dev-session=false \
                </dev/null >"$dir/wrangler.log" 2>&1
    ) &
    _augur_cloudflare_pgid=$!
    local base="cloudflare+http://:$secret@127.0.0.1:$port/" i
    for i in $(seq 1 300); do
        if node "$app/scripts/call.mjs" "$base?namespace=probe" hello '{}' >/dev/null 2>&1; then
            export AUGUR_TEST_CLOUDFLARE_BASE="$base"
            export AUGUR_TEST_CLOUDFLARE_URL="$base?namespace=t$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
            _augur_cloudflare_started=1
            return 0
        fi
        if ! kill -0 "$_augur_cloudflare_pgid" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    tail -n 50 "$dir/wrangler.log" >&2 2>/dev/null
    augur_cloudflare_down
    _augur_cloudflare_fail "wrangler dev on port $port did not answer a signed hello within 60 s"
}

augur_cloudflare_down() {
    local pgid="$_augur_cloudflare_pgid" i
    if [ -n "$pgid" ]; then
        kill -TERM -- "-$pgid" 2>/dev/null || kill -TERM "$pgid" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 -- "-$pgid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 -- "-$pgid" 2>/dev/null; then
            echo "augur_cloudflare_down: wrangler (process group $pgid) ignored SIGTERM for 5 s; killing it" >&2
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
    fi
    if [ -n "$_augur_cloudflare_dir" ]; then
        rm -rf "$_augur_cloudflare_dir"
    fi
    if [ -n "${_augur_cloudflare_started:-}" ]; then
        unset AUGUR_TEST_CLOUDFLARE_URL AUGUR_TEST_CLOUDFLARE_BASE _augur_cloudflare_started
    fi
    _augur_cloudflare_pgid=""
    _augur_cloudflare_dir=""
    return 0
}
