# PostgreSQL for the tests: finds a server or starts a throwaway one. Sourced by
# scripts/test.sh (bash); defines two functions and changes no shell option.
#
#   augur_postgres_up     exports AUGUR_TEST_POSTGRES_URL (and AUGUR_TEST_POSTGRES_BIN, the
#                         directory with initdb, pg_ctl and postgres, when it can be found)
#   augur_postgres_down   stops and removes only the cluster augur_postgres_up started
#
# In order, augur_postgres_up:
# 1. keeps AUGUR_TEST_POSTGRES_URL if it is already set;
# 2. else, if a server answers on 127.0.0.1:5432 (AUGUR_POSTGRES_PROBE_PORT overrides the
#    port, e.g. to pretend there is none), uses its database augur_test, created if missing,
#    as user postgres (or root, if postgres is refused);
# 3. else starts a cluster in target/test-services/postgres-<port> on a free loopback port,
#    with trust authentication, installing Debian's postgresql package first if initdb is
#    missing. initdb refuses to run as root, so as root the cluster belongs to the postgres
#    user (runuser).
# Both are idempotent, quiet on success, and say what failed (with the server's log) on
# failure, returning non-zero.

# The directory of initdb, pg_ctl and postgres, newest version first; empty if none.
_augur_postgres_bindir() {
    local candidate
    if [[ -n "${AUGUR_TEST_POSTGRES_BIN:-}" && -x "$AUGUR_TEST_POSTGRES_BIN/initdb" ]]; then
        echo "$AUGUR_TEST_POSTGRES_BIN"
        return 0
    fi
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" && -x "$candidate/postgres" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    candidate="$(command -v initdb 2>/dev/null || true)"
    if [[ -n "$candidate" ]]; then
        candidate="$(dirname "$(readlink -f "$candidate")")"
        if [[ -x "$candidate/pg_ctl" && -x "$candidate/postgres" ]]; then
            echo "$candidate"
            return 0
        fi
    fi
    return 1
}

# A client program (pg_isready, psql) from PATH or the server's directory.
_augur_postgres_client() {
    local bindir
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    elif bindir="$(_augur_postgres_bindir)" && [[ -x "$bindir/$1" ]]; then
        echo "$bindir/$1"
    else
        return 1
    fi
}

_augur_postgres_fail() {
    echo "augur_postgres_up: $*" >&2
    return 1
}

# Runs a command as the cluster's owner: the postgres user when we are root.
_augur_postgres_as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Creates database augur_test on 127.0.0.1:$1 if missing and prints the user that works.
_augur_postgres_ensure_db() {
    local port="$1" psql user exists
    psql="$(_augur_postgres_client psql)" || {
        _augur_postgres_fail "psql is missing (apt-get install -y postgresql-client)"
        return 1
    }
    for user in postgres root; do
        exists="$("$psql" -X -h 127.0.0.1 -p "$port" -U "$user" -d postgres -Atq \
            -c "SELECT 1 FROM pg_database WHERE datname = 'augur_test'" 2>/dev/null)" || continue
        if [[ "$exists" != 1 ]]; then
            # Another process may create it at the same moment: check again on failure.
            if ! "$psql" -X -h 127.0.0.1 -p "$port" -U "$user" -d postgres -q \
                -c 'CREATE DATABASE augur_test' >/dev/null 2>&1; then
                exists="$("$psql" -X -h 127.0.0.1 -p "$port" -U "$user" -d postgres -Atq \
                    -c "SELECT 1 FROM pg_database WHERE datname = 'augur_test'" 2>/dev/null)"
                [[ "$exists" == 1 ]] || {
                    _augur_postgres_fail "cannot create database augur_test on 127.0.0.1:$port as $user"
                    return 1
                }
            fi
        fi
        echo "$user"
        return 0
    done
    _augur_postgres_fail "the server on 127.0.0.1:$port refuses users postgres and root (trust or a password in PGPASSWORD is needed)"
}

# A TCP port on 127.0.0.1 that nothing listens on.
_augur_postgres_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    for port in $(seq 54320 54999); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

