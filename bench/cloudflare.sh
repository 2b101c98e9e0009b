#!/usr/bin/env bash
# bench/cloudflare.sh: the seeds' Cloudflare design (KV or Durable Objects behind one storage
# interface, seed 000) on Cloudflare's own runtime, workerd, locally; and Augur's Cloudflare
# backend on the same runtime, once it exists (issue 14's benchmarks).
#
# The reference: bench/cloudflare/seeds/, a Worker that implements the seeds' storage as written
# (KV: get, merge, put; DO: rpcService.get then rpcService.set, two RPC calls; the seed's checked
# transition validateAndUpdateStatus over either), served by `npx wrangler dev` (wrangler 4.86.0
# from its package-lock.json, workerd inside it) on a free loopback port, with its KV and
# objects in a temporary directory. Both modes run in the same Worker: /kv/... and /do/....
# Its /bare/... route answers a stored body from memory: workerd behind wrangler dev with no
# storage, the reference the reads are measured beside.
#
#   a. race        ROUNDS runs; each: TRIALS (20) trials per mode of WRITERS (50) concurrent
#                  conflicting terminal transitions (succeeded, failed, canceled in turn, each
#                  with a writer tag) on one prediction in processing (bench/cloudflare/drive.mjs
#                  race). Per trial: winners (writers answered 200, i.e. told their transition
#                  was applied) and lost writes (winners whose write is not the one stored at
#                  the end). Per run: trials with more than one winner, lost writes in all.
#   b. reads       the seeds' status route GET /MODE/api/predictions/{id} on one succeeded
#                  prediction, kv, do and bare (the same bytes from memory), wrk -t2 -c64
#                  -d10s --latency, interleaved, ROUNDS rounds. With d in PARTS also
#                  "mirror": Augur's store Worker's KV-mirrored route
#                  GET /ns/{namespace}/api/predictions/{id} on one succeeded prediction stored
#                  by a signed write (bench/cloudflare/staleness.mjs put), in the same rounds.
#   c. lifecycles  drive.mjs lifecycles: 64 loops for 10 s, each lifecycle create, update to
#                  processing (checked), a progress update (PATCH), terminal succeeded
#                  (checked), read (must say succeeded): 5 requests; kv, do, and bare (the same
#                  five requests as GETs of /bare/..., no storage: what the client, wrangler's
#                  proxy and workerd cost alone), interleaved, ROUNDS rounds.
#   d. augur       Augur on its Cloudflare backend, when this tree has it (PARTS must include d;
#                  skipped with a note otherwise): the store Worker started by
#                  scripts/services/cloudflare.sh (augur_cloudflare_up), `augur serve` built
#                  with the `cloudflare` feature on AUGUR_STORE=$AUGUR_TEST_CLOUDFLARE_URL; then
#                  status reads (GET /v1/predictions/{id}, wrk as in b) and reads of the
#                  Worker's KV-mirrored route GET /ns/{namespace}/api/predictions/{id}; whole
#                  lifecycles (bench/wrk-lifecycle.lua as in bench/lifecycles.sh, checked:
#                  created == settled after each run); the seeds' race through Augur's HTTP API
#                  (drive.mjs augur-race: a fake Cog model server, then per trial WRITERS
#                  concurrent requests on one running prediction, half cancels, half
#                  completions as coglet's webhook; exactly one terminal state may win);
#                  the KV mirror's staleness (bench/cloudflare/staleness.mjs, ROUNDS × TRIALS
#                  acknowledged updates, each read back until the route shows it).
#
# wrk, node (the race and lifecycle drivers), wrangler's proxy and workerd all share the
# machine's cores (2 on the development machine).
#
# Run from anywhere:  bench/cloudflare.sh   (env: ROUNDS=3 TRIALS=20 WRITERS=50 DURATION=10s
#                     CONNECTIONS=64 LIFE_SECONDS=10 LIFE_CONCURRENCY=64 PARTS="a b c d";
#                     DIRECT=1 sends parts a-c to the reference Worker's own workerd socket
#                     instead of through wrangler dev's proxy, a second workerd in front of it)
# Raw output: bench/results/raw/cloudflare-<time>/; summary: bench/results/cloudflare.md
# (DIRECT=1: cloudflare-direct.md)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
TRIALS="${TRIALS:-20}"
WRITERS="${WRITERS:-50}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
LIFE_SECONDS="${LIFE_SECONDS:-10}"
LIFE_CONCURRENCY="${LIFE_CONCURRENCY:-64}"
PARTS="${PARTS:-a b c d}"
THREADS=2
SEEDS="$BENCH_DIR/cloudflare/seeds"
DRIVE="$BENCH_DIR/cloudflare/drive.mjs"

