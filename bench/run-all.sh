#!/usr/bin/env bash
# bench/run-all.sh: runs every benchmark in turn (status reads, durable transitions, whole
# lifecycles, memory) and prints their summaries; each writes bench/results/<name>.md and raw
# output under bench/results/raw/. Takes about 9 minutes on the 2-core development machine.
#
# Run from anywhere:  bench/run-all.sh    (the environment variables of each script apply)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for bench in status-reads transitions lifecycles memory; do
    echo "=== $bench"
    "$here/$bench.sh"
    echo
done
