#!/usr/bin/env bash
# The project's test command (README.md): unit and integration tests on this machine, then the
# lab suite on real Xen inside QEMU.
#   ./test.sh            everything
#   ./test.sh --no-lab   skip the lab (no QEMU boot)
set -euo pipefail
cd "$(dirname "$0")"
lab=1
for a in "$@"; do
  case "$a" in
    --no-lab) lab=0 ;;
    *) echo "usage: $0 [--no-lab]" >&2; exit 2 ;;
  esac
done
step() { printf '\n== %s\n' "$*"; }

step "Debian's xl example configs and kernel (parser and image tests read them)"
scripts/fetch-xlexamples.sh
scripts/fetch-vmlinuz.sh

step "test guests: build and check"
guests/build.sh
guests/check.sh

step "cargo test --workspace"
cargo test --workspace

if [ "$lab" = 1 ]; then
  step "lab: real Xen in QEMU"
  lab/xenlab test
fi
