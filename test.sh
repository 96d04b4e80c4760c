#!/usr/bin/env bash
# The project's test command (README.md): unit and integration tests on this machine, then the
# lab suite on real Xen inside QEMU.
#   ./test.sh            everything
#   ./test.sh --no-lab   skip the lab (no QEMU boot)
# The lab is three boots: the whole suite on Debian's Xen, the NoXS tests in a boot without
# xenstored, and the NoXS tests and the small scale run on the patched hypervisor with the
# patched xenstored.
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

step "lab scripts: host tests (lab/host-tests)"
for t in lab/host-tests/*.sh; do "$t"; done

step "cargo test --workspace"
cargo test --workspace

if [ "$lab" = 1 ]; then
  step "lab: real Xen in QEMU (Debian's Xen 4.17, the whole suite)"
  lab/xenlab test
  step "lab: a boot without xenstored (NoXS guests alone)"
  XENLAB_XENSTORED=0 lab/xenlab test no-xenstored without-xenstored
  step "lab: Xen with hypervisor-patches/xen-4.17 (the Xen-owned device page), xenstored with xenstored-patches/xen-4.17"
  XENLAB_XEN=noxs XENLAB_XENSTORED=patched lab/xenlab test 56-chaos-noxs-guests 57-chaos-noxs-no-xenstore \
    59-chaos-noxs-50 90-scale-100
fi