# No telemetry, no update check, no request.cf download, no banner.
export WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false CLOUDFLARE_TELEMETRY_DISABLED=1
export WRANGLER_HIDE_BANNER=true CLOUDFLARE_CF_FETCH_ENABLED=false

# Process groups started here (wrangler dev runs npm, node, esbuild and two workerd), stopped
# as groups on exit, before lib.sh's own cleanup.
STARTED_GROUPS=()
stop_group() {
    local pgid="$1" i
    kill -0 -- "-$pgid" 2>/dev/null || return 0
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 -- "-$pgid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
}
cleanup_groups() {
    local g
    for g in "${STARTED_GROUPS[@]}"; do stop_group "$g"; done
    if [ "${CF_SERVICES_UP:-0}" = 1 ]; then augur_cloudflare_down || true; fi
    cleanup
}
trap cleanup_groups EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
drive_json() { grep -m1 '^DRIVEJSON ' "$1" | sed 's/^DRIVEJSON //'; }

command -v node >/dev/null || { log "node is needed (Debian: apt-get install nodejs npm)"; exit 1; }
ensure_wrk
if [ ! -x "$SEEDS/node_modules/.bin/wrangler" ]; then
    log "installing the reference Worker's packages (npm ci, from its package-lock.json)"
    (cd "$SEEDS" && npm ci --no-audit --no-fund >/dev/null)
fi

RUN="$RESULTS/raw/cloudflare-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"

# start_seeds: the reference Worker under `wrangler dev`, in its own process group (setsid:
# its PID is the group's id); sets SEEDS_URL.
start_seeds() {
    local port inspector state
    port="$(free_port)"
    inspector="$(free_port)"
    state="$(temp_dir)"
    (cd "$SEEDS" && exec setsid npx wrangler dev --ip 127.0.0.1 --port "$port" \
        --inspector-port "$inspector" --persist-to "$state" --show-interactive-dev-session=false \
        --log-level warn) >"$RUN/seeds-wrangler.log" 2>&1 &
    SEEDS_PGID=$!
    STARTED_GROUPS+=("$SEEDS_PGID")
    SEEDS_URL="http://127.0.0.1:$port"
    for ((i = 0; i < 600; i++)); do
        if curl -s "$SEEDS_URL/bare/none" 2>/dev/null | grep -q 'Prediction not found'; then
            log "reference Worker at $SEEDS_URL (wrangler dev, process group $SEEDS_PGID)"
            if [ "${DIRECT:-0}" = 1 ]; then direct_url "$port" "$inspector"; fi
            return 0
        fi
        kill -0 "$SEEDS_PGID" 2>/dev/null || { cat "$RUN/seeds-wrangler.log" >&2; return 1; }
        sleep 0.1
    done
    log "the reference Worker did not start:"
    cat "$RUN/seeds-wrangler.log" >&2
    return 1
}

# direct_url ENTRY_PORT INSPECTOR_PORT: with DIRECT=1, SEEDS_URL becomes the Worker's own
# workerd socket instead of wrangler's proxy (a second workerd in front of it, which costs
# about twice the Worker's CPU per request): found among the group's workerd listening
# sockets as the one that answers the Worker's own 404.
direct_url() {
    local pid port
    for pid in $(ps -o pid= -g "$SEEDS_PGID"); do
        [ "$(ps -o comm= -p "$pid")" = workerd ] || continue
        for port in $(ss -ltnpH 2>/dev/null | grep "pid=$pid," | awk '{ print $4 }' | sed 's/.*://'); do
            [ "$port" = "$1" ] || [ "$port" = "$2" ] && continue
            if curl -s -m 2 "http://127.0.0.1:$port/bare/none" 2>/dev/null | grep -q 'Prediction not found'; then
                SEEDS_URL="http://127.0.0.1:$port"
                log "DIRECT=1: the Worker's own workerd at $SEEDS_URL"
                return 0
            fi
        done
    done
    log "DIRECT=1: could not find the Worker's own workerd socket"
    return 1
}

