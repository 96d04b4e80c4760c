#!/bin/sh
# Builds the test guests into guests/out/{noop,hello,ping}. Run from anywhere; idempotent.
# Needs only a Rust toolchain with the x86_64-unknown-linux-gnu target and a C linker (cc).
set -eu
cd "$(dirname "$0")"
cargo build --release --locked --quiet
mkdir -p out
for g in noop hello ping; do
    cp target/x86_64-unknown-linux-gnu/release/$g out/$g.tmp
    mv out/$g.tmp out/$g
done
for g in noop hello ping; do
    printf '%s %s bytes\n' "out/$g" "$(wc -c < out/$g | tr -d ' ')"
done
