#!/usr/bin/env bash
# bench/uploads.sh: upload throughput of `POST /v1/files` (files/s and MB/s) for 100 KB and
# 10 MB files, beside a plain HTTP PUT of the same bytes to the same object store, measured in
# the same run (issue 10).
#
# Wraps `uploads` (crates/bench/src/bin/uploads.rs; documented there): CONCURRENCY client tasks
# send COUNT files of one size, each request the same incompressible bytes. Per object store:
#   local   Augur with AUGUR_FILES_DIR=<temp dir> (object_store's LocalFileSystem) and the
#           embedded store, against `uploads put-server`: a bare axum `PUT /{key}` writing the
#           body into a directory on the same disk as object_store does (staging file renamed
#           into place, no fsync).
#   s3      Augur with AUGUR_FILES_DIR=s3://bench/augur on moto's S3 server (`moto_server` from
#           the test virtualenv, on loopback) and the embedded store, against a plain S3
#           PutObject (one unsigned HTTP PUT; moto does not check signatures) of the same bytes
#           to the same moto server and bucket.
# ROUNDS rounds (default 3); in each, every store gets a fresh Augur, data directory, reference
# and (for s3) moto server, and the two targets take turns on who goes first. Reports the
# medians and Augur / reference ratios.
#
# Run from anywhere:  bench/uploads.sh
#   env: ROUNDS=3 STORES="local s3" CONCURRENCY=4 SMALL_COUNT=400 LARGE_COUNT=20
#        S3_SMALL_COUNT=200 S3_LARGE_COUNT=10 MOTO_SERVER=target/test-venv/bin/moto_server
#        BENCH_AUGUR=<augur binary built with --features s3> to skip the build
#        BENCH_QUIET_WAIT=1800
# Raw output: bench/results/raw/uploads-<time>/; summary: bench/results/uploads.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
STORES="${STORES:-local s3}"
CONCURRENCY="${CONCURRENCY:-4}"
SMALL_SIZE=100000
LARGE_SIZE=10000000
SMALL_COUNT="${SMALL_COUNT:-400}"
LARGE_COUNT="${LARGE_COUNT:-20}"
S3_SMALL_COUNT="${S3_SMALL_COUNT:-200}"
S3_LARGE_COUNT="${S3_LARGE_COUNT:-10}"
MOTO_SERVER="${MOTO_SERVER:-$ROOT/target/test-venv/bin/moto_server}"

if [[ " $STORES " == *" s3 "* ]] && [ ! -x "$MOTO_SERVER" ]; then
    log "$MOTO_SERVER is missing: make the test virtualenv (scripts/test.sh, or python3 -m venv" \
        "target/test-venv && target/test-venv/bin/pip install -r scripts/requirements-test.txt)"
    exit 1
fi
if [ -n "${BENCH_AUGUR:-}" ]; then
    AUGUR="$BENCH_AUGUR"
    log "using $AUGUR (BENCH_AUGUR set: not building augur)"
    (cd "$ROOT" && cargo build --release -q -p augur-bench --bin uploads)
else
    log "building release binaries (augur with s3, uploads)"
    (cd "$ROOT" && cargo build --release -q -p augur-server --features s3 &&
        cargo build --release -q -p augur-bench --bin uploads)
    # A copy, so that another build in the tree cannot swap the binary mid-run.
    cp "$AUGUR" "$BENCH_TMP/augur"
    AUGUR="$BENCH_TMP/augur"
fi
UPLOADS="$ROOT/target/release/uploads"
cp "$UPLOADS" "$BENCH_TMP/uploads"
UPLOADS="$BENCH_TMP/uploads"
RUN="$RESULTS/raw/uploads-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"

# start_augur_env DATA_DIR LOG [VAR=VALUE...]: augur serve on the embedded store in DATA_DIR,
# files in DATA_DIR/files unless a variable says otherwise; sets AUGUR_PID and AUGUR_URL.
start_augur_env() {
    local data="$1" logfile="$2"
    shift 2
    env AUGUR_LISTEN=127.0.0.1:0 AUGUR_STORE="embedded://$data/store" AUGUR_ADMIN_TOKEN="$TOKEN" \
        AUGUR_LOG=warn AUGUR_FILES_DIR="$data/files" AUGUR_FILE_MAX_BYTES=$((2 * LARGE_SIZE)) \
        "$@" "$AUGUR" serve >"$logfile" 2>&1 &
    AUGUR_PID=$!
    STARTED_PIDS+=("$AUGUR_PID")
    AUGUR_URL="$(wait_url "$logfile" 'augur listening on' "$AUGUR_PID")"
}