# setup_read MODE ID: one prediction, created, processing, succeeded (with an image URL).
setup_read() {
    local base="$SEEDS_URL/$1/api/predictions" id="$2"
    curl -sf -X POST "$base" -d "{\"predictionId\":\"$id\",\"prompt\":\"a jersey\",\"model\":\"seed/image\"}" >/dev/null
    curl -sf -X POST "$base/$id/status" -d '{"status":"processing"}' >/dev/null
    curl -sf -X POST "$base/$id/status" \
        -d '{"status":"succeeded","imageUrl":"https://example.invalid/predictions/1700000000000-read.png","generationTime":1234}' >/dev/null
}

LOADS=""
declare -A SOCKERR
declare -A RACE_MULTI RACE_LOST RACE_WINNERS RACE_MAXW RPS P50 P99 LPS LP50 LP99
SEED_PARTS=""
for p in a b c; do
    if [[ " $PARTS " == *" $p "* ]]; then SEED_PARTS+="$p "; fi
done

# The Cloudflare feature of this tree's server, if it has one (part d needs it).
feature=""
if [ -f "$ROOT/scripts/services/cloudflare.sh" ]; then
    for f in cloudflare store-cloudflare; do
        if grep -q "^$f *=" "$ROOT/crates/server/Cargo.toml" 2>/dev/null; then feature="$f"; break; fi
    done
fi

# start_store_worker: Augur's store Worker (scripts/services/cloudflare.sh), once; sets
# worker_base (its http://host:port) and namespace.
start_store_worker() {
    [ "${CF_SERVICES_UP:-0}" = 1 ] && return 0
    # shellcheck source=/dev/null
    source "$ROOT/scripts/services/cloudflare.sh"
    augur_cloudflare_up
    CF_SERVICES_UP=1
    # The Worker's base URL and namespace, from the store URL (cloudflare[+http]://[:SECRET@]host[:port][/path][?namespace=NS&...]).
    read -r worker_base namespace < <(python3 - "$AUGUR_TEST_CLOUDFLARE_URL" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
scheme = "http" if u.scheme.endswith("+http") else "https"
host = u.hostname + (f":{u.port}" if u.port else "")
ns = urllib.parse.parse_qs(u.query).get("namespace", ["augur"])[0]
print(f"{scheme}://{host}{u.path.rstrip('/')}", ns)
EOF
    )
    log "store Worker at $worker_base, namespace $namespace"
}

# b's fourth target, with part d: the store Worker's KV-mirrored status route, its own
# wrangler dev beside the reference's, measured in the same rounds as the seeds' KV route.
MIRROR=0
if [[ " $PARTS " == *" b "* ]] && [[ " $PARTS " == *" d "* ]] && [ -n "$feature" ]; then
    start_store_worker
    node "$BENCH_DIR/cloudflare/staleness.mjs" "$AUGUR_TEST_CLOUDFLARE_URL" put read-1
    MIRROR=1
fi

if [ -n "$SEED_PARTS" ]; then
    start_seeds
    wait_quiet
fi

# a. The seeds' race.
if [[ " $PARTS " == *" a "* ]]; then
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round % 2)); then order=(kv do); else order=(do kv); fi
        for mode in "${order[@]}"; do
            out="$RUN/race-round$round-$mode.txt"
            node "$DRIVE" race "$SEEDS_URL/$mode" "$TRIALS" "$WRITERS" >"$out"
            j="$(drive_json "$out")"
            if [ "$(jq .errors_total <<<"$j")" != 0 ]; then
                log "race $mode round $round: transport errors: $j"
                exit 1
            fi
            RACE_MULTI[$mode]+="$(jq .trials_with_more_than_one_winner <<<"$j") "
            RACE_LOST[$mode]+="$(jq .lost_total <<<"$j") "
            RACE_WINNERS[$mode]+="$(jq .winners_total <<<"$j") "
            RACE_MAXW[$mode]+="$(jq .max_winners <<<"$j") "
            log "race round $round $mode: $(jq -c '{trials_with_more_than_one_winner, lost_total, winners_total, max_winners}' <<<"$j")"
        done
    done
fi

