#!/bin/sh
# Checks the test guests on the host: the unit tests of what they parse (device page, Xenstore
# messages, netif rings, packets: `cargo test -p xenpv -p ping --lib`), then the built guests
# (guests/out/*, from guests/build.sh) the way a Xen PV loader sees them: ELF64 x86_64 EXEC, Xen
# notes and the chaos NoXS note present and sane, entry and hypercall page inside loaded
# segments, file < 64 KiB; then that broken variants are rejected. Exit non-zero on any failure.
set -eu
cd "$(dirname "$0")"
for g in noop hello ping; do
    [ -f out/$g ] || { echo "FAIL out/$g missing: run guests/build.sh first"; exit 1; }
done
cargo test --locked --quiet -p xenpv -p ping --lib
mkdir -p target/host
# plain rustc from the guests dir's parent: keeps guests/.cargo/config.toml (guest-only flags) out.
rustc --edition 2021 -O -o target/host/elfcheck check/elfcheck.rs
target/host/elfcheck out/noop out/hello out/ping
target/host/elfcheck --self-test out/hello
