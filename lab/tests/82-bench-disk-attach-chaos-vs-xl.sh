# Disks, chaos against xl in one boot, with paused Debian Linux guests that have one disk (the
# lab's image, read-only):
# - attach latency: from the toolstack writing the vbd backend directory to hotplug-status
#   "connected" (the device is ready for blkback), for xl + /etc/xen/scripts/block (xl's
#   default), xl + xendevd (run_hotplug_scripts=0) and chaos + xendevd;
# - creation time: `xl create -p` (which waits for the block script) against `chaos create -p`
#   (which returns once the devices are published; xendevd attaches the disk meanwhile), each
#   also until the disk is attached.
# Stamps come from a xenstore-watch on the vbd backends read by bash ($EPOCHREALTIME); under
# TCG they lag by tens of ms, so read xendevd's own log ("in N ms") for its handling time.
# shellcheck shell=bash # (it runs itself in bash, the line below)
[ -n "$BASH_VERSION" ] || exec bash "$0" "$@" # for $EPOCHREALTIME (µs)
. "$XENLAB_TESTS/lib.sh"

RUNS=${DISK_LATENCY_RUNS:-5}
XENDEVD_PID=
watcher=
cleanup() {
	for d in $(xl list | awk 'NR > 2 { print $1 }'); do xl destroy "$d" >/dev/null 2>&1; done
	[ -n "$watcher" ] && kill "$watcher" 2>/dev/null
	stop_xendevd
	xl_conf_restore
}
trap cleanup EXIT
img=$GUEST/disk.img
usec() { local t=${EPOCHREALTIME/./}; echo "${t#0}"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit; m = int((NR + 1) / 2); print (NR % 2) ? v[m] : (v[m] + v[m + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
no_loops() { [ -z "$(loops_of "$1")" ]; }

xenstore-exists /local/domain/0/backend/vbd || xenstore-write /local/domain/0/backend/vbd ""
bash -c 'xenstore-watch /local/domain/0/backend/vbd | while read -r p; do
	echo "$EPOCHREALTIME $p"
done' >events.log 2>&1 &
watcher=$!
sleep 1

# attach_ms DOMID: ms from the first write below the backend directory to the first write of its
# hotplug-status.
attach_ms() {
	awk -v d="/local/domain/0/backend/vbd/$1/51712" '
		index($2, d) == 1 && !t0 { t0 = $1 }
		$2 == d "/hotplug-status" && !t1 { t1 = $1 }
		END { if (t0 && t1) printf "%.1f", (t1 - t0) * 1000; else print "none" }' events.log
}

# run TOOL LABEL: RUNS paused creations; prints the medians (and each run).
run() {
	local tool=$1 label=$2 i n cfg t0 t1 t2 d be out attach="" create="" ready=""
	for i in $(seq 1 "$RUNS"); do
		n=dlat$i
		cfg=$(disk_linux_cfg "$n" "$img,raw,xvda,r")
		t0=$(usec)
		out=$($tool create -p "$cfg" 2>&1) || fail "$label: $tool create -p: expected success, got: $out"
		t1=$(usec)
		d=$(xl domid "$n") || fail "$label: xl domid $n: expected a domid"
		be=/local/domain/0/backend/vbd/$d/51712
		_ok() { [ "$(xenstore-read "$be/hotplug-status" 2>/dev/null)" = connected ]; }
		wait_until 30 _ok || fail "$label: $be/hotplug-status never became connected: $(xenstore-ls "$be" 2>&1)"
		t2=$(usec)
		expect_contains "$label: physical-device (a loop device)" "7:" "$(xenstore-read "$be/physical-device")"
		sleep 0.3
		local a
		a=$(attach_ms "$d")
		[ "$a" != none ] || fail "$label: no backend/hotplug-status events for domain $d in: $(grep "/$d/" events.log)"
		attach="$attach $a"
		create="$create $(( (t1 - t0) / 1000 ))"
		ready="$ready $(( (t2 - t0) / 1000 ))"
		$tool destroy "$n" >/dev/null 2>&1 || xl destroy "$n"
		wait_gone "$n" 30 || fail "$n: not gone after destroy"
		wait_until 30 no_loops "$img" || fail "$label: a loop device is left over $img: $(loops_of "$img")"
	done
	local ma mc mr
	ma=$(echo "${attach# }" | tr ' ' '\n' | median)
	mc=$(echo "${create# }" | tr ' ' '\n' | median)
	mr=$(echo "${ready# }" | tr ' ' '\n' | median)
	echo "DISK-ATTACH $label: median ${ma} ms (runs:$attach ms)"
	echo "DISK-CREATE $label: create -p median ${mc} ms (runs:$create ms); until the disk is attached ${mr} ms (runs:$ready ms)"
	eval "ATTACH_$3=$ma CREATE_$3=$mc READY_$3=$mr"
}

xl_hotplug_scripts 1
run xl "xl + block script" xlscript
xl_hotplug_scripts 0
start_xendevd xendevd.log
run xl "xl + xendevd" xlxendevd
run chaos "chaos + xendevd" chaos
echo "xendevd's own handling times (uevent received -> Xenstore written):"
grep 'add: /dev/loop' xendevd.log
# shellcheck disable=SC2154 # set by run's eval
{
	echo "SUMMARY disk attach: block script ${ATTACH_xlscript} ms, xendevd ${ATTACH_chaos} ms (xl + xendevd ${ATTACH_xlxendevd} ms): $(ratio "$ATTACH_xlscript" "$ATTACH_chaos")x"
	echo "SUMMARY Linux with one disk, create -p: xl ${CREATE_xlscript} ms, chaos ${CREATE_chaos} ms: $(ratio "$CREATE_xlscript" "$CREATE_chaos")x; until the disk is attached: xl ${READY_xlscript} ms, chaos ${READY_chaos} ms: $(ratio "$READY_xlscript" "$READY_chaos")x"
}