# b. Status reads.
if [[ " $PARTS " == *" b "* ]]; then
    setup_read kv read-1
    setup_read do read-1
    curl -sf "$SEEDS_URL/kv/api/predictions/read-1" >"$RUN/read-kv.json"
    curl -sf "$SEEDS_URL/do/api/predictions/read-1" >"$RUN/read-do.json"
    curl -sf -X PUT --data-binary @"$RUN/read-kv.json" "$SEEDS_URL/bare/api/predictions/read-1"
    curl -sf "$SEEDS_URL/bare/api/predictions/read-1" | cmp -s - "$RUN/read-kv.json" ||
        { log "the bare route does not return the same bytes"; exit 1; }
    log "status body: $(cat "$RUN/read-kv.json")"
    declare -A RURL=([kv]="$SEEDS_URL/kv/api/predictions/read-1" [do]="$SEEDS_URL/do/api/predictions/read-1"
        [bare]="$SEEDS_URL/bare/api/predictions/read-1")
    READ_TARGETS=(kv do bare)
    if [ "$MIRROR" = 1 ]; then
        RURL[mirror]="$worker_base/ns/$namespace/api/predictions/read-1"
        curl -sf "${RURL[mirror]}" >"$RUN/read-mirror.json"
        log "mirror status body: $(cat "$RUN/read-mirror.json")"
        READ_TARGETS+=(mirror)
    fi
    for target in "${READ_TARGETS[@]}"; do wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${RURL[$target]}" >/dev/null; done
    for ((round = 1; round <= ROUNDS; round++)); do
        # Each target goes first in turn.
        order=()
        for ((k = 0; k < ${#READ_TARGETS[@]}; k++)); do
            order+=("${READ_TARGETS[$(((round - 1 + k) % ${#READ_TARGETS[@]}))]}")
        done
        for target in "${order[@]}"; do
            out="$RUN/reads-round$round-$target.txt"
            load_before="$(cut -d' ' -f1 /proc/loadavg)"
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH_DIR/wrk-report.lua" \
                "${RURL[$target]}" >"$out"
            j="$(wrk_json "$out")"
            if [ "$(jq '.non2xx' <<<"$j")" != 0 ]; then
                log "errors in $out: $j"
                exit 1
            fi
            # Socket errors (workerd resetting a connection under load) are counted, not fatal.
            SOCKERR[$target]=$((${SOCKERR[$target]:-0} + $(jq .socket_errors <<<"$j")))
            LOADS+="$load_before/$(cut -d' ' -f1 /proc/loadavg) "
            RPS[$target]+="$(jq .rps <<<"$j") "
            P50[$target]+="$(jq .p50_ms <<<"$j") "
            P99[$target]+="$(jq .p99_ms <<<"$j") "
            log "reads round $round $target: $(jq -c '{rps, p50_ms, p99_ms}' <<<"$j")"
        done
    done
fi

# c. Whole lifecycles.
if [[ " $PARTS " == *" c "* ]]; then
    [ -s "$RUN/read-kv.json" ] || { setup_read kv read-1; curl -sf "$SEEDS_URL/kv/api/predictions/read-1" >"$RUN/read-kv.json"; }
    curl -sf -X PUT --data-binary @"$RUN/read-kv.json" "$SEEDS_URL/bare/api/predictions/read-1"
    for ((round = 1; round <= ROUNDS; round++)); do
        case $((round % 3)) in
            1) order=(kv do bare) ;;
            2) order=(bare kv do) ;;
            0) order=(do bare kv) ;;
        esac
        for target in "${order[@]}"; do
            out="$RUN/lifecycles-round$round-$target.txt"
            # A fresh Worker and state for each measurement: every lifecycle leaves a KV key or
            # an object (one SQLite database each, on local disk) behind, and workerd slows
            # as they pile up.
            stop_group "$SEEDS_PGID"
            start_seeds
            [ "$target" = bare ] && curl -sf -X PUT --data-binary @"$RUN/read-kv.json" "$SEEDS_URL/bare/api/predictions/read-1"
            # A 1 s warm-up on the fresh Worker (its first requests compile and open).
            if [ "$target" = bare ]; then
                node "$DRIVE" lifecycles-bare "$SEEDS_URL/bare/api/predictions/read-1" 8 1 >/dev/null
            else
                node "$DRIVE" lifecycles "$SEEDS_URL/$target" 8 1 >/dev/null
            fi
            load_before="$(cut -d' ' -f1 /proc/loadavg)"
            if [ "$target" = bare ]; then
                node "$DRIVE" lifecycles-bare "$SEEDS_URL/bare/api/predictions/read-1" "$LIFE_CONCURRENCY" "$LIFE_SECONDS" >"$out"
            else
                node "$DRIVE" lifecycles "$SEEDS_URL/$target" "$LIFE_CONCURRENCY" "$LIFE_SECONDS" >"$out"
            fi
            j="$(drive_json "$out")"
            if [ "$(jq .failed <<<"$j")" != 0 ]; then
                log "failed lifecycles in $out: $j"
                exit 1
            fi
            LOADS+="$load_before/$(cut -d' ' -f1 /proc/loadavg) "
            LPS[$target]+="$(jq .lps <<<"$j") "
            LP50[$target]+="$(jq .p50_ms <<<"$j") "
            LP99[$target]+="$(jq .p99_ms <<<"$j") "
            log "lifecycles round $round $target: $(jq -c '{lps, p50_ms, p99_ms, lifecycles}' <<<"$j")"
        done
    done
