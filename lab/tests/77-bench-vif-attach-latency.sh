# Vif attach latency, in one boot: from netback reaching InitWait (backend state 2, when it has
# made vifD.N and sent its uevent) to hotplug-status=connected, for
#   xl + /etc/xen/scripts/vif-bridge (run_hotplug_scripts=1, xl's default),
#   xl + xendevd (run_hotplug_scripts=0),
#   chaos + xendevd.
# Timestamps come from a xenstore-watch on the vif backends, taken with bash's $EPOCHREALTIME as
# each event arrives (the watch reports writes in order; the values are checked separately).
# Under TCG the stamps can lag by tens of ms (xenstore-watch -> pipe -> bash), so trust them for
# the script path (seconds) and read xendevd's own log ("in N ms") for its handling time. Guests are created paused (the guest need not run for the attach).
. "$XENLAB_TESTS/lib.sh"

RUNS=${VIF_LATENCY_RUNS:-5}
XENDEVD_PID=
watcher=
cleanup() {
	for d in $(xl list | awk 'NR > 2 { print $1 }'); do xl destroy "$d" >/dev/null 2>&1; done
	[ -n "$watcher" ] && kill "$watcher" 2>/dev/null
	stop_xendevd
	xl_conf_restore
}
trap cleanup EXIT

xenstore-exists /local/domain/0/backend/vif || xenstore-write /local/domain/0/backend/vif ""
# One line per event, "<epoch seconds.micros> <path>", stamped with bash builtins only (no fork
# per event, so the stamps do not lag behind the events).
bash -c 'xenstore-watch /local/domain/0/backend/vif | while read -r p; do
	echo "$EPOCHREALTIME $p"
done' >events.log 2>&1 &
watcher=$!
sleep 1

# latency DOMID: ms from netback's state write to the hotplug-status=connected write of DOMID's
# vif 0. The guest is paused, so each key is written exactly twice before the destroy: state 1
# (toolstack) then 2 (netback, InitWait), hotplug-status "" (toolstack) then connected.
latency() {
	awk -v s="/local/domain/0/backend/vif/$1/0/state" -v h="/local/domain/0/backend/vif/$1/0/hotplug-status" '
		$2 == s && ++ns == 2 { ts = $1 }
		$2 == h && ++nh == 2 { th = $1 }
		END { if (ts && th) printf "%.1f", (th - ts) * 1000; else print "none" }' events.log
}

# run TOOL LABEL: RUNS paused creations with one vif each; prints each latency and the median.
run() {
	_tool=$1 _label=$2 _all=
	for i in $(seq 1 "$RUNS"); do
		_n=lat$i
		_cfg=$(pv_linux_cfg "$_n" "vif = ['bridge=xenbr0']")
		_out=$($_tool create -p "$_cfg" 2>&1) || fail "$_tool create -p: expected success, got: $_out"
		_d=$(xl domid "$_n") || fail "xl domid $_n: expected a domid"
		_be=/local/domain/0/backend/vif/$_d/0
		_ok() { [ "$(xenstore-read "$_be/hotplug-status" 2>/dev/null)" = connected ]; }
		wait_until 30 _ok || fail "$_label: $_be/hotplug-status never became connected"
		expect_eq "$_label: $_be/state (InitWait: the guest is paused)" 2 "$(xenstore-read "$_be/state")"
		sleep 0.3
		_l=$(latency "$_d")
		[ "$_l" != none ] || fail "$_label: no state=2/connected events for domain $_d in: $(grep "/$_d/0/" events.log)"
		_all="$_all $_l"
		$_tool destroy "$_n" >/dev/null 2>&1 || xl destroy "$_n"
		wait_gone "$_n" 30 || fail "$_n: not gone after destroy"
	done
	_med=$(echo "${_all# }" | tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
	echo "VIF-LATENCY $_label: median ${_med} ms (runs:$_all ms)"
}

xl_hotplug_scripts 1
run xl "xl + vif-bridge script"
xl_hotplug_scripts 0
start_xendevd xendevd.log
run xl "xl + xendevd"
run chaos "chaos + xendevd"
echo "xendevd's own handling times (uevent received -> hotplug-status written):"
grep 'online: attached' xendevd.log
