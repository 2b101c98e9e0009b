#!/usr/bin/env bash
# bench/credits.sh: what credits cost. Two measurements per store (embedded, Redis,
# PostgreSQL; throwaway servers on loopback, see bench/lib-shared.sh), ROUNDS rounds each
# (default 3), variants interleaved, a fresh server and store every run:
#
# 1. Whole lifecycles per second, priced against free: `wrk -t2 -c64 -d$DURATION` with
#    bench/wrk-lifecycle.lua (POST /v1/models/augur/echo/predictions with Prefer: wait, each
#    response checked 201 "succeeded"), as one account (its own token) in both variants:
#      free     augur/echo unpriced
#      priced   augur/echo at { per_prediction = 1 } (the create reserves in the same write as
#               the prediction; the terminal write charges), the account granted 10^12 credits
#    Target (issue 9): priced at least 0.85x free.
# 2. Creates per second (no Prefer: wait) with augur/echo priced, 64 connections, tokens
#    taken in turn from BENCH_TOKENS (bench/wrk-creates.lua):
#      one      every request on one account: one hot balance
#      many     64 accounts
#    Each run waits until every created prediction settled and checks, for every account,
#    that reserved is 0 and balance equals the grant minus one credit per prediction.
#
# Run from anywhere:  bench/credits.sh   (env: ROUNDS=3 DURATION=10s STORES="embedded redis
#                                          postgres" MEASURE="lifecycles creates"
#                                          BENCH_AUGUR=<binary> to skip the build)
# Raw output: bench/results/raw/credits-<time>/; summary: bench/results/credits.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/lib-shared.sh
source "$BENCH_DIR/lib-shared.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
STORES="${STORES:-embedded redis postgres}"
MEASURE="${MEASURE:-lifecycles creates}"
GRANT=1000000000000

ensure_wrk
build_release_shared
RUN="$RESULTS/raw/credits-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
for store in $STORES; do
    case "$store" in
        redis) start_redis everysec ;;
        postgres) start_postgres ;;
    esac
done

FREE_CONFIG="$(temp_dir)/free.toml"
PRICED_CONFIG="$(temp_dir)/priced.toml"
: >"$FREE_CONFIG"
cat >"$PRICED_CONFIG" <<'TOML'
[[models]]
name = "augur/echo"
price = { per_prediction = 1 }
TOML

# store_url STORE: a fresh namespace of STORE. Redis is emptied and its append-only file
# rewritten first (redis_reset), so that earlier runs' data (a priced run leaves its ledger)
# neither grows the AOF into an automatic rewrite mid-run nor slows later runs.
store_url() {
    case "$1" in
        embedded) echo "embedded://$(temp_dir)/store" ;;
        redis)
            redis_reset
            echo "redis://127.0.0.1:$REDIS_PORT/0?prefix=b$RANDOM$RANDOM"
            ;;
        postgres)
            local db="b$RANDOM$RANDOM"
            pg_sql postgres "CREATE DATABASE $db" >/dev/null
            echo "postgres://postgres@127.0.0.1:$PG_PORT/$db"
            ;;
    esac
}

# api METHOD PATH [BODY]: a call with the admin token.
api() {
    curl -sf -X "$1" "$AUGUR_URL$2" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' ${3:+-d "$3"}
}

# account NAME: creates it with GRANT credits; prints its token.
account() {
    api POST /v1/accounts "{\"username\":\"$1\"}" >/dev/null
    api POST "/v1/accounts/$1/credits" "{\"amount\":$GRANT}" >/dev/null
    api POST "/v1/accounts/$1/tokens" '{"name":"bench"}' | jq -r .token
}

# settle: waits until every created prediction settled.
settle() {
    local i created settled
    for ((i = 0; i < 600; i++)); do
        created="$(metric "$AUGUR_URL" augur_predictions_created_total)"
        settled="$(metric "$AUGUR_URL" augur_predictions_settled_total)"
        [ "$created" = "$settled" ] && { echo "$created"; return 0; }
        sleep 0.1
    done
    log "predictions did not settle: created $created settled $settled"
    return 1
}

# check_accounts N NAME...: reserved 0 and balance = GRANT + 10 (sign-up) - predictions, summed.
check_accounts() {
    local predictions="$1" name c balance=0 reserved=0 accounts=0
    shift
    for name in "$@"; do
        c="$(api GET "/v1/accounts/$name/credits")"
        balance=$((balance + $(jq .balance <<<"$c")))
        reserved=$((reserved + $(jq .reserved <<<"$c")))
        accounts=$((accounts + 1))
    done
    local want=$(((GRANT + 10) * accounts - predictions))
    if [ "$reserved" != 0 ] || [ "$balance" != "$want" ]; then
        log "FAILED credit check: balance $balance (want $want), reserved $reserved"
        return 1
    fi
}