fi

if [ -n "$SEED_PARTS" ]; then
    stop_group "$SEEDS_PGID"
fi

# d. Augur on its Cloudflare backend.
D_NOTE=""
declare -A D_RPS D_P50 D_P99 D_LPS D_LP50 D_LP99 D_RACE D_STALE
if [[ " $PARTS " == *" d "* ]]; then
    if [ -z "$feature" ]; then
        D_NOTE="not measured: this tree has no scripts/services/cloudflare.sh or no cloudflare feature in crates/server/Cargo.toml"
        log "part d: $D_NOTE"
    else
        log "building augur with --features $feature (release)"
        (cd "$ROOT" && cargo build --release -q -p augur-server --features "$feature")
        start_store_worker
        store_url="$AUGUR_TEST_CLOUDFLARE_URL"
        wait_quiet

        # Reads: Augur's GET /v1/predictions/{id} and the Worker's KV-mirrored status route.
        start_augur "$store_url" "$RUN/augur-reads.log"
        created="$(create_one "$AUGUR_URL")"
        id="$(jq -r .id <<<"$created")"
        [ "$(jq -r .status <<<"$created")" = succeeded ] || { log "prediction did not succeed: $created"; exit 1; }
        for ((i = 0; i < 100; i++)); do
            curl -sf "$worker_base/ns/$namespace/api/predictions/$id" >"$RUN/d-mirror.json" 2>/dev/null &&
                grep -q succeeded "$RUN/d-mirror.json" && break
            sleep 0.1
        done
        declare -A DURL=([augur]="$AUGUR_URL/v1/predictions/$id" [mirror]="$worker_base/ns/$namespace/api/predictions/$id")
        for ((round = 1; round <= ROUNDS; round++)); do
            if ((round % 2)); then order=(augur mirror); else order=(mirror augur); fi
            for target in "${order[@]}"; do
                out="$RUN/d-reads-round$round-$target.txt"
                wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH_DIR/wrk-report.lua" \
                    -H "Authorization: Bearer $TOKEN" "${DURL[$target]}" >"$out"
                j="$(wrk_json "$out")"
                [ "$(jq '.non2xx + .socket_errors' <<<"$j")" = 0 ] || { log "errors in $out: $j"; exit 1; }
                D_RPS[$target]+="$(jq .rps <<<"$j") "
                D_P50[$target]+="$(jq .p50_ms <<<"$j") "
                D_P99[$target]+="$(jq .p99_ms <<<"$j") "
                log "d reads round $round $target: $(jq -c '{rps, p50_ms, p99_ms}' <<<"$j")"
            done
        done
        stop_started "$AUGUR_PID"

        # Whole lifecycles (as bench/lifecycles.sh), a fresh server per round.
        for ((round = 1; round <= ROUNDS; round++)); do
            out="$RUN/d-lifecycles-round$round"
            start_augur "$store_url" "$out.augur.log"
            create_one "$AUGUR_URL" >/dev/null
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency --timeout 10s \
                -s "$BENCH_DIR/wrk-lifecycle.lua" -H "Authorization: Bearer $TOKEN" \
                "$AUGUR_URL/v1/models/augur/echo/predictions" >"$out.wrk.txt" 2>"$out.wrk.err"
            for ((i = 0; i < 600; i++)); do
                c="$(metric "$AUGUR_URL" augur_predictions_created_total)"
                s="$(metric "$AUGUR_URL" augur_predictions_settled_total)"
                [ "$c" = "$s" ] && break
                sleep 0.1
            done
            stop_started "$AUGUR_PID"
            j="$(wrk_json "$out.wrk.txt")"
            if [ "$c" != "$s" ] || [ "$(jq '.non2xx + .socket_errors + .not_succeeded' <<<"$j")" != 0 ]; then
                log "FAILED check in d lifecycles round $round: created=$c settled=$s $j"
                exit 1
            fi
            D_LPS[augur]+="$(jq .rps <<<"$j") "
            D_LP50[augur]+="$(jq .p50_ms <<<"$j") "
            D_LP99[augur]+="$(jq .p99_ms <<<"$j") "
            log "d lifecycles round $round: $(jq -c '{rps, p50_ms, p99_ms}' <<<"$j") created=$c settled=$s"
        done

        # The seeds' race through Augur's HTTP API, with a fake Cog model server.
        cog_port="$(free_port)"
        data="$(temp_dir)"
        cat >"$data/augur.toml" <<EOF
