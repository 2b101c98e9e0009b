#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) for a while each:
#
#   scripts/fuzz.sh                    # every target for 5 s (the smoke run of scripts/test.sh)
#   scripts/fuzz.sh 600                # every target for 10 minutes
#   scripts/fuzz.sh 3600 http_request  # one target for an hour
#
# cargo-fuzz needs nightly compiler flags (sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the
# pinned stable toolchain take them. The smoke run builds in the dev profile (--dev), which
# compiles in a few minutes where a release build takes several times longer; longer runs
# (more than 60 s a target) build in release, which runs far more inputs a second. Crashes are
# saved in fuzz/artifacts/<target>/ and make the script fail; replay one with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>`. The corpus each
# run grows is kept in fuzz/corpus/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"
shift || true
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "   installing cargo-fuzz from crates.io"
    cargo install --locked --quiet cargo-fuzz
fi
profile=(--dev)
[ "$seconds" -gt 60 ] && profile=()
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
start=$SECONDS
cargo fuzz build "${profile[@]}" >/dev/null 2>&1 || cargo fuzz build "${profile[@]}"
echo "   built the fuzz targets in $((SECONDS - start)) s"
for target in "${targets[@]}"; do
    echo "== fuzz $target ($seconds s)"
    log="fuzz/target/$target.log"
    if ! cargo fuzz run "${profile[@]}" "$target" -- -max_total_time="$seconds" \
        -rss_limit_mb=4096 -timeout=30 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    tail -n 1 "$log"
done
