#!/bin/sh
# Puts Debian's current kernel image (bzImage with an xz payload, from linux-image-*-amd64) at
# target/test-data/vmlinuz for the image and builder tests. The .deb is looked for in the lab's
# package cache first (lab/cache/debs, or $XENLAB_CACHE/debs) and downloaded there otherwise,
# so the lab reuses it. It is GPL (Linux), so it stays out of the repository.
# Idempotent: does nothing when the file is already there.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${CHAOS_TEST_DATA:-$root/target/test-data}
[ -s "$dest/vmlinuz" ] && exit 0

debs=${XENLAB_CACHE:-$root/lab/cache}/debs
mkdir -p "$debs" "$dest"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
deb=$(ls "$debs/${pkg}"_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    (cd "$debs" && { apt-get download -q "$pkg" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download -q "$pkg" >/dev/null; }; })
    deb=$(ls "$debs/${pkg}"_*.deb | head -n 1)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
cp "$work"/boot/vmlinuz-* "$dest/vmlinuz.tmp"
mv "$dest/vmlinuz.tmp" "$dest/vmlinuz"
echo "Debian's vmlinuz ($pkg) in $dest/vmlinuz"