[[models]]
name = "bench/race"
provider = "cog"
url = "http://127.0.0.1:$cog_port"
concurrency = 64
EOF
        AUGUR_CONFIG="$data/augur.toml" start_augur "$store_url" "$RUN/d-race-augur.log"
        for ((round = 1; round <= ROUNDS; round++)); do
            out="$RUN/d-race-round$round.txt"
            node "$DRIVE" augur-race "$AUGUR_URL" "$TOKEN" "$TRIALS" "$WRITERS" "$cog_port" >"$out"
            j="$(drive_json "$out")"
            D_RACE[multi]+="$(jq .trials_with_more_than_one_winner <<<"$j") "
            D_RACE[lost]+="$(jq .lost_total <<<"$j") "
            D_RACE[errors]+="$(jq .errors_total <<<"$j") "
            D_RACE[finals]+="$(jq -c .final_states <<<"$j") "
            log "d race round $round: $(jq -c '{trials_with_more_than_one_winner, lost_total, final_states}' <<<"$j")"
        done
        stop_started "$AUGUR_PID"

        # The KV mirror's staleness after an acknowledged write (bench/cloudflare/staleness.mjs).
        for ((round = 1; round <= ROUNDS; round++)); do
            out="$RUN/d-staleness-round$round.json"
            node "$BENCH_DIR/cloudflare/staleness.mjs" "$store_url" "$TRIALS" >"$out"
            D_STALE[stale]+="$(jq .stale_reads "$out") "
            D_STALE[trials]+="$(jq .trials_with_stale_reads "$out") "
            D_STALE[median]+="$(jq .fresh_after_ms_median "$out") "
            D_STALE[max]+="$(jq .fresh_after_ms_max "$out") "
            log "d staleness round $round: $(cat "$out")"
        done
    fi
fi