augur_postgres_up() {
    local bindir
    # 1. Given.
    if [[ -n "${AUGUR_TEST_POSTGRES_URL:-}" ]]; then
        if [[ -z "${AUGUR_TEST_POSTGRES_BIN:-}" ]] && bindir="$(_augur_postgres_bindir)"; then
            export AUGUR_TEST_POSTGRES_BIN="$bindir"
        fi
        return 0
    fi

    # 2. A server on the usual port.
    local probe_port="${AUGUR_POSTGRES_PROBE_PORT:-5432}" pg_isready user
    if pg_isready="$(_augur_postgres_client pg_isready)" \
        && "$pg_isready" -q -h 127.0.0.1 -p "$probe_port" -t 3 >/dev/null 2>&1; then
        user="$(_augur_postgres_ensure_db "$probe_port")" || return 1
        export AUGUR_TEST_POSTGRES_URL="postgres://$user@127.0.0.1:$probe_port/augur_test"
        if [[ -z "${AUGUR_TEST_POSTGRES_BIN:-}" ]] && bindir="$(_augur_postgres_bindir)"; then
            export AUGUR_TEST_POSTGRES_BIN="$bindir"
        fi
        return 0
    fi

    # 3. A throwaway cluster of our own.
    if ! bindir="$(_augur_postgres_bindir)"; then
        local log="${TMPDIR:-/tmp}/augur-apt-postgresql.log"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >"$log" 2>&1 \
            || { apt-get update -q >>"$log" 2>&1 \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >>"$log" 2>&1; }; }; then
            tail -n 30 "$log" >&2
            _augur_postgres_fail "cannot install Debian's postgresql package (log: $log)"
            return 1
        fi
        bindir="$(_augur_postgres_bindir)" \
            || { _augur_postgres_fail "postgresql is installed but initdb is nowhere to be found"; return 1; }
    fi
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres \
            || { _augur_postgres_fail "cannot create the postgres user to own the cluster"; return 1; }
    fi

    local root port dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/test-services"
    port="$(_augur_postgres_free_port)" || { _augur_postgres_fail "no free loopback port"; return 1; }
    dir="$root/postgres-$port"
    mkdir -p "$root" || { _augur_postgres_fail "cannot create $root"; return 1; }
    rm -rf "$dir" && mkdir -p "$dir" || { _augur_postgres_fail "cannot create $dir"; return 1; }
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$dir"
        # The postgres user must be able to reach the directory through its parents.
        if ! runuser -u postgres -- test -w "$dir"; then
            rmdir "$dir"
            dir="$(mktemp -d "${TMPDIR:-/tmp}/augur-postgres-$port.XXXXXX")"
            chown postgres: "$dir"
            chmod 755 "$dir"
            ln -sfn "$dir" "$root/postgres-$port"
        fi
    fi

    if ! _augur_postgres_as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust \
        -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        _augur_postgres_fail "initdb failed in $dir"
        return 1
    fi
    # Loopback only, its own socket directory, room for parallel test suites.
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
EOF
    if ! _augur_postgres_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
        -w -t 60 start >"$dir/pg_ctl.log" 2>&1; then
        cat "$dir/pg_ctl.log" >&2
        tail -n 30 "$dir/server.log" >&2 2>/dev/null
        _augur_postgres_fail "the PostgreSQL server in $dir did not start"
        return 1
    fi
    export AUGUR_POSTGRES_STARTED_DIR="$dir"
    export AUGUR_POSTGRES_STARTED_BIN="$bindir"
    user="$(_augur_postgres_ensure_db "$port")" || { augur_postgres_down; return 1; }
    export AUGUR_TEST_POSTGRES_URL="postgres://$user@127.0.0.1:$port/augur_test"
    export AUGUR_POSTGRES_STARTED_URL="$AUGUR_TEST_POSTGRES_URL"
    export AUGUR_TEST_POSTGRES_BIN="$bindir"
}

augur_postgres_down() {
    local dir="${AUGUR_POSTGRES_STARTED_DIR:-}" bindir="${AUGUR_POSTGRES_STARTED_BIN:-}"
    [[ -n "$dir" ]] || return 0
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        if ! _augur_postgres_as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop \
            >"$dir/pg_ctl-stop.log" 2>&1; then
            cat "$dir/pg_ctl-stop.log" >&2
            echo "augur_postgres_down: cannot stop the PostgreSQL server in $dir" >&2
            return 1
        fi
    fi
    # A link to a directory outside target/ (see augur_postgres_up) goes with its target.
    local link
    for link in "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"/target/test-services/postgres-*; do
        [[ -L "$link" && "$(readlink "$link")" == "$dir" ]] && rm -f "$link"
    done
    rm -rf "$dir"
    if [[ -n "${AUGUR_POSTGRES_STARTED_URL:-}" \
        && "${AUGUR_TEST_POSTGRES_URL:-}" == "$AUGUR_POSTGRES_STARTED_URL" ]]; then
        unset AUGUR_TEST_POSTGRES_URL
    fi
    unset AUGUR_POSTGRES_STARTED_DIR AUGUR_POSTGRES_STARTED_BIN AUGUR_POSTGRES_STARTED_URL
}
