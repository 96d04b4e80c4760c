#!/bin/sh
# Extracts Debian's xl example configs (/etc/xen/xlexample.*, from the xen-utils-common package)
# into target/xlexamples/ for the config tests. They are GPL (Xen), so they stay out of the repo.
# Idempotent: does nothing when the files are already there.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${XLEXAMPLES_DIR:-$root/target/xlexamples}

if [ -f "$dest/xlexample.pvlinux" ] && [ -f "$dest/xlexample.pvhlinux" ] && [ -f "$dest/xlexample.hvm" ]; then
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download xen-utils-common >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get download xen-utils-common >/dev/null
fi
dpkg -x xen-utils-common_*.deb x
mkdir -p "$dest"
cp x/etc/xen/xlexample.* "$dest/"
echo "xl examples in $dest:" $(cd "$dest" && ls)
