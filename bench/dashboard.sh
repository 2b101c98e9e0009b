#!/usr/bin/env bash
# bench/dashboard.sh: the dashboard with many stored predictions (issue 13). For each COUNT in
# COUNTS (default "100 100000"): a fresh `augur serve` (release, embedded store, fresh data
# directory), then crates/server/tests/browser/bench_dashboard.mjs, which seeds COUNT
# `augur/echo` predictions of one account through the API (32 at a time) plus one older
# `augur/demo-image` prediction, waits until all settled, and measures in headless Chromium
# (Debian's, driven by Playwright) RUNS loads (default 5) of each page, medians:
#   - time to first render: navigation start until the page shows its data (the first row of
#     `/`; the detail page's picture, loaded) for the seeded account and for the admin (who
#     lists every account's), and of `/?model=augur/demo-image` (the model filter's worst
#     case: its one match is behind every other prediction);
#   - the server time of the API request behind each page (the browser's request start to
#     response start on loopback), and of 20 direct calls from Node.
# COUNT=100 is the reference: the same pages with few predictions.
#
# Run from anywhere:  bench/dashboard.sh     (env: COUNTS="100 100000" RUNS=5 BENCH_QUIET_WAIT=1800)
# Needs node and the npm packages of crates/server/tests/js (installed here with `npm ci` when
# missing) and Debian's chromium (installed when missing).
# Raw output: bench/results/raw/dashboard-<time>/; summary: bench/results/dashboard.md
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNTS="${COUNTS:-100 100000}"
RUNS="${RUNS:-5}"
JS="$ROOT/crates/server/tests/js"
SCENARIO="$ROOT/crates/server/tests/browser/bench_dashboard.mjs"

if [ ! -d "$JS/node_modules/playwright-core" ]; then
    log "installing the npm packages of $JS"
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v "${AUGUR_CHROMIUM:-/usr/bin/chromium}" >/dev/null; then
    log "installing chromium from Debian"
    apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
fi
# Only the server: this benchmark needs no bare-axum reference.
log "building the release binary (augur)"
(cd "$ROOT" && cargo build --release -q -p augur-server)
RUN="$RESULTS/raw/dashboard-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
wait_quiet

for count in $COUNTS; do
    dir="$(temp_dir)"
    start_augur "embedded://$dir/data" "$RUN/augur-$count.log"
    log "seeding $count predictions and measuring ($RUNS loads per page)"
    AUGUR_URL="$AUGUR_URL" AUGUR_ADMIN_TOKEN="$TOKEN" AUGUR_SCREENSHOT_DIR="$RUN" \
        AUGUR_BENCH_SEED="$count" AUGUR_BENCH_RUNS="$RUNS" node "$SCENARIO" | tee "$RUN/bench-$count.txt" >&2
    stop_started "$AUGUR_PID"
done

{
    echo "# Dashboard: time to first render (bench/dashboard.sh)"
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) at commit $(git -C "$ROOT" rev-parse --short HEAD); medians of $RUNS loads; release build, embedded store, headless Chromium $(chromium --version 2>/dev/null | awk '{print $2}'), all on the same 2 cores."
    echo
    grep -h '^bench dashboard ' "$RUN"/bench-*.txt | sed 's/^bench dashboard //' | node -e '
        const rows = require("fs").readFileSync(0, "utf8").trim().split("\n").map(JSON.parse);
        const line = (cells) => console.log(`| ${cells.join(" | ")} |`);
        line(["stored predictions", ...rows.map((r) => r.stored.toLocaleString("en"))]);
        line(["---", ...rows.map(() => "---")]);
        const pages = [["list", "`/` (the account)"], ["admin_list", "`/` (the admin: every account)"],
          ["detail", "`/predictions/{id}`, picture loaded"], ["model_filter", "`/?model=` (worst case)"]];
        for (const [key, label] of pages) {
          line([`${label}: first render, ms`, ...rows.map((r) => `${r[key].render_ms} (max ${r[key].render_max_ms})`)]);
          line([`${label}: server time of its API request, ms`, ...rows.map((r) => r[key].api_server_ms)]);
        }
        for (const [key, label] of [["list_50", "GET /v1/predictions?limit=50"], ["admin_list_50", "same, admin"],
          ["get_one", "GET /v1/predictions/{id}"], ["model_filter_50", "GET /v1/predictions?limit=50&model=…"]]) {
          line([`${label}, direct from Node, ms`, ...rows.map((r) => r.direct_api_ms[key])]);
        }
        line(["seeding through the API, creates/s", ...rows.map((r) => r.seed_creates_per_s)]);
      '
} >"$RESULTS/dashboard.md"
cat "$RESULTS/dashboard.md"
