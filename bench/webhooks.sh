#!/usr/bin/env bash
# bench/webhooks.sh: webhook deliveries per second to a local receiver, and the latency from the
# commit that enqueued a message to its receipt, beside a plain HTTP client's rate on the same
# machine, measured in the same run (issue 4).
#
# Wraps `webhooks` (crates/bench/src/bin/webhooks.rs; documented there), one process on
# loopback per round: a receiver (axum, answers 204, records when each webhook-id first
# arrives); the reference, a plain reqwest client POSTing the same signed body from CONCURRENCY
# tasks; and Augur, a webhook Dispatcher (CONCURRENCY attempts in flight) draining the outbox of
# a fresh embedded store (sync=full, durable) and of a memory store, the messages enqueued by
# Store::create of a settled prediction with one Effect::EnqueueDelivery in the same commit.
# Burst: MESSAGES creates from PRODUCERS tasks as fast as the store takes them (REFERENCE_MESSAGES
# requests for the reference). Steady: STEADY_RATE per second for STEADY_SECONDS, where latency
# is not queueing. ROUNDS rounds (default 3), each running reference and Augur phases in turn;
# reports the medians.
#
# Run from anywhere:  bench/webhooks.sh
#   env: ROUNDS=3 MESSAGES=20000 REFERENCE_MESSAGES=50000 CONCURRENCY=32 PRODUCERS=32
#        STEADY_RATE=200 STEADY_SECONDS=10 BENCH_QUIET_WAIT=1800
# Raw output: bench/results/raw/webhooks-<time>/; summary: bench/results/webhooks.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
MESSAGES="${MESSAGES:-20000}"
REFERENCE_MESSAGES="${REFERENCE_MESSAGES:-50000}"
CONCURRENCY="${CONCURRENCY:-32}"
PRODUCERS="${PRODUCERS:-32}"
STEADY_RATE="${STEADY_RATE:-200}"
STEADY_SECONDS="${STEADY_SECONDS:-10}"

log "building the webhooks benchmark (release)"
(cd "$ROOT" && cargo build --release -q -p augur-bench --bin webhooks)
BIN="$ROOT/target/release/webhooks"
RUN="$RESULTS/raw/webhooks-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
ARGS=(--messages "$MESSAGES" --reference-messages "$REFERENCE_MESSAGES"
    --concurrency "$CONCURRENCY" --producers "$PRODUCERS" --steady-rate "$STEADY_RATE"
    --steady-seconds "$STEADY_SECONDS" --stores embedded,memory --sync full)

wait_quiet
busy=""
for ((round = 1; round <= ROUNDS; round++)); do
    dir="$(temp_dir)"
    out="$RUN/round$round.json"
    pgrep -x rustc >/dev/null && busy+="$round "
    "$BIN" --dir "$dir" "${ARGS[@]}" >"$out" 2>"$RUN/round$round.log"
    rm -rf "$dir"
    log "round $round: $(jq -c '{reference: .reference_burst.per_s, embedded: .embedded_burst.per_s,
        memory: .memory_burst.per_s, steady_p50_ms: .embedded_steady.latency.p50_ms,
        steady_p99_ms: .embedded_steady.latency.p99_ms}' "$out")"
done

# col FILTER: the values of a jq filter over the rounds, space-separated.
col() {
    local f values=""
    for f in "$RUN"/round*.json; do
        values+="$(jq -r "$1" "$f") "
    done
    echo "${values% }"
}
# row LABEL FILTER: a table row with the per-round values and their median.
row() {
    local values
    values="$(col "$2")"
    # shellcheck disable=SC2086
    echo "| $1 | $values | **$(median $values)** |"
}
ratio() { col "(.$1.per_s / .reference_burst.per_s * 1000 | round) / 10"; }

