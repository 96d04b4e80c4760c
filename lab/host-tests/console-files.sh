#!/usr/bin/env bash
# Host test of the lab's console reader (lab/lib/boot.sh, stream_console): a file dom0 sends as
# base64 arrives whole when run-tests' heartbeat lands inside a line of it, or between lines,
# and a console message between lines is left out of the file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# shellcheck source=../lib/boot.sh
source "$here/../lib/boot.sh"
# what stream_console needs from the rest of the lab (after the source, which sets some of it)
# shellcheck disable=SC2034 # read by stream_console
LOG=$tmp/console.log RUN=$tmp/run T_QEMU=${EPOCHREALTIME/./}
say() { :; }
secs_since() { printf -v "$2" '%s' 0; }
check_hung() { :; }

head -c 30000 /dev/urandom >"$tmp/data"
sum=$(sha256sum <"$tmp/data" | cut -d' ' -f1)
{
	echo "@@XENLAB-FILE data 30000 $sum"
	base64 "$tmp/data" | awk '
		NR == 10 { print substr($0, 1, 30) "@@XENLAB-ALIVE"; print substr($0, 31); next }
		NR == 20 { print "@@XENLAB-ALIVE" }
		NR == 30 { print "[  12.345678] a kernel message" }
		{ print }'
	echo "@@XENLAB-FILE-END"
} >"$tmp/console"

mkdir -p "$RUN"
stream_console <"$tmp/console" >/dev/null
[ "${FILES_RECEIVED[*]}" = "data $sum" ] || { echo "FAIL: files received: ${FILES_RECEIVED[*]}"; exit 1; }
got=$(base64 -d <"$RUN/files/data.b64" | sha256sum | cut -d' ' -f1)
[ "$got" = "$sum" ] || { echo "FAIL: the file arrived changed (sha256 $got, sent $sum)"; exit 1; }
[ -n "$LAST_BEAT" ] || { echo "FAIL: the heartbeat inside the file was not noticed"; exit 1; }
echo "ok: a file with heartbeats inside its base64 arrives whole"
