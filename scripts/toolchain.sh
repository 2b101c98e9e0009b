#!/usr/bin/env bash
# Makes the toolchain pinned by rust-toolchain.toml available without a download.
#
# rustup installs a pinned toolchain it does not have by downloading it, which fails on a
# machine without internet. When the pinned version is missing but the machine's default
# toolchain is that very version (say `stable`, which is rustc 1.95.0), this registers the
# default toolchain's directory under the pinned name (a symbolic link in rustup's toolchains
# directory: `rustup toolchain link` refuses names that look like versions), so every cargo
# command in the repository uses it offline. Any other mismatch is an error that says what to do.
# Sourced or run; idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pinned="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")"
command -v rustup >/dev/null || exit 0 # a toolchain without rustup: cargo is what it is
if rustup toolchain list | grep -q "^$pinned-"; then
    exit 0
fi
# Ask the default toolchain from outside the repository, where rust-toolchain.toml does not
# apply.
default_sysroot="$(cd / && rustc --print sysroot)"
default_version="$(cd / && rustc --version | awk '{print $2}')"
if [ "$default_version" = "$pinned" ]; then
    echo "== registering the installed rustc $default_version as toolchain $pinned (rust-toolchain.toml)"
    host="$(cd / && rustc -vV | sed -n 's/^host: //p')"
    ln -sfn "$default_sysroot" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pinned-$host"
else
    echo "rust-toolchain.toml pins $pinned, which is not installed (the default is $default_version):" >&2
    echo "run \`rustup toolchain install $pinned\` or change the pin" >&2
    exit 1
fi