# shellcheck disable=SC2086
suffix=""
if [ "${DIRECT:-0}" = 1 ]; then suffix="-direct"; fi
summary="$RESULTS/cloudflare$suffix.md"
{
    echo "# Cloudflare (workerd, local): the seeds' design as written, and Augur's Cloudflare backend"
    echo
    echo '```text'
    machine_info
    echo "node: $(node --version); wrangler: $(cd "$SEEDS" && npx wrangler --version 2>/dev/null | tail -1); workerd inside wrangler dev (two workerd processes: wrangler's proxy and the Worker)"
    echo "command: ROUNDS=$ROUNDS TRIALS=$TRIALS WRITERS=$WRITERS DURATION=$DURATION CONNECTIONS=$CONNECTIONS LIFE_SECONDS=$LIFE_SECONDS LIFE_CONCURRENCY=$LIFE_CONCURRENCY PARTS=\"$PARTS\" bench/cloudflare.sh"
    echo "wrk, node (the drivers), wrangler's proxy and workerd share the machine's $(nproc) cores"
    [ "${DIRECT:-0}" != 1 ] || echo "DIRECT=1: parts a-c sent to the Worker's own workerd socket, not through wrangler dev's proxy"
    echo "1-minute load average before/after each read and lifecycle measurement: ${LOADS% }"
    echo '```'
    echo
    if [[ " $PARTS " == *" a "* ]]; then
        echo "## a. the seeds' race: $TRIALS trials of $WRITERS concurrent conflicting terminal transitions, per run"
        echo
        echo "| mode | trials with > 1 winner (per run) | median | lost acknowledged writes (per run) | median | winners in all (per run) | most winners in one trial (per run) |"
        echo "|---|---|---|---|---|---|---|"
        for mode in kv do; do
            echo "| $mode | ${RACE_MULTI[$mode]% } | $(median ${RACE_MULTI[$mode]}) of $TRIALS | ${RACE_LOST[$mode]% } | $(median ${RACE_LOST[$mode]}) | ${RACE_WINNERS[$mode]% } | ${RACE_MAXW[$mode]% } |"
        done
        echo
    fi
    if [[ " $PARTS " == *" b "* ]]; then
        echo "## b. status reads: the seeds' GET /api/predictions/{id}, wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
        echo
        echo "| route | requests/s (per round) | median requests/s | median p50 | median p99 | socket errors (all rounds) |"
        echo "|---|---|---|---|---|---|"
        for target in "${READ_TARGETS[@]}"; do
            echo "| $target | ${RPS[$target]% } | $(median ${RPS[$target]}) | $(median ${P50[$target]}) ms | $(median ${P99[$target]}) ms | ${SOCKERR[$target]:-0} |"
        done
        echo
        echo "bare: the same $(wc -c <"$RUN/read-kv.json") bytes from the Worker's memory, no storage (the reference)."
        if [ "$MIRROR" = 1 ]; then
            echo "mirror: Augur's store Worker (its own wrangler dev), GET /ns/{ns}/api/predictions/{id} answered from KV ($(wc -c <"$RUN/read-mirror.json") bytes); no Augur node running."
        fi
        echo
    fi
    if [[ " $PARTS " == *" c "* ]]; then
        echo "## c. whole lifecycles (create, processing, progress, succeeded, read), $LIFE_CONCURRENCY loops, ${LIFE_SECONDS}s"
        echo
        echo "| mode | lifecycles/s (per round) | median lifecycles/s | median p50 | median p99 |"
        echo "|---|---|---|---|---|"
        for target in kv do bare; do
            echo "| $target | ${LPS[$target]% } | $(median ${LPS[$target]}) | $(median ${LP50[$target]}) ms | $(median ${LP99[$target]}) ms |"
        done
        echo
        echo "bare: the same five requests, each a GET of the bare route (no storage): the driver, wrangler's proxy and workerd alone (the reference)."
        echo
    fi
    if [[ " $PARTS " == *" d "* ]]; then
        echo "## d. Augur on its Cloudflare backend"
        echo
        if [ -n "$D_NOTE" ]; then
            echo "$D_NOTE"
        else
            echo "| measurement | per round | median | median p50 | median p99 |"
            echo "|---|---|---|---|---|"
            echo "| Augur GET /v1/predictions/{id} (req/s) | ${D_RPS[augur]% } | $(median ${D_RPS[augur]}) | $(median ${D_P50[augur]}) ms | $(median ${D_P99[augur]}) ms |"
            echo "| Worker GET /ns/{ns}/api/predictions/{id}, KV mirror (req/s) | ${D_RPS[mirror]% } | $(median ${D_RPS[mirror]}) | $(median ${D_P50[mirror]}) ms | $(median ${D_P99[mirror]}) ms |"
            echo "| Augur whole lifecycles, augur/echo, Prefer: wait (/s) | ${D_LPS[augur]% } | $(median ${D_LPS[augur]}) | $(median ${D_LP50[augur]}) ms | $(median ${D_LP99[augur]}) ms |"
            echo "| race: trials with > 1 winner, of $TRIALS | ${D_RACE[multi]% } | $(median ${D_RACE[multi]}) | | |"
            echo "| race: lost acknowledged writes | ${D_RACE[lost]% } | $(median ${D_RACE[lost]}) | | |"
            echo
            echo "race: requests that failed (no answer or 5xx) per round: ${D_RACE[errors]% }; final states per round: ${D_RACE[finals]% }"
            echo
            echo "KV mirror staleness ($TRIALS acknowledged updates per round, one reader reading back to back): stale reads per round ${D_STALE[stale]% } (trials with any: ${D_STALE[trials]% }); first fresh read after the acknowledgement, median per round ${D_STALE[median]% } ms, slowest per round ${D_STALE[max]% } ms"
        fi
        echo
    fi
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
