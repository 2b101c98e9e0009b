#!/usr/bin/env bash
# bench/transitions.sh: durable compare-and-set transitions per second on the embedded store,
# against the raw group-commit append rate of the same disk, measured in the same run.
#
# Wraps crates/store-embedded/examples/transitions.rs (equivalent to
# `cargo run --release -p augur-store-embedded --example transitions -- --dir <tmp> --seconds 10
# --concurrency 64`, but the example is built first and its binary run directly, so no cargo
# process shares the CPU): 64 tokio tasks loop get + update (with a counter effect) on their
# own predictions in an EmbeddedStore with sync=full for 10 s; then, in the same directory,
# one thread appends records of the same size in batches of the group-commit size the store
# achieved, one fdatasync per batch, for 10 s. RUNS runs (default 3); reports the medians and
# the ratio. Target: >= 20% of the raw rate.
#
# Run from anywhere:  bench/transitions.sh     (env: RUNS=3 SECONDS_PER_PHASE=10 CONCURRENCY=64)
# Raw output: bench/results/raw/transitions-<time>/; summary: bench/results/transitions.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-3}"
SECONDS_PER_PHASE="${SECONDS_PER_PHASE:-10}"
CONCURRENCY="${CONCURRENCY:-64}"

log "building the transitions example (release)"
(cd "$ROOT" && cargo build --release -q -p augur-store-embedded --example transitions)
EXAMPLE="$ROOT/target/release/examples/transitions"
RUN="$RESULTS/raw/transitions-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
dir="$(temp_dir)"

wait_quiet
TPS="" RAW="" RATIO="" BATCH="" P99="" BYTES=""
for ((run = 1; run <= RUNS; run++)); do
    out="$RUN/run$run.txt"
    "$EXAMPLE" --dir "$dir" --seconds "$SECONDS_PER_PHASE" --concurrency "$CONCURRENCY" >"$out"
    j="$(grep '^{' "$out" | tail -1)"
    log "run $run: $(jq -c '{transitions_per_s, raw_records_per_s, ratio, average_batch}' <<<"$j")"
    TPS+="$(jq .transitions_per_s <<<"$j") "
    RAW+="$(jq .raw_records_per_s <<<"$j") "
    RATIO+="$(jq .ratio <<<"$j") "
    BATCH+="$(jq .average_batch <<<"$j") "
    P99+="$(jq .p99_ms <<<"$j") "
    BYTES="$(jq .record_bytes <<<"$j")"
done

# shellcheck disable=SC2086
ratio="$(median $RATIO)"
summary="$RESULTS/transitions.md"
{
    echo "# durable transitions on the embedded store vs raw group-commit appends"
    echo
    echo '```text'
    machine_info
    echo "filesystem of the data dir: $(df -T "$dir" | awk 'NR == 2 { print $2 " on " $1 }')"
    echo "command: target/release/examples/transitions --dir <tmp> --seconds $SECONDS_PER_PHASE --concurrency $CONCURRENCY   ($RUNS runs)"
    echo '```'
    echo
    echo "| | per run | median |"
    echo "|---|---|---|"
    # shellcheck disable=SC2086
    {
        echo "| store transitions/s (get + update, sync=full) | ${TPS% } | $(median $TPS) |"
        echo "| raw appends/s (same record size and batch, fdatasync per batch) | ${RAW% } | $(median $RAW) |"
        echo "| ratio | ${RATIO% } | **$(awk -v r="$ratio" 'BEGIN { printf "%.1f%%", 100 * r }')** |"
        echo "| average group commit (requests/transaction) | ${BATCH% } | $(median $BATCH) |"
        echo "| get + update p99 (ms) | ${P99% } | $(median $P99) |"
    }
    echo
    echo "record size: $BYTES bytes. Target >= 20% of the raw rate: $(awk -v r="$ratio" 'BEGIN { print (r >= 0.2 ? "met" : "NOT met") }')."
    echo
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
