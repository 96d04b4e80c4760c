# chaos creates a vif through Xenstore (no hotplug script): netback makes vifD.0, xendevd puts it
# on xenbr0 and writes hotplug-status, the guest's netfront connects and the guest pings dom0.
# Destroying the guest (the reaper after its poweroff, or chaos destroy) takes the vif away.
. "$XENLAB_TESTS/lib.sh"

[ -d /sys/class/net/xenbr0/brif ] || fail "xenbr0: expected a Linux bridge, not found"
reaper=
XENDEVD_PID=
cleanup() {
	[ -n "$reaper" ] && kill "$reaper" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log
bridge_addr xenbr0 10.99.0.1/24
chaos reap --watch >reaper.log 2>&1 &
reaper=$!

# check_vif DOMID: vifDOMID.0 exists, is on xenbr0, and xendevd wrote hotplug-status=connected.
check_vif() {
	_be=/local/domain/0/backend/vif/$1/0
	_connected() { [ "$(xenstore-read "$_be/hotplug-status" 2>/dev/null)" = connected ]; }
	wait_until 30 _connected ||
		fail "$_be/hotplug-status: expected connected, got '$(xenstore-read "$_be/hotplug-status" 2>&1)'; xendevd log: $(cat xendevd.log)"
	[ -e "/sys/class/net/xenbr0/brif/vif$1.0" ] ||
		fail "xenbr0 ports: expected vif$1.0, got '$(ls /sys/class/net/xenbr0/brif)'"
	grep -q "vif$1.0 online: attached to xenbr0" xendevd.log ||
		fail "xendevd log: expected 'vif$1.0 online: attached to xenbr0', got: $(cat xendevd.log)"
}

# check_vif_gone DOMID: no vifDOMID.0 interface, bridge port or backend directory left.
check_vif_gone() {
	_gone() { [ ! -e "/sys/class/net/vif$1.0" ]; }
	wait_until 30 _gone "$1" || fail "/sys/class/net: expected no vif$1.0 after destroy, still there"
	[ ! -e "/sys/class/net/xenbr0/brif/vif$1.0" ] ||
		fail "xenbr0 ports: expected no vif$1.0, got '$(ls /sys/class/net/xenbr0/brif)'"
	xenstore-exists "/local/domain/0/backend/vif/$1" &&
		fail "xenstore: expected /local/domain/0/backend/vif/$1 removed, got: $(xenstore-ls "/local/domain/0/backend/vif/$1")"
	return 0
}

# 1. A paused guest: the backend is there, netback made the vif, xendevd attached it, and the
#    entries chaos wrote are libxl's; chaos destroy removes it all.
name=chaosvifp
cfg=$(net_linux_cfg $name 10.99.0.3/24 10.99.0.1 "vif = ['bridge=xenbr0,ip=10.99.0.3']")
out=$(chaos create -p "$cfg" 2>&1) || fail "chaos create -p: expected success, got: $out"
domid=$(xl domid $name) || fail "xl domid $name: expected a domid"
check_vif "$domid"
be=/local/domain/0/backend/vif/$domid/0
fe=/local/domain/$domid/device/vif/0
expect_eq "$be/frontend" "$fe" "$(xenstore-read "$be/frontend")"
expect_eq "$fe/backend" "$be" "$(xenstore-read "$fe/backend")"
expect_eq "$be/bridge" xenbr0 "$(xenstore-read "$be/bridge")"
expect_eq "$be/ip" 10.99.0.3 "$(xenstore-read "$be/ip")"
expect_eq "$be/type" vif "$(xenstore-read "$be/type")"
expect_eq "$be/script" /etc/xen/scripts/vif-bridge "$(xenstore-read "$be/script")"
mac=$(xenstore-read "$be/mac")
expect_eq "$fe/mac" "$mac" "$(xenstore-read "$fe/mac")"
expect_contains "generated MAC" "00:16:3e:" "$mac"
expect_eq "vif$domid.0 MAC (netback uses fe:ff:ff:ff:ff:ff)" fe:ff:ff:ff:ff:ff "$(cat "/sys/class/net/vif$domid.0/address")"
# Frontend owned by the guest, readable by dom0; backend owned by dom0, readable by the guest.
expect_eq "$fe permissions" "n$domid r0" "$(xenstore-ls -p "$(dirname "$fe")" | awk '/^0 /{ sub(/.*\(/, ""); sub(/\).*/, ""); print; exit }' | tr ',' ' ')"
expect_eq "$be permissions" "n0 r$domid" "$(xenstore-ls -p "$(dirname "$be")" | awk '/^0 /{ sub(/.*\(/, ""); sub(/\).*/, ""); print; exit }' | tr ',' ' ')"
echo "paused guest $domid: vif$domid.0 on xenbr0, mac $mac, backend state $(xenstore-read "$be/state")"
chaos destroy $name || fail "chaos destroy $name: expected success"
check_vif_gone "$domid"
echo "chaos destroy: vif$domid.0 gone"

# 2. A running guest pings dom0 through the bridge; the reaper destroys it after its poweroff.
name=chaosvif
cfg=$(net_linux_cfg $name 10.99.0.2/24 10.99.0.1 "vif = ['bridge=xenbr0,ip=10.99.0.2']")
start=$(now)
out=$(chaos create "$cfg" 2>&1) || fail "chaos create: expected success, got: $out"
domid=$(xl domid $name) || fail "xl domid $name: expected a domid"
echo "chaos create: $(elapsed "$start")s, domain $domid"
check_vif "$domid"
echo "hotplug-status connected: $(elapsed "$start")s"
log=$(console_log $name)
wait_for_line "$log" 'PING-OK|PING-FAIL' 240 ||
	fail "guest console: expected PING-OK within 240s, got: $(tail -n 5 "$log" 2>&1)"
grep -E 'GUEST-NET|packets|round-trip|PING-' "$log" | tr -d '\r'
grep -q PING-OK "$log" || fail "guest ping: expected PING-OK, got: $(grep PING-FAIL "$log" | tr -d '\r')"
wait_gone $name 60 || fail "domain $name: expected gone after poweroff, still there: $(xl list)"
check_vif_gone "$domid"
echo "guest gone, vif$domid.0 gone: $(elapsed "$start")s"
grep "vif$domid.0" xendevd.log
if grep -q 'error' xendevd.log; then
	fail "xendevd log: expected no errors, got: $(grep error xendevd.log)"
fi