declare -A RPS P50 P99
wait_quiet
for ((round = 1; round <= ROUNDS; round++)); do
    for store in $STORES; do
        # 1. lifecycles: free and priced as one account, priced over 64 accounts.
        for variant in free priced free64 priced64; do
            [[ " $MEASURE " == *" lifecycles "* ]] || break
            out="$RUN/round$round-$store-lifecycles-$variant"
            config="$PRICED_CONFIG"; [ "${variant#free}" != "$variant" ] && config="$FREE_CONFIG"
            start_augur_shared "$(store_url "$store")" "$out.augur.log" AUGUR_CONFIG="$config"
            names=()
            tokens=""
            count=1; [ "${variant%64}" != "$variant" ] && count=64
            for ((i = 0; i < count; i++)); do
                names+=("bench$i")
                tokens+="$(account "bench$i"),"
            done
            token="${tokens%%,*}"
            TOKEN="$token" create_one "$AUGUR_URL" >/dev/null
            BENCH_TOKENS="${tokens%,}" wrk -t2 -c64 -d"$DURATION" --latency --timeout 10s \
                -s "$BENCH_DIR/wrk-lifecycle.lua" \
                "$AUGUR_URL/v1/models/augur/echo/predictions" >"$out.wrk.txt" 2>"$out.wrk.err"
            n="$(settle)"
            if [ "${variant#priced}" != "$variant" ]; then check_accounts "$n" "${names[@]}"; fi
            stop_started "$AUGUR_PID"
            j="$(wrk_json "$out.wrk.txt")"
            if [ "$(jq '.non2xx + .socket_errors + .not_succeeded' <<<"$j")" != 0 ]; then
                log "FAILED: $store lifecycles $variant: $j"; exit 1
            fi
            key="$store lifecycles $variant"
            RPS[$key]+="$(jq .rps <<<"$j") "; P50[$key]+="$(jq .p50_ms <<<"$j") "; P99[$key]+="$(jq .p99_ms <<<"$j") "
            log "round $round $key: $(jq -c '{rps, p50_ms, p99_ms}' <<<"$j")"
        done
        # 2. creates, one hot account or 64.
        for variant in one many; do
            [[ " $MEASURE " == *" creates "* ]] || break
            out="$RUN/round$round-$store-creates-$variant"
            start_augur_shared "$(store_url "$store")" "$out.augur.log" AUGUR_CONFIG="$PRICED_CONFIG"
            names=()
            tokens=""
            count=1; [ "$variant" = many ] && count=64
            for ((i = 0; i < count; i++)); do
                names+=("acct$i")
                tokens+="$(account "acct$i"),"
            done
            BENCH_TOKENS="${tokens%,}" wrk -t2 -c64 -d"$DURATION" --latency --timeout 10s \
                -s "$BENCH_DIR/wrk-creates.lua" "$AUGUR_URL" >"$out.wrk.txt" 2>"$out.wrk.err"
            n="$(settle)"
            check_accounts "$n" "${names[@]}"
            stop_started "$AUGUR_PID"
            j="$(wrk_json "$out.wrk.txt")"
            if [ "$(jq '.non2xx + .socket_errors + .not_created' <<<"$j")" != 0 ]; then
                log "FAILED: $store creates $variant: $j"; exit 1
            fi
            key="$store creates $variant"
            RPS[$key]+="$(jq .rps <<<"$j") "; P50[$key]+="$(jq .p50_ms <<<"$j") "; P99[$key]+="$(jq .p99_ms <<<"$j") "
            log "round $round $key: $(jq -c '{rps, p50_ms, p99_ms}' <<<"$j")"
        done
    done
done

summary="$RESULTS/credits.md"
{
    echo "# bench/credits.sh, $(date -u +%Y-%m-%dT%H:%MZ), ROUNDS=$ROUNDS DURATION=$DURATION"
    machine_info
    echo
    echo "| store | measurement | variant | median/s | p50 ms | p99 ms | runs/s | ratio |"
    echo "|---|---|---|---:|---:|---:|---|---:|"
    for store in $STORES; do
        for set in "lifecycles free priced free64 priced64" "creates many one"; do
            read -r what base others <<<"$set"
            [ -n "${RPS[$store $what $base]:-}" ] || continue
            # shellcheck disable=SC2086
            base_m="$(median ${RPS[$store $what $base]})"
            for variant in "$base" $others; do
                key="$store $what $variant"
                # shellcheck disable=SC2086
                m="$(median ${RPS[$key]})"
                ratio="$(awk -v a="$m" -v b="$base_m" 'BEGIN { printf "%.2f", a / b }')"
                # shellcheck disable=SC2086
                echo "| $store | $what | $variant | $m | $(median ${P50[$key]}) | $(median ${P99[$key]}) | ${RPS[$key]} | $ratio |"
            done
        done
    done
} >"$summary"
cat "$summary"
log "raw output in $RUN"