summary="$RESULTS/webhooks.md"
first="$RUN/round1.json"
{
    echo "# webhook deliveries to a local receiver vs a plain HTTP client"
    echo
    echo '```text'
    machine_info
    echo "filesystem of the data dir: $(df -T "$BENCH_TMP" | awk 'NR == 2 { print $2 " on " $1 }')"
    echo "command: bench/webhooks.sh   (ROUNDS=$ROUNDS; per round: target/release/webhooks --dir <tmp> ${ARGS[*]})"
    echo "body: $(jq .embedded_burst.body_bytes "$first") bytes, signed (webhook-id, webhook-timestamp, webhook-signature); receiver answers 204"
    [ -n "$busy" ] && echo "rustc was running at the start of round(s): $busy(noise)"
    echo '```'
    echo
    echo "## Burst: $MESSAGES messages enqueued by $PRODUCERS tasks as fast as the store takes them; $CONCURRENCY in flight"
    echo
    echo "| | per round | median |"
    echo "|---|---|---|"
    row "reference: plain reqwest client, $CONCURRENCY tasks, $REFERENCE_MESSAGES requests: requests/s" .reference_burst.per_s
    row "Augur, embedded store (sync=full): deliveries/s, first enqueue to last receipt" .embedded_burst.per_s
    # shellcheck disable=SC2046
    echo "| embedded / reference (%) | $(ratio embedded_burst) | **$(median $(ratio embedded_burst))** |"
    row "Augur, memory store (non-durable): deliveries/s" .memory_burst.per_s
    # shellcheck disable=SC2046
    echo "| memory / reference (%) | $(ratio memory_burst) | **$(median $(ratio memory_burst))** |"
    row "embedded: creates/s while the dispatcher sends" .embedded_burst.enqueued_per_s
    row "embedded: backlog left at the last create" .embedded_burst.backlog_at_last_enqueue
    row "embedded: backlog drain rate (no creates competing), /s" .embedded_burst.drain_per_s
    row "embedded: commit → receipt p50 (ms; queueing)" .embedded_burst.latency.p50_ms
    row "embedded: commit → receipt p99 (ms; queueing)" .embedded_burst.latency.p99_ms
    row "CPU per message, reference (µs, whole process)" .reference_burst.cpu_us_per_msg
    row "CPU per message, embedded (µs, whole process)" .embedded_burst.cpu_us_per_msg
    row "CPU per message, memory (µs, whole process)" .memory_burst.cpu_us_per_msg
    echo
    echo "## Steady: $STEADY_RATE messages/s for $STEADY_SECONDS s (latency without a queue)"
    echo
    echo "| latency (ms) | per round | median |"
    echo "|---|---|---|"
    row "reference: request handed to the client → receipt, p50" .reference_steady.latency.p50_ms
    row "reference: request handed to the client → receipt, p99" .reference_steady.latency.p99_ms
    row "Augur embedded: commit → receipt, p50" .embedded_steady.latency.p50_ms
    row "Augur embedded: commit → receipt, p99" .embedded_steady.latency.p99_ms
    row "Augur embedded: create called → receipt, p50 (adds the commit's fsync)" .embedded_steady.latency_from_submit.p50_ms
    row "Augur embedded: create called → receipt, p99" .embedded_steady.latency_from_submit.p99_ms
    row "Augur memory: commit → receipt, p50" .memory_steady.latency.p50_ms
    row "Augur memory: commit → receipt, p99" .memory_steady.latency.p99_ms
    echo
    echo "Checks, per round: every message of every phase received: $(col '[.[] | objects | select(has("complete")) | .complete] | all');" \
        "repeats at the receivers: $(col '[.[] | objects | .receiver.duplicates // 0] | add');" \
        "messages left pending in the outboxes afterwards: $(col '[.[] | objects | .pending_after // 0] | add');" \
        "embedded steady receipts that beat the creating task's wake-up (counted as 0 ms): $(col '.embedded_steady.latency.negative')."
    echo
    echo "raw: ${RUN#"$ROOT/"}"
} >"$summary"
cp "$summary" "$RUN/summary.md"
cat "$summary"