# start_moto LOG: moto's S3 server on a free loopback port with a bucket `bench`; sets MOTO_PID
# and MOTO_URL.
start_moto() {
    local port i
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$MOTO_SERVER" -H 127.0.0.1 -p "$port" >"$1" 2>&1 &
    MOTO_PID=$!
    STARTED_PIDS+=("$MOTO_PID")
    MOTO_URL="http://127.0.0.1:$port"
    for ((i = 0; i < 300; i++)); do
        curl -sf -X PUT "$MOTO_URL/bench" >/dev/null 2>&1 && return 0
        kill -0 "$MOTO_PID" 2>/dev/null || { log "moto exited:"; cat "$1" >&2; return 1; }
        sleep 0.1
    done
    log "moto did not start"
    return 1
}

# measure OUT TARGET URL SIZE COUNT [ARGS...]: one client run; its JSON goes to OUT.json.
measure() {
    local out="$1" target="$2" url="$3" size="$4" count="$5"
    shift 5
    "$UPLOADS" client --target "$target" --url "$url" --size "$size" --count "$count" \
        --concurrency "$CONCURRENCY" "$@" >"$out.json" 2>"$out.err" ||
        { log "FAILED: $out"; cat "$out.err" >&2; exit 1; }
}

declare -A FPS MBS P50
busy=""
wait_quiet
for ((round = 1; round <= ROUNDS; round++)); do
    pgrep -x rustc >/dev/null && busy+="$round "
    for store in $STORES; do
        data="$(temp_dir)"
        if [ "$store" = local ]; then
            start_augur_env "$data" "$RUN/round$round-$store.augur.log"
            "$UPLOADS" put-server --dir "$data/put" >"$RUN/round$round-$store.put.log" 2>&1 &
            put_pid=$!
            STARTED_PIDS+=("$put_pid")
            put_url="$(wait_url "$RUN/round$round-$store.put.log" 'listening on' "$put_pid")"
            small="$SMALL_COUNT" large="$LARGE_COUNT"
        else
            start_moto "$RUN/round$round-$store.moto.log"
            start_augur_env "$data" "$RUN/round$round-$store.augur.log" \
                AUGUR_FILES_DIR=s3://bench/augur AWS_ENDPOINT_URL="$MOTO_URL" AWS_ALLOW_HTTP=true \
                AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
            put_url="$MOTO_URL/bench"
            small="$S3_SMALL_COUNT" large="$S3_LARGE_COUNT"
        fi
        for size in "$SMALL_SIZE" "$LARGE_SIZE"; do
            count="$small"; [ "$size" = "$LARGE_SIZE" ] && count="$large"
            order="files put"; [ $((round % 2)) = 0 ] && order="put files"
            for target in $order; do
                out="$RUN/round$round-$store-$size-$target"
                if [ "$target" = files ]; then
                    measure "$out" files "$AUGUR_URL" "$size" "$count" --token "$TOKEN"
                else
                    measure "$out" put "$put_url" "$size" "$count" --prefix "r$round-$size"
                fi
                key="$store $size $target"
                FPS[$key]+="$(jq .files_per_s "$out.json") "
                MBS[$key]+="$(jq .mb_per_s "$out.json") "
                P50[$key]+="$(jq .p50_ms "$out.json") "
                log "round $round $key: $(jq -c '{files_per_s, mb_per_s, p50_ms, p99_ms}' "$out.json")"
            done
        done
        stop_started "$AUGUR_PID"
        if [ "$store" = local ]; then stop_started "$put_pid"; else stop_started "$MOTO_PID"; fi
        rm -rf "$data"
    done
done

summary="$RESULTS/uploads.md"
{
    echo "# bench/uploads.sh, $(date -u +%Y-%m-%dT%H:%MZ), ROUNDS=$ROUNDS CONCURRENCY=$CONCURRENCY"
    machine_info | grep -v "^wrk:"
    echo "rounds that started while rustc ran elsewhere on the machine: ${busy:-none}"
    echo
    echo "| store | file size | target | median files/s | median MB/s | median p50 ms | files/s per run | Augur / PUT |"
    echo "|---|---:|---|---:|---:|---:|---|---:|"
    for store in $STORES; do
        for size in "$SMALL_SIZE" "$LARGE_SIZE"; do
            # shellcheck disable=SC2086
            ref="$(median ${FPS[$store $size put]})"
            for target in put files; do
                key="$store $size $target"
                # shellcheck disable=SC2086
                m="$(median ${FPS[$key]})"
                ratio="$(awk -v a="$m" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')"
                # shellcheck disable=SC2086
                echo "| $store | $size | $target | $m | $(median ${MBS[$key]}) | $(median ${P50[$key]}) | ${FPS[$key]} | $ratio |"
            done
        done
    done
} >"$summary"
cat "$summary"
log "raw output in $RUN"
