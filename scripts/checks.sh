#!/usr/bin/env bash
# The house-keeping checks .ci/run runs before the tests (each prints its time):
#
#   scripts/checks.sh            # all of them
#   scripts/checks.sh doc deny   # some: toolchain, doc, deny, features
#
# - toolchain: the pinned toolchain (rust-toolchain.toml) is there, registered offline when the
#   machine has the same version under another name (scripts/toolchain.sh).
# - doc: `cargo doc --workspace --no-deps` with every warning an error (broken links included).
# - deny: the dependency policy in deny.toml (licenses, bans, sources), offline once the crates
#   are fetched. Advisories are not checked: the RustSec database is a download from outside
#   the package registries.
# - features: every feature of the server builds on its own (`cargo hack check
#   --each-feature`, which also tries no features at all; all of them together is clippy's
#   build), so a backend's code never leans on another backend's feature.
# Tools missing from ~/.cargo/bin are installed from crates.io (`cargo install --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

install_if_missing() { # <cargo subcommand> <crate>
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "   installing $2 from crates.io"
        cargo install --locked --quiet "$2"
    fi
}

timed() { # <name> <command...>
    local start=$SECONDS
    echo "== $1"
    "${@:2}"
    echo "   $1: $((SECONDS - start)) s"
}

check_toolchain() {
    scripts/toolchain.sh
    cargo --version && cargo fmt --version && cargo clippy --version
}

check_doc() {
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked --quiet
}

check_deny() {
    install_if_missing deny cargo-deny
    cargo fetch --locked --quiet
    local out rc=0
    out="$(cargo deny --offline check --hide-inclusion-graph licenses bans sources 2>&1)" || rc=$?
    # Duplicate versions are warnings (see deny.toml); show the errors and the verdict.
    grep -v -e '^warning\[duplicate\]' <<<"$out" | grep -E -e '^error' -e 'ok|FAILED' || true
    [ "$rc" -eq 0 ] || { echo "$out" | tail -n 80; return "$rc"; }
}

check_features() {
    install_if_missing hack cargo-hack
    # `check` only: metadata, no code generation, so it costs a fraction of a build and shares
    # the dependencies clippy has already checked; it never replaces the test build's binaries.
    # `--all-features` is left out: clippy has just checked exactly that.
    cargo hack check -p augur-server --each-feature --exclude-all-features --locked --quiet
}

selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=(toolchain doc deny features)
for check in "${selected[@]}"; do
    timed "$check" "check_$check"
done
